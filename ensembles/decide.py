"""From predictions to what a submission holds: the decisions a metric rewards, fitted out
of fold.

A head predicts class probabilities, tag probabilities or a value; the competition's
metric scores something else (see competition.metrics): clipped probabilities (log loss),
a ranking (AUC), class labels (accuracy, F1, kappa), tag sets (F2) or values (RMSE). Where
turning one into the other has free parameters (per-tag thresholds for F2, the cut points
that turn a predicted grade into an integer grade for kappa, the range regression values
are kept in) they are fitted on out-of-fold predictions, never on the rows being scored:
each fold's submitted values come from parameters fitted on the other folds (as blends and
temperature scaling are), the test set's from parameters fitted on every out-of-fold row.
Clip bounds are chosen by ensembles.run, as before, on all out-of-fold rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from competition.metrics import Metric
from ensembles.cv import apply_clip

# Per-tag thresholds are searched on this grid, one tag at a time, PASSES times.
THRESHOLDS = np.round(np.arange(0.02, 0.99, 0.02), 2)
PASSES = 2
# Cut points between grades k-1 and k start at k - 0.5 and move within this half-width.
CUT_STEPS = np.linspace(-0.5, 0.5, 21)


@dataclass(frozen=True)
class Decision:
    """How a result's predictions become submitted values.

    Attributes:
        kind: "clip" (probabilities, clipped by `clip` when given), "argmax" (class
            indices), "cuts" (values cut into grades), "thresholds" (tag probabilities
            into 0/1), "range" (values kept within the training range).
        params: The parameters for the test set (cut points, thresholds, range).
    """

    kind: str
    params: dict


def decision_kind(metric: Metric, target: str) -> str:
    """Which decision turns a `target` head's predictions into what `metric` scores."""
    if metric.submits in ("proba", "ranking"):
        return "clip"
    if metric.submits == "labels":
        return "cuts" if target == "value" else "argmax"
    return "thresholds" if metric.submits == "tags" else "range"


def apply(decision: Decision, predictions: np.ndarray,
          clip: tuple[float, float] | None = None) -> np.ndarray:
    """The submitted values of `predictions` under `decision` (see competition.metrics
    for their forms)."""
    params = decision.params
    if decision.kind == "clip":
        return apply_clip(predictions, clip)
    if decision.kind == "argmax":
        return np.argmax(predictions, axis=1)
    if decision.kind == "cuts":
        return np.searchsorted(np.asarray(params["cuts"]), predictions[:, 0], side="right")
    if decision.kind == "thresholds":
        return (predictions >= np.asarray(params["thresholds"])[None, :]).astype(np.int64)
    low, high = params["range"]
    return np.clip(predictions[:, 0], low, high)


def _fit_cuts(metric: Metric, y: np.ndarray, values: np.ndarray, n_grades: int) -> list:
    """Cut points c_1 < ... < c_{K-1} (grade = how many cuts a value passes) maximising
    the metric by coordinate search from the midpoints k - 0.5."""
    cuts = np.arange(1, n_grades, dtype=np.float64) - 0.5
    sign = 1.0 if metric.higher_is_better else -1.0

    def score(c: np.ndarray) -> float:
        return sign * metric.score(y, np.searchsorted(c, values, side="right"))

    best = score(cuts)
    for _ in range(PASSES):
        for k in range(len(cuts)):
            low = cuts[k - 1] if k else -np.inf
            high = cuts[k + 1] if k + 1 < len(cuts) else np.inf
            for step in CUT_STEPS:
                trial = cuts.copy()
                trial[k] = k + 0.5 + step
                if not low < trial[k] < high:
                    continue
                value = score(trial)
                if value > best:
                    best, cuts = value, trial
    return cuts.tolist()


def _fit_thresholds(metric: Metric, y: np.ndarray, proba: np.ndarray) -> list:
    """One threshold per tag maximising the metric, one tag at a time (coordinate search
    over THRESHOLDS, from 0.5), PASSES times."""
    thresholds = np.full(proba.shape[1], 0.5)
    sign = 1.0 if metric.higher_is_better else -1.0

    def score(t: np.ndarray) -> float:
        return sign * metric.score(y, (proba >= t[None, :]).astype(np.int64))

    if metric.tag_rows is not None:
        return _fit_thresholds_by_counts(metric, y, proba, thresholds, sign)
    best = score(thresholds)
    for _ in range(PASSES):
        for tag in range(proba.shape[1]):
            for candidate in THRESHOLDS:
                trial = thresholds.copy()
                trial[tag] = candidate
                value = score(trial)
                if value > best:
                    best, thresholds = value, trial
    return thresholds.tolist()


def _fit_thresholds_by_counts(metric: Metric, y: np.ndarray, proba: np.ndarray,
                              thresholds: np.ndarray, sign: float) -> list:
    """The same search, every candidate of one tag scored at once from per-image counts
    (40k images x 17 tags: seconds instead of minutes)."""
    y = np.asarray(y, dtype=np.int64)
    actual = y.sum(axis=1)
    predicted = (proba >= thresholds[None, :]).astype(np.int64)
    best = sign * float(np.mean(metric.tag_rows((predicted & y).sum(1), predicted.sum(1),
                                                actual)))
    for _ in range(PASSES):
        for tag in range(proba.shape[1]):
            others = np.delete(np.arange(proba.shape[1]), tag)
            hits = (predicted[:, others] & y[:, others]).sum(1)
            count = predicted[:, others].sum(1)
            trial = (proba[:, tag][:, None] >= THRESHOLDS[None, :]).astype(np.int64)
            rows = metric.tag_rows(hits[:, None] + trial * y[:, tag][:, None],
                                   count[:, None] + trial, actual[:, None])
            scores = sign * rows.mean(axis=0)
            pick = int(np.argmax(scores))
            if scores[pick] > best:
                best, thresholds = float(scores[pick]), thresholds.copy()
                thresholds[tag] = THRESHOLDS[pick]
                predicted[:, tag] = trial[:, pick]
    return thresholds.tolist()


def fit(kind: str, metric: Metric, y: np.ndarray, predictions: np.ndarray,
        n_classes: int) -> Decision:
    """The decision of `kind` fitted on (y, predictions) rows."""
    if kind == "cuts":
        return Decision(kind, {"cuts": _fit_cuts(metric, y, predictions[:, 0], n_classes)})
    if kind == "thresholds":
        return Decision(kind, {"thresholds": _fit_thresholds(metric, y, predictions)})
    if kind == "range":
        return Decision(kind, {"range": [float(np.min(y)), float(np.max(y))]})
    return Decision(kind, {})


def decide(metric: Metric, target: str, y: np.ndarray, oof: np.ndarray, folds: np.ndarray,
           n_classes: int, clip: tuple[float, float] | None = None
           ) -> tuple[np.ndarray, Decision]:
    """Out-of-fold submitted values and the decision for the test set.

    Each fold's rows are decided by a decision fitted on the other folds' out-of-fold
    rows; the returned decision is fitted on all of them.
    """
    kind = decision_kind(metric, target)
    if kind in ("clip", "argmax"):
        return apply(Decision(kind, {}), oof, clip), Decision(kind, {})
    submitted = None
    for fold in np.unique(folds):
        held = folds == fold
        values = apply(fit(kind, metric, y[~held], oof[~held], n_classes), oof[held])
        if submitted is None:
            submitted = np.zeros((len(oof), *values.shape[1:]), dtype=values.dtype)
        submitted[held] = values
    return submitted, fit(kind, metric, y, oof, n_classes)
