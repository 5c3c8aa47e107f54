"""The metric registry: how a competition is scored, as Kaggle defines it.

One entry per Kaggle metric. A metric scores what a submission holds, in numbers: the true
targets `y` and the submitted values, both in the form the entry's `submits` names:

    "proba":   y (n,) class indices; submitted (n, k) probabilities, clipped (log loss)
    "ranking": y (n,) class indices or (n, t) 0/1 columns; submitted (n, k) probabilities,
               whose order alone counts (ROC AUC: never clipped)
    "labels":  y (n,) class indices; submitted (n,) class indices (accuracy, F1, kappa)
    "tags":    y (n, t) 0/1; submitted (n, t) 0/1 (F2 over images)
    "value":   y (n,) numbers; submitted (n,) numbers (RMSE)

Everything that depends on the metric (which CV number ranks the ensembles, whether bigger
is better, whether clipping applies, which decision turns predictions into the submitted
values) asks the `Metric` here instead of testing the metric's name, so a new metric is one
entry. The definitions are scikit-learn's where it has them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm

from base.errors import HarnessError

EPS = 1e-15  # Kaggle's log-loss floor
SUBMITS = ("proba", "ranking", "labels", "tags", "value")


def row_log_loss(labels: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Each row's negative log-likelihood of its true class (natural log), Kaggle-style:
    probabilities clipped at 1e-15 and rows renormalised."""
    proba = np.clip(proba, EPS, 1 - EPS)
    proba = proba / proba.sum(axis=1, keepdims=True)
    return -np.log(proba[np.arange(len(labels)), labels])


def row_error(labels: np.ndarray, submitted: np.ndarray) -> np.ndarray:
    """1.0 for each row whose submitted class is not the true one, else 0.0."""
    return (np.asarray(submitted) != labels).astype(np.float64)


