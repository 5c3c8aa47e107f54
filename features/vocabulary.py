"""The features stage's vocabulary: TTA modes, precisions, engine names, cluster settings,
and the checks of them that a config needs. It imports nothing of the stage, so the
configuration (features.settings), the runtime and every engine can import it.
"""

from __future__ import annotations

from base.errors import HarnessError

# Test-time augmentation, averaged in feature space (features.batch.tta_features).
TTA_MODES = {
    "none": "one view of each image",
    "flip": "the image and its mirror image",
    "crops": "10-crop oversampling: 4 corners + centre, and their mirror images",
}
# Compute precision of the backbones (features.runtime).
PRECISIONS = {
    "float32": "full precision (the reference)",
    "mixed": "float16 compute on a GPU; float32 on a CPU",
    "bfloat16": "bfloat16 compute; fast only on CPUs with AVX512_BF16 or AMX",
    "int8": "int8 weights and activations, NNCF post-training quantisation calibrated on the "
            "competition's training images (OpenVINO engine only; features.openvino_engine)",
}

# The engines' registry keys (features.engines.ENGINES, which asserts it holds these).
ENGINE_NAMES = ("tensorflow", "openvino", "ray")
ENGINE_CHOICES = ("auto", *ENGINE_NAMES)  # what [features] engine and --engine accept
# Precisions that only some inference engines compute (a precision not named here runs on
# every engine). int8 is NNCF's post-training quantisation of the OpenVINO model; the Ray
# executor is not among them: its actors would each need the calibration images.
PRECISION_ENGINES = {"int8": ("openvino",)}


def check_precision(precision: str, engine: str) -> None:
    """A one-line HarnessError if `engine` (a choice, or an inference engine once resolved)
    cannot compute `precision`; `auto` passes here and is checked again once resolved."""
    allowed = PRECISION_ENGINES.get(precision)
    if allowed is None or engine in allowed or engine == "auto":
        return
    fix = " or ".join(f'engine = "{name}" (--engine {name})' for name in allowed)
    raise HarnessError(f"precision {precision!r} runs on {', '.join(allowed)} only, not engine "
                       f"{engine!r}: set {fix}, or another precision")


CLUSTER_HELP = ('[features] cluster (--cluster) is "auto", "local" or "HOST:PORT" (the head '
                'of a cluster this machine is part of, started with `ray start --head`)')
# Ray Data needs a driver with its own Ray worker; a Ray Client driver has none and fails
# mid-run with "'Worker' object has no attribute 'core_worker'" (measured on Ray 2.60; Ray's
# maintainers: "Ray client does not work with Ray Data", ray-project/ray#42739).
NO_RAY_CLIENT = ("Ray Data does not run over Ray Client (ray://): run `harness features` on a "
                 "machine of the cluster (its head, or one joined with `ray start --address`) "
                 "with cluster = \"HEAD_IP:6379\" (the head's `ray start --head --port`)")


def check_cluster(value: str) -> str:
    """`value` if it is a valid `cluster` setting, else a one-line HarnessError."""
    text = str(value).strip()
    if text in ("auto", "local"):
        return text
    if is_ray_client(text):
        raise HarnessError(f"cluster {value!r}: {NO_RAY_CLIENT}")
    host, _, port = text.rpartition(":")
    # Any "scheme://" would send ray.init to Ray Client ("http://HEAD:8265" is the
    # dashboard's, for `ray job submit`).
    if host and port.isdigit() and "://" not in text:
        return text
    raise HarnessError(f"cluster {value!r} is not valid: {CLUSTER_HELP}")


def is_ray_client(address: str) -> bool:
    return address.strip().lower().startswith("ray://")
