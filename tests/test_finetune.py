"""Fine-tuning the top of a backbone from cached maps: the cut, the maps files, the head.

The maps are MobileNet-0.25's with its genuine ImageNet weights (../shared/weights): a
random-init network's activations are ~1e-16, below what float16 stores.
"""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
from sklearn.base import clone

from base.errors import HarnessError
from base.hashing import cached_file_sha256
from ensembles.finetune import FinetuneHead, FinetuneRegressor
from features.backbones import BACKBONES, MAP_BACKBONES, get_backbone
from features.extract import extract_features
from features.shards import merge_shards
from features.store import feature_path, load_split, read_attrs
from features.weights import WeightsChoice
from tests.cli_runner import mobilenet_toml
from tests.features_fixtures import image_lists, make_dataset
from tests.shared_assets import MOBILENET_WEIGHTS, shared_dir

GAP_AND_MAPS = [("mobilenet_025", "none"), ("mobilenet_025_maps", "none")]


@pytest.fixture(autouse=True)
def hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))


def genuine_mobilenet(folder=None) -> WeightsChoice:
    path = shared_dir() / MOBILENET_WEIGHTS
    if folder is not None:
        path = shutil.copy(path, folder / path.name)
    return WeightsChoice(str(path), f"sha256:{cached_file_sha256(path)}")


def extract(data, out, weights, **kwargs):
    train, test = image_lists(data)
    return extract_features(train, test, GAP_AND_MAPS, {b: weights for b, _ in GAP_AND_MAPS},
                            out, batch_size=4, progress=False, engine="tensorflow", **kwargs)


@pytest.fixture(scope="module")
def maps_data(tmp_path_factory):
    """16 training and 5 test images, their GAP features and maps (one extraction)."""
    root = tmp_path_factory.mktemp("maps")
    data = make_dataset(root / "data", n_train=16, n_test=5)
    weights = genuine_mobilenet()
    extract(data, root / "features", weights)
    return root, weights


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_each_backbone_is_cut_where_the_registry_says(name):
    base = BACKBONES[name]
    maps = MAP_BACKBONES[f"{name}_maps"]
    model = base.build(None)
    cut = base.cut_tensor(model)
    assert tuple(cut.shape[1:]) == base.map_shape == maps.map_shape
    assert maps.feature_dim == int(np.prod(base.map_shape))
    assert tuple(base.top(model).output.shape) == (None, base.feature_dim)
    if name == "inception_v3":  # the Keras guide's recipe: layers[:249] frozen
        assert model.layers.index(model.get_layer("mixed8")) == 248
    assert maps.weights_name == name and maps.weight_files == base.weight_files


def test_cached_maps_through_the_top_give_the_gap_features(maps_data):
    root, weights = maps_data
    gap_path = feature_path(root / "features", "mobilenet_025")
    maps_path = feature_path(root / "features", "mobilenet_025_maps")
    with h5py.File(maps_path, "r") as handle:
        assert handle["train/features"].dtype == np.float16
        assert handle["train/features"].shape == (16, 14 * 14 * 128)
    attrs = read_attrs(maps_path)
    assert attrs["feature_dtype"] == "float16" and attrs["weights_source"] == weights.keras_arg
    assert "conv_pw_11_relu" in attrs["fingerprint_parts"]
    spec = get_backbone("mobilenet_025")
    top = spec.top(spec.build(weights.keras_arg))
    for split in ("train", "test"):
        gap, maps = load_split(gap_path, split), load_split(maps_path, split)
        assert list(gap.ids) == list(maps.ids)
        assert maps.features.dtype == np.float16
        through = np.asarray(top(maps.features.astype(np.float32).reshape(-1, 14, 14, 128),
                                 training=False))
        # float16 maps (3 significant digits) against float32 ones
        scale = float(np.abs(gap.features).max())
        np.testing.assert_allclose(through, gap.features, atol=5e-3 * scale)


