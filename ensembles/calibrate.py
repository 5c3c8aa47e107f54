"""Temperature scaling fitted on out-of-fold predictions.

A head that is right on every training photo learns to be too sure; log loss then charges
it 8-9 nats for each confident mistake on the test set. Dividing the logits by a
temperature T > 1 softens every prediction alike (accuracy unchanged). T is fitted on
out-of-fold predictions, never on the rows being scored: for the CV score, each fold's
predictions are scaled by a T fitted on the other folds' out-of-fold rows (as blends are);
the test predictions by a T fitted on all out-of-fold rows.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from ensembles.cv import log_loss

CALIBRATIONS = ("none", "temperature")
# log10(T) is searched in this range: T from 0.1 (sharpen) to 100 (flatten).
LOG10_T_BOUNDS = (-1.0, 2.0)


def _log_proba(proba: np.ndarray) -> np.ndarray:
    return np.log(np.clip(proba, 1e-15, 1.0))


def apply_temperature(proba: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(proba) / T): the same ranking, softer (T > 1) or sharper (T < 1)."""
    z = _log_proba(proba) / temperature
    z -= z.max(axis=1, keepdims=True)
    out = np.exp(z)
    return out / out.sum(axis=1, keepdims=True)


def fit_temperature(labels: np.ndarray, proba: np.ndarray) -> float:
    """The T that minimises the log loss of `apply_temperature(proba, T)`."""
    found = minimize_scalar(lambda t: log_loss(labels, apply_temperature(proba, 10.0 ** t)),
                            bounds=LOG10_T_BOUNDS, method="bounded",
                            options={"xatol": 1e-3})
    return float(10.0 ** found.x)


def calibrate(method: str, oof: np.ndarray, test: np.ndarray, labels: np.ndarray,
              folds: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """Calibrated (out-of-fold, test) probabilities and what was fitted.

    Returns:
        (oof, test, info): info holds the test temperature and the per-fold ones.
    """
    if method == "none":
        return oof, test, {}
    out = np.empty_like(oof)
    per_fold = []
    for fold in np.unique(folds):
        held = folds == fold
        t = fit_temperature(labels[~held], oof[~held])
        out[held] = apply_temperature(oof[held], t)
        per_fold.append(t)
    t = fit_temperature(labels, oof)
    return out, apply_temperature(test, t), {"temperature": t, "fold_temperatures": per_fold}
