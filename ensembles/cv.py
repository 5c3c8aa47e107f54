"""One set of stratified folds, out-of-fold predictions, scores and clip bounds.

Every ensemble and blend is scored on the same folds (config.cv.folds, config.cv.seed),
so their scores are comparable. Folds are assigned on the ids in natural order, so a
feature file's row order never changes which fold an image lands in. Folds are stratified
by class (for values: by quantile bin; for tags: by each image's rarest tag), and with
[cv] group_column grouped, so that the images of one group (State Farm's driver, one
patient's lesions) never sit on both sides of a split: a model that has seen the driver
scores her other photos far better than it will score a stranger's on the test set.
"""

from __future__ import annotations

import gc
import inspect
import logging
import time
from dataclasses import dataclass, field

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from tqdm.auto import tqdm

from base.errors import HarnessError
from competition.images import natural_key
from competition.metrics import METRICS
from ensembles.heads import chunk_rows, outputs

logger = logging.getLogger(__name__)

# Candidate symmetric clip bounds e (clip to [e, 1 - e]); Kaggle itself clips at 1e-15.
# The floor is 1e-4, not lower: when the out-of-fold predictions are all right (small,
# separable training sets) they cannot tell 1e-4 from 1e-9, but one confident mistake on
# the test set costs -log(e) per row, 9.2 at 1e-4 against 20.7 at 1e-9.
CLIP_GRID = np.geomspace(1e-4, 0.2, 200)
# Imagined confident mistakes behind "auto" clip bounds (choose_clip's label-noise prior).
DEFAULT_CLIP_PRIOR = 0.0


# Regression targets are stratified by this many quantile bins of their value.
VALUE_BINS = 10