def test_maps_shard_and_merge_like_gap_features(maps_data, flipped_maps, tmp_path):
    root, weights = maps_data
    data = root / "data"
    train, test = image_lists(data)
    wanted = [*GAP_AND_MAPS, ("mobilenet_025_maps", "flip")]
    for i in (1, 2):
        extract_features(train, test, wanted, {b: weights for b, _ in wanted}, tmp_path,
                         batch_size=4, progress=False, engine="tensorflow", shard=(i, 2))
    for tta, folder in (("none", root / "features"), ("flip", flipped_maps)):
        merged = merge_shards(tmp_path, "mobilenet_025_maps", tta, 2)
        with h5py.File(merged, "r") as handle:
            assert handle["test/features"].dtype == np.float16
        for split in ("train", "test"):
            whole = load_split(feature_path(folder, "mobilenet_025_maps", tta), split)
            parts = load_split(merged, split)
            assert list(whole.ids) == list(parts.ids)
            assert parts.features.shape == whole.features.shape
            np.testing.assert_allclose(parts.features.astype(np.float32),
                                       whole.features.astype(np.float32), rtol=2e-3, atol=1e-3)
    with pytest.raises(HarnessError, match="mobilenet_025_maps: maps are cached with tta "
                                           "'none' or 'flip' .* not 'crops'"):
        extract_features(train, test, [("mobilenet_025_maps", "crops")],
                         {"mobilenet_025_maps": weights}, tmp_path, progress=False)


@pytest.fixture(scope="module")
def flipped_maps(maps_data):
    """The maps_data images' maps with their mirror images' (tta flip), and the flip-TTA
    GAP features made in the same pass."""
    root, weights = maps_data
    out = root / "flipped"
    train, test = image_lists(root / "data")
    wanted = [("mobilenet_025", "flip"), ("mobilenet_025_maps", "flip")]
    extract_features(train, test, wanted, {b: weights for b, _ in wanted}, out, batch_size=4,
                     progress=False, engine="tensorflow")
    return out


def test_flipped_maps_hold_the_image_and_its_mirror_image(maps_data, flipped_maps):
    root, weights = maps_data
    path = feature_path(flipped_maps, "mobilenet_025_maps", "flip")
    assert path.name == "mobilenet_025_maps-flip.h5"
    dim = 14 * 14 * 128
    assert read_attrs(path)["feature_dim"] == 2 * dim
    spec = get_backbone("mobilenet_025")
    top = spec.top(spec.build(weights.keras_arg))
    for split in ("train", "test"):
        both = load_split(path, split)
        plain = load_split(feature_path(root / "features", "mobilenet_025_maps"), split)
        gap_flip = load_split(feature_path(flipped_maps, "mobilenet_025", "flip"), split)
        assert both.features.shape == (len(plain.ids), 2 * dim)
        assert list(both.ids) == list(plain.ids) == list(gap_flip.ids)
        # The first view is the image's own maps (as float16 rounds them), the second is
        # not them again.
        np.testing.assert_allclose(both.features[:, :dim].astype(np.float32),
                                   plain.features.astype(np.float32), rtol=2e-3, atol=1e-3)
        assert not np.allclose(both.features[:, dim:], both.features[:, :dim], atol=1e-2)
        # Through the top, the two views' mean is the flip-TTA GAP features (the mean of
        # the image's and its mirror image's), so the second view is the mirror image's.
        views = [np.asarray(top(both.features[:, v * dim:(v + 1) * dim].astype(np.float32)
                                .reshape(-1, 14, 14, 128), training=False)) for v in (0, 1)]
        scale = float(np.abs(gap_flip.features).max())
        np.testing.assert_allclose((views[0] + views[1]) / 2, gap_flip.features,
                                   atol=5e-3 * scale)


def _train(maps_data):
    root, weights = maps_data
    split = load_split(feature_path(root / "features", "mobilenet_025_maps"), "train")
    return split.features, split.labels, weights.keras_arg


def small_head(weights, **params) -> FinetuneHead:
    return FinetuneHead(backbone="mobilenet_025_maps", weights=weights,
                        **{"head_epochs": 5, "epochs": 2, "batch_size": 8,
                           "validation_split": 0.25, **params})


