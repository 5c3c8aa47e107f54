"""Blends of ensembles' predictions: `mean`, `weights` and `stack`.

`weights` and `stack` learn from out-of-fold predictions, so their own CV score is
cross-validated on the same folds: for each fold, the weights (or the stacker) are fitted
on the other folds' out-of-fold rows and applied to this fold. The final weights (or
stacker) are fitted on all out-of-fold rows and applied to the members' test predictions.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.optimize import minimize
from sklearn.linear_model import LogisticRegression

from base.config import Param, check_params, positive_number, unit_interval
from base.errors import HarnessError
from competition.metrics import EPS
from ensembles.cv import log_loss

logger = logging.getLogger(__name__)

# The blend-method registry: each method's parameters (its schema) and what it does.
BLEND_METHODS: dict[str, tuple[dict[str, Param], str]] = {
    "mean": ({}, "the plain mean of the members' probabilities"),
    "weights": ({"shrink": unit_interval()},
                ("non-negative weights summing to 1, fitted on out-of-fold predictions (shrink: "
                 "the share of equal weights mixed in, 0 = fitted only, 1 = the plain mean)")),
    "stack": ({"C": positive_number()},
              "logistic regression on the members' out-of-fold logits"),
}


def check_blend_params(name: str, method: str, params: Mapping[str, Any], *,
                       also: Mapping[str, Any] = (), target: str = "classes") -> None:
    """Raises HarnessError for an unknown method, one that cannot blend `target`
    predictions (stacking fits class probabilities only), or an unknown or bad parameter
    of blend `name` (keys in `also` are another part of the run's, as in
    registry.head_params)."""
    if method not in BLEND_METHODS:
        raise HarnessError(f"blend {name!r}: method = {method!r} is not one of "
                           f"{', '.join(BLEND_METHODS)}")
    if method == "stack" and target != "classes":
        raise HarnessError(f"blend {name!r}: method \"stack\" blends class probabilities; "
                           f"this competition's target is {target}: use mean or weights")
    own = {key: value for key, value in params.items() if key not in also}
    check_params(BLEND_METHODS[method][0], own, where=f"blend {name!r}",
                 owner=f"method {method!r}", extra=also)


def _weights_loss(probas: list[np.ndarray], labels: np.ndarray, target: str):
    """The loss of the weighted mean that `fit_weights` minimises: log loss for classes,
    the mean binary log loss of tags, squared error for values."""
    stacked = np.stack(probas, axis=-1)  # (n, k, m)
    if target == "value":
        values = stacked[:, 0, :]
        return lambda w: float(np.mean((values @ w - labels) ** 2))
    if target == "tags":
        def tags_loss(w: np.ndarray) -> float:
            p = np.clip(stacked @ w, EPS, 1 - EPS)
            return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))
        return tags_loss
    picked = stacked[np.arange(len(labels)), labels, :]  # (n, m)
    return lambda w: float(-np.mean(np.log(np.clip(picked @ w, EPS, 1.0))))


def fit_weights(probas: list[np.ndarray], labels: np.ndarray,
                target: str = "classes") -> np.ndarray:
    """Non-negative weights summing to 1 that minimise the loss of the weighted mean (log
    loss for classes; see `_weights_loss`)."""
    m = len(probas)
    loss = _weights_loss(probas, labels, target)

    result = minimize(loss, np.full(m, 1.0 / m), method="SLSQP", bounds=[(0.0, 1.0)] * m,
                      constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0}])
    weights = np.clip(result.x, 0.0, None)
    return weights / weights.sum()


def _logits(probas: list[np.ndarray]) -> np.ndarray:
    """Stacking inputs: the logit of the positive class (binary) or log-probabilities
    (multiclass), one block per member."""
    blocks = []
    for p in probas:
        p = np.clip(p, 1e-7, 1 - 1e-7)
        blocks.append(np.log(p[:, 1:] / p[:, :1]) if p.shape[1] == 2 else np.log(p))
    return np.hstack(blocks)


def _combine(method: str, params: dict, train: list[np.ndarray], labels: np.ndarray,
             apply: list[np.ndarray], target: str) -> tuple[np.ndarray, dict]:
    if method == "mean":
        return np.mean(apply, axis=0), {}
    if method == "weights":
        # Weights fitted on a few hundred out-of-fold rows overfit them; shrinking toward
        # equal weights trades that variance for a little bias.
        shrink = float(params.get("shrink", 0.0))
        w = (1.0 - shrink) * fit_weights(train, labels, target) + shrink / len(train)
        return np.tensordot(w, np.stack(apply), axes=1), {"weights": w.tolist()}
    stacker = LogisticRegression(C=float(params.get("C", 1.0)), max_iter=1000)
    stacker.fit(_logits(train), labels)
    proba = np.zeros((len(apply[0]), apply[0].shape[1]))
    proba[:, stacker.classes_] = stacker.predict_proba(_logits(apply))
    return proba, {}


def blend(method: str, params: dict, oofs: list[np.ndarray], tests: list[np.ndarray],
          labels: np.ndarray, folds: np.ndarray, target: str = "classes"
          ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Blend members' predictions (all aligned on the same ids; `target` as in
    CompetitionSpec.target).

    Returns:
        (out-of-fold probabilities, test probabilities, info such as fitted weights).
    """
    oof = np.zeros_like(oofs[0])
    for fold in np.unique(folds):
        fit_rows, held = folds != fold, folds == fold
        oof[held], _ = _combine(method, params, [p[fit_rows] for p in oofs], labels[fit_rows],
                                [p[held] for p in oofs], target)
    test, info = _combine(method, params, oofs, labels, tests, target)
    if target == "classes":
        logger.debug("blend %s: oof log loss %.4f %s", method, log_loss(labels, oof), info)
    return oof, test, info
