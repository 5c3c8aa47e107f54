"""BatchNormalization folding: the folded model computes the same features, faster graph."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from features.backbones import BACKBONES
from features.fold import fold_batch_norm


def _randomize_batch_norms(model: keras.Model, seed: int = 0) -> int:
    """Give every BatchNormalization non-trivial statistics (random init has mean 0, var 1,
    gamma 1, beta 0, which would make a wrong fold look right)."""
    rng = np.random.default_rng(seed)
    count = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape)) if layer.scale else None
            layer.beta.assign(rng.normal(0, 0.2, layer.beta.shape)) if layer.center else None
            layer.moving_mean.assign(rng.normal(0, 0.2, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.3, 2.0, layer.moving_variance.shape))
            count += 1
    return count


def _batch_norms(model: keras.Model) -> int:
    return sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_folds_completely_and_computes_the_same(name):
    spec = BACKBONES[name]
    size = spec.min_input_size
    model = spec.build(None, input_size=size)
    batch_norms = _randomize_batch_norms(model)
    images = np.random.default_rng(1).uniform(0, 255, (2, size, size, 3)).astype("float32")
    inputs = spec.preprocess(images.copy())  # preprocess_input edits numpy arrays in place
    expected = np.asarray(model(inputs, training=False))

    folded, count = fold_batch_norm(model)
    got = np.asarray(folded(inputs, training=False))

    # Every BatchNormalization of these architectures follows a linear convolution; only
    # Xception's that feed residual Adds read twice stay (see _feeds_shared_add).
    kept = [layer for layer in folded.layers
            if isinstance(layer, keras.layers.BatchNormalization)]
    assert count + len(kept) == batch_norms
    assert (count > 0) == (name != "vgg16")
    assert bool(kept) == (name == "xception")
    for layer in kept:
        readers = [other for other in folded.layers for node in other._inbound_nodes
                   if any(t._keras_history[0] is layer for t in node.input_tensors)]
        assert [type(r).__name__ for r in readers] == ["Add"], layer.name
    assert got.shape == expected.shape == (2, spec.feature_dim)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    # The original is left as it was.
    assert _batch_norms(model) == batch_norms
    np.testing.assert_array_equal(np.asarray(model(inputs, training=False)), expected)


def test_only_exact_patterns_are_folded():
    inputs = keras.Input((8, 8, 3))
    # 1: Conv2D (no bias) -> BN: folded.
    a = keras.layers.BatchNormalization(name="bn_a")(
        keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv_a")(inputs))
    # 2: Conv2D with a ReLU inside -> BN: not foldable (the map is not affine).
    b = keras.layers.BatchNormalization(name="bn_b")(
        keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_b")(a))
    # 3: a convolution read by a BN and by another layer: folding would change the other.
    c_conv = keras.layers.Conv2D(4, 1, name="conv_c")(b)
    c = keras.layers.Add()([keras.layers.BatchNormalization(name="bn_c")(c_conv), c_conv])
    # 4: DepthwiseConv2D (multiplier 2, bias) -> BN: folded.
    d = keras.layers.BatchNormalization(name="bn_d")(
        keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw_d")(c))
    # 5: SeparableConv2D -> BN: folded.
    e = keras.layers.BatchNormalization(name="bn_e")(
        keras.layers.SeparableConv2D(5, 3, padding="same", name="sep_e")(d))
    # 6: BN after pooling (no convolution): kept.
    f = keras.layers.BatchNormalization(name="bn_f")(keras.layers.AveragePooling2D(2)(e))
    # 7: Conv2D -> BN -> an Add read by two layers: kept (TensorFlow's remapper bug).
    g_sum = keras.layers.Add()([keras.layers.BatchNormalization(name="bn_g")(
        keras.layers.Conv2D(5, 1, name="conv_g")(f)), f])
    g = keras.layers.Add()([keras.layers.ReLU()(g_sum), g_sum])
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(g))
    _randomize_batch_norms(model, seed=3)
    x = np.random.default_rng(4).normal(size=(3, 8, 8, 3)).astype("float32")
    expected = np.asarray(model(x, training=False))

    folded, count = fold_batch_norm(model)

    kept = {layer.name for layer in folded.layers
            if isinstance(layer, keras.layers.BatchNormalization)}
    assert count == 3
    assert kept == {"bn_b", "bn_c", "bn_f", "bn_g"}
    assert folded.get_layer("conv_a").use_bias and folded.get_layer("sep_e").use_bias
    np.testing.assert_allclose(np.asarray(folded(x, training=False)), expected,
                               rtol=1e-5, atol=1e-5)
