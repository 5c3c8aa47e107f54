"""Model selection that holds up on unseen photos: feature scaling, the C rule, temperature
scaling, the clip prior, the CV table's uncertainty and the submission rule."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression

from base.errors import HarnessError
from ensembles.calibrate import apply_temperature, calibrate, fit_temperature
from ensembles.contact_sheet import costliest_rows, write_contact_sheet
from ensembles.cv import CLIP_GRID, apply_clip, choose_clip, log_loss, make_folds
from ensembles.heads import LogisticHead
from ensembles.report import format_table, report_table
from ensembles.results import EnsembleResult
from ensembles.run import run_ensembles
from ensembles.select import choose_submission, uncertainties
from harness.config import load_config
from tests.ensembles_fixtures import synthetic_features
from tests.image_files import write_jpeg
from tests.test_ensembles_heads import blobs


@pytest.mark.parametrize("scale", ["auto", "none", "standard", "l2"])
def test_logistic_scales_equal_sklearn_on_scaled_features(scale):
    X, y = blobs(n=120, d=10, gap=1.0)
    X = X + 5.0  # columns far from zero: standardising and L2 both change them
    head = LogisticHead(C=0.3, scale=scale).fit(X, y)
    if scale == "standard":
        scaled = (X - X.mean(axis=0)) / X.std(axis=0)
    elif scale == "l2":
        scaled = X / np.linalg.norm(X, axis=1, keepdims=True)
    else:
        scaled = X
    reference = LogisticRegression(C=0.3, max_iter=1000).fit(scaled, y)
    np.testing.assert_allclose(head.predict_proba(X), reference.predict_proba(scaled),
                               atol=2e-4)
    assert X[0, 0] > 4.0  # the caller's matrix is never scaled in place (copy=True)


def test_one_se_rule_takes_a_stronger_penalty_within_noise():
    X, y = blobs(n=200, d=40, gap=0.6, seed=3)
    grid = [0.001, 0.01, 0.1, 1.0, 10.0]
    best = LogisticHead(C=grid, C_rule="best").fit(X, y)
    one_se = LogisticHead(C=grid, C_rule="one_se").fit(X, y)
    losses = np.asarray(best.C_search_["C_loss"])
    se = np.asarray(best.C_search_["C_se"])
    assert best.C_ == grid[int(np.argmin(losses))]
    chosen = grid.index(one_se.C_)
    assert one_se.C_ <= best.C_
    assert losses[chosen] <= losses.min() + se[int(np.argmin(losses))]
    assert all(losses[i] > losses.min() + se[int(np.argmin(losses))] for i in range(chosen))


@pytest.mark.parametrize("bad, match", [
    ({"C": -1.0}, r"C = -1.0 must be a positive number"),
    ({"scale": "minmax"}, r"scale = 'minmax' must be one of auto, none, standard, l2"),
    ({"C_rule": "lowest"}, r"C_rule = 'lowest' must be one of best, one_se"),
])
def test_logistic_head_validates_its_parameters_in_fit(bad, match):
    X, y = blobs(n=40)
    with pytest.raises(ValueError, match=match):
        LogisticHead(**bad).fit(X, y)


def _overconfident(n=400, seed=0):
    """Right 95% of the time but always 99.9% sure: what a head that memorised does."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    right = rng.random(n) < 0.95
    said = np.where(right, labels, 1 - labels)
    p1 = np.where(said == 1, 0.999, 0.001)
    return labels, np.stack([1 - p1, p1], axis=1)


def test_temperature_softens_an_overconfident_model_without_changing_its_ranking():
    labels, proba = _overconfident()
    t = fit_temperature(labels, proba)
    soft = apply_temperature(proba, t)
    assert t > 1.5
    assert log_loss(labels, soft) < 0.7 * log_loss(labels, proba)  # 0.19 vs 0.33 here
    np.testing.assert_array_equal(soft.argmax(axis=1), proba.argmax(axis=1))


