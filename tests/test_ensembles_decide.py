"""Decisions a metric rewards (F2 thresholds, kappa cut points) fitted out of fold, and
grouped folds: what the CV score would overstate if either looked at the scored rows."""

from __future__ import annotations

import numpy as np
import pytest

from base.errors import HarnessError
from competition.metrics import METRICS
from ensembles.cv import make_folds
from ensembles.decide import apply, decide, fit


def _folds(n: int, k: int = 5) -> np.ndarray:
    return np.arange(n) % k


def test_tag_thresholds_are_fitted_per_tag_and_out_of_fold():
    rng = np.random.default_rng(0)
    n = 400
    tags = rng.integers(0, 2, (n, 3))
    # Tag 0's probabilities sit low (a rare tag's head is shy): 0.5 misses most of it.
    proba = np.clip(tags * 0.5 + rng.normal(0.2, 0.12, (n, 3)), 0, 1)
    proba[:, 0] *= 0.45
    f2 = METRICS["mean_f2"]
    submitted, decision = decide(f2, "tags", tags, proba, _folds(n), 3)
    at_half = f2.score(tags, (proba >= 0.5).astype(np.int64))
    assert decision.kind == "thresholds"
    low, *others = decision.params["thresholds"]
    assert all(low < other for other in others)
    assert f2.score(tags, submitted) > at_half + 0.05


def test_out_of_fold_decisions_do_not_score_noise_as_signal():
    """On predictions with no signal, thresholds fitted on the scored rows look better
    than they are; fitted out of fold they do not."""
    rng = np.random.default_rng(1)
    n = 120
    tags = rng.integers(0, 2, (n, 4))
    noise = rng.random((n, 4))
    f2 = METRICS["mean_f2"]
    honest, _ = decide(f2, "tags", tags, noise, _folds(n), 4)
    in_sample = apply(fit("thresholds", f2, tags, noise, 4), noise)
    assert f2.score(tags, in_sample) > f2.score(tags, honest)


def test_kappa_cut_points_fix_a_squeezed_grade_scale():
    rng = np.random.default_rng(2)
    grades = rng.integers(0, 5, 500)
    # A regression head shrinks towards the mean: rounding puts 0s and 4s in 1 and 3.
    values = 2 + 0.55 * (grades - 2) + rng.normal(0, 0.12, 500)
    kappa = METRICS["quadratic_kappa"]
    submitted, decision = decide(kappa, "value", grades, values[:, None], _folds(500), 5)
    rounded = np.clip(np.rint(values), 0, 4).astype(int)
    assert decision.kind == "cuts" and np.all(np.diff(decision.params["cuts"]) > 0)
    assert set(np.unique(submitted)) == {0, 1, 2, 3, 4}
    assert kappa.score(grades, submitted) > kappa.score(grades, rounded) + 0.02
    assert METRICS["accuracy"].score(grades, submitted) > 0.9


def test_group_folds_never_split_a_group_and_stay_stratified():
    rng = np.random.default_rng(3)
    drivers = np.repeat([f"p{d:03d}" for d in range(12)], 30)
    labels = rng.integers(0, 3, len(drivers))
    ids = np.asarray([f"img_{i}.jpg" for i in range(len(drivers))])
    folds = make_folds(ids, labels, 4, seed=0, groups=drivers)
    for driver in np.unique(drivers):
        assert len(set(folds[drivers == driver])) == 1, driver
    assert sorted(np.bincount(folds).tolist()) == [90, 90, 90, 90]
    for fold in range(4):
        shares = np.bincount(labels[folds == fold], minlength=3) / np.sum(folds == fold)
        assert np.abs(shares - np.bincount(labels) / len(labels)).max() < 0.12
    with pytest.raises(HarnessError, match="group"):
        make_folds(ids[:60], labels[:60], 4, seed=0, groups=drivers[:60])


def test_the_counting_threshold_search_finds_what_rescoring_finds():
    import dataclasses

    rng = np.random.default_rng(4)
    tags = rng.integers(0, 2, (150, 4))
    proba = np.clip(tags * 0.3 + rng.random((150, 4)) * 0.7, 0, 1)
    f2 = METRICS["mean_f2"]
    slow = dataclasses.replace(f2, tag_rows=None)  # every trial rescored by scikit-learn
    counted = fit("thresholds", f2, tags, proba, 4)
    rescored = fit("thresholds", slow, tags, proba, 4)
    assert counted == rescored
    submitted = apply(counted, proba)
    rows = f2.tag_rows((submitted & tags).sum(1), submitted.sum(1), tags.sum(1))
    assert rows.mean() == pytest.approx(f2.score(tags, submitted), rel=1e-12)
