"""Images -> GAP features for every requested backbone, in one pass over the images.

Each image is read and decoded once (tf.data, parallel map, prefetch so decoding overlaps
model compute), resized once per input size, and fed to every backbone that still needs
it. Features stream to per-batch part files (see features.parts), so a killed run resumes
where it stopped, and are assembled into one HDF5 file per (backbone, TTA) that is marked
complete only at the end. A complete file whose fingerprint matches is reused without
importing TensorFlow.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import platform
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from base.atomic import remove_stale_temps
from base.errors import HarnessError
from base.lock import workspace_lock
from base.logs import quiet_tensorflow_import
from competition.images import ImageList, list_test_images, list_train_images
from features import parts as part_store
from features.backbones import BackboneSpec, get_backbone
from features.decode import DECODER_VERSION, decode_file
from features.engines import (
    INFERENCE_ENGINES,
    build_forward,
    check_engine,
    check_precision,
    computed_precision,
    precision_note,
    preferred_engine,
    resolve_engine,
)
from features.fingerprint import (
    describe_changes,
    fingerprint_of,
    ids_digest,
    image_list_digest,
    installed_version,
)
from features.fold import GRAPH_VERSION
from features.openvino_engine import QUANTIZER_VERSION
from features.settings import TTA_MODES, FeaturesRun
from features.shards import shard_images, shard_path
from features.store import feature_path, read_attrs, read_bad
from features.weights import WeightsChoice, resolve_weights

if TYPE_CHECKING:  # imported where engine "ray" needs it
    from features.ray_engine import RaySession

logger = logging.getLogger(__name__)

__all__ = ["ExtractionReport", "FeatureResult", "extract_features", "extract_for_config"]

RESIZE = "bilinear"  # tf.image.resize, as keras.utils.image_dataset_from_directory does
CROP_SCALE = 256 / 224  # 10-crop: resize to 256 for 224 crops (342 for 299), as in AlexNet
LIBRARIES = ("tensorflow", "keras", "h5py", "numpy", "pillow")
# Precision int8 calibrates NNCF on this many training images (all when there are fewer):
# 300 is NNCF's own default subset_size. Measured on Xception with genuine weights: 26.6 s
# to quantise on 2 cores, per-row cosine to float32 0.997 (median), the same held-out log
# loss (README "Engines").
CALIBRATION_IMAGES = 300
CALIBRATION_SEED = 0
# How an int8 file was quantised: its fingerprint's "quantization" part (int8 files only).
QUANTIZATION = (f"calibrated on {CALIBRATION_IMAGES} training images (seed "
                f"{CALIBRATION_SEED}); {QUANTIZER_VERSION}")


@dataclass
class FeatureResult:
    """The outcome for one (backbone, tta) feature file.

    Attributes:
        backbone, tta: What was extracted.
        path: The HDF5 file.
        reused: True when a complete file with the same fingerprint was kept.
        reason: Why it was (re)built, or "up to date".
        images: Train + test images in the file's image lists.
        skipped: Train ids that could not be read (no row).
        failed: Test ids that could not be read (row of zeros, flagged).
        seconds: Model time spent on this backbone in this run.
        images_per_s: Images per second of model time (0 when reused).
    """

    backbone: str
    tta: str
    path: Path
    reused: bool
    reason: str
    images: int
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    images_per_s: float = 0.0


@dataclass
class ExtractionReport:
    """Every feature file of one `extract_features` call, plus the wall time.

    `build_seconds` is the one-time setup inside `seconds`: building each model and tracing
    its forward graph (or reading OpenVINO's converted model from its cache);
    `convert_seconds` the part of it spent converting models to OpenVINO (0 when cached).
    `engine` is the inference engine that computed ("" when every file was reused), and
    `precision` the precision it really computed (as the engine reports it; see
    features.engines.computed_precision); `quantize_seconds` the part of `build_seconds`
    spent quantising models to int8 (0 when cached); `kernels` (int8) how many operations
    ran each int8 kernel, by OpenVINO's name (e.g. jit_avx2_I8: no VNNI).
    """

    results: list[FeatureResult]
    seconds: float = 0.0
    build_seconds: float = 0.0
    engine: str = ""
    convert_seconds: float = 0.0
    quantize_seconds: float = 0.0
    precision: str = ""
    kernels: dict[str, int] = field(default_factory=dict)

    def __iter__(self):
        return iter(self.results)

    def result(self, backbone: str, tta: str = "none") -> FeatureResult:
        """The result for (backbone, tta)."""
        for item in self.results:
            if (item.backbone, item.tta) == (backbone, tta):
                return item
        raise KeyError((backbone, tta))

    def summary(self) -> str:
        """One line: images, skipped, failed, seconds, img/s per backbone."""
        if not self.results:
            return "features: nothing requested"
        images = max(r.images for r in self.results)
        skipped = len({s for r in self.results for s in r.skipped})
        failed = len({s for r in self.results for s in r.failed})
        speeds = ", ".join(
            f"{r.backbone}{'' if r.tta == 'none' else '/' + r.tta} "
            + ("reused" if r.reused else f"{r.images_per_s:.1f} img/s")
            for r in self.results
        )
        engine = ""
        if self.engine:
            steps = [self.engine if self.precision in ("", "float32")
                     else f"{self.engine} {self.precision}"]
            if self.kernels:  # which instruction set computed int8 changes the numbers
                steps.append("int8 kernels " + ", ".join(
                    f"{name} x{count}" for name, count in sorted(self.kernels.items())))
            if self.convert_seconds:
                steps.append(f"conversion {self.convert_seconds:.1f} s")
            if self.quantize_seconds:
                steps.append(f"quantisation {self.quantize_seconds:.1f} s")
            elif self.precision == "int8":
                steps.append("quantised models cached")
            elif self.engine == "openvino" and not self.convert_seconds:
                steps.append("converted models cached")
            engine = f" ({', '.join(steps)})"
        return (f"features: {images} images, {skipped} train skipped, {failed} test failed, "
                f"{self.seconds:.1f} s{engine}; {speeds}")


@dataclass
class _Job:
    spec: BackboneSpec
    tta: str
    weights: WeightsChoice
    path: Path
    parts: dict
    fingerprint: str
    extra_attrs: dict
    reason: str = ""
    folder: Path | None = None
    done: dict = field(default_factory=dict)
    seconds: float = 0.0
    computed: int = 0


@dataclass(frozen=True)
class Calibration:
    """The images precision int8 calibrates on: a fixed seeded subset of the training images,
    decoded and resized by the extraction's own pipeline (`_dataset`).

    Attributes:
        images: The training images chosen (CALIBRATION_IMAGES, or all when fewer).
        identity: What the quantised model depends on (OpenVINO's cache key): the recipe and
            a digest of the chosen ids, file names, sizes and modification times (stat only,
            as the feature files' fingerprints).
        map_threads: Parallel decode calls (0: one per core).
    """

    images: ImageList
    identity: str
    map_threads: int = 0

    @property
    def count(self) -> int:
        return len(self.images)

    @property
    def description(self) -> str:
        return f"{self.count} training images"

    def samples(self, size: int) -> _CalibrationSamples:
        """A re-iterable of (1, size, size, 3) float32 RGB 0-255 images (the forward's
        input); an image that cannot be read is left out."""
        return _CalibrationSamples(self, size)


class _CalibrationSamples:
    """Decoded lazily on each pass (NNCF may iterate more than once): 300 Xception inputs
    held in memory would be 320 MB."""

    def __init__(self, calibration: Calibration, size: int) -> None:
        self.calibration, self.size = calibration, size

    def __iter__(self) -> Iterator[np.ndarray]:
        images = self.calibration.images
        rows = np.arange(len(images))
        for resized, reasons, _ in _dataset(images, rows, [self.size], 32,
                                            self.calibration.map_threads):
            batch = resized[0].numpy()
            for k, reason in enumerate(reasons.numpy()):
                if not reason:
                    yield batch[k:k + 1]


def calibration_set(train: ImageList, map_threads: int = 0) -> Calibration:
    """The int8 calibration images of a competition: CALIBRATION_IMAGES of its training
    images drawn with CALIBRATION_SEED (all when fewer), always from the whole training
    list, so every shard of a run quantises the same model."""
    if not len(train):
        raise HarnessError("precision int8 calibrates on the training images, and there "
                           "are none; add training images or use another --precision")
    count = min(CALIBRATION_IMAGES, len(train))
    rows = np.sort(np.random.default_rng(CALIBRATION_SEED).choice(len(train), count,
                                                                  replace=False))
    chosen = train.subset(rows)
    identity = json.dumps({"recipe": QUANTIZATION, "of": len(train),
                           "images": image_list_digest(chosen)}, sort_keys=True)
    return Calibration(chosen, identity, map_threads)


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape the features (no imports)."""
    return {"python": platform.python_version(),
            **{name: installed_version(name) for name in LIBRARIES}}


def crop_size(input_size: int) -> int:
    """The side an image is resized to before 10-crop oversampling."""
    return round(input_size * CROP_SCALE)


def view_sizes(jobs: Sequence[_Job]) -> list[int]:
    """The sides the decoded images are resized to, once each, for these jobs (job_side)."""
    return sorted({job_side(job.spec, job.tta) for job in jobs})


def _quantization(train: ImageList) -> str:
    """The "quantization" fingerprint part of int8 files: everything the quantised model
    depends on besides the backbone (the recipe, the calibration images of the *whole*
    training list, so a shard notices a changed calibration image in another shard, and the
    nncf and OpenVINO versions that quantise and run it)."""
    return json.dumps({"calibration": calibration_set(train).identity,
                       **{name: installed_version(name) for name in ("nncf", "openvino")}},
                      sort_keys=True)


def _parts_for(spec: BackboneSpec, tta: str, weights: WeightsChoice, precision: str,
               images: dict, engine: str, quantization: str | None = None) -> dict:
    """Fingerprint parts of one feature file; `images` holds the train and test digests,
    `quantization` the int8 part (`_quantization`)."""
    parts = {
        **images,
        "backbone": spec.name,
        "input_size": spec.input_size,
        "weights": weights.identity,
        "tta": tta,
        "preprocessing": f"{spec.preprocess_name}; resize {RESIZE}"
                         + (f" {crop_size(spec.input_size)} 10-crop" if tta == "crops" else ""),
        "decoder": DECODER_VERSION,
        "graph": GRAPH_VERSION,
        "precision": precision,
        "engine": engine,
    }
    if precision == "int8":  # only there: other precisions' fingerprints are unchanged
        parts["quantization"] = quantization
    if spec.maps_of:  # only there, as for int8
        parts["maps"] = (f"{spec.maps_of} {'input' if spec.cut_input else 'output'} of "
                         f"{spec.cut} {list(spec.map_shape)} {spec.storage_dtype}")
    return parts


def _why_rebuild(path: Path, fingerprint: str, parts: dict, force: bool,
                 engine: str = "auto", log: bool = True) -> str:
    """"" when `path` can be reused, else the reason it must be (re)built.

    With `engine` "auto" (or "ray"), a complete file that differs only in the inference
    engine that made it is reused (hours of features are not recomputed for 1e-7); an
    explicit engine must match. Files from before engines were recorded were TensorFlow's.
    """
    if force:
        return "forced rebuild (force=True)"
    if not path.is_file():
        return "no feature file yet"
    attrs = read_attrs(path)
    if not attrs:
        return "file cannot be read (damaged); rebuilding"
    if not bool(attrs.get("complete", False)):
        return "file is incomplete"
    if attrs.get("fingerprint") == fingerprint:
        return ""
    try:
        old = json.loads(attrs.get("fingerprint_parts", "{}"))
    except ValueError:
        old = {}
    if old:
        old.setdefault("engine", "tensorflow")
    if old == parts:
        return ""
    if (engine not in INFERENCE_ENGINES and old
            and {k: v for k, v in old.items() if k != "engine"}
            == {k: v for k, v in parts.items() if k != "engine"}):
        if log:
            logger.info("%s: made by %s, reused (engine auto would use %s; to extract with "
                        "it instead: --engine %s --force)", path, old["engine"],
                        parts["engine"], parts["engine"])
        return ""
    return describe_changes(old, parts)


def _validate(requests: Sequence[tuple[str, str]], weights: Mapping[str, WeightsChoice],
              shard: tuple[int, int] | None) -> None:
    for backbone, tta in requests:
        get_backbone(backbone)
        if tta not in TTA_MODES:
            raise HarnessError(f"tta {tta!r} for {backbone} is not one of {', '.join(TTA_MODES)}")
        if tta != "none" and get_backbone(backbone).maps_of:
            # Averaged maps of several views are no image's maps: the top would be
            # trained on something no test image gives.
            raise HarnessError(f"{backbone}: maps are cached without test-time augmentation; "
                               "set tta = 'none' for ensembles of _maps backbones")
        if backbone not in weights:
            raise HarnessError(f"no weights chosen for {backbone}; resolve_weights() it first")
    if shard is not None:
        i, n = shard
        if not (isinstance(i, int) and isinstance(n, int) and 1 <= i <= n):
            raise HarnessError(f"shard {i}/{n}: need 1 <= i <= n, e.g. --shard 1/4 ... 4/4")


def _plan(train: ImageList, test: ImageList, requests: Sequence[tuple[str, str]],
          weights: Mapping[str, WeightsChoice], features_dir: Path, precision: str,
          shard: tuple[int, int] | None, engine: str | None = None) -> list[_Job]:
    engine = engine or preferred_engine("auto")
    jobs = []
    # Digested once (a stat per image), not once per backbone and TTA mode.
    full_images = {"train": image_list_digest(train), "test": image_list_digest(test)}
    quantization = _quantization(train) if precision == "int8" else None
    if shard is not None:
        sub_train, sub_test = shard_images(train, shard), shard_images(test, shard)
        shard_images_digest = {"train": image_list_digest(sub_train),
                               "test": image_list_digest(sub_test)}
    for backbone, tta in dict.fromkeys(requests):
        spec = get_backbone(backbone)
        full_parts = _parts_for(spec, tta, weights[backbone], precision, full_images, engine,
                                quantization)
        full_fp = fingerprint_of(full_parts)
        path = feature_path(features_dir, backbone, tta)
        extra: dict[str, Any] = {"shard": ""}
        parts, fp = full_parts, full_fp
        if shard is not None:
            parts = dict(_parts_for(spec, tta, weights[backbone], precision,
                                    shard_images_digest, engine, quantization),
                         shard=f"{shard[0]}/{shard[1]}")
            fp = fingerprint_of(parts)
            path = shard_path(path, shard)
            extra = {
                "shard": f"{shard[0]}/{shard[1]}",
                "full_fingerprint": full_fp,
                "full_fingerprint_parts": part_store.json_attr(full_parts),
                "full_train_count": len(train),
                "full_test_count": len(test),
                "full_train_ids_digest": ids_digest(train.ids),
                "full_test_ids_digest": ids_digest(test.ids),
            }
        jobs.append(_Job(spec, tta, weights[backbone], path, parts, fp, extra))
    return jobs


def _attrs(job: _Job, train: ImageList, precision: str) -> dict:
    attrs = {
        "backbone": job.spec.name,
        "input_size": job.spec.input_size,
        "feature_dim": job.spec.feature_dim,
        "feature_dtype": job.spec.storage_dtype,
        "weights": job.weights.identity,
        # What to load again (the finetune head rebuilds the top above a maps cut).
        "weights_source": job.weights.keras_arg or "none",
        "tta": job.tta,
        "preprocessing": job.parts["preprocessing"],
        "precision": precision,
        "engine": job.parts["engine"],
        "classes": json.dumps(list(train.classes)),
        "libraries": part_store.json_attr(library_versions()),
        "fingerprint": job.fingerprint,
        "fingerprint_parts": part_store.json_attr(job.parts),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    attrs.update({f"{k}_version": v for k, v in library_versions().items()})
    attrs.update(job.extra_attrs)
    return attrs


def image_pixels(path: str | bytes, min_side: int) -> tuple[np.ndarray, str]:
    """One image's RGB uint8 pixels and "" or, when it cannot be read, a 1x1 black
    placeholder and the reason (its features are dropped or zeroed at assembly).

    Shared by the local tf.data pipeline and the Ray actors (features.ray_engine)."""
    pixels, reason = decode_file(os.fsdecode(path), min_side)
    if pixels is None:
        return np.zeros((1, 1, 3), np.uint8), reason
    return pixels, ""


def resize_views(pixels: Any, sizes: Sequence[int]) -> tuple:
    """One float32 (s, s, 3) view of `pixels` per size: traced into tf.data locally, run
    eagerly in a Ray actor (the same op, so the same numbers)."""
    import tensorflow as tf

    return tuple(tf.image.resize(pixels, (s, s), method=RESIZE) for s in sizes)


def job_side(spec: BackboneSpec, tta: str) -> int:
    """The side of the resized view a (backbone, tta) job reads."""
    return crop_size(spec.input_size) if tta == "crops" else spec.input_size


def batch_features(wanted: Sequence[tuple[BackboneSpec, str]], views: Mapping[int, Any],
                   forwards: Mapping[str, Any]) -> list[tuple[np.ndarray, float]]:
    """The per-batch step of every executor: features (and model seconds) of each wanted
    (backbone, tta) job from the batch's resized views ({side: (B, side, side, 3)}).

    The local loop (`_run_split`) and the Ray actors (features.ray_engine) both call it."""
    cache: dict = {}
    out = []
    for spec, tta in wanted:
        start = time.perf_counter()
        values = _tta_features(forwards[spec.name], views[job_side(spec, tta)], tta, cache)
        out.append((np.asarray(values, dtype=np.float32), time.perf_counter() - start))
    return out


def _dataset(images: ImageList, rows: np.ndarray, sizes: list[int], batch_size: int,
             map_threads: int) -> Any:
    """tf.data: decode each image once (parallel), resize once per size, batch, prefetch."""
    import tensorflow as tf

    # Paths travel as bytes: a folder name that is not UTF-8 (a Latin-1 byte) has no
    # TensorFlow string form, and os.fsdecode gives back exactly the name on disk.
    paths = [os.fsencode(images.paths[r]) for r in rows]
    min_side = max(sizes)

    def load(path: Any) -> tuple:
        return image_pixels(path.numpy(), min_side)

    def load_graph(path: Any, row: Any) -> tuple:
        pixels, reason = tf.py_function(load, [path], [tf.uint8, tf.string])
        pixels.set_shape([None, None, 3])
        return resize_views(pixels, sizes), reason, row

    # Decoding is 1-2% of the models' compute on CPU, so one call per core hides it;
    # tf.data's autotuner adds nothing here and its background thread made every iterator's
    # teardown wait seconds (measured 3-4.5 s per split with three backbones).
    parallel = map_threads if map_threads > 0 else (os.cpu_count() or 1)
    options = tf.data.Options()
    options.autotune.enabled = False
    dataset = tf.data.Dataset.from_tensor_slices((paths, np.asarray(rows, np.int64)))
    return (dataset.map(load_graph, num_parallel_calls=parallel, deterministic=True)
            .batch(batch_size).prefetch(2).with_options(options))


def _tta_features(forward: Any, batch: Any, tta: str, cache: dict) -> np.ndarray:
    """Features of one batch under a TTA mode; plain features are shared across modes.

    One copy for every engine: `forward` takes and returns numpy arrays (features.engines).
    """
    batch = np.asarray(batch)
    key = (id(forward), "plain")
    if tta in ("none", "flip"):
        if key not in cache:
            cache[key] = forward(batch)
        if tta == "none":
            return cache[key]
        mirrored = forward(batch[:, :, ::-1, :])
        return (cache[key] + mirrored) / 2.0
    side, size = int(batch.shape[1]), forward.spec.input_size
    far = side - size
    mid = far // 2
    total = None
    for top, left in ((0, 0), (0, far), (far, 0), (far, far), (mid, mid)):
        crop = batch[:, top:top + size, left:left + size, :]
        for view in (crop, crop[:, :, ::-1, :]):
            out = forward(view)
            total = out if total is None else total + out
    return total / 10.0


def _run_split(split: str, images: ImageList, jobs: list[_Job], forwards: dict, runtime: Any,
               progress: bool) -> None:
    from tqdm.auto import tqdm

    need = np.zeros(len(images), dtype=bool)
    for job in jobs:
        need |= ~job.done[split]
    rows = np.flatnonzero(need)
    if not len(rows):
        return
    sizes = view_sizes(jobs)
    names = ", ".join(dict.fromkeys(j.spec.name for j in jobs))
    dataset = _dataset(images, rows, sizes, runtime.batch_size, runtime.map_threads)
    with tqdm(total=len(rows), unit="img", desc=f"{split} [{names}]", disable=not progress,
              dynamic_ncols=True) as bar:
        for resized, reasons_t, rows_t in dataset:
            batch_rows = rows_t.numpy()
            reasons = [r.decode("utf-8") for r in reasons_t.numpy()]
            ids = [images.ids[r] for r in batch_rows]
            wanted = [job for job in jobs if not job.done[split][batch_rows].all()]
            views = dict(zip(sizes, resized))
            outs = batch_features([(job.spec, job.tta) for job in wanted], views, forwards)
            for job, (values, seconds) in zip(wanted, outs):
                job.seconds += seconds
                job.computed += len(batch_rows)
                part_store.write_part(job.folder, split, batch_rows, ids, values, reasons,
                                      job.spec.storage_dtype)
                job.done[split][batch_rows] = True
            bar.update(len(batch_rows))


def _report_bad(job: _Job, bad: dict) -> None:
    for split, table, what in (("train", "skipped", "skipped"),
                               ("test", "failed", "kept as a row of zeros")):
        # Every one is named: a damaged photo silently predicted is worse than a long log.
        for image_id, reason in bad.get(split, []):
            logger.warning("%s/%s: %s; %s and listed in %s:/%s/%s", split, image_id, reason,
                           what, job.path, split, table)


def extract_features(train: ImageList, test: ImageList, requests: Sequence[tuple[str, str]],
                     weights: Mapping[str, WeightsChoice], features_dir: Path, *,
                     batch_size: int = 0, threads: int = 0, precision: str = "float32",
                     force: bool = False, shard: tuple[int, int] | None = None,
                     progress: bool = True, engine: str = "auto",
                     cluster: str = "auto") -> ExtractionReport:
    """Extract (or reuse) one feature file per (backbone, tta) request, in one pass.

    Args:
        train, test: The image lists (ids, paths, labels).
        requests: (backbone, tta) pairs; tta is "none", "flip" or "crops".
        weights: The resolved weights of every requested backbone.
        features_dir: Where the HDF5 files go (names from store.feature_path).
        batch_size: Images per batch; 0 chooses for the machine.
        threads: Intra-op / decode threads; 0 chooses for the machine.
        precision: "float32", "mixed" (float16 compute, GPU only; float32 on a CPU),
            "bfloat16" (bfloat16 compute; fast on CPUs with AVX512_BF16) or "int8" (NNCF
            post-training quantisation calibrated on `calibration_set(train)`; OpenVINO only).
        force: Rebuild even files whose fingerprint matches.
        shard: (i, n), 1 <= i <= n: extract only every n-th image from the i-th, into its
            own file (merge with `merge_shards`).
        progress: Show a tqdm bar per split.
        engine: "auto" (OpenVINO on a CPU where installed, TensorFlow on a GPU),
            "tensorflow" or "openvino" (features.engines). Recorded in the fingerprint;
            with "auto" a file made by the other engine is reused. "ray" runs on a Ray
            cluster (features.ray_engine) with the inference engine "auto" picks there.
        cluster: With engine "ray": "auto", "local" or "HOST:PORT" (features.ray_engine).

    Returns:
        An ExtractionReport; its summary line is also logged.

    Raises:
        HarnessError: unknown backbone or TTA, missing weights, bad shard, a precision the
            engine cannot compute (int8 off OpenVINO).
    """
    started = time.perf_counter()
    _validate(requests, weights, shard)
    check_precision(precision, engine)
    quiet_tensorflow_import()  # its first import may come from looking for a GPU
    ray_session = None
    if engine == "ray":
        from features.ray_engine import RaySession

        ray_session = RaySession(cluster)  # a bad `cluster` fails here, before any work
    with ray_session if ray_session is not None else contextlib.nullcontext():
        return _extract(train, test, requests, weights, Path(features_dir), started,
                        batch_size=batch_size, threads=threads, precision=precision,
                        force=force, shard=shard, progress=progress, engine=engine,
                        ray_session=ray_session)


def _extract(train: ImageList, test: ImageList, requests: Sequence[tuple[str, str]],
             weights: Mapping[str, WeightsChoice], features_dir: Path, started: float, *,
             batch_size: int, threads: int, precision: str, force: bool,
             shard: tuple[int, int] | None, progress: bool, engine: str,
             ray_session: RaySession | None) -> ExtractionReport:
    """extract_features's work, its arguments checked. `ray_session` (engine "ray") is
    closed here once the jobs have run; extract_features closes it whatever happens."""

    @functools.cache  # asked for precision and engine
    def has_gpu() -> bool:
        # "ray" is an executor: the cluster's GPUs decide its actors' engine and precision.
        return ray_session.gpus() > 0 if ray_session is not None else _has_gpu()

    # A writer killed during the final HDF5 write leaves its (large) temp file behind.
    remove_stale_temps(features_dir)
    sub_train, sub_test = shard_images(train, shard), shard_images(test, shard)
    check_engine(engine)
    # Planned without importing TensorFlow: with "auto" reuse does not depend on the
    # engine; only when something must be computed is a GPU looked for.
    used_engine = preferred_engine(engine)
    # What the engine will really compute (mixed without a GPU, bfloat16 on a CPU OpenVINO
    # cannot run it on: float32), decided before fingerprinting, so such a file is never
    # labelled as what it is not, and is reused by later float32 runs.
    used_precision = computed_precision(precision, engine, used_engine, has_gpu)
    jobs = _plan(train, test, requests, weights, features_dir, used_precision, shard,
                 used_engine)
    if engine not in INFERENCE_ENGINES and any(
            _why_rebuild(j.path, j.fingerprint, j.parts, force, engine, log=False) for j in jobs):
        resolved = resolve_engine(engine, has_gpu())
        if resolved != used_engine:
            used_engine = resolved
            used_precision = computed_precision(precision, engine, used_engine, has_gpu)
            jobs = _plan(train, test, requests, weights, features_dir, used_precision, shard,
                         used_engine)
        check_precision(used_precision, resolved)  # auto on a GPU is TensorFlow: no int8
    note = precision_note(precision, used_precision, used_engine)
    if note:
        logger.warning(note)
    todo, results = [], []
    build_seconds = convert_seconds = quantize_seconds = 0.0
    kernels: Counter = Counter()
    for job in jobs:
        job.reason = _why_rebuild(job.path, job.fingerprint, job.parts, force, engine)
        if not job.reason:
            logger.info("%s: up to date, reused (fingerprint %s)", job.path, job.fingerprint[:12])
            results.append(_reused_result(job, len(sub_train) + len(sub_test)))
            continue
        logger.info("%s: building: %s", job.path, job.reason)
        job.folder = part_store.partial_dir(job.path, job.fingerprint)
        if force:
            part_store.discard(job.folder)
        job.done = {"train": part_store.done_rows(job.folder, "train", sub_train),
                    "test": part_store.done_rows(job.folder, "test", sub_test)}
        already = int(job.done["train"].sum() + job.done["test"].sum())
        if already:
            logger.info("%s: resuming: %d of %d images already extracted in %s", job.path,
                        already, len(sub_train) + len(sub_test), job.folder)
        todo.append(job)

    if todo and ray_session is not None:
        ray_session.run_jobs(todo, {"train": sub_train, "test": sub_test}, engine=used_engine,
                             batch_size=batch_size, threads=threads, precision=used_precision,
                             progress=progress)
        ray_session.close()  # assembling the files needs no Ray: its processes go first
    elif todo:
        from features import runtime as runtime_module

        runtime = runtime_module.configure(batch_size, threads, used_precision)
        # From the whole training list (not this shard's): every shard quantises alike.
        calibration = (calibration_set(train, runtime.map_threads)
                       if used_precision == "int8" else None)
        forwards = {}
        build_started = time.perf_counter()
        for job in todo:
            if job.spec.name not in forwards:
                logger.info("building %s (%d px, weights %s) on %s", job.spec.name,
                            job.spec.input_size, job.weights.identity, used_engine)
                forwards[job.spec.name] = build_forward(job.spec, job.weights, runtime,
                                                        used_engine, calibration=calibration)
        build_seconds = time.perf_counter() - build_started
        convert_seconds = sum(f.convert_seconds for f in forwards.values())
        quantize_seconds = sum(f.quantize_seconds for f in forwards.values())
        kernels = sum((f.kernels for f in forwards.values()), Counter())
        for split, images in (("train", sub_train), ("test", sub_test)):
            _run_split(split, images, todo, forwards, runtime, progress)
    for job in todo:
        # Where it ran is an attribute only: a Ray-made file is the same file as a local one.
        attrs = {**_attrs(job, train, used_precision),
                 "executor": "ray" if engine == "ray" else "local"}
        bad = part_store.assemble(job.folder, job.path, sub_train, sub_test,
                                  job.spec.feature_dim, attrs)
        part_store.discard(job.folder)
        part_store.discard_stale(job.path)
        _report_bad(job, bad)
        results.append(FeatureResult(
            backbone=job.spec.name, tta=job.tta, path=job.path, reused=False,
            reason=job.reason, images=len(sub_train) + len(sub_test),
            skipped=[i for i, _ in bad["train"]], failed=[i for i, _ in bad["test"]],
            seconds=job.seconds,
            images_per_s=job.computed / job.seconds if job.seconds else 0.0))
    order = {key: k for k, key in enumerate(dict.fromkeys(requests))}
    results.sort(key=lambda r: order[(r.backbone, r.tta)])
    report = ExtractionReport(results, time.perf_counter() - started, build_seconds,
                              used_engine if todo else "", convert_seconds, quantize_seconds,
                              used_precision if todo else "", dict(kernels))
    logger.info(report.summary())
    return report


def _has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def _reused_result(job: _Job, images: int) -> FeatureResult:
    bad = read_bad(job.path)
    return FeatureResult(job.spec.name, job.tta, job.path, True, "up to date", images,
                         [i for i, _ in bad["train"]], [i for i, _ in bad["test"]])


def extract_for_config(config: FeaturesRun, *, force: bool = False,
                       shard: tuple[int, int] | None = None,
                       progress: bool = True) -> ExtractionReport:
    """Extract the features a configuration asks for (backbones and every ensemble's TTA).

    Holds the workspace's features lock (one per shard) for the whole run, so that a second
    run on the same workspace is refused in one line instead of losing its partial files to
    the first one's cleanup.
    """
    name = ".harness-features.lock" if shard is None else (
        f".harness-features-shard-{shard[0]}of{shard[1]}.lock")
    what = "harness features" + ("" if shard is None else f" --shard {shard[0]}/{shard[1]}")
    with workspace_lock(config.workspace.root / name, what):
        return _extract_for_config(config, force=force, shard=shard, progress=progress)


def _extract_for_config(config: FeaturesRun, *, force: bool, shard: tuple[int, int] | None,
                        progress: bool) -> ExtractionReport:
    train = list_train_images(config.spec, config.data_dir)
    test = list_test_images(config.spec, config.data_dir)
    requests = config.feature_sets()
    weights = {b: resolve_weights(b, config.features, config.spec)
               for b in dict.fromkeys(b for b, _ in requests)}
    return extract_features(
        train, test, requests, weights, config.workspace.features_dir,
        batch_size=config.features.batch_size, threads=config.features.threads,
        precision=config.features.precision, force=force, shard=shard, progress=progress,
        engine=config.features.engine, cluster=config.features.cluster)