def test_calibration_scores_each_fold_with_a_temperature_fitted_elsewhere():
    labels, proba = _overconfident()
    folds = make_folds(np.arange(len(labels)).astype(str), labels, 4, 0)
    oof, test, info = calibrate("temperature", proba, proba[:10], labels, folds)
    for fold, t in enumerate(info["fold_temperatures"]):
        assert t == pytest.approx(fit_temperature(labels[folds != fold],
                                                  proba[folds != fold]))
        np.testing.assert_allclose(oof[folds == fold], apply_temperature(proba[folds == fold], t))
    np.testing.assert_allclose(test, apply_temperature(proba[:10], info["temperature"]))
    assert calibrate("none", proba, proba[:10], labels, folds)[0] is proba


def test_clip_prior_lifts_the_bounds_off_the_floor_when_training_has_no_mistake():
    labels = np.array([0, 1] * 300)
    perfect = np.stack([1.0 - labels, labels.astype(float)], axis=1)
    assert choose_clip(labels, perfect)[0] == pytest.approx(CLIP_GRID[0])
    low, high = choose_clip(labels, perfect, pseudo_mistakes=1.0)
    # The optimum of (n * -log(1-e) - log e) is near e = 1 / (n + 1).
    assert low == pytest.approx(1 / 601, rel=0.1) and high == pytest.approx(1 - low)


def _result(name, losses_per_row, confidence, clip=None):
    """A binary result whose out-of-fold rows have exactly the given log losses."""
    p_true = np.exp(-np.asarray(losses_per_row, dtype=float))
    labels = np.arange(len(p_true)) % 2
    p1 = np.where(labels == 1, p_true, 1 - p_true)
    proba = np.stack([1 - p1, p1], axis=1)
    ids = np.array([str(i) for i in range(len(p_true))], dtype=object)
    return EnsembleResult(
        name=name, kind="ensemble", backbones=("a",), head="logreg", metric="log_loss",
        cv_log_loss=log_loss(labels, proba), cv_log_loss_std=0.0,
        cv_log_loss_clipped=log_loss(labels, proba), cv_accuracy=1.0, clip=clip,
        fit_seconds=35.7, reused=False, classes=("cat", "dog"), oof_ids=ids,
        oof_proba=proba, test_ids=ids[:2], test_proba=proba[:2], oof_labels=labels,
        folds=np.arange(len(ids)) % 5, params={"fold_log_loss": [0.1, 0.2]},
        key=f"{name}-{confidence}", cv_metric=log_loss(labels, apply_clip(proba, clip)),
        oof_submitted=apply_clip(proba, clip))


def test_selection_rule_prefers_the_cautious_model_among_equals_only():
    rng = np.random.default_rng(0)
    base = rng.exponential(0.05, 400)
    sharp = _result("sharp", base * 0.995, "high")       # best CV, and the surest
    cautious = _result("cautious", rng.permutation(base), "low")  # same mean: within noise
    poor = _result("poor", base + 0.2, "low")             # clearly worse, and the least sure
    results = [sharp, cautious, poor]
    noise = uncertainties(results)
    assert noise["sharp"].vs_best == 0.0 and noise["cautious"].within_noise
    assert not noise["poor"].within_noise
    assert choose_submission(results, "lowest-cv")[0].name == "sharp"
    picked, why = choose_submission(results, "within-noise-smoothest")
    assert picked.name == "cautious" and "within noise" in why


def test_cv_table_shows_uncertainty_and_prints_seconds_with_one_decimal():
    rng = np.random.default_rng(1)
    base = rng.exponential(0.05, 200)
    table = report_table([_result("a", base, "x"), _result("b", base + 0.5, "y")])
    assert list(table["name"]) == ["a", "b"]
    assert table.loc[0, "within_noise"] and not table.loc[1, "within_noise"]
    assert table.loc[1, "vs_best"] == pytest.approx(0.5, rel=1e-6)
    assert table.loc[0, "cv_se"] == pytest.approx(base.std(ddof=1) / np.sqrt(200), rel=1e-3)
    text = format_table(table)
    assert "| 35.7 |" in text and "35.7000" not in text


