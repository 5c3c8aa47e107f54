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
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from base.atomic import remove_stale_temps
from base.errors import HarnessError
from base.lock import workspace_lock
from base.logs import quiet_tensorflow_import
from competition.images import ImageList, list_test_images, list_train_images
from features import parts as part_store
from features.batch import batch_features, decoded_batches, view_sizes
from features.budget import TimeBudget
from features.calibration import calibration_set
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
from features.plan import Job, file_attrs, plan, validate_requests, why_rebuild
from features.settings import FeaturesRun
from features.shards import shard_images
from features.store import read_bad
from features.weights import WeightsChoice, resolve_weights

if TYPE_CHECKING:  # imported where engine "ray" needs it
    from features.ray_engine import RaySession


logger = logging.getLogger(__name__)


FLOAT16_MAX = float(np.finfo(np.float16).max)  # what a float16 map value can hold

__all__ = ["ExtractionReport", "FeatureResult", "extract_features", "extract_for_config"]


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


def _run_split(split: str, images: ImageList, jobs: list[Job], forwards: dict, runtime: Any,
               progress: bool, budget: TimeBudget | None = None) -> None:
    from tqdm.auto import tqdm

    need = np.zeros(len(images), dtype=bool)
    for job in jobs:
        need |= ~job.done[split]
    rows = np.flatnonzero(need)
    if not len(rows):
        return
    sizes = view_sizes(jobs)
    names = ", ".join(dict.fromkeys(j.spec.name for j in jobs))
    dataset = decoded_batches(images, rows, sizes, runtime.batch_size, runtime.map_threads)
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
                if job.spec.storage_dtype == "float16" and np.abs(values).max() > FLOAT16_MAX:
                    raise HarnessError(f"{job.spec.name}: maps reach {np.abs(values).max():.3g}"
                                       f", beyond float16's {FLOAT16_MAX:.0f}: they cannot "
                                       "be stored; cut the backbone elsewhere")
                job.seconds += seconds
                job.computed += len(batch_rows)
                part_store.write_part(job.folder, split, batch_rows, ids, values, reasons,
                                      job.spec.storage_dtype)
                job.done[split][batch_rows] = True
            bar.update(len(batch_rows))
            if budget is not None:
                budget.batch_done(len(batch_rows), {j.spec.name: j.seconds for j in jobs})


def _report_bad(job: Job, bad: dict) -> None:
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
                     cluster: str = "auto", time_limit: float | None = None) -> ExtractionReport:
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
        time_limit: Seconds the pass may take (None: no limit): after its first batches it
            stops when it would not fit, naming the backbones to drop (features.budget;
            the local engines only).

    Returns:
        An ExtractionReport; its summary line is also logged.

    Raises:
        HarnessError: unknown backbone or TTA, missing weights, bad shard, a precision the
            engine cannot compute (int8 off OpenVINO).
    """
    started = time.perf_counter()
    validate_requests(requests, weights, shard)
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
                        ray_session=ray_session, time_limit=time_limit)


def _extract(train: ImageList, test: ImageList, requests: Sequence[tuple[str, str]],
             weights: Mapping[str, WeightsChoice], features_dir: Path, started: float, *,
             batch_size: int, threads: int, precision: str, force: bool,
             shard: tuple[int, int] | None, progress: bool, engine: str,
             ray_session: RaySession | None, time_limit: float | None = None
             ) -> ExtractionReport:
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
    jobs = plan(train, test, requests, weights, features_dir, used_precision, shard,
                 used_engine)
    if engine not in INFERENCE_ENGINES and any(
            why_rebuild(j.path, j.fingerprint, j.parts, force, engine, log=False) for j in jobs):
        resolved = resolve_engine(engine, has_gpu())
        if resolved != used_engine:
            used_engine = resolved
            used_precision = computed_precision(precision, engine, used_engine, has_gpu)
            jobs = plan(train, test, requests, weights, features_dir, used_precision, shard,
                         used_engine)
        check_precision(used_precision, resolved)  # auto on a GPU is TensorFlow: no int8
    note = precision_note(precision, used_precision, used_engine)
    if note:
        logger.warning(note)
    todo, results = [], []
    build_seconds = convert_seconds = quantize_seconds = 0.0
    kernels: Counter = Counter()
    for job in jobs:
        job.reason = why_rebuild(job.path, job.fingerprint, job.parts, force, engine)
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
        budget = None
        if time_limit is not None:
            pending = sum(int(np.sum(~np.logical_and.reduce([job.done[split] for job in todo])))
                          for split in ("train", "test"))
            budget = TimeBudget(time_limit, pending, started=started)
        for split, images in (("train", sub_train), ("test", sub_test)):
            _run_split(split, images, todo, forwards, runtime, progress, budget)
    for job in todo:
        # Where it ran is an attribute only: a Ray-made file is the same file as a local one.
        attrs = {**file_attrs(job, train, used_precision),
                 "executor": "ray" if engine == "ray" else "local"}
        bad = part_store.assemble(job.folder, job.path, sub_train, sub_test,
                                  job.spec.stored_dim(job.tta), attrs)
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


def _reused_result(job: Job, images: int) -> FeatureResult:
    bad = read_bad(job.path)
    return FeatureResult(job.spec.name, job.tta, job.path, True, "up to date", images,
                         [i for i, _ in bad["train"]], [i for i, _ in bad["test"]])


def extract_for_config(config: FeaturesRun, *, force: bool = False,
                       shard: tuple[int, int] | None = None, progress: bool = True,
                       time_limit: float | None = None) -> ExtractionReport:
    """Extract the features a configuration asks for (backbones and every ensemble's TTA).

    Holds the workspace's features lock (one per shard) for the whole run, so that a second
    run on the same workspace is refused in one line instead of losing its partial files to
    the first one's cleanup.
    """
    name = ".harness-features.lock" if shard is None else (
        f".harness-features-shard-{shard[0]}of{shard[1]}.lock")
    what = "harness features" + ("" if shard is None else f" --shard {shard[0]}/{shard[1]}")
    with workspace_lock(config.workspace.root / name, what):
        return _extract_for_config(config, force=force, shard=shard, progress=progress,
                                   time_limit=time_limit)


def _extract_for_config(config: FeaturesRun, *, force: bool, shard: tuple[int, int] | None,
                        progress: bool, time_limit: float | None) -> ExtractionReport:
    train = list_train_images(config.spec, config.data_dir)
    test = list_test_images(config.spec, config.data_dir)
    requests = config.feature_sets()
    weights = {b: resolve_weights(b, config.features, config.spec)
               for b in dict.fromkeys(b for b, _ in requests)}
    return extract_features(
        train, test, requests, weights, config.workspace.features_dir,
        batch_size=config.features.batch_size, threads=config.features.threads,
        precision=config.features.precision, force=force, shard=shard, progress=progress,
        engine=config.features.engine, cluster=config.features.cluster, time_limit=time_limit)
