"""The forward pass the extractor runs: traced once at build, never per batch, same numbers."""

from __future__ import annotations

import numpy as np

from features.backbones import get_backbone
from features.runtime import Forward, configure


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
