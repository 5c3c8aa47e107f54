"""OpenVINO inference of the harness's own Keras model, converted once and cached.

The source of truth is the forward pass features.runtime.Forward builds (the backbone's own
`preprocess_input` inside, BatchNormalization folded into the convolutions): its
`tf.function` is handed to `openvino.convert_model` in memory (no SavedModel round trip)
with a dynamic batch dimension, saved as OpenVINO IR (`.xml` + `.bin`, float32 weights)
and compiled for the CPU. A rerun reads the IR from the cache instead of building the Keras
model and converting it again.

Precision int8 (opt-in) quantises that float32 model with NNCF's post-training
quantisation (`nncf.quantize`, its defaults), calibrated on a fixed seeded subset of the
competition's training images decoded and resized by the extraction's own pipeline
(features.calibration.Calibration), and caches the quantised IR beside the float32 one, keyed
by the calibration set too.

Measured on a 2-core AMD EPYC with AVX-512 (features within 1e-7 relative of TensorFlow's
in float32): see bench/README.md and bench/extract.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from base.atomic import atomic_path, remove_stale_temps, writer_tag
from base.errors import HarnessError, first_line
from base.workspace import user_cache_dir
from features.fingerprint import installed_version
from features.fold import GRAPH_VERSION

logger = logging.getLogger(__name__)

# Part of the cache key: bump when the way a model is converted changes.
CONVERTER_VERSION = "tf.function of runtime.Forward -> openvino.convert_model, dynamic batch (v1)"
# OpenVINO's inference precision per harness precision. The hint must be explicit: on a
# CPU with AVX512_BF16 or AMX, OpenVINO's default is bfloat16 (measured: float32 features
# then differ by 5e-3 relative instead of 1e-7).
# int8: the quantised convolutions run in int8 whatever the hint; the ops NNCF leaves
# unquantised stay in float32.
INFERENCE_PRECISION = {"float32": "f32", "mixed": "f32", "bfloat16": "bf16", "int8": "f32"}
# The harness's name of each element type OpenVINO reports it computes in.
PRECISION_NAMES = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}
# Element types of int8 kernels in the runtime model's `runtimePrecision` rt_info, and the
# operations whose kernels are reported (the compute: constants and reshapes are "i8" too).
INT8_TYPES = ("u8", "i8")
INT8_REPORTED = ("Convolution", "FullyConnected", "MatMul")
# Part of the int8 cache key and of int8 feature files' fingerprint: bump when the way a
# model is quantised changes.
QUANTIZER_VERSION = ("nncf.quantize defaults (performance preset: symmetric; fast bias "
                     "correction), one image a sample (v1)")


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
        "openvino": installed_version("openvino"),
        "tensorflow": installed_version("tensorflow"),
        "keras": installed_version("keras"),
    }


def cache_paths(cache_dir: Path, spec: Any, weights_identity: str,
                calibration: str | None = None) -> tuple[Path, Path]:
    """The (.xml, .bin) pair of a converted model in `cache_dir`; with `calibration` (a
    Calibration's identity), of that model quantised to int8 on those images."""
    parts = cache_key_parts(spec, weights_identity)
    label = ""
    if calibration is not None:
        parts.update(ir_precision="int8", quantizer=QUANTIZER_VERSION,
                     nncf=installed_version("nncf"), calibration=calibration)
        label = "int8-"
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()[:20]
    stem = Path(cache_dir) / f"{spec.name}-{spec.input_size}-{label}{key}"
    return stem.with_suffix(".xml"), stem.with_suffix(".bin")


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


@functools.cache
def computed_precision(precision: str) -> str:
    """The precision OpenVINO's CPU plugin computes on this machine for a harness precision.

    The plugin drops an INFERENCE_PRECISION_HINT this CPU cannot honour and computes float32
    (its source: bf16 only where oneDNN may use AVX-512 or AVX2-VNNI-2; natively fast with
    AVX512_BF16 or AMX), saying nothing. So the answer is read back from a one-op model
    compiled with that hint (under a second), the way every real model is compiled; it
    follows ONEDNN_MAX_CPU_ISA and OV_CPU_MAX_ISA as the real compile does. int8 is
    "int8": its kernels exist on every x86-64 CPU (which ones ran: `int8_kernels`).
    """
    if precision == "int8":
        return "int8"
    import openvino as ov
    import openvino.opset13 as ops

    hint = INFERENCE_PRECISION[precision]
    x = ops.parameter([1, 8], ov.Type.f32)
    probe = ov.Model([ops.matmul(x, ops.constant(np.ones((8, 2), np.float32)), False, False)],
                     [x])
    compiled = ov.Core().compile_model(probe, "CPU", {"INFERENCE_PRECISION_HINT": hint})
    return _precision_name(compiled)


def _precision_name(compiled: Any) -> str:
    """The harness's name of the precision a compiled model computes in (read back)."""
    kind = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    return PRECISION_NAMES.get(kind, kind)


def int8_kernels(compiled: Any) -> Counter:
    """How many convolutions (and matrix products) of a compiled model run each int8
    kernel, by OpenVINO's `primitiveType` name (e.g. 'jit_avx2_I8', 'brgconv_avx512_amx_I8'):
    which instruction set computes them, which changes the numbers and not only the speed
    (without VNNI, AVX2's u8 x s8 products saturate at 16 bits)."""
    kernels: Counter = Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if (info["layerType"].astype(str) in INT8_REPORTED
                and info["runtimePrecision"].astype(str) in INT8_TYPES):
            kernels[info["primitiveType"].astype(str)] += 1
    return kernels


def load_or_convert(spec: Any, weights: Any, runtime: Any, cache_dir: Path) -> tuple[Any, float]:
    """The converted model of (spec, weights): read from the cache, or converted and cached.

    Returns:
        (openvino.Model, seconds spent building and converting now: 0.0 from the cache).
    """
    xml, binary = cache_paths(cache_dir, spec, weights.identity)
    model = _read_cached(xml, binary, spec, "converted")
    if model is not None:
        return model, 0.0
    started = time.perf_counter()
    model = convert(spec, weights, runtime)
    seconds = time.perf_counter() - started
    _save(model, xml, binary)
    logger.info("%s: converted to OpenVINO in %.1f s, cached as %s", spec.name, seconds, xml)
    return model, seconds


def load_or_quantize(spec: Any, weights: Any, runtime: Any, cache_dir: Path,
                     calibration: Any) -> tuple[Any, float, float]:
    """The int8 model of (spec, weights) calibrated on `calibration`: read from the cache, or
    quantised from the (cached or converted) float32 model and cached.

    Returns:
        (openvino.Model, seconds converting now, seconds quantising now); both 0.0 from the
        cache.
    """
    if calibration is None:
        raise HarnessError(f"{spec.name}: precision int8 needs calibration images "
                           "(features.calibration.Calibration)")
    xml, binary = cache_paths(cache_dir, spec, weights.identity, calibration.identity)
    model = _read_cached(xml, binary, spec, "int8")
    if model is not None:
        return model, 0.0, 0.0
    model, convert_seconds = load_or_convert(spec, weights, runtime, cache_dir)
    started = time.perf_counter()
    quantized = quantize(model, calibration, spec.input_size)
    seconds = time.perf_counter() - started
    _save(quantized, xml, binary)
    logger.info("%s: quantised to int8 on %s in %.1f s, cached as %s", spec.name,
                calibration.description, seconds, xml)
    return quantized, convert_seconds, seconds


def quantize(model: Any, calibration: Any, size: int) -> Any:
    """NNCF's post-training int8 quantisation of `model`, with its default settings, on the
    calibration images at side `size` (one image a sample: NNCF's statistics assume it)."""
    import nncf
    from nncf.common.logging.logger import nncf_logger

    # NNCF prints INFO lines to stdout through its own handler: route them into the
    # harness's log instead (warnings and worse only); its progress bars (rich, on stdout)
    # go to stderr with the harness's own, so stdout keeps only the harness's output.
    nncf_logger.handlers.clear()
    nncf_logger.propagate = True
    nncf_logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return nncf.quantize(model, nncf.Dataset(calibration.samples(size)),
                                 subset_size=calibration.count)
    except Exception as exc:  # e.g. no calibration image could be decoded
        raise HarnessError(f"int8 quantisation on {calibration.description} failed "
                           f"({first_line(exc)}); check those images or use another "
                           "--precision") from exc


def _read_cached(xml: Path, binary: Path, spec: Any, what: str) -> Any:
    """The cached model at `xml`, or None when absent or damaged (then removed)."""
    import openvino as ov

    remove_stale_temps(xml.parent)
    if not xml.is_file():
        return None
    try:
        model = ov.Core().read_model(xml)
    except Exception as exc:  # noqa: BLE001 - a damaged cache entry is rebuilt, never fatal
        logger.warning("%s: cached OpenVINO model %s cannot be read (%s); %s again",
                       spec.name, xml, first_line(exc),
                       "quantising" if what == "int8" else "converting")
        xml.unlink(missing_ok=True)
        binary.unlink(missing_ok=True)
        return None
    logger.info("%s: %s OpenVINO model read from the cache (%s)", spec.name, what, xml)
    return model


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
                 cache_dir: Path | None = None, calibration: Any = None) -> None:
        import openvino as ov

        self.spec = spec
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.quantize_seconds = 0.0
        if runtime.precision == "int8":
            model, self.convert_seconds, self.quantize_seconds = load_or_quantize(
                spec, weights, runtime, self.cache_dir, calibration)
        else:
            model, self.convert_seconds = load_or_convert(spec, weights, runtime,
                                                          self.cache_dir)
        self.config = compile_config(runtime)
        self.compiled = ov.Core().compile_model(model, "CPU", self.config)
        # What really computes, read back from OpenVINO (features.engines.build_forward
        # compares it with the plan): an int8 model with no int8 kernel computed float32.
        self.kernels = int8_kernels(self.compiled) if runtime.precision == "int8" else Counter()
        self.precision = "int8" if self.kernels else _precision_name(self.compiled)
        self._request = self.compiled.create_infer_request()
        logger.info("%s: OpenVINO %s on %s, %s; computes %s%s", spec.name,
                    installed_version("openvino"),
                    self.compiled.get_property("EXECUTION_DEVICES"),
                    ", ".join(f"{k} {v}" for k, v in self.config.items()), self.precision,
                    "".join(f", {name} x{count}" for name, count in sorted(self.kernels.items())))
        # The first inference creates the kernels for this shape (not to be timed as compute).
        size = spec.input_size
        self(np.zeros((1, size, size, 3), np.float32))

    def __call__(self, images: Any) -> np.ndarray:
        """GAP features (N, D) float32 of RGB 0-255 float images (N, S, S, 3)."""
        batch = np.ascontiguousarray(images, dtype=np.float32)
        # A copy: the request's output buffer is reused by the next call (flip TTA keeps both).
        return np.array(self._request.infer({0: batch})[0], dtype=np.float32, copy=True)