def test_contact_sheet_shows_the_costliest_photos(tmp_path):
    rng = np.random.default_rng(2)
    losses = rng.exponential(0.05, 30)
    losses[[7, 19]] = [6.0, 9.0]  # two confident mistakes
    result = _result("x", losses, "x")
    assert costliest_rows(result, 2).tolist() == [19, 7]
    paths = {str(i): write_jpeg(tmp_path / "train" / f"{i}.jpg", seed=i, size=300)
             for i in range(30)}
    sheet = write_contact_sheet(result, paths, tmp_path / "sheet.png", count=6, columns=3)
    with Image.open(sheet) as image:
        assert image.format == "PNG" and image.width > 300 and image.height > 300
    assert write_contact_sheet(result, {}, tmp_path / "none.png") is None


def test_excluded_ids_leave_fitting_and_change_the_key(tmp_path):
    config_text = textwrap.dedent("""\
        competition = "demo"
        workspace = "work"
        [features]
        backbones = ["mobilenet_025"]
        [cv]
        folds = 3
        exclude_ids_file = "mislabelled.txt"
        [ensembles.lr]
        backbones = ["mobilenet_025"]
        head = "logreg"
        """)
    (tmp_path / "harness.toml").write_text(config_text)
    (tmp_path / "mislabelled.txt").write_text("# seen on the contact sheet\n3\n17  # a dog\n")
    config = load_config(tmp_path / "harness.toml")
    assert config.cv.exclude_ids == ("17", "3")
    synthetic_features(config.workspace.features_dir, {"mobilenet_025": 5}, classes=["cat", "dog"],
                       n_train=60)
    (excluded,) = run_ensembles(config, progress=False)
    assert len(excluded.oof_ids) == 58 and not {"3", "17"} & set(excluded.oof_ids)
    (tmp_path / "mislabelled.txt").write_text("")
    (full,) = run_ensembles(load_config(tmp_path / "harness.toml"), progress=False)
    assert len(full.oof_ids) == 60 and full.key != excluded.key and not full.reused
    (tmp_path / "mislabelled.txt").write_text("cat.999\n")
    with pytest.raises(HarnessError, match=r"exclude_ids: 1 id\(s\) are not training ids"):
        run_ensembles(load_config(tmp_path / "harness.toml"), progress=False)


def test_auto_scale_keeps_real_features_raw_and_standardises_tiny_ones():
    X, y = blobs(n=120, d=10, gap=1.0)
    real = LogisticHead(scale="auto").fit(X + 5.0, y)
    assert real.scale_used_ == "none"
    tiny = LogisticHead(scale="auto").fit(X * 1e-17, y)  # a random-init backbone's scale
    assert tiny.scale_used_ == "standard"
    assert np.mean(tiny.predict(X * 1e-17) == y) > 0.9
    assert np.mean(LogisticHead(scale="none").fit(X * 1e-17, y).predict_proba(X * 1e-17)
                   .max(axis=1)) < 0.51  # raw tiny features: no fit at all


def test_within_noise_mean_averages_only_the_results_the_cv_cannot_tell_apart():
    rng = np.random.default_rng(0)
    base = rng.exponential(0.05, 400)
    sharp = _result("sharp", base * 0.995, "high")
    cautious = _result("cautious", rng.permutation(base), "low")
    poor = _result("poor", base + 0.2, "low")
    picked, why = choose_submission([poor, cautious, sharp], "within-noise-mean")
    assert picked.name == "within-noise-mean" and "cautious" in why and "poor" not in why
    assert picked.params["members"] == ["sharp", "cautious"]
    np.testing.assert_allclose(picked.test_proba, (sharp.test_proba + cautious.test_proba) / 2)
    np.testing.assert_allclose(picked.oof_proba, (sharp.oof_proba + cautious.oof_proba) / 2)
    assert picked.cv_log_loss == pytest.approx(log_loss(picked.oof_labels, picked.oof_proba))
    alone, why = choose_submission([sharp, poor], "within-noise-mean")
    assert alone is sharp and "nothing else within noise" in why
