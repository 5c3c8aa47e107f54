"""OpenVINO inference of the harness's own Keras model, converted once and cached.

The source of truth is the forward pass features.runtime.Forward builds (the backbone's own
`preprocess_input` inside, BatchNormalization folded into the convolutions): its
`tf.function` is handed to `openvino.convert_model` in memory (no SavedModel round trip)
with a dynamic batch dimension, saved as OpenVINO IR (`.xml` + `.bin`, float32 weights)
and compiled for the CPU. A rerun reads the IR from the cache instead of building the Keras
model and converting it again.

Measured on a 2-core AMD EPYC with AVX-512 (features within 1e-7 relative of TensorFlow's
in float32): see README "Engines" and bench/extract.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from base.atomic import atomic_path, remove_stale_temps, writer_tag
from base.workspace import user_cache_dir
from features.fold import GRAPH_VERSION

logger = logging.getLogger(__name__)

# Part of the cache key: bump when the way a model is converted changes.
CONVERTER_VERSION = "tf.function of runtime.Forward -> openvino.convert_model, dynamic batch (v1)"
# OpenVINO's inference precision per harness precision. The hint must be explicit: on a
# CPU with AVX512_BF16 or AMX, OpenVINO's default is bfloat16 (measured: float32 features
# then differ by 5e-3 relative instead of 1e-7).
INFERENCE_PRECISION = {"float32": "f32", "mixed": "f32", "bfloat16": "bf16"}


def openvino_version() -> str:
    """The installed OpenVINO version (no import)."""
    try:
        return metadata.version("openvino")
    except metadata.PackageNotFoundError:
        return "absent"


def default_cache_dir() -> Path:
    """`$HARNESS_CACHE_DIR/openvino`, else `$XDG_CACHE_HOME` or `~/.cache`, under
    `kaggle-image-harness/openvino` (shared by every competition: same backbone and weights,
    same converted model)."""
    return user_cache_dir() / "openvino"


def cache_key_parts(spec: Any, weights_identity: str) -> dict:
    """What a converted model depends on (its cache key is the sha256 of these)."""
    return {
        "backbone": spec.name,
        "input_size": spec.input_size,
        "weights": weights_identity,
        "preprocessing": spec.preprocess_name,
        "graph": GRAPH_VERSION,
        "ir_precision": "f32",
        "batch": "dynamic",
        "converter": CONVERTER_VERSION,
        "openvino": openvino_version(),
        "tensorflow": _version("tensorflow"),
        "keras": _version("keras"),
    }


def cache_paths(cache_dir: Path, spec: Any, weights_identity: str) -> tuple[Path, Path]:
    """The (.xml, .bin) pair of a converted model in `cache_dir`."""
    parts = cache_key_parts(spec, weights_identity)
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()[:20]
    stem = Path(cache_dir) / f"{spec.name}-{spec.input_size}-{key}"
    return stem.with_suffix(".xml"), stem.with_suffix(".bin")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def compile_config(runtime: Any) -> dict:
    """OpenVINO CPU properties for a harness runtime (threads, precision).

    LATENCY hint, one stream: measured on 2 cores, the THROUGHPUT hint with 2 streams (each
    half a batch) ran at the same img/s, so the simpler one is used.
    """
    config = {"PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_PRECISION_HINT": INFERENCE_PRECISION[runtime.precision]}
    if runtime.map_threads > 0:
        config["INFERENCE_NUM_THREADS"] = runtime.map_threads
    return config


def load_or_convert(spec: Any, weights: Any, runtime: Any, cache_dir: Path) -> tuple[Any, float]:
    """The converted model of (spec, weights): read from the cache, or converted and cached.

    Returns:
        (openvino.Model, seconds spent building and converting now: 0.0 from the cache).
    """
    import openvino as ov

    xml, binary = cache_paths(cache_dir, spec, weights.identity)
    remove_stale_temps(xml.parent)
    core = ov.Core()
    if xml.is_file():
        try:
            model = core.read_model(xml)
            logger.info("%s: converted OpenVINO model read from the cache (%s)", spec.name, xml)
            return model, 0.0
        except Exception as exc:  # noqa: BLE001 - a damaged cache entry is rebuilt, never fatal
            logger.warning("%s: cached OpenVINO model %s cannot be read (%s); converting again",
                           spec.name, xml, str(exc).strip().splitlines()[0][:160])
            xml.unlink(missing_ok=True)
            binary.unlink(missing_ok=True)
    started = time.perf_counter()
    model = convert(spec, weights, runtime)
    seconds = time.perf_counter() - started
    _save(model, xml, binary)
    logger.info("%s: converted to OpenVINO in %.1f s, cached as %s", spec.name, seconds, xml)
    return model, seconds


def convert(spec: Any, weights: Any, runtime: Any) -> Any:
    """Build the harness's TensorFlow forward pass (float32) and convert it in memory."""
    import openvino as ov

    from features.runtime import Forward

    # The IR keeps float32 weights whatever the run's precision: bfloat16 is a compile-time
    # hint (INFERENCE_PRECISION_HINT), so one cached model serves both precisions.
    tf_forward = Forward(spec, weights.keras_arg,
                         dataclasses.replace(runtime, precision="float32"))
    size = spec.input_size
    return ov.convert_model(tf_forward._step, input=[(-1, size, size, 3)])


def _save(model: Any, xml: Path, binary: Path) -> None:
    """Write the IR pair atomically: the .bin first, the .xml (what readers look for) last."""
    import openvino as ov

    xml.parent.mkdir(parents=True, exist_ok=True)
    # Named like atomic_path's temp files, so a converter killed here leaves a folder that
    # the next load_or_convert removes (remove_stale_temps).
    with tempfile.TemporaryDirectory(dir=xml.parent, prefix=f".converting.{writer_tag()}.",
                                     suffix=".tmp") as folder:
        staged = Path(folder) / "model.xml"
        ov.save_model(model, staged, compress_to_fp16=False)
        # OpenVINO finds the weights as the .bin beside the .xml with the same stem.
        for source, target in ((staged.with_suffix(".bin"), binary), (staged, xml)):
            with atomic_path(target) as tmp:
                shutil.move(source, tmp)


class OpenVINOForward:
    """A backbone's GAP features computed by OpenVINO on the CPU (numpy in, numpy out)."""

    engine = "openvino"

    def __init__(self, spec: Any, weights: Any, runtime: Any,
                 cache_dir: Path | None = None) -> None:
        import openvino as ov

        self.spec = spec
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        model, self.convert_seconds = load_or_convert(spec, weights, runtime, self.cache_dir)
        self.config = compile_config(runtime)
        self.compiled = ov.Core().compile_model(model, "CPU", self.config)
        self._request = self.compiled.create_infer_request()
        logger.info("%s: OpenVINO %s on %s, %s", spec.name, openvino_version(),
                    self.compiled.get_property("EXECUTION_DEVICES"),
                    ", ".join(f"{k} {v}" for k, v in self.config.items()))
        # The first inference creates the kernels for this shape (not to be timed as compute).
        size = spec.input_size
        self(np.zeros((1, size, size, 3), np.float32))

    def __call__(self, images: Any) -> np.ndarray:
        """GAP features (N, D) float32 of RGB 0-255 float images (N, S, S, 3)."""
        batch = np.ascontiguousarray(images, dtype=np.float32)
        # A copy: the request's output buffer is reused by the next call (flip TTA keeps both).
        return np.array(self._request.infer({0: batch})[0], dtype=np.float32, copy=True)