def strata(labels: np.ndarray) -> np.ndarray:
    """What folds are stratified by: the class; for tags the rarest tag of each row (rows
    without a tag: their own stratum); for values the quantile bin."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        frequency = labels.sum(axis=0)
        rarity = np.where(labels > 0, frequency[None, :], np.inf)
        return np.where(np.isinf(rarity.min(axis=1)), -1, rarity.argmin(axis=1))
    if labels.dtype.kind == "f":
        edges = np.quantile(labels, np.linspace(0, 1, VALUE_BINS + 1)[1:-1])
        return np.searchsorted(edges, labels, side="right")
    return labels


def make_folds(ids: np.ndarray, labels: np.ndarray, n_folds: int, seed: int, *,
               what: str = "training set", groups: np.ndarray | None = None) -> np.ndarray:
    """The fold (0..n_folds-1) of every row, stratified (see `strata`) and, with `groups`,
    keeping each group in one fold.

    Raises:
        HarnessError: a single class, a class with fewer rows than folds, or fewer groups
            than folds.
    """
    labels = np.asarray(labels)
    if labels.ndim == 1 and labels.dtype.kind in "iu":
        counts = np.bincount(labels)
        present = np.flatnonzero(counts)
        if len(present) < 2:
            raise HarnessError(f"{what} has a single class ({len(labels)} rows of class "
                               f"index {present.tolist()}); a classifier needs at least two "
                               "classes")
        if counts[present].min() < n_folds and groups is None:
            raise HarnessError(f"{what}: the smallest class has {counts[present].min()} "
                               f"rows, fewer than [cv] folds = {n_folds}; lower folds")
    if len(labels) < n_folds:
        raise HarnessError(f"{what} has {len(labels)} rows, fewer than [cv] folds = "
                           f"{n_folds}; lower folds")
    order = sorted(range(len(ids)), key=lambda row: natural_key(str(ids[row])))
    order = np.asarray(order, dtype=np.int64)
    folds = np.empty(len(ids), dtype=np.int64)
    stratum = strata(labels)[order]
    _, stratum = np.unique(stratum, return_inverse=True)
    if groups is not None:
        groups = np.asarray(groups, dtype=object)[order]
        if len(set(groups)) < n_folds:
            raise HarnessError(f"{what}: [cv] group_column has {len(set(groups))} groups, "
                               f"fewer than [cv] folds = {n_folds}; lower folds")
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        split = splitter.split(np.zeros(len(order)), stratum, groups.astype(str))
    else:
        # A stratum smaller than the folds (a rare tag, a sparse value bin) only draws a
        # warning from scikit-learn; classes were checked above.
        import warnings

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The least populated class")
            split = list(StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
                         .split(np.zeros(len(order)), stratum))
    for fold, (_, held) in enumerate(split):
        folds[order[held]] = fold
    return folds


log_loss = METRICS["log_loss"].score  # the competition's log loss (mean of row_log_loss)


def accuracy(labels: np.ndarray, proba: np.ndarray) -> float:
    """Share of rows whose most probable class is the true one."""
    return float(np.mean(np.argmax(proba, axis=1) == labels))


def apply_clip(proba: np.ndarray, clip: tuple[float, float] | None) -> np.ndarray:
    """Probabilities clipped to [low, high] (no-op for None)."""
    return proba if clip is None else np.clip(proba, clip[0], clip[1])


def choose_clip(labels: np.ndarray, proba: np.ndarray,
                pseudo_mistakes: float = 0.0) -> tuple[float, float]:
    """The symmetric bounds [e, 1 - e] minimising out-of-fold log loss over CLIP_GRID.

    `pseudo_mistakes` adds that many imagined rows the model gets confidently wrong (each
    costs -log e): a label-noise prior. A training set with no confident mistake does not
    mean the test set has none, and without the prior the bounds go to the grid's floor.
    """
    n = len(labels)
    losses = [(n * log_loss(labels, apply_clip(proba, (e, 1 - e)))
               - pseudo_mistakes * np.log(e)) / (n + pseudo_mistakes) for e in CLIP_GRID]
    best = float(CLIP_GRID[int(np.argmin(losses))])
    return (best, 1.0 - best)


@dataclass
class CVOutput:
    """What cross-validating one head gives.

    Attributes:
        oof: (n, k) out-of-fold probabilities aligned with the training rows.
        fold_log_loss, fold_accuracy: One score per fold.
        histories: Per fold, the head's `history_` (Keras head) or None.
        test: (m, k) test probabilities (fold-mean) or None (refit happens later).
        seconds: Wall time of the folds.
    """

    oof: np.ndarray
    fold_log_loss: list[float]
    fold_accuracy: list[float]
    histories: list[dict | None] = field(default_factory=list)
    test: np.ndarray | None = None
    seconds: float = 0.0


def predict_rows(head, X: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """`outputs(head, X[rows])` without materialising X[rows] at once."""
    chunk = chunk_rows(X.shape[1], X.dtype.itemsize)
    parts = [outputs(head, X[rows[i:i + chunk]]) for i in range(0, len(rows), chunk)]
    return np.concatenate(parts, axis=0)


def cross_validate(head, X: np.ndarray, labels: np.ndarray, folds: np.ndarray,
                   n_classes: int, *, test_X: np.ndarray | None = None,
                   name: str = "", progress: bool = True) -> CVOutput:
    """Fit a clone of `head` on all folds but one, predict the held-out fold; repeat.

    Heads whose `fit` takes `rows=` (every built-in one) get the fold's row indices and
    never a copy made here; other heads get `X[train_rows]`. Held-out and test rows are
    predicted in chunks.

    Args:
        labels: The targets (class indices, (n, t) tags or values).
        n_classes: Columns of the output matrix (classes, tags, or 1 for values).
        test_X: When given, each fold model also predicts it and `test` is their mean.

    Per-fold log loss and accuracy are recorded for class targets only.
    """
    classes = np.ndim(labels) == 1 and np.asarray(labels).dtype.kind in "iu" \
        and n_classes > 1
    n_folds = int(folds.max()) + 1
    oof = np.full((len(labels), n_classes), np.nan)
    fold_ll, fold_acc, histories = [], [], []
    test_sum = None
    start = time.perf_counter()
    for fold in tqdm(range(n_folds), desc=f"{name} folds", unit="fold", disable=not progress,
                     leave=False):
        train_rows = np.flatnonzero(folds != fold)
        held_rows = np.flatnonzero(folds == fold)
        if classes and len(np.unique(labels[train_rows])) < n_classes:
            raise HarnessError(f"ensemble {name!r}: fold {fold} lacks a class in its training "
                               "rows; lower [cv] folds")
        model = clone(head)
        fit_args = inspect.signature(model.fit).parameters
        kwargs: dict = {}
        if "monitor" in fit_args:
            kwargs["monitor"] = (X, labels[held_rows], held_rows)
        if "rows" in fit_args:
            # The head reads (or copies once) the fold's rows itself: the dropout head
            # trains straight from X, the logistic head makes the one copy it standardises.
            model.fit(X, labels[train_rows], rows=train_rows, **kwargs)
        else:
            if "copy" in model.get_params():
                model.set_params(copy=False)  # a fresh fold copy may be changed in place
            model.fit(X[train_rows], labels[train_rows], **kwargs)
        del kwargs
        proba = predict_rows(model, X, held_rows)
        oof[held_rows] = proba
        if classes:
            fold_ll.append(log_loss(labels[held_rows], proba))
            fold_acc.append(accuracy(labels[held_rows], proba))
        histories.append(getattr(model, "history_", None))
        if test_X is not None:
            part = predict_rows(model, test_X, np.arange(len(test_X)))
            test_sum = part if test_sum is None else test_sum + part
        del model
        gc.collect()  # drop the fold's model (and its Keras graph) before the next one
    return CVOutput(oof=oof, fold_log_loss=fold_ll, fold_accuracy=fold_acc,
                    histories=histories,
                    test=None if test_sum is None else test_sum / n_folds,
                    seconds=time.perf_counter() - start)