def test_finetune_head_trains_the_top_and_keeps_the_contract(maps_data):
    X, y, weights = _train(maps_data)
    head = small_head(weights).fit(X, y)
    proba = head.predict_proba(X)
    assert proba.shape == (16, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert list(head.classes_) == [0, 1]
    # Phase 2 starts from phase 1's held-out loss and never ends worse than it.
    assert head.history_["val_loss"][0] == head.phase1_loss_
    assert head.best_loss_ <= head.phase1_loss_
    assert head.best_loss_ == min(head.history_["val_loss"])
    # The top moved: its weights differ from the backbone's own.
    spec = get_backbone("mobilenet_025")
    original = spec.top(spec.build(weights)).get_layer("conv_pw_13").get_weights()[0]
    trained = head.model_.get_layer("mobilenet_025_top").get_layer("conv_pw_13").get_weights()[0]
    if head.best_loss_ < head.phase1_loss_:
        assert not np.allclose(trained, original)
    else:
        np.testing.assert_array_equal(trained, original)
    # BatchNormalization stays ImageNet's: frozen, so its statistics never change.
    bn = head.model_.get_layer("mobilenet_025_top").get_layer("conv_pw_13_bn")
    assert not bn.trainable
    np.testing.assert_array_equal(
        bn.get_weights()[2], spec.top(spec.build(weights)).get_layer("conv_pw_13_bn")
        .get_weights()[2])
    # fit(X, y, rows=r) is fit(X[r], y), and a seed gives the same model again.
    rows = np.array([0, 1, 2, 3, 4, 5, 6, 7, 9, 11, 12, 14])
    by_rows = clone(head).fit(X, y[rows], rows=rows)
    copied = clone(head).fit(X[rows], y[rows])
    np.testing.assert_allclose(by_rows.predict_proba(X), copied.predict_proba(X), atol=1e-5)
    assert clone(head).get_params() == head.get_params()


def test_finetune_head_on_flipped_maps_trains_on_both_views_and_averages_them(
        maps_data, flipped_maps):
    _, y, weights = _train(maps_data)
    X = load_split(feature_path(flipped_maps, "mobilenet_025_maps", "flip"), "train").features
    dim = X.shape[1] // 2
    head = small_head(weights).fit(X, y)
    assert head.views_ == 2 and head.n_features_in_ == 2 * dim
    proba = head.predict_proba(X)
    assert proba.shape == (16, 2)
    # A prediction is the mean over the two views: the same with the views swapped, and
    # the mean of the network's outputs on each.
    swapped = np.hstack([X[:, dim:], X[:, :dim]])
    np.testing.assert_allclose(head.predict_proba(swapped), proba, atol=1e-6)
    each = [np.asarray(head.model_(X[:, v * dim:(v + 1) * dim].astype(np.float32)))[:, 0]
            for v in (0, 1)]
    np.testing.assert_allclose(proba[:, 1], (each[0] + each[1]) / 2, atol=1e-5)
    with pytest.raises(ValueError, match="X holds 1 view\\(s\\) of each image's maps; this "
                                         "head was fitted on 2"):
        head.predict_proba(X[:, :dim])


def test_finetune_regressor_predicts_in_the_targets_units(maps_data):
    X, y, weights = _train(maps_data)
    values = 50.0 + 20.0 * y + np.arange(len(y)) % 3
    head = FinetuneRegressor(backbone="mobilenet_025_maps", weights=weights, head_epochs=5,
                             epochs=1, batch_size=8, validation_split=0.25).fit(X, values)
    predicted = head.predict(X)
    assert predicted.shape == (16,)
    assert 30.0 < float(predicted.mean()) < 90.0


def test_finetune_head_refuses_what_is_not_maps(maps_data):
    X, y, weights = _train(maps_data)
    with pytest.raises(ValueError, match="backbone = 'mobilenet_025' must be a `_maps` "
                                         "backbone name"):
        FinetuneHead(backbone="mobilenet_025").fit(X, y)
    with pytest.raises(HarnessError, match="trains on a `_maps` backbone's maps, not ''"):
        FinetuneHead().fit(X, y)
    with pytest.raises(ValueError, match=r"X must hold mobilenet_025_maps's flattened maps "
                                         r"\[14, 14, 128\] \(25088 columns per row, 50176 "
                                         r"with the mirror images' maps\)"):
        small_head(weights).fit(X[:, :100], y)


def _config(tmp_path, heads: dict[str, str], weights: str, extra: str = ""):
    from harness.config import load_config

    make_dataset(tmp_path / "data", n_train=16, n_test=5)
    (tmp_path / "data" / "sample_submission.csv").write_text(
        "id,label\n" + "".join(f"{k},0.5\n" for k in range(1, 6)))
    top = 'competition = "demo"\nworkspace = "ws"\ndata_dir = "data"'
    toml = mobilenet_toml(top, heads={}, weights=f'weights = "{weights}"', folds=2)
    toml = toml.replace('backbones = ["mobilenet_025"]\n',
                        'backbones = ["mobilenet_025", "mobilenet_025_maps"]\n', 1)
    for name, body in heads.items():
        toml += f"[ensembles.{name}]\n{body}\n"
    (tmp_path / "harness.toml").write_text(toml + extra)
    return load_config(tmp_path / "harness.toml")


FINETUNE = ('backbones = ["mobilenet_025_maps"]\nhead = "finetune"\nhead_epochs = 5\n'
            'epochs = 1\nbatch_size = 8\nvalidation_split = 0.25')


def test_finetune_ensemble_runs_scores_out_of_fold_and_is_reused(tmp_path, monkeypatch):
    from harness.pipeline import fit_ensembles, submit

    monkeypatch.chdir(tmp_path)
    weights = genuine_mobilenet(tmp_path)
    config = _config(tmp_path, {
        "mob-ft": FINETUNE,
        "mob-ft-flip": FINETUNE + '\ntta = "flip"',
        "mob-logreg": 'backbones = ["mobilenet_025"]\nhead = "logreg"'}, weights.keras_arg)
    assert ("mobilenet_025_maps", "flip") in config.feature_sets()
    made = submit(config, progress=False)
    results = {r.name: r for r in fit_ensembles(config, progress=False)}
    for name in ("mob-ft", "mob-ft-flip"):
        tuned = results[name]
        assert tuned.reused and np.isfinite(tuned.cv_score)
        assert tuned.oof_proba.shape == (16, 2) and len(tuned.test_ids) == 5
        assert any(p.name == f"demo-{name}.csv" for p in made.paths)
    assert not np.allclose(results["mob-ft"].oof_proba, results["mob-ft-flip"].oof_proba)
    # The weights the maps were made with are read again: changed, the run says so.
    with open(weights.keras_arg, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(HarnessError, match="was made with the weights file .* which is gone "
                                           "or changed"):
        fit_ensembles(config, names=["mob-ft"], force=True, progress=False)


def test_finetune_from_images_on_a_cpu_is_refused_with_an_estimate(tmp_path, monkeypatch):
    import tensorflow as tf

    from harness.pipeline import extract, fit_ensembles

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible: the refusal is for CPUs")
    monkeypatch.chdir(tmp_path)
    weights = genuine_mobilenet(tmp_path)
    config = _config(tmp_path, {"mob-ft": FINETUNE + '\nfrom = "images"'}, weights.keras_arg)
    extract(config, progress=False)
    rate = 1 / read_attrs(feature_path(tmp_path / "ws" / "features", "mobilenet_025"))[
        "seconds_per_image"]
    with pytest.raises(HarnessError) as caught:
        fit_ensembles(config, progress=False)
    message = str(caught.value)
    assert ("from = \"images\" runs all of mobilenet_025 on every image in every epoch and "
            "needs a GPU") in message
    assert f"at this CPU's measured {rate:.1f} images/s forward, 1 epochs over 16 images " \
           "would take up to" in message
    assert "set allow_cpu = true to run it here anyway" in message


def _image_paths(root, split="train"):
    from competition.images import list_test_images, list_train_images
    from competition.spec import get_spec

    ids = load_split(feature_path(root / "features", "mobilenet_025_maps"), split).ids
    images = (list_train_images if split == "train" else list_test_images)(
        get_spec("demo"), root / "data")
    where = dict(zip(images.ids, images.paths))
    return np.array([[str(where[key])] for key in ids], dtype=object)


def test_finetune_from_images_sees_what_the_features_saw_and_trains_only_the_top(maps_data):
    from ensembles.finetune_images import FinetuneImagesHead

    root, weights = maps_data
    _, y, _ = _train(maps_data)
    X = _image_paths(root)
    head = FinetuneImagesHead(backbone="mobilenet_025_maps", weights=weights.keras_arg,
                              head_epochs=5, epochs=2, batch_size=8, validation_split=0.25,
                              augment="flip-zoom")
    spec = get_backbone("mobilenet_025_maps")
    # Unaugmented, the network gives each image the features `harness features` cached.
    network = head._network(spec)
    gap = load_split(feature_path(root / "features", "mobilenet_025"), "train").features
    scale = float(np.abs(gap).max())
    np.testing.assert_allclose(head._frozen_gap(network, X[:, 0], 1, np.arange(16), spec),
                               gap, atol=2e-3 * scale)
    head.fit(X, y)
    proba = head.predict_proba(X)
    assert proba.shape == (16, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert head.best_loss_ <= head.phase1_loss_ == head.history_["val_loss"][0]
    # Below the cut nothing moved; BatchNormalization is ImageNet's everywhere.
    base = get_backbone("mobilenet_025")
    original = base.build(weights.keras_arg)
    trained = head.model_.get_layer("mobilenet_025_from_images").layers[-1]
    for name in ("conv1", "conv_pw_11", "conv_pw_13_bn"):
        for a, b in zip(trained.get_layer(name).get_weights(),
                        original.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    moved = not np.allclose(trained.get_layer("conv_pw_13").get_weights()[0],
                            original.get_layer("conv_pw_13").get_weights()[0])
    assert moved == (head.best_loss_ < head.phase1_loss_)
    # What is trained, whatever phase 2 achieved: exactly the layers above the cut with
    # weights, BatchNormalization excepted.
    above = {layer.name for layer in base.top(original).layers}
    assert {layer.name for layer in trained.layers if layer.trainable_weights} == {
        layer.name for layer in original.layers if layer.name in above and layer.weights
        and "BatchNormalization" not in type(layer).__name__} != set()
    with pytest.raises(ValueError, match="X must hold one image path per row"):
        head.predict_proba(X[:, 0])


def test_finetune_from_images_runs_on_a_cpu_when_allowed(tmp_path, monkeypatch, caplog):
    import tensorflow as tf

    from harness.config import load_config
    from harness.pipeline import extract, fit_ensembles

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible: allow_cpu is for CPUs")
    monkeypatch.chdir(tmp_path)
    weights = genuine_mobilenet(tmp_path)
    config = _config(tmp_path, {
        "mob-ft": FINETUNE,
        "mob-images": FINETUNE + '\nfrom = "images"\nallow_cpu = true\naugment = "flip"'},
        weights.keras_arg)
    extract(config, progress=False)
    with caplog.at_level("WARNING", logger="ensembles.finetune"):
        results = {r.name: r for r in fit_ensembles(config, progress=False)}
    assert "mob-images: from = \"images\" on a CPU (allow_cpu)" in caplog.text
    images, maps = results["mob-images"], results["mob-ft"]
    assert list(images.oof_ids) == list(maps.oof_ids) and np.isfinite(images.cv_score)
    assert images.oof_proba.shape == (16, 2) and list(images.test_ids) == list(maps.test_ids)
    assert not np.allclose(images.oof_proba, maps.oof_proba)
    assert images.params["from"] == "images" and images.params["augment"] == "flip"
    # Another augmentation is another result; the maps ensemble is reused.
    toml = tmp_path / "harness.toml"
    toml.write_text(toml.read_text().replace('augment = "flip"', 'augment = "none"'))
    again = {r.name: r for r in fit_ensembles(load_config(toml), progress=False)}
    assert again["mob-ft"].reused and not again["mob-images"].reused
    assert not np.allclose(again["mob-images"].oof_proba, images.oof_proba)


@pytest.mark.parametrize(("body", "message"), [
    ('backbones = ["mobilenet_025"]\nhead = "finetune"',
     "the finetune head trains on one `_maps` backbone's maps, not \\['mobilenet_025'\\]"),
    ('backbones = ["mobilenet_025_maps"]\nhead = "logreg"',
     "\\['mobilenet_025_maps'\\] hold maps for the finetune head, not features for 'logreg'"),
    ('backbones = ["mobilenet_025_maps"]\nhead = "finetune"\ntta = "crops"',
     "the finetune head's maps are cached with tta \"none\" or \"flip\" .* not 'crops'"),
    ('backbones = ["mobilenet_025"]\nhead = "logreg"\nfrom = "images"',
     "\\['from'\\] are the finetune head's \\(its input\\); remove them for head 'logreg'"),
    ('backbones = ["mobilenet_025_maps"]\nhead = "finetune"\naugment = "flip"',
     "\\['augment'\\] are for from = \"images\"; remove them"),
    ('backbones = ["mobilenet_025_maps"]\nhead = "finetune"\nfrom = "images"\ntta = "flip"',
     "from = \"images\" augments the images itself"),
    ('backbones = ["mobilenet_025_maps"]\nhead = "finetune"\nweights = "other.h5"',
     "\\['weights'\\] of the finetune head come from the maps' feature file"),
])
def test_finetune_ensembles_misconfigured_fail_before_any_work(tmp_path, body, message):
    with pytest.raises(HarnessError, match=f"ensemble 'bad': {message}"):
        _config(tmp_path, {"bad": body}, "none")  # the config is refused as it loads
    assert not (tmp_path / "ws").exists()


def test_maps_in_the_defaults_get_the_finetune_head_and_no_tta(tmp_path):
    from ensembles.run import configured_ensembles
    from harness.config import load_config

    (tmp_path / "harness.toml").write_text(
        'competition = "demo"\n[features]\nbackbones = ["mobilenet_025", "mobilenet_025_maps"]\n'
        'tta = "flip"\n')
    config = load_config(tmp_path / "harness.toml")
    ensembles = configured_ensembles(config)
    assert ensembles["mobilenet_025-finetune"].head == "finetune"
    assert ensembles["mobilenet_025-finetune"].backbones == ("mobilenet_025_maps",)
    assert all("mobilenet_025_maps" not in e.backbones
               for name, e in ensembles.items() if name != "mobilenet_025-finetune")
    assert ("mobilenet_025_maps", "none") in config.feature_sets()
    assert ("mobilenet_025_maps", "flip") not in config.feature_sets()
    # A finetune table of one's own takes tta none too, unless it says flip.
    (tmp_path / "harness.toml").write_text(
        (tmp_path / "harness.toml").read_text()
        + '[ensembles.mine]\nbackbones = ["mobilenet_025_maps"]\nhead = "finetune"\n'
        + '[ensembles.flipped]\nbackbones = ["mobilenet_025_maps"]\nhead = "finetune"\n'
        + 'tta = "flip"\n[ensembles.lin]\nbackbones = ["mobilenet_025"]\nhead = "logreg"\n')
    ensembles = configured_ensembles(load_config(tmp_path / "harness.toml"))
    assert (ensembles["mine"].tta, ensembles["flipped"].tta, ensembles["lin"].tta) == (
        "none", "flip", "flip")


def test_maps_of_random_weights_are_refused_before_any_work(tmp_path):
    data = make_dataset(tmp_path / "data", n_train=4, n_test=2)
    with pytest.raises(HarnessError, match="mobilenet_025_maps: maps are for fine-tuning "
                                           "pretrained weights"):
        extract(data, tmp_path / "features", WeightsChoice(None, "none"))
    assert not (tmp_path / "features").exists()
