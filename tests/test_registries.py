"""Tests driven by the stages' registries: a new backbone, head, blend method, metric, TTA
mode, precision or engine is covered by adding its entry, not by copying a table here."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from base.errors import HarnessError
from competition.metrics import METRICS
from competition.spec import get_spec
from ensembles.blend import BLEND_METHODS, blend, check_blend_params
from ensembles.registry import HEADS
from features.backbones import BACKBONES
from features.engines import ENGINE_CHOICES
from features.settings import PRECISIONS, TTA_MODES
from harness.config import load_config
from submissions.writer import write_submission

# Checks that do not apply, with the reason; everything else in scikit-learn's estimator
# checks must pass.
SKIPPED_CHECKS = {
    "DropoutHead": {
        "check_classifiers_train": "Dropout(0.5) on sklearn's 2-column toy blobs drops half "
        "the signal at every step; the head is made for thousands of GAP columns and does "
        "not reach the check's 0.83 training accuracy in its 30 default epochs",
    },
}


@pytest.mark.slow
# The finetune head needs a backbone's maps (tests/test_finetune.py checks its contract).
@parametrize_with_checks([kind.estimator() for kind in HEADS.values()
                          if kind.name != "finetune"],
                         expected_failed_checks=lambda est: SKIPPED_CHECKS.get(
                             type(est).__name__, {}))
def test_heads_follow_the_scikit_learn_contract(estimator, check):
    check(estimator)


@pytest.mark.parametrize("name", HEADS)
def test_every_head_schema_accepts_its_defaults_and_refuses_a_wrong_type(name, tmp_path):
    kind = HEADS[name]
    defaults = kind.estimator().get_params()
    assert set(kind.params) == set(defaults), "the schema and the constructor disagree"
    for key, param in kind.params.items():
        assert param.test(defaults[key]), f"{name}.{key} default {defaults[key]!r} refused"
    key = min(kind.params)
    with pytest.raises(ValueError, match=f"{key} = 'wrong' must be"):
        kind.estimator(**{key: "wrong"}).fit(np.eye(4, dtype=np.float32), [0, 1, 0, 1])
    (tmp_path / "harness.toml").write_text(
        f"[ensembles.x]\nbackbones = ['xception']\nhead = '{name}'\n{key} = 'wrong'\n")
    with pytest.raises(HarnessError, match=f"ensemble 'x': {key} = 'wrong' must be"):
        load_config(tmp_path / "harness.toml")


@pytest.mark.parametrize("method", BLEND_METHODS)
def test_every_blend_method_blends_two_members(method):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60)
    folds = np.arange(60) % 3
    members = [np.clip(labels + rng.normal(0, s, 60), 0.01, 0.99) for s in (0.3, 0.5)]
    oofs = [np.column_stack([1 - p, p]) for p in members]
    tests = [o[:10] for o in oofs]
    oof, test, _ = blend(method, {}, oofs, tests, labels, folds)
    assert oof.shape == (60, 2) and test.shape == (10, 2)
    np.testing.assert_allclose(oof.sum(axis=1), 1.0, rtol=1e-6)
    assert ((oof >= 0) & (oof <= 1)).all()


def test_weights_shrink_moves_fitted_weights_toward_the_plain_mean():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 90)
    folds = np.arange(90) % 3
    members = [np.clip(labels + rng.normal(0, s, 90), 0.01, 0.99) for s in (0.2, 0.6, 0.9)]
    oofs = [np.column_stack([1 - p, p]) for p in members]
    tests = [o[:12] for o in oofs]
    mean_oof, mean_test, _ = blend("mean", {}, oofs, tests, labels, folds)
    _, _, fitted = blend("weights", {}, oofs, tests, labels, folds)
    half_oof, half_test, half = blend("weights", {"shrink": 0.5}, oofs, tests, labels, folds)
    full_oof, full_test, _ = blend("weights", {"shrink": 1.0}, oofs, tests, labels, folds)
    np.testing.assert_allclose(full_oof, mean_oof, rtol=1e-12)
    np.testing.assert_allclose(full_test, mean_test, rtol=1e-12)
    assert fitted["weights"][0] > 0.6  # the least noisy member dominates when unshrunk
    np.testing.assert_allclose(half["weights"], 0.5 * np.asarray(fitted["weights"]) + 0.5 / 3)
    np.testing.assert_allclose(half_test, np.tensordot(half["weights"], np.stack(tests), axes=1))
    assert not np.allclose(half_oof, mean_oof)
    assert sum(half["weights"]) == pytest.approx(1.0)
    with pytest.raises(HarnessError, match=r"shrink = 1.5 must be a number in \[0, 1\]"):
        check_blend_params("b", "weights", {"shrink": 1.5})


def _right_and_wrong(metric):
    """(y, right, wrong) submitted values in the metric's form (competition.metrics)."""
    labels = np.array([0, 1, 1, 0, 1, 0])
    if metric.submits in ("proba", "ranking"):
        right = np.eye(2)[labels] * 0.8 + 0.1
        return labels, right, right[:, ::-1]
    if metric.submits == "labels":
        return labels, labels, 1 - labels
    if metric.submits == "tags":
        tags = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 1]])
        return tags, tags, 1 - tags
    values = np.array([3.0, 10.0, 55.0, 70.0, 99.0, 1.0])
    return values, values + 0.5, values[::-1]


@pytest.mark.parametrize("name", METRICS)
def test_every_metric_ranks_right_over_wrong_and_writes_a_valid_submission(name, tmp_path):
    metric = METRICS[name]
    y, right, wrong = _right_and_wrong(metric)
    better = metric.score(y, right) > metric.score(y, wrong)
    assert better == metric.higher_is_better
    if metric.row_loss is not None:
        assert metric.row_loss(y, right).mean() < metric.row_loss(y, wrong).mean()
    if "binary" not in metric.tasks:
        return  # written and scored per competition in tests/test_catalog.py
    spec = dataclasses.replace(get_spec("dogs-vs-cats-redux-kernels-edition"), metric=name)
    (tmp_path / "sample_submission.csv").write_text("id,label\n1,0.5\n2,0.5\n")
    proba = np.array([[0.9, 0.1], [0.1, 0.9]])  # id 2 a cat, id 1 a dog
    path = write_submission(tmp_path / "out.csv", spec, tmp_path, np.array(["2", "1"]),
                            proba, ("cat", "dog"), (0.01, 0.99) if metric.clips else None)
    column = pd.read_csv(path)["label"]  # in the sample's id order: id 1 (a dog), id 2
    if metric.submits_labels:
        assert column.tolist() == [1, 0]
    else:
        np.testing.assert_allclose(column, [0.9, 0.1])


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("tta", TTA_MODES)
def test_every_backbone_and_tta_mode_is_accepted_at_load(backbone, tta):
    config = load_config(None, {"backbones": backbone, "tta": tta})
    assert config.feature_sets() == [(backbone, tta)]


@pytest.mark.parametrize("key, names", [("precision", PRECISIONS), ("engine", ENGINE_CHOICES)])
def test_every_precision_and_engine_is_accepted_and_others_refused(key, names):
    for name in names:
        assert getattr(load_config(None, {key: name}).features, key) == name
    with pytest.raises(HarnessError, match=f"\\[features\\] {key} = 'nope' is not one of"):
        load_config(None, {key: "nope"})
