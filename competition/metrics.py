"""The metric registry: how a competition is scored and what its submission column holds.

One entry per metric. Everything that depends on the metric (which CV number ranks the
ensembles, whether bigger is better, whether clipping applies, how a submission column is
written and checked) asks the `Metric` here instead of testing the metric's name, so a new
metric is one entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from base.errors import HarnessError

EPS = 1e-15  # Kaggle's log-loss floor


def row_log_loss(labels: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Each row's negative log-likelihood of its true class (natural log), Kaggle-style:
    rows renormalised and probabilities clipped at 1e-15."""
    proba = np.clip(proba, EPS, 1 - EPS)
    proba = proba / proba.sum(axis=1, keepdims=True)
    return -np.log(proba[np.arange(len(labels)), labels])


def row_error(labels: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """1.0 for each row whose most probable class is not the true one, else 0.0."""
    return (np.argmax(proba, axis=1) != labels).astype(np.float64)


@dataclass(frozen=True)
class Metric:
    """One competition metric.

    Attributes:
        name: As written in a spec or config (`metric = "log_loss"`).
        higher_is_better: Direction of the score.
        submits_labels: The submission holds class labels (argmax) instead of
            probabilities; such columns are never clipped.
        row_loss: (labels, (N, K) proba) -> (N,) per-row loss, lower is better; the CV
            uncertainty and the selection rules compare ensembles row by row with it.
        score: (labels, proba) -> the competition's score.
        cv_field: The `EnsembleResult` attribute that holds this metric out of fold.
        description: One line for listings.
    """

    name: str
    higher_is_better: bool
    submits_labels: bool
    row_loss: Callable[[np.ndarray, np.ndarray], np.ndarray]
    score: Callable[[np.ndarray, np.ndarray], float]
    cv_field: str
    description: str

    @property
    def clips(self) -> bool:
        """Whether submitted probabilities are clipped (only probability metrics)."""
        return not self.submits_labels


METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric("log_loss", higher_is_better=False, submits_labels=False,
               row_loss=row_log_loss,
               score=lambda y, p: float(np.mean(row_log_loss(y, p))),
               cv_field="cv_log_loss_clipped",
               description="log loss of submitted probabilities (lower is better)"),
        Metric("accuracy", higher_is_better=True, submits_labels=True,
               row_loss=row_error,
               score=lambda y, p: float(np.mean(np.argmax(p, axis=1) == y)),
               cv_field="cv_accuracy",
               description="share of correct class labels (higher is better)"),
    )
}


def get_metric(name: str) -> Metric:
    """The registry entry `name`; an unknown name fails listing the known ones."""
    try:
        return METRICS[name]
    except KeyError:
        raise HarnessError(f"unknown metric {name!r}; known: {', '.join(METRICS)}") from None
