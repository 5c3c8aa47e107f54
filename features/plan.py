"""Planning an extraction: which files to compute, which to reuse, and why.

For each (backbone, TTA) request a `Job`: its fingerprint (every input that shapes the
features: images, weights, preprocessing, decoder, graph, precision, engine, and the shard
or the maps cut when there is one), its path, and the attributes its file will carry.
`why_rebuild` says why a file cannot be reused ("" when it can). Nothing here runs a model.
"""

from __future__ import annotations

import json
import logging
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from base.errors import HarnessError
from competition.images import ImageList
from features import parts as part_store
from features.backbones import BackboneSpec, get_backbone, map_views
from features.batch import RESIZE, crop_size
from features.calibration import calibration_set
from features.decode import DECODER_VERSION
from features.engines import INFERENCE_ENGINES, preferred_engine
from features.fingerprint import (
    describe_changes,
    fingerprint_of,
    ids_digest,
    image_list_digest,
    installed_version,
)
from features.fold import GRAPH_VERSION
from features.settings import TTA_MODES
from features.shards import shard_images, shard_path
from features.store import feature_path, read_attrs
from features.weights import WeightsChoice

LIBRARIES = ("tensorflow", "keras", "h5py", "numpy", "pillow")

logger = logging.getLogger(__name__)


@dataclass
class Job:
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


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape the features (no imports)."""
    return {"python": platform.python_version(),
            **{name: installed_version(name) for name in LIBRARIES}}


def quantization_part(train: ImageList) -> str:
    """The "quantization" fingerprint part of int8 files: everything the quantised model
    depends on besides the backbone (the recipe, the calibration images of the *whole*
    training list, so a shard notices a changed calibration image in another shard, and the
    nncf and OpenVINO versions that quantise and run it)."""
    return json.dumps({"calibration": calibration_set(train).identity,
                       **{name: installed_version(name) for name in ("nncf", "openvino")}},
                      sort_keys=True)


def fingerprint_parts(spec: BackboneSpec, tta: str, weights: WeightsChoice, precision: str,
               images: dict, engine: str, quantization: str | None = None) -> dict:
    """Fingerprint parts of one feature file; `images` holds the train and test digests,
    `quantization` the int8 part (`quantization_part`)."""
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


def why_rebuild(path: Path, fingerprint: str, parts: dict, force: bool,
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


def validate_requests(requests: Sequence[tuple[str, str]], weights: Mapping[str, WeightsChoice],
              shard: tuple[int, int] | None) -> None:
    for backbone, tta in requests:
        get_backbone(backbone)
        if tta not in TTA_MODES:
            raise HarnessError(f"tta {tta!r} for {backbone} is not one of {', '.join(TTA_MODES)}")
        if get_backbone(backbone).maps_of:
            try:
                map_views(tta)
            except HarnessError as exc:
                raise HarnessError(f"{backbone}: {exc}; set tta = 'none' or 'flip' for "
                                   "ensembles of _maps backbones") from None
        if backbone not in weights:
            raise HarnessError(f"no weights chosen for {backbone}; resolve_weights() it first")
        if get_backbone(backbone).maps_of and weights[backbone].keras_arg is None:
            # A random-init network's activations are ~1e-16: float16 stores them as 0.
            raise HarnessError(f"{backbone}: maps are for fine-tuning pretrained weights, and "
                               "with weights none they would be stored as zeros (float16); "
                               "give weights (\"imagenet\", a file, or weights_dir)")
    if shard is not None:
        i, n = shard
        if not (isinstance(i, int) and isinstance(n, int) and 1 <= i <= n):
            raise HarnessError(f"shard {i}/{n}: need 1 <= i <= n, e.g. --shard 1/4 ... 4/4")


def plan(train: ImageList, test: ImageList, requests: Sequence[tuple[str, str]],
          weights: Mapping[str, WeightsChoice], features_dir: Path, precision: str,
          shard: tuple[int, int] | None, engine: str | None = None) -> list[Job]:
    engine = engine or preferred_engine("auto")
    jobs = []
    # Digested once (a stat per image), not once per backbone and TTA mode.
    full_images = {"train": image_list_digest(train), "test": image_list_digest(test)}
    quantization = quantization_part(train) if precision == "int8" else None
    if shard is not None:
        sub_train, sub_test = shard_images(train, shard), shard_images(test, shard)
        shard_images_digest = {"train": image_list_digest(sub_train),
                               "test": image_list_digest(sub_test)}
    for backbone, tta in dict.fromkeys(requests):
        spec = get_backbone(backbone)
        full_parts = fingerprint_parts(spec, tta, weights[backbone], precision, full_images, engine,
                                quantization)
        full_fp = fingerprint_of(full_parts)
        path = feature_path(features_dir, backbone, tta)
        extra: dict[str, Any] = {"shard": ""}
        parts, fp = full_parts, full_fp
        if shard is not None:
            parts = dict(fingerprint_parts(spec, tta, weights[backbone], precision,
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
        jobs.append(Job(spec, tta, weights[backbone], path, parts, fp, extra))
    return jobs


def file_attrs(job: Job, train: ImageList, precision: str) -> dict:
    attrs = {
        "backbone": job.spec.name,
        "input_size": job.spec.input_size,
        "feature_dim": job.spec.stored_dim(job.tta),
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
        # The model's time per image in the run that computed the rows (0: none computed):
        # what the finetune head's `from = "images"` estimate scales.
        "seconds_per_image": round(job.seconds / job.computed, 6) if job.computed else 0.0,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    attrs.update({f"{k}_version": v for k, v in library_versions().items()})
    attrs.update(job.extra_attrs)
    return attrs
