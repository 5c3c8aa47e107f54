"""run_ensembles end to end on real HDF5 feature files: CV, clipping, caching, blends,
multiclass, reports and every bad input."""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pandas as pd
import pytest

from base.errors import HarnessError
from ensembles import cv
from ensembles.data import load_matrix
from ensembles.results import load_result, result_path
from ensembles.run import run_ensembles
from features.store import feature_path
from tests.ensembles_fixtures import make_config, synthetic_features

LOGREG_ONLY = """
[ensembles.a-lr]
backbones = ["mobilenet_025"]
head = "logreg"
[ensembles.ab-lr]
backbones = ["mobilenet_025", "resnet50"]
head = "logreg"
C = 0.1
clip = [0.2, 0.8]
[ensembles.b-lr]
backbones = ["resnet50"]
head = "logreg"
scale = "standard"
[blends.mean-all]
members = ["a-lr", "ab-lr", "b-lr"]
[blends.w]
members = ["a-lr", "b-lr"]
method = "weights"
[blends.st]
members = ["a-lr", "b-lr"]
method = "stack"
C = 0.5
[blends.of-blends]
members = ["w", "ab-lr"]
"""


@pytest.fixture
def binary(tmp_path):
    config = make_config(tmp_path, LOGREG_ONLY, backbones=["mobilenet_025", "resnet50"])
    truth = synthetic_features(config.workspace.features_dir, {"mobilenet_025": 8, "resnet50": 12},
                               classes=["circle", "square"], n_train=120, n_test=30,
                               signal=0.5, failed_test={"t3": "cannot decode"},
                               shuffle_backbone="resnet50")
    return config, truth


def test_run_scores_saves_and_reports(binary):
    config, truth = binary
    results = run_ensembles(config, progress=False)
    by = {r.name: r for r in results}
    assert set(by) == {"a-lr", "ab-lr", "b-lr", "mean-all", "w", "st", "of-blends"}
    scores = [r.cv_log_loss_clipped for r in results]
    assert scores == sorted(scores)
    for r in results:
        assert r.oof_proba.shape == (120, 2) and r.test_proba.shape == (30, 2)
        assert sorted(r.oof_ids) == sorted(truth["train_ids"])
        assert list(r.test_ids) == truth["test_ids"]
        labels = np.array([truth["train_labels"][int(i) - 1] for i in r.oof_ids])
        np.testing.assert_array_equal(r.oof_labels, labels)
        assert r.cv_log_loss == pytest.approx(cv.log_loss(labels, r.oof_proba))
        assert r.cv_accuracy == pytest.approx(cv.accuracy(labels, r.oof_proba))
        # the chosen symmetric bound is no worse than no clip or any other bound tried
        lo, hi = r.clip
        assert lo == pytest.approx(1 - hi)
        assert r.cv_log_loss_clipped == pytest.approx(
            cv.log_loss(labels, np.clip(r.oof_proba, lo, hi)))
        if r.name != "ab-lr":  # ab-lr has a fixed clip
            assert r.cv_log_loss_clipped <= r.cv_log_loss + 1e-12
            for e in (1e-4, 0.01, 0.05):
                assert r.cv_log_loss_clipped <= cv.log_loss(labels,
                                                            np.clip(r.oof_proba, e, 1 - e))
        # the failed test image gets the training prior (balanced classes: 0.5)
        np.testing.assert_allclose(r.test_proba[list(r.test_ids).index("t3")], [0.5, 0.5])
        assert not r.reused
    # stored test predictions are unclipped: the clip is applied by the submission writer
    ab = by["ab-lr"]
    assert ab.clip == (0.2, 0.8)
    assert ((ab.test_proba < ab.clip[0]) | (ab.test_proba > ab.clip[1])).any()
    # folds are shared: every result scored on the same folds for the same ids
    folds = {r.name: dict(zip(r.oof_ids, r.folds)) for r in results}
    assert all(f == folds["a-lr"] for f in folds.values())
    # the signal is real: concatenation beats chance clearly
    assert by["ab-lr"].cv_accuracy > 0.8
    # blends: weights are non-negative and sum to 1
    assert min(by["w"].params["weights"]) >= 0
    assert sum(by["w"].params["weights"]) == pytest.approx(1.0)
    assert set(by["of-blends"].backbones) == {"mobilenet_025", "resnet50"}
    saved = load_result(config.workspace.ensembles_dir, "ab-lr")
    assert saved.reused and saved.clip == ab.clip
    np.testing.assert_array_equal(saved.test_proba, ab.test_proba)
    out = config.workspace.ensembles_dir
    table = pd.read_csv(out / "report.csv")
    assert table["name"].tolist() == [r.name for r in results]
    assert "| ab-lr | ensemble | mobilenet_025+resnet50 | logreg |" in (out / "report.md").read_text()
    for r in results:
        png = out / "plots" / f"{r.name}-reliability.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_concatenation_joins_on_ids(binary):
    config, _ = binary
    fdir = config.workspace.features_dir
    joined = load_matrix(fdir, ("mobilenet_025", "resnet50"), "none", "train", ensemble="x")
    b = load_matrix(fdir, ("resnet50",), "none", "train", ensemble="x")
    row_in_b = {key: i for i, key in enumerate(b.ids)}
    for row in (0, 1, 9, 119):
        np.testing.assert_array_equal(joined.X[row, 8:], b.X[row_in_b[joined.ids[row]]])
    assert joined.X.dtype == np.float32 and joined.X.shape == (120, 20)


