"""The extraction stage's engine registry: what runs a backbone's forward pass.

The Keras model of each backbone (its own preprocessing inside, BatchNormalization folded;
see features.runtime and features.fold) is the source of truth. An inference engine runs
it: TensorFlow directly, or OpenVINO on the same graph converted once and cached (see
features.openvino_engine). `ray` is an executor, not an inference engine: it spreads the
same decode + forward work over an actor pool (features.ray_engine), and
each actor runs one of the inference engines.

Every forward has `.spec` (the BackboneSpec) and `__call__(images) -> np.ndarray`: GAP
features (N, D) float32 of RGB 0-255 float images (N, S, S, 3). Decoding, TTA, part files,
shards and bad-image handling are shared (features.batch, features.extract) and never see which engine
ran. Only the engine's name is recorded: in the fingerprint and as the file's `engine`
attribute.
"""

from __future__ import annotations

import importlib.util
import logging
import platform
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from base.errors import HarnessError
from features.vocabulary import ENGINE_CHOICES, ENGINE_NAMES, check_precision

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class EngineSpec:
    """One engine.

    Attributes:
        name: The registry key (`--engine NAME`, `[features] engine`).
        description: One line for `--help` and the README.
        build: `build(spec, weights_choice, runtime, cache_dir, calibration) -> forward`, or
            None for an executor (it runs an inference engine's forward elsewhere).
        module: Where the engine lives (imported only when it is used).
    """

    name: str
    description: str
    build: Callable | None
    module: str


def _build_tensorflow(spec: Any, weights: Any, runtime: Any, cache_dir: Path | None,
                      calibration: Any) -> Any:
    check_precision(runtime.precision, "tensorflow")
    return TensorFlowForward(spec, weights.keras_arg, runtime)


def _build_openvino(spec: Any, weights: Any, runtime: Any, cache_dir: Path | None,
                    calibration: Any) -> Any:
    from features.openvino_engine import OpenVINOForward

    return OpenVINOForward(spec, weights, runtime, cache_dir=cache_dir, calibration=calibration)


ENGINES: dict[str, EngineSpec] = {
    engine.name: engine
    for engine in (
        EngineSpec("tensorflow", "TensorFlow runs the Keras model (GPUs; the reference)",
                   _build_tensorflow, "features.runtime"),
        EngineSpec("openvino", "OpenVINO runs the Keras model converted once and cached "
                               "(the CPU default)", _build_openvino,
                   "features.openvino_engine"),
        EngineSpec("ray", "Ray Data spreads decode + forward over an actor pool "
                          "(several machines or GPUs)", None, "features.ray_engine"),
    )
}
# Engines that compute features themselves; the others (ray) run one of these.
INFERENCE_ENGINES = tuple(name for name, engine in ENGINES.items() if engine.build is not None)
assert tuple(ENGINES) == ENGINE_NAMES, "features.vocabulary.ENGINE_NAMES names every engine"


def openvino_installed() -> bool:
    """Whether the `openvino` package can be imported (without importing it)."""
    return importlib.util.find_spec("openvino") is not None


def check_engine(choice: str) -> str:
    """`choice` if it is a known engine; a one-line HarnessError naming the known ones if not."""
    if choice not in ENGINE_CHOICES:
        raise HarnessError(f"engine {choice!r} is not one of {', '.join(ENGINE_CHOICES)} "
                           "(--engine or [features] engine)")
    if choice == "openvino" and not openvino_installed():
        raise HarnessError("engine 'openvino' needs the openvino package: "
                           "pip install openvino (or --engine tensorflow)")
    return choice


def computed_precision(precision: str, choice: str, engine: str,
                       has_gpu: Callable[[], bool]) -> str:
    """The precision `engine` really computes on this machine when asked for `precision`.

    What a feature file records and fingerprints (so a float32 result is never labelled,
    or cached, as something else, and is reused by float32 runs):
    - "mixed" is float16 compute under TensorFlow on a GPU; anywhere else float32.
    - "bfloat16" under OpenVINO is what its CPU plugin reports for the hint on this CPU
      (features.openvino_engine.computed_precision: float32 without AVX-512 or AVX2-VNNI-2);
      TensorFlow computes bfloat16 on every CPU (emulated, slowly, without AVX512_BF16).
    - float32 and int8 are computed as asked (int8 runs on OpenVINO only: check_precision).

    Args:
        choice: The engine asked for ("auto", "ray", or an inference engine).
        engine: The inference engine that will run (resolved, or preferred while planning).
        has_gpu: Asked only for "mixed" (it imports TensorFlow).
    """
    if precision == "mixed":
        return "mixed" if choice != "openvino" and has_gpu() else "float32"
    if precision == "bfloat16" and engine == "openvino":
        from features.openvino_engine import computed_precision as openvino_precision

        return openvino_precision(precision)
    return precision


