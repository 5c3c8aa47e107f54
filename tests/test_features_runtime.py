"""The forward pass the extractor runs: traced once at build, never per batch, same numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from features.backbones import get_backbone
from features.runtime import Forward, configure
from tests.shared_assets import shared_dir

ROOT = Path(__file__).resolve().parents[1]


def test_forward_is_traced_at_build_and_never_retraced_per_batch():
    spec = get_backbone("mobilenet_025")
    forward = Forward(spec, None, configure(batch_size=4))
    # Tracing happened in the constructor (build time), not on the first real batch.
    assert forward._step.experimental_get_tracing_count() == 1
    rng = np.random.default_rng(0)
    size = spec.input_size
    batches = [rng.uniform(0, 255, (k, size, size, 3)).astype("float32") for k in (4, 3, 1)]
    outputs = [forward(b).numpy() for b in batches]  # full batch, last partial batch, one image
    assert forward._step.experimental_get_tracing_count() == 1
    assert [o.shape for o in outputs] == [(4, 256), (3, 256), (1, 256)]
    # The compiled path computes what the plain Keras model computes on the same images.
    expected = np.asarray(forward.model(spec.preprocess(batches[1]), training=False))
    scale = float(np.abs(expected).max())
    assert scale > 0
    np.testing.assert_allclose(outputs[1], expected, rtol=1e-3, atol=1e-3 * scale)


GPU_PATHS_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    import numpy as np
    import tensorflow as tf

    # Two logical CPUs stand in for two GPUs: TensorFlow must be told before it starts.
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from features.backbones import get_backbone
    from features.runtime import Forward, Runtime, configure

    weights = None if sys.argv[2] == "none" else sys.argv[2]
    spec = get_backbone("mobilenet_025")
    size = spec.input_size
    rng = np.random.default_rng(0)
    # 5 rows over 2 replicas: uneven, and rows that differ, so their order is visible.
    batch = rng.uniform(0, 255, (5, size, size, 3)).astype("float32")
    single = Forward(spec, weights, configure(batch_size=5))
    mirrored = Forward(spec, weights, Runtime(
        tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), 2, 0, "float32", 5, 0))
    half = Forward(spec, weights, Runtime(tf.distribute.get_strategy(), 1, 0, "mixed", 5, 0))
    print(json.dumps({
        "single": single(batch).numpy().tolist(),
        "mirrored": mirrored(batch).numpy().tolist(),
        "one_row": mirrored(batch[:1]).numpy().tolist(),
        "mixed": half(batch).numpy().tolist(),
        "mixed_dtype": half(batch).dtype.name,
        "mixed_policy": half.model.dtype_policy.name,
    }))
""")


def run_gpu_paths(tmp_path: Path, weights: str) -> dict:
    script = tmp_path / "gpu_paths.py"
    script.write_text(GPU_PATHS_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(ROOT), weights],
                          capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return {k: np.asarray(v) if isinstance(v, list) else v for k, v in out.items()}


@pytest.mark.slow
def test_mirrored_replicas_keep_row_order(tmp_path):
    """The multi-GPU path, run on two logical CPUs (no GPU here): MirroredStrategy cuts a
    batch into per-replica slices and must gather them back in row order, also for a
    batch smaller than the replica count."""
    out = run_gpu_paths(tmp_path, "none")
    single = out["single"]
    scale = float(np.abs(single).max())
    assert scale > 0 and single.shape == (5, 256)
    assert float(np.abs(single[0] - single[1]).max()) > 1e-3 * scale  # rows differ
    np.testing.assert_allclose(out["mirrored"], single, rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(out["one_row"], single[:1], rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.slow
@pytest.mark.real_weights
def test_mixed_float16_is_close_to_float32(tmp_path):
    """--precision mixed (float16 compute, meant for GPUs) forced on a CPU: float32 features
    out, close to float32's. Real ImageNet weights, because random-init MobileNet features
    (~1e-16) underflow float16 and would test nothing."""
    weights = shared_dir() / "weights" / "mobilenet_2_5_224_tf_no_top.h5"
    out = run_gpu_paths(tmp_path, str(weights))
    single = out["single"]
    scale = float(np.abs(single).max())
    assert scale > 1e-3
    assert out["mixed_dtype"] == "float32" and out["mixed_policy"] == "mixed_float16"
    assert not np.array_equal(out["mixed"], single)
    np.testing.assert_allclose(out["mixed"], single, rtol=5e-2, atol=2e-2 * scale)
    np.testing.assert_allclose(out["mirrored"], single, rtol=1e-4, atol=1e-4 * scale)