def test_only_what_changed_runs_again(binary, tmp_path):
    config, _ = binary
    run_ensembles(config, progress=False)
    out = config.workspace.ensembles_dir
    again = run_ensembles(config, progress=False)
    assert all(r.reused for r in again)
    # change one ensemble's parameter: it and the blends using it (also indirectly) refit
    changed = dict(config.ensembles)
    changed["a-lr"] = dataclasses.replace(changed["a-lr"], params={"C": 0.01})
    third = run_ensembles(dataclasses.replace(config, ensembles=changed), progress=False)
    refit = {r.name for r in third if not r.reused}
    assert refit == {"a-lr", "mean-all", "w", "st", "of-blends"}
    # b's features extracted with other weights refit b's ensembles and their blends only
    with h5py.File(feature_path(config.workspace.features_dir, "resnet50"), "a") as f:
        f.attrs["weights"] = "another-weights-file.h5"
    fourth = run_ensembles(dataclasses.replace(config, ensembles=changed), progress=False)
    assert {r.name for r in fourth if not r.reused} == {"ab-lr", "b-lr", "mean-all", "w",
                                                        "st", "of-blends"}
    forced = run_ensembles(config, names=["b-lr"], force=True, progress=False)
    assert [(r.name, r.reused) for r in forced] == [("b-lr", False)]
    assert result_path(out, "a-lr").is_file()


def test_fold_mean_and_accuracy_competition(tmp_path):
    refit = make_config(tmp_path, "[ensembles.lr]\nbackbones=['mobilenet_025']\nhead='logreg'\n",
                        backbones=["mobilenet_025"], competition='"dogs-vs-cats"')
    synthetic_features(refit.workspace.features_dir, {"mobilenet_025": 6}, classes=["cat", "dog"])
    (refitted,) = run_ensembles(refit, progress=False)
    config = dataclasses.replace(refit, cv=dataclasses.replace(refit.cv,
                                                              test_predictions="fold-mean"))
    (result,) = run_ensembles(config, progress=False)
    assert not result.reused  # the test-prediction mode is part of the saved key
    assert result.metric == "accuracy" and result.clip is None
    assert result.cv_log_loss_clipped == result.cv_log_loss
    np.testing.assert_allclose(result.test_proba.sum(axis=1), 1.0)
    # Same out-of-fold predictions, different test predictions (mean of 5 fold models).
    np.testing.assert_allclose(result.oof_proba, refitted.oof_proba)
    assert np.abs(result.test_proba - refitted.test_proba).max() > 1e-6


@pytest.mark.slow
def test_multiclass_through_cv_and_saved_predictions(tmp_path):
    body = """
    [ensembles.lr]
    backbones = ["mobilenet_025", "resnet50"]
    head = "logreg"
    [ensembles.drop]
    backbones = ["mobilenet_025", "resnet50"]
    head = "dropout"
    epochs = 3
    optimizer = "adam"
    learning_rate = 0.05
    batch_size = 16
    standardize = true
    [blends.st]
    members = ["lr", "drop"]
    method = "stack"
    """
    config = make_config(tmp_path, body, backbones=["mobilenet_025", "resnet50"],
                         competition='{name = "tiny-multi", base = "generic-folders", '
                                     'classes = ["ant", "bee", "cow"]}')
    synthetic_features(config.workspace.features_dir, {"mobilenet_025": 6, "resnet50": 5},
                       classes=["ant", "bee", "cow"], n_train=90, n_test=12)
    results = {r.name: r for r in run_ensembles(config, progress=False)}
    for name in ("lr", "drop", "st"):
        saved = load_result(config.workspace.ensembles_dir, name)
        assert saved.classes == ("ant", "bee", "cow")
        assert saved.oof_proba.shape == (90, 3) and saved.test_proba.shape == (12, 3)
        np.testing.assert_allclose(saved.oof_proba.sum(axis=1), 1.0, atol=1e-5)
        assert saved.cv_accuracy > 0.6
    drop = results["drop"]
    assert len(drop.histories) == 3 and len(drop.histories[0]["val_loss"]) == 3
    assert (config.workspace.ensembles_dir / "plots" / "drop-history.png").is_file()