def precision_note(asked: str, computed: str, engine: str) -> str:
    """The warning for a run that computes `computed` where `asked` was asked for ("" when
    they agree): what this machine lacks, what the files say, and what to set instead."""
    if asked == computed:
        return ""
    if asked == "mixed":
        why, instead = "is float16 compute under TensorFlow on a GPU, and none is used", ""
    else:
        why = (f"is not computed by {engine} on this CPU (OpenVINO computes bfloat16 only with "
               "AVX-512 or AVX2-VNNI-2, and fast only with AVX512_BF16 or AMX)")
        instead = (', or engine = "tensorflow" (--engine tensorflow), which emulates '
                   "bfloat16 here, slower than float32")
    return (f"precision {asked!r} {why}: computing {computed}, and the feature files say "
            f"{computed}; set precision = {computed!r} (--precision {computed}) to say so"
            f"{instead}")


def preferred_engine(choice: str) -> str:
    """The inference engine `choice` means before knowing whether a GPU is visible.

    Used to plan without importing TensorFlow: a cached file is reused or not without it.
    """
    if choice in INFERENCE_ENGINES:
        return choice
    return "openvino" if openvino_installed() else "tensorflow"


def resolve_engine(choice: str, has_gpu: bool) -> str:
    """The inference engine that runs the forward passes: "tensorflow" or "openvino".

    `auto` (and `ray`, whose actors run an inference engine) picks TensorFlow on a GPU and
    OpenVINO on a CPU when it is installed; an explicit engine is taken as given (OpenVINO
    runs on the CPU even where a GPU is visible).
    """
    check_engine(choice)
    if choice in INFERENCE_ENGINES:
        return choice
    return "tensorflow" if has_gpu or not openvino_installed() else "openvino"


def build_forward(spec: Any, weights: Any, runtime: Any, engine: str,
                  cache_dir: Path | None = None, calibration: Any = None) -> Any:
    """A backbone's forward pass on `engine` ("tensorflow" or "openvino", already resolved).

    Args:
        spec: The BackboneSpec.
        weights: Its WeightsChoice (the identity keys OpenVINO's converted-model cache).
        runtime: features.runtime.Runtime (threads, precision, batch size, strategy).
        engine: An inference engine name (see `resolve_engine`).
        cache_dir: Where converted models are cached (OpenVINO); None: the user cache.
        calibration: Precision int8 only: the images NNCF calibrates on
            (features.calibration.Calibration).

    Returns:
        A forward: `.spec`, `.convert_seconds` (0.0 unless a model was converted now),
        `.quantize_seconds` (0.0 unless a model was quantised to int8 now), `.precision`
        (what it computes, as the engine reports it), `.kernels` (int8: a Counter of the
        kernels that run its int8 operations) and `__call__(images) -> np.ndarray`
        float32 (N, D).

    Raises:
        HarnessError: the engine computes another precision than `runtime.precision`.
    """
    if engine not in INFERENCE_ENGINES:
        raise HarnessError(f"inference engine {engine!r} is not one of "
                           f"{', '.join(INFERENCE_ENGINES)}; resolve_engine() it first")
    forward = ENGINES[engine].build(spec, weights, runtime, cache_dir, calibration)
    # The plan (computed_precision) named what the files will say; what the engine reports
    # it computes must be that, or the files would lie. Reached only where the plan was
    # made on another machine (a Ray actor on a CPU unlike the driver's).
    if forward.precision != runtime.precision:
        raise HarnessError(f"{spec.name}: {engine} computes {forward.precision} on this "
                           f"machine ({platform.node()}), not the {runtime.precision} the run "
                           f"planned; set precision = {forward.precision!r} (--precision "
                           f"{forward.precision})")
    return forward


class TensorFlowForward:
    """features.runtime.Forward (a tf.function over the folded Keras model), numpy out."""

    engine = "tensorflow"
    convert_seconds = 0.0
    quantize_seconds = 0.0

    def __init__(self, spec: Any, weights: str | None, runtime: Any) -> None:
        from features.runtime import Forward

        self.spec = spec
        self._forward = Forward(spec, weights, runtime)
        # The Keras dtype policy is what TensorFlow computes (emulated where the CPU lacks it).
        self.precision = runtime.precision
        self.kernels: Counter = Counter()

    def __call__(self, images: Any) -> np.ndarray:
        """GAP features (N, D) float32 of RGB 0-255 float images (N, S, S, 3)."""
        return self._forward(images).numpy()