def row_auc_loss(labels: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Per-row shares of 1 - AUC (DeLong's placement values): their mean is exactly
    1 - ROC AUC of P(class 1), so two rankings can be compared row by row, paired.

    A positive row's placement is the share of negatives ranked below it (ties count half);
    its loss is (1 - placement) * n / (2 n_pos); negatives likewise.
    """
    score = proba[:, 1] if proba.ndim == 2 else proba
    positive = np.asarray(labels) == 1
    pos, neg = np.sort(score[positive]), np.sort(score[~positive])
    n, n_pos, n_neg = len(score), len(pos), len(neg)
    losses = np.zeros(n)
    if not n_pos or not n_neg:
        return losses
    below = (np.searchsorted(neg, score[positive], "left")
             + np.searchsorted(neg, score[positive], "right")) / 2
    above = n_pos - (np.searchsorted(pos, score[~positive], "left")
                     + np.searchsorted(pos, score[~positive], "right")) / 2
    losses[positive] = (1 - below / n_neg) * n / (2 * n_pos)
    losses[~positive] = (1 - above / n_pos) * n / (2 * n_neg)
    return losses


def row_squared_error(y: np.ndarray, submitted: np.ndarray) -> np.ndarray:
    """Each row's squared error (the mean is the MSE, the square of RMSE)."""
    return (np.asarray(submitted, np.float64).reshape(-1) - np.asarray(y, np.float64)) ** 2


def _log_loss(y: np.ndarray, proba: np.ndarray) -> float:
    return float(np.mean(row_log_loss(y, proba)))


def _roc_auc(y: np.ndarray, proba: np.ndarray) -> float:
    return float(skm.roc_auc_score(y, proba[:, 1] if proba.ndim == 2 else proba))


def _f2_rows(hits: np.ndarray, predicted: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Each image's F2 from its counts: (1 + 4) p r / (4 p + r) = 5 hits / (4 actual +
    predicted); 0 when nothing is predicted or true (scikit-learn's zero_division=0)."""
    denominator = 4.0 * actual + predicted
    return np.divide(5.0 * hits, denominator, out=np.zeros(np.shape(hits)),
                     where=denominator > 0)


def _one_hot(y: np.ndarray, k: int) -> np.ndarray:
    y = np.asarray(y)
    return y if y.ndim == 2 else np.eye(k, dtype=np.int64)[y]


def _mean_column_auc(y: np.ndarray, proba: np.ndarray) -> float:
    """The mean over columns of each column's ROC AUC (plant-pathology-2020's metric)."""
    truth = _one_hot(y, proba.shape[1])
    return float(np.mean([skm.roc_auc_score(truth[:, c], proba[:, c])
                          for c in range(proba.shape[1])]))


@dataclass(frozen=True)
class Metric:
    """One competition metric.

    Attributes:
        name: As written in a spec or config (`metric = "roc_auc"`).
        higher_is_better: Direction of the score.
        submits: What the submission holds, one of SUBMITS (see the module doc).
        tasks: The competition tasks this metric scores.
        score: (y, submitted) -> the competition's score.
        row_loss: (y, submitted) -> (n,) per-row losses whose mean moves with the score
            (lower is better), so two results can be compared row by row with a paired
            standard error; None when the metric does not split into rows (kappa, F2).
        description: One line for listings.
        tag_rows: For tag metrics, (true positives, predicted tags, true tags) per image
            -> each image's score, whose mean is `score`: lets the per-tag threshold
            search try every threshold at once instead of rescoring the whole matrix.
    """

    name: str
    higher_is_better: bool
    submits: str
    tasks: tuple[str, ...]
    score: Callable[[np.ndarray, np.ndarray], float]
    row_loss: Callable[[np.ndarray, np.ndarray], np.ndarray] | None
    description: str
    tag_rows: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None

    @property
    def clips(self) -> bool:
        """Whether submitted probabilities are clipped (log loss only: a rank metric does
        not care, a label metric has no probabilities)."""
        return self.submits == "proba"

    @property
    def submits_labels(self) -> bool:
        """The submission holds classes, not probabilities."""
        return self.submits == "labels"


CLASS_TASKS = ("binary", "multiclass")
METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric("log_loss", False, "proba", CLASS_TASKS, _log_loss, row_log_loss,
               "log loss of the submitted probabilities, rows renormalised, clipped at "
               "1e-15 (lower is better)"),
        Metric("accuracy", True, "labels", (*CLASS_TASKS, "ordinal"),
               lambda y, s: float(skm.accuracy_score(y, s)), row_error,
               "share of correct class labels"),
        Metric("roc_auc", True, "ranking", ("binary",), _roc_auc, row_auc_loss,
               "area under the ROC curve of the submitted probability"),
        Metric("mean_column_auc", True, "ranking", ("multiclass", "multilabel"),
               _mean_column_auc, None,
               "mean over the submitted probability columns of each column's ROC AUC"),
        Metric("f1_micro", True, "labels", CLASS_TASKS,
               lambda y, s: float(skm.f1_score(y, s, average="micro")), row_error,
               "micro-averaged F1 of the submitted class labels (= accuracy for one "
               "label per image)"),
        Metric("mean_f2", True, "tags", ("multilabel",),
               lambda y, s: float(skm.fbeta_score(y, s, beta=2, average="samples",
                                                  zero_division=0)), None,
               "F2 (beta = 2) of each image's submitted tags, averaged over images",
               tag_rows=_f2_rows),
        Metric("quadratic_kappa", True, "labels", ("ordinal", "multiclass"),
               lambda y, s: float(skm.cohen_kappa_score(y, s, weights="quadratic")), None,
               "Cohen's kappa with quadratic weights between submitted and true grades"),
        Metric("rmse", False, "value", ("regression",),
               lambda y, s: float(np.sqrt(np.mean(row_squared_error(y, s)))),
               row_squared_error, "root mean squared error of the submitted values"),
    )
}


def get_metric(name: str) -> Metric:
    """The registry entry `name`; an unknown name fails listing the known ones."""
    try:
        return METRICS[name]
    except KeyError:
        raise HarnessError(f"unknown metric {name!r}; known: {', '.join(METRICS)}") from None


# Words in Kaggle's evaluation-metric names (the API record's `evaluationMetric`, e.g. "Area
# Under Receiver Operating Characteristic Curve", "Multi Class Log Loss", "Mean F Score
# Beta"), lower-cased with everything but letters and digits removed, first match wins:
# the more specific names come before the ones they contain ("columnwise ... auc" before
# "auc"). A plain "F1"/"Mean F-Score" is not micro F1 (it averages per image): no match.
_KAGGLE_WORDS: tuple[tuple[tuple[str, ...], str | None], ...] = (
    # Metrics whose names contain a registry metric's words but are not it.
    (("logarithmicerror", "squaredlog", "rmsle", "precisionrecall", "prauc",
      "averageprecision"), None),
    (("kappa",), "quadratic_kappa"),
    (("columnwise", "meancolumn"), "mean_column_auc"),
    (("auc", "receiveroperating", "roccurve"), "roc_auc"),
    (("logloss", "logarithmicloss", "multiclassloss", "crossentropy"), "log_loss"),
    (("fscorebeta", "fbeta", "f2"), "mean_f2"),
    (("microf1", "microaveragedf1", "microaveragedfscore", "f1micro"), "f1_micro"),
    (("rootmeansquare", "rmse"), "rmse"),
    (("accuracy",), "accuracy"),
)


def metric_for_kaggle_name(kaggle_name: str) -> str | None:
    """The registry metric that Kaggle's evaluation-metric name stands for, or None when no
    registry entry is that metric (the caller then says so and keeps its own guess)."""
    words = "".join(ch for ch in kaggle_name.lower() if ch.isalnum())
    if not words:
        return None
    for needles, name in _KAGGLE_WORDS:
        if any(needle in words for needle in needles):
            return name
    return None