@pytest.mark.slow
def test_seed004_preset_reproduces_the_recipe(tmp_path):
    body = """
    [ensembles.seed]
    preset = "seed004"
    backbones = ["resnet50", "inception_v3", "xception"]
    head = "dropout"
    """
    config = make_config(tmp_path, body, backbones=["resnet50", "inception_v3", "xception"])
    synthetic_features(config.workspace.features_dir,
                       {"resnet50": 8, "inception_v3": 8, "xception": 8},
                       classes=["circle", "square"], n_train=160, n_test=10, signal=2.0)
    (result,) = run_ensembles(config, progress=False)
    assert result.clip == (0.005, 0.995)
    assert result.params["epochs"] == 8 and result.params["optimizer"] == "adadelta"
    assert result.params["learning_rate"] == 1.0 and result.params["batch_size"] == 128
    # Keras' validation_split=0.2 of the recipe: 8 epochs of held-out loss, going down
    # (Keras 3's own Adadelta default of 0.001 would leave it flat at this size)
    assert all(len(h["val_loss"]) == 8 for h in result.histories)
    assert all(h["val_loss"][-1] < h["val_loss"][0] - 0.01 for h in result.histories)


def test_skips_ensembles_whose_backbones_were_not_selected(tmp_path):
    # Registry backbones outside the selection (--backbones) are skipped, not errors.
    config = make_config(tmp_path, "[ensembles.x]\nbackbones=['xception']\nhead='logreg'\n"
                         "[ensembles.xr]\nbackbones=['xception','resnet50']\nhead='logreg'\n",
                         backbones=["xception", "resnet50"])
    synthetic_features(config.workspace.features_dir, {"xception": 4, "resnet50": 4},
                       classes=["circle", "square"], n_train=60)
    only_x = dataclasses.replace(config, features=dataclasses.replace(config.features,
                                                                      backbones=("xception",)))
    assert [r.name for r in run_ensembles(only_x, progress=False)] == ["x"]
    only_vgg = dataclasses.replace(config, features=dataclasses.replace(config.features,
                                                                        backbones=("vgg16",)))
    with pytest.raises(HarnessError, match="no ensemble can run with backbones vgg16"):
        run_ensembles(only_vgg, progress=False)


def test_default_ensembles_when_none_configured(tmp_path):
    config = make_config(tmp_path, backbones=["mobilenet_025", "resnet50"])
    synthetic_features(config.workspace.features_dir, {"mobilenet_025": 4, "resnet50": 4},
                       classes=["circle", "square"], n_train=60)
    from ensembles.run import configured_ensembles
    assert set(configured_ensembles(config)) == {"mobilenet_025-logreg", "resnet50-logreg",
                                                 "all2-logreg", "all2-dropout"}


BAD = [
    ("[ensembles.x]\nbackbones=['mobilenet_025','vgg16']\nhead='logreg'\n",
     ["mobilenet_025", "vgg16"], r"ensemble 'x' needs features of backbone 'vgg16'.*vgg16.h5"),
    # Not selected in [features] and not in the registry: a typo, refused at load.
    ("[ensembles.x]\nbackbones=['mobilenet_025','zz']\nhead='logreg'\n", ["mobilenet_025"],
     r"ensemble 'x': unknown backbone 'zz'"),
    ("[ensembles.x]\nbackbones=['mobilenet_025']\nhead='svm'\n", ["mobilenet_025"],
     r"\[ensembles.x\] head = 'svm' is not one of logreg, ridge, dropout"),
    ("[blends.bl]\nmembers=['nope']\n", ["mobilenet_025"], r"blend 'bl': unknown member 'nope'"),
    ("[blends.p]\nmembers=['q']\n[blends.q]\nmembers=['p']\n", ["mobilenet_025"],
     r"blends form a cycle: (p -> q -> p|q -> p -> q)"),
    ("[ensembles.x]\nbackbones=['mobilenet_025']\nhead='logreg'\nC_grid=[1]\n", ["mobilenet_025"],
     r"ensemble 'x': unknown parameter 'C_grid' for head 'logreg'; known: C, C_rule, allow_cpu, augment, calibrate, clip"),
    ("[ensembles.x]\nbackbones=['mobilenet_025']\nhead='logreg'\npreset='seed999'\n", ["mobilenet_025"],
     r"ensemble 'x': unknown preset 'seed999'; known: seed004"),
    ("[ensembles.x]\nbackbones=['mobilenet_025']\nhead='logreg'\nclip=[0.9, 0.1]\n", ["mobilenet_025"],
     r"ensemble 'x': clip = \[0.9, 0.1\] must be"),
    (("[blends.bl]\nmembers=['x']\nmethod='weights'\nC=1\n[ensembles.x]\nbackbones=['mobilenet_025']\n"
      "head='logreg'\n"), ["mobilenet_025"], r"blend 'bl': unknown parameter 'C' for method 'weights'"),
    # The run stage's own keys: checked by one schema, blamed on the blend or the ensemble.
    (("[blends.bl]\nmembers=['x']\nclip=[0.9, 0.1]\n[ensembles.x]\nbackbones=['mobilenet_025']\n"
      "head='logreg'\n"), ["mobilenet_025"], r"blend 'bl': clip = \[0.9, 0.1\] must be \"auto\""),
    (("[blends.bl]\nmembers=['x']\nclip_prior=-1\n[ensembles.x]\nbackbones=['mobilenet_025']\n"
      "head='logreg'\n"), ["mobilenet_025"], r"blend 'bl': clip_prior = -1 must be a number >= 0"),
    (("[blends.bl]\nmembers=['x']\ncalibrate='temperature'\n[ensembles.x]\n"
      "backbones=['mobilenet_025']\nhead='logreg'\n"), ["mobilenet_025"],
     r"blend 'bl': unknown parameter 'calibrate' for method 'mean'; known: clip, clip_prior"),
    ("[ensembles.x]\nbackbones=['mobilenet_025']\nhead='logreg'\ncalibrate='platt'\n", ["mobilenet_025"],
     r"ensemble 'x': calibrate = 'platt' must be one of none, temperature"),
]


@pytest.mark.parametrize("body, backbones, message", BAD)
def test_bad_input_is_a_harness_error_and_loses_nothing(tmp_path, body, backbones, message):
    good = make_config(tmp_path, "[ensembles.good]\nbackbones=['mobilenet_025']\nhead='logreg'\n",
                       backbones=["mobilenet_025"])
    synthetic_features(good.workspace.features_dir, {"mobilenet_025": 4}, classes=["circle", "square"],
                       n_train=60)
    run_ensembles(good, progress=False)
    saved = result_path(good.workspace.ensembles_dir, "good")
    before = saved.read_bytes()
    # Most mistakes are refused when the config loads, the rest before anything is fitted.
    with pytest.raises(HarnessError, match=message):
        run_ensembles(make_config(tmp_path, body, backbones=backbones), progress=False)
    assert saved.read_bytes() == before


def test_mismatched_ids_and_single_class(tmp_path):
    config = make_config(tmp_path, "[ensembles.ab]\nbackbones=['mobilenet_025','resnet50']\nhead='logreg'\n",
                         backbones=["mobilenet_025", "resnet50"])
    fdir = config.workspace.features_dir
    synthetic_features(fdir, {"mobilenet_025": 4}, classes=["circle", "square"], n_train=60)
    synthetic_features(fdir, {"resnet50": 4}, classes=["circle", "square"], n_train=59)
    with pytest.raises(HarnessError, match=r"mobilenet_025.h5 and resnet50.h5 hold different "
                                           r"images \(1 ids only in mobilenet_025.h5 "
                                           r"\(e.g. \['60'\]\)"):
        run_ensembles(config, progress=False)
    from tests.ensembles_fixtures import write_feature_file
    rng = np.random.default_rng(0)
    write_feature_file(feature_path(fdir, "mobilenet_025"), backbone="mobilenet_025", classes=["circle", "square"],
                       train_ids=["1", "2", "10"], train_labels=np.zeros(3),
                       train_X=rng.normal(size=(3, 4)), test_ids=["t1"],
                       test_X=rng.normal(size=(1, 4)))
    one = make_config(tmp_path, "[ensembles.a]\nbackbones=['mobilenet_025']\nhead='logreg'\n",
                      backbones=["mobilenet_025"])
    with pytest.raises(HarnessError, match="ensemble 'a': the training set has a single class"):
        run_ensembles(one, progress=False)


def test_load_result_missing_says_what_to_run(tmp_path):
    with pytest.raises(HarnessError, match=r"no saved predictions for ensemble 'x'.*run "
                                           r"`harness ensembles` first"):
        load_result(tmp_path, "x")
