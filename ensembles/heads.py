"""Heads over cached features, all with the scikit-learn estimator contract.

`__init__` only stores parameters, `fit(X, y)` returns self, learned state ends in `_`
(`classes_`, `n_features_in_`). What a head predicts depends on what it fits (the
competition's `target`): class probabilities, one column per class in `classes_` order;
for tags (multilabel, y of shape (n, t) 0/1) one probability per tag; for values
(regression, ordinal grades) one column holding the value. `outputs(head, X)` returns that
(n, k) matrix for any head, so cross-validation, blending and the CLI never care which head
they hold. Heads also take `fit(X, y, rows=...)`, which fits on `X[rows]`:
cross-validation passes each fold's row indices instead of a copy of its rows.

Both heads avoid float64 or full-size copies of the feature matrix: statistics are
accumulated in row chunks, the Keras head folds standardisation into the model and feeds
batches from the caller's array, and predictions are made chunk by chunk.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone, is_regressor
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, column_or_1d

from base.config import (
    Param,
    boolean,
    check_params,
    fraction,
    integer,
    one_of,
    positive_int,
    positive_number,
)
from competition.metrics import METRICS

logger = logging.getLogger(__name__)

CHUNK_BYTES = 16 * 2**20  # temporaries per chunk: small next to a 6,144-column matrix


def chunk_rows(n_columns: int, itemsize: int = 8) -> int:
    """Rows per chunk so one chunk's float64 temporary stays near CHUNK_BYTES."""
    return max(64, CHUNK_BYTES // max(1, n_columns * itemsize))
# Learning rates of Keras 2, whose string optimizers the seed recipe used; Keras 3's
# Adadelta defaults to 0.001, which barely moves a head in 8 epochs.
KERAS2_LEARNING_RATES = {"adadelta": 1.0, "adam": 0.001, "sgd": 0.01, "rmsprop": 0.001,
                         "adagrad": 0.01, "nadam": 0.002}


def _check_X(head: BaseEstimator, X: Any, *, fitted: bool) -> np.ndarray:
    """X as a dense, finite, 2-D float32 array (no copy when it already is one), as
    scikit-learn's own estimators check it."""
    if fitted:
        check_is_fitted(head)
    # dtype float32: a float32 cache passes through without a copy; a float64 input is
    # converted once, as before. Sparse, complex, 1-D and NaN inputs fail with sklearn's
    # messages.
    X = check_array(X, dtype=np.float32, accept_sparse=False, estimator=head)
    if fitted and X.shape[1] != head.n_features_in_:
        raise ValueError(f"X has {X.shape[1]} features, but {type(head).__name__} is "
                         f"expecting {head.n_features_in_} features as input")
    return X


def _check_rows(X: np.ndarray, rows: Any) -> np.ndarray | None:
    """`rows` as int64 indices into X (None stays None); out-of-range rows are an error."""
    if rows is None:
        return None
    rows = np.asarray(rows)
    if rows.ndim != 1 or not (rows.dtype.kind in "iu" or rows.size == 0):
        raise ValueError(f"rows must be a 1-D array of row indices, got {rows.dtype} "
                         f"shape {rows.shape}")
    rows = rows.astype(np.int64, copy=False)
    if rows.size and (rows.min() < 0 or rows.max() >= len(X)):
        raise ValueError(f"rows index {len(X)} rows of X but range from {rows.min()} to "
                         f"{rows.max()}")
    return rows


def _is_tags(y: Any) -> bool:
    """A 2-D 0/1 target with several columns: one per tag (multilabel). A single column is
    a 1-D target written as a column, as scikit-learn treats it."""
    shape = np.asarray(y).shape if y is not None else ()
    return len(shape) == 2 and shape[1] > 1


def _encode(head: BaseEstimator, y: Any, n_rows: int) -> np.ndarray:
    if y is None:
        raise ValueError(f"{type(head).__name__} requires y to be passed, but the target y "
                         "is None")
    y = column_or_1d(y, warn=True)
    if y.shape != (n_rows,):
        raise ValueError(f"y has shape {y.shape}, but X has {n_rows} rows")
    check_classification_targets(y)  # a continuous target is a mistake, not 1000 classes
    head.classes_, codes = np.unique(y, return_inverse=True)
    if len(head.classes_) < 2:
        raise ValueError(f"{type(head).__name__} needs at least 2 classes in y, got "
                         f"{len(head.classes_)} class ({head.classes_.tolist()})")
    return codes.astype(np.int64)


def column_stats(X: np.ndarray, rows: np.ndarray | None = None,
                 chunk: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and standard deviation (float32) of `X[rows]` (all rows by default),
    accumulated in float64 over row chunks so no float64 copy of X ever exists.

    Constant columns get a scale of 1 so standardising never divides by zero.
    """
    total = np.zeros(X.shape[1], dtype=np.float64)
    squares = np.zeros(X.shape[1], dtype=np.float64)
    n = len(X) if rows is None else len(rows)
    chunk = chunk or chunk_rows(X.shape[1])
    for start in range(0, n, chunk):
        part = slice(start, start + chunk) if rows is None else rows[start:start + chunk]
        block = X[part].astype(np.float64)
        total += block.sum(axis=0)
        squares += np.einsum("ij,ij->j", block, block)
    mean = total / max(n, 1)
    var = np.maximum(squares / max(n, 1) - mean**2, 0.0)
    scale = np.sqrt(var)
    # "Constant" is relative to the column's own level, not an absolute floor: features of
    # randomly initialised backbones can be ~1e-17 in size and still carry the signal.
    scale[(scale == 0) | (scale <= 1e-6 * np.abs(mean))] = 1.0
    return mean.astype(np.float32), scale.astype(np.float32)


def _chunked(X: np.ndarray, predict) -> np.ndarray:
    chunk = chunk_rows(X.shape[1])
    parts = [predict(X[start:start + chunk]) for start in range(0, len(X), chunk)]
    return np.concatenate(parts, axis=0) if parts else np.zeros((0, 0), dtype=np.float64)


SCALES = ("auto", "none", "standard", "l2")
# bench/quality.py on genuine photos (bench/README.md): raw Xception features, C chosen from this grid
# by an inner 3-fold CV ("best") beat C = 1 and both wider grids and the one-SE rule.
DEFAULT_C_GRID = (0.1, 0.3, 1.0, 3.0)
# "auto" keeps raw features unless their root mean square is below this: ImageNet GAP
# features are O(0.1-10), a random-init backbone's ~1e-17, where any sensible C fits nothing.
TINY_FEATURES_RMS = 1e-3
C_RULES = ("best", "one_se")


def l2_rows(X: np.ndarray) -> np.ndarray:
    """Each row divided by its L2 norm (in place when X is writeable float32)."""
    norms = np.sqrt(np.einsum("ij,ij->i", X, X, dtype=np.float64)).astype(np.float32)
    X /= np.maximum(norms, np.float32(1e-30))[:, None]
    return X


def choose_C(X: np.ndarray, codes: np.ndarray, grid: list[float], *, folds: int,
             repeats: int, rule: str, max_iter: int, tol: float,
             seed: int) -> tuple[float, dict]:
    """C from `grid` by (repeated) stratified inner cross-validation on these rows only.

    "best" takes the lowest mean log loss; "one_se" the smallest C (strongest
    regularisation) whose mean is within one standard error of the best's: when scores
    are within noise, the smoother model generalises better to unseen photos.

    Returns:
        (chosen C, {"C_grid", "C_loss", "C_se"} for the report).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import RepeatedStratifiedKFold

    log_loss = METRICS["log_loss"].score  # the competition's (ensembles.cv's too)

    grid = sorted(grid)
    splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    losses = np.zeros((folds * repeats, len(grid)))
    for f, (train, held) in enumerate(splitter.split(X, codes)):
        # Warm start along the grid, weakest penalty last: each fit starts from the last.
        model = LogisticRegression(max_iter=max_iter, tol=tol, warm_start=True)
        for c, C in enumerate(grid):
            model.set_params(C=C)
            model.fit(X[train], codes[train])
            losses[f, c] = log_loss(codes[held], model.predict_proba(X[held]))
    mean = losses.mean(axis=0)
    se = losses.std(axis=0, ddof=1) / np.sqrt(len(losses))
    best = int(np.argmin(mean))
    pick = best
    if rule == "one_se":
        pick = int(np.flatnonzero(mean <= mean[best] + se[best])[0])
    return grid[pick], {"C_grid": grid, "C_loss": mean.tolist(), "C_se": se.tolist()}


class LogisticHead(ClassifierMixin, BaseEstimator):
    """Multinomial (or binary) logistic regression on float32 features.

    Args:
        C: Inverse L2 strength; a list of values chooses one by an inner stratified CV on
            the training rows only (`inner_folds` x `inner_repeats`, scored by log loss,
            picked by `C_rule`).
        scale: "none" (raw features), "standard" (each column to zero mean and unit
            variance, statistics from the training rows, stored as `mean_`, `scale_`),
            "l2" (each row to unit length) or "auto": raw, unless the features are tiny
            (random-init backbones), then standard. `scale_used_` says which ran.
        C_rule: "one_se" (the smallest C within one standard error of the best) or "best".
        inner_folds, inner_repeats: The inner CV that chooses C from a grid.
        max_iter, tol: L-BFGS limits.
        copy: False lets `fit` scale `X` in place (the caller's array changes), so a refit
            on a matrix used for nothing else needs no copy. With `rows=` the fold's rows
            are copied once anyway and scaled in place whatever `copy` says.
        seed: Seed of the inner CV folds for a C grid.

    The defaults were chosen by bench/quality.py on genuine photos (bench/README.md).
    """

    def __init__(self, C: float | list[float] | tuple[float, ...] = DEFAULT_C_GRID,
                 scale: str = "auto", C_rule: str = "best", inner_folds: int = 3,
                 inner_repeats: int = 1,
                 max_iter: int = 1000, tol: float = 1e-4, copy: bool = True, seed: int = 0):
        self.C = C
        self.scale = scale
        self.C_rule = C_rule
        self.inner_folds = inner_folds
        self.inner_repeats = inner_repeats
        self.max_iter = max_iter
        self.tol = tol
        self.copy = copy
        self.seed = seed

    def _scaled(self, X: np.ndarray, *, own: bool) -> np.ndarray:
        """X scaled as fitted; `own` means X may be changed in place."""
        if self.scale_used_ == "none":
            return X
        if not own:
            X = X.copy()
        if self.scale_used_ == "standard":
            X -= self.mean_
            X /= self.scale_
            return X
        return l2_rows(X)

    def fit(self, X: Any, y: Any, rows: Any = None) -> LogisticHead:
        """Fit on `X` (n, d) and labels `y` (n,); returns self.

        Args:
            rows: Optional row indices: fit on `X[rows]` with `y` aligned to `rows`, the
                same as `fit(X[rows], y)`. scikit-learn needs the rows as one matrix, so
                this makes the one copy and scales it in place (never a second).

        Raises:
            ValueError: a bad parameter (checked here too, scikit-learn style), bad X or y.
        """
        from sklearn.linear_model import LogisticRegression

        check_params(LOGREG_PARAMS, self.get_params(), where=type(self).__name__,
                     error=ValueError)
        X = _check_X(self, X, fitted=False)
        rows = _check_rows(X, rows)
        if _is_tags(y):
            return self._fit_tags(X, np.asarray(y), rows)
        self.tags_ = None
        fresh = rows is not None  # X[rows] is our own copy: safe to change in place
        if fresh:
            X = X[rows]
        codes = _encode(self, y, len(X))
        self.n_features_in_ = X.shape[1]
        self.scale_used_ = self.scale
        if self.scale == "auto":
            sample = X[:1024].astype(np.float64)
            rms = float(np.sqrt(np.mean(sample * sample))) if sample.size else 0.0
            self.scale_used_ = "standard" if rms < TINY_FEATURES_RMS else "none"
        if self.scale_used_ == "standard":
            self.mean_, self.scale_ = column_stats(X)
        X = self._scaled(X, own=fresh or (not self.copy and X.flags.writeable))
        grid = [float(c) for c in self.C] if isinstance(self.C, (list, tuple)) else None
        inner_folds = min(self.inner_folds, int(np.bincount(codes).min()))
        self.C_search_ = {}
        if grid and len(grid) > 1 and inner_folds < 2:
            # Too few rows of some class to choose C by cross-validation: take the middle.
            logger.warning("too few rows per class to choose C from %s; using C=%g",
                           grid, sorted(grid)[len(grid) // 2])
            grid = [sorted(grid)[len(grid) // 2]]
        if grid and len(grid) > 1:
            self.C_, self.C_search_ = choose_C(
                X, codes, grid, folds=inner_folds, repeats=int(self.inner_repeats),
                rule=self.C_rule, max_iter=self.max_iter, tol=self.tol, seed=self.seed)
        else:
            self.C_ = grid[0] if grid else float(self.C)
        model = LogisticRegression(C=self.C_, max_iter=self.max_iter, tol=self.tol)
        model.fit(X, codes)
        self.model_ = model
        self.n_iter_ = int(np.max(model.n_iter_))
        return self

    def _fit_tags(self, X: np.ndarray, y: np.ndarray, rows: np.ndarray | None
                  ) -> LogisticHead:
        """One-vs-rest: a binary head per tag column, each with its own C. A tag that is
        on (or off) in every fitted row (a rare tag in one CV fold) gets a constant: its
        smoothed share (positives + 1) / (rows + 2), never a certain 0 or 1."""
        if y.shape[0] != (len(X) if rows is None else len(rows)):
            raise ValueError(f"y has {y.shape[0]} rows, X has {len(X)}")
        self.tags_ = [
            clone(self).set_params(copy=True).fit(X, y[:, t], rows=rows)
            if len(np.unique(y[:, t])) > 1 else (float(y[:, t].sum()) + 1) / (len(y) + 2)
            for t in range(y.shape[1])]
        self.classes_ = np.arange(y.shape[1])
        self.n_features_in_ = X.shape[1]
        self.C_ = [getattr(head, "C_", None) for head in self.tags_]
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, (n, len(classes_)), in `classes_` order; for tags, each
        tag's probability (n, t)."""
        if getattr(self, "tags_", None):
            n = len(X)
            return np.hstack([np.full((n, 1), head) if isinstance(head, float)
                              else head.predict_proba(X)[:, 1:] for head in self.tags_])
        X = _check_X(self, X, fitted=True)

        def predict(block: np.ndarray) -> np.ndarray:
            block = self._scaled(block, own=False)
            return self.model_.predict_proba(block).astype(np.float64)

        return _chunked(X, predict)

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each row."""
        proba = self.predict_proba(X)  # first: an unfitted head raises NotFittedError
        return self.classes_[np.argmax(proba, axis=1)]


def inner_split(n_rows: int, share: float, codes: np.ndarray | None, n_classes: int,
                seed: int, epochs: int, warn: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(fit positions, validation positions) of a Keras head's training rows: `share` held
    out, stratified by `codes` (None for tags and values), seeded; sorted. With too few
    rows for a stratified hold-out (tiny data sets, tiny folds) every row is fitted for
    the full `epochs` instead of failing, with a warning."""
    fit_pos = np.arange(n_rows)
    held_out = math.ceil(share * n_rows)
    too_few = held_out < 2 if codes is None else (held_out < n_classes
                                                  or np.bincount(codes).min() < 2)
    if share <= 0:
        return fit_pos, np.zeros(0, dtype=np.int64)
    if too_few:
        if warn:
            logger.warning("%d training rows are too few for a %.0f%% validation split; "
                           "training %d epochs without early stopping", n_rows, 100 * share,
                           epochs)
        return fit_pos, np.zeros(0, dtype=np.int64)
    from sklearn.model_selection import train_test_split

    fit_pos, val_pos = train_test_split(fit_pos, test_size=share, stratify=codes,
                                        random_state=seed)
    return np.sort(fit_pos), np.sort(val_pos)


class DropoutHead(ClassifierMixin, BaseEstimator):
    """Keras `Dropout(rate) -> Dense(1, sigmoid)` (Dense(k, softmax) for k > 2 classes).

    Args:
        dropout: Dropout rate on the input features.
        epochs: Training epochs (the maximum when early stopping is on).
        optimizer: A Keras optimizer name (adadelta, adam, sgd, rmsprop, adagrad, nadam).
        learning_rate: None means Keras 2's default for that optimizer (adadelta 1.0), as
            the seed recipe's `optimizer="adadelta"` meant.
        batch_size: Rows per gradient step.
        validation_split: Fraction of the training rows held out (stratified) from the fit,
            as Keras' `validation_split` did in the seed recipe; needed for early stopping.
        early_stopping: Patience in epochs on the held-out loss (0 = off); the best
            epoch's weights are restored.
        standardize: Fold column standardisation into the model (a Rescaling layer),
            so the training data is never copied.
        seed: Seeds Keras (weights, dropout, shuffling) and the validation split.

    The defaults (standardised inputs, adam, early stopping on a 10% hold-out) train well
    on any feature scale; the `seed004` preset reproduces the seed recipe's settings
    (adadelta, 8 epochs, raw features) exactly.

    `history_` holds per-epoch lists: loss, accuracy (training), and val_loss,
    val_accuracy when there is a validation split or `fit(..., monitor=(X, y))` data.
    """

    def __init__(self, dropout: float = 0.5, epochs: int = 30, optimizer: str = "adam",
                 learning_rate: float | None = None, batch_size: int = 128,
                 validation_split: float = 0.1, early_stopping: int = 3,
                 standardize: bool = True, seed: int = 0):
        self.dropout = dropout
        self.epochs = epochs
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.validation_split = validation_split
        self.early_stopping = early_stopping
        self.standardize = standardize
        self.seed = seed

    # What this head fits: "classes" or "tags" (from y's shape); DropoutRegressor: "value".
    _fits_values = False

    def _build(self, n_features: int, n_classes: int):
        import keras

        inputs = keras.Input((n_features,), dtype="float32")
        x = inputs
        if self.standardize:
            # Rescaling, not Normalization: Normalization floors the deviation at 1e-7,
            # which erases features that are tiny but informative (random-init backbones).
            x = keras.layers.Rescaling(scale=(1.0 / self.scale_).astype(np.float32),
                                       offset=(-self.mean_ / self.scale_).astype(np.float32))(x)
        x = keras.layers.Dropout(self.dropout, seed=self.seed)(x)
        if self.target_ == "value":
            outputs = keras.layers.Dense(1)(x)
            loss = "mean_squared_error"
        elif self.target_ == "tags":
            outputs = keras.layers.Dense(n_classes, activation="sigmoid")(x)
            loss = "binary_crossentropy"
        elif n_classes == 2:
            outputs = keras.layers.Dense(1, activation="sigmoid")(x)
            loss = "binary_crossentropy"
        else:
            outputs = keras.layers.Dense(n_classes, activation="softmax")(x)
            loss = "sparse_categorical_crossentropy"
        model = keras.Model(inputs, outputs)
        rate = self.learning_rate
        if rate is None:
            rate = KERAS2_LEARNING_RATES[self.optimizer]
        optimizer = keras.optimizers.get({"class_name": self.optimizer,
                                          "config": {"learning_rate": float(rate)}})
        model.compile(optimizer=optimizer, loss=loss,
                      metrics=[] if self.target_ == "value" else ["accuracy"])
        return model

    def _targets(self, y: Any, n_rows: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(what Keras trains on, the classes to stratify the hold-out by or None)."""
        if self._fits_values:
            self.target_ = "value"
            values = column_or_1d(np.asarray(y, dtype=np.float64), warn=True)
            if values.shape != (n_rows,):
                raise ValueError(f"y has shape {values.shape}, but X has {n_rows} rows")
            # Trained on standardised targets (an output scale near 1 suits the default
            # learning rates), predicted back in the target's units.
            self.y_mean_ = float(values.mean())
            self.y_scale_ = float(values.std()) or 1.0
            self.classes_ = np.asarray([0])
            return ((values - self.y_mean_) / self.y_scale_).astype(np.float32), None
        if _is_tags(y):
            self.target_ = "tags"
            tags = np.asarray(y, dtype=np.float32)
            if tags.shape[0] != n_rows:
                raise ValueError(f"y has {tags.shape[0]} rows, but X has {n_rows}")
            self.classes_ = np.arange(tags.shape[1])
            return tags, None
        self.target_ = "classes"
        codes = _encode(self, y, n_rows)
        return (codes.astype(np.float32) if len(self.classes_) == 2 else codes), codes

    def fit(self, X: Any, y: Any, monitor: tuple | None = None,
            rows: Any = None) -> DropoutHead:
        """Fit on `X` (n, d) and labels `y`; returns self.

        Args:
            monitor: Optional (X, y) or (X, y, rows) scored after every epoch for the
                learning curves only (cross-validation passes the held-out fold's rows); it
                never steers training. Used only when there is no validation split.
            rows: Optional row indices: fit on `X[rows]` with `y` aligned to `rows`, the
                same as `fit(X[rows], y)` but batches are read from `X` directly, so the
                training rows are never copied.
        """
        import keras

        check_params(DROPOUT_PARAMS, self.get_params(), where=type(self).__name__,
                     error=ValueError)
        X = _check_X(self, X, fitted=False)
        index = _check_rows(X, rows)
        index = np.arange(len(X)) if index is None else index
        # `y`, the validation split and the batch order all work on positions 0..n-1 and
        # map them to rows of X (`index`) only when reading, so fit(X, y, rows=rows)
        # trains exactly as fit(X[rows], y) does.
        target, codes = self._targets(y, len(index))
        self.n_features_in_ = X.shape[1]
        keras.utils.set_random_seed(int(self.seed))
        fit_pos, val_pos = inner_split(len(index), self.validation_split, codes,
                                       len(self.classes_), int(self.seed), int(self.epochs))
        if self.standardize:
            self.mean_, self.scale_ = column_stats(X, index[fit_pos])
        model = self._build(X.shape[1], len(self.classes_))
        Batches = _batches_class()
        batches = Batches(X, index[fit_pos], target[fit_pos], int(self.batch_size),
                          int(self.seed))
        callbacks: list = []
        validation = None
        if len(val_pos):
            # Validation batches stay small: Keras' generator queue holds several at once.
            validation = Batches(X, index[val_pos], target[val_pos], 512, None)
            if self.early_stopping:
                callbacks.append(keras.callbacks.EarlyStopping(
                    monitor="val_loss", patience=int(self.early_stopping),
                    restore_best_weights=True))
        elif monitor is not None and self.target_ == "classes":
            callbacks.append(_Monitor(self, *monitor))
        try:
            history = model.fit(batches, validation_data=validation, epochs=int(self.epochs),
                                callbacks=callbacks, verbose=0)
        finally:
            # tf.data's generator registry keeps every PyDataset it wrapped alive for the
            # life of the process (measured: one training copy leaked per fold); dropping
            # their data here leaves only tiny shells behind.
            for holder in (batches, validation, *callbacks):
                if hasattr(holder, "release"):
                    holder.release()
        self.history_ = {k: [float(v) for v in vals] for k, vals in history.history.items()}
        self.model_ = model
        self.n_epochs_ = len(self.history_.get("loss", []))
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, (n, len(classes_)), in `classes_` order.

        The trained network evaluated in float64 (see `_inference_map`), not by Keras in
        float32: a batched float32 product rounds a row differently by where it sits in the
        batch (measured: 6e-8 when rows are reordered), and scikit-learn's contract is that
        a row's prediction does not depend on the other rows. In float64 the rounding is
        ~1e-16, far below anything a score or a clip bound sees.
        """
        from scipy.special import expit, softmax

        X = _check_X(self, X, fitted=True)
        weights, bias = _inference_map(self.model_)

        def predict(block: np.ndarray) -> np.ndarray:
            logits = block.astype(np.float64) @ weights + bias
            if self.target_ == "value":
                return logits * self.y_scale_ + self.y_mean_
            if self.target_ == "tags":
                return expit(logits)
            if logits.shape[1] == 1:
                positive = expit(logits)
                return np.hstack([1.0 - positive, positive])
            return softmax(logits, axis=1)

        return _chunked(X, predict)

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each row."""
        proba = self.predict_proba(X)  # first: an unfitted head raises NotFittedError
        return self.classes_[np.argmax(proba, axis=1)]


class DropoutRegressor(RegressorMixin, DropoutHead):
    """The dropout head with a linear output trained on squared error: regression targets
    and ordinal grades (which the ensembles stage then cuts into grades). Same parameters
    as DropoutHead; `predict(X)` returns the values (n,)."""

    _fits_values = True

    def predict(self, X: Any) -> np.ndarray:
        """The predicted value of each row."""
        return self.predict_proba(X)[:, 0]


# A ridge penalty grid wide enough for 2,000 to 6,144 standardised GAP columns.
DEFAULT_ALPHAS = (1.0, 10.0, 100.0, 1000.0, 10000.0)


class RidgeHead(RegressorMixin, BaseEstimator):
    """Ridge regression on standardised features, the penalty chosen by scikit-learn's
    efficient leave-one-out CV (`RidgeCV`) on the training rows only: the linear model
    for regression targets and ordinal grades, as logistic regression is for classes.

    Args:
        alpha: The penalty, or a list of them to choose from.
    """

    def __init__(self, alpha: float | list[float] | tuple[float, ...] = DEFAULT_ALPHAS):
        self.alpha = alpha

    def fit(self, X: Any, y: Any, rows: Any = None) -> RidgeHead:
        """Fit on `X` (n, d) (or `X[rows]`) and values `y` (n,); returns self."""
        from sklearn.linear_model import RidgeCV

        check_params(RIDGE_PARAMS, self.get_params(), where=type(self).__name__,
                     error=ValueError)
        X = _check_X(self, X, fitted=False)
        rows = _check_rows(X, rows)
        X = X if rows is None else X[rows]
        y = column_or_1d(np.asarray(y, dtype=np.float64), warn=True)
        if y.shape != (len(X),):
            raise ValueError(f"y has shape {y.shape}, but X has {len(X)} rows")
        self.n_features_in_ = X.shape[1]
        self.mean_, self.scale_ = column_stats(X)
        alphas = self.alpha if isinstance(self.alpha, (list, tuple)) else [self.alpha]
        self.model_ = RidgeCV(alphas=[float(a) for a in alphas])
        self.model_.fit((X - self.mean_) / self.scale_, y)
        self.alpha_ = float(self.model_.alpha_)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """The predicted value of each row."""
        X = _check_X(self, X, fitted=True)
        # In float64, as DropoutHead predicts: a row's value must not depend on the rows
        # batched with it (a float32 product rounds by position).
        weights = np.asarray(self.model_.coef_, np.float64) / self.scale_.astype(np.float64)
        bias = float(self.model_.intercept_) - float(self.mean_.astype(np.float64) @ weights)
        return _chunked(X, lambda block: (block.astype(np.float64) @ weights
                                          + bias)[:, None])[:, 0]


def outputs(head: BaseEstimator, X: Any) -> np.ndarray:
    """What a fitted head predicts, as an (n, k) float64 matrix: class (or tag)
    probabilities, or for a regressor one column of values."""
    if is_regressor(head):
        return np.asarray(head.predict(X), dtype=np.float64).reshape(-1, 1)
    return head.predict_proba(X)


def _inference_map(model: Any) -> tuple[np.ndarray, np.ndarray]:
    """DropoutHead's network at inference as one affine map in float64: logits = X @ W + b.

    Rescaling (x * scale + offset) and Dense compose into one map; Dropout is the identity
    at inference. The final activation (sigmoid or softmax, by the output width) is applied
    by the caller. Any other layer is an error, so a change to `DropoutHead._build` cannot
    be evaluated wrongly in silence (tests compare this with the Keras model's own output).
    """
    import keras

    scale = offset = None
    weights = bias = None
    for layer in model.layers:
        if isinstance(layer, (keras.layers.InputLayer, keras.layers.Dropout)):
            continue
        if isinstance(layer, keras.layers.Rescaling) and weights is None:
            scale = np.asarray(layer.scale, np.float64)
            offset = np.asarray(layer.offset, np.float64)
        elif isinstance(layer, keras.layers.Dense) and weights is None:
            kernel, dense_bias = (np.asarray(w, np.float64) for w in layer.get_weights())
            weights, bias = kernel, dense_bias
            if scale is not None:
                weights, bias = scale[:, None] * kernel, offset @ kernel + dense_bias
        else:
            raise TypeError(f"DropoutHead cannot evaluate layer {layer.name!r} "
                            f"({type(layer).__name__}) in float64; update _inference_map")
    if weights is None:
        raise TypeError("DropoutHead's model has no Dense layer")
    return weights, bias


@functools.cache
def _batches_class() -> type:
    """keras.utils.PyDataset subclass, built on first use so importing heads stays light."""
    import keras

    class Batches(keras.utils.PyDataset):
        """Feeds batches of `X[index]` straight from the caller's array: Keras' array
        adapter copies the whole matrix into a tensor (measured: +2x the data); this
        copies one batch. `y` is aligned with `index`."""

        def __init__(self, X, index, y, batch_size, seed):
            super().__init__()
            self.X, self.index, self.y, self.batch_size = X, index, y, batch_size
            self.rng = None if seed is None else np.random.default_rng(seed)
            self.order = np.arange(len(index))
            self.on_epoch_end()

        def __len__(self):
            return math.ceil(len(self.index) / self.batch_size)

        def __getitem__(self, i):
            take = np.sort(self.order[i * self.batch_size:(i + 1) * self.batch_size])
            return self.X[self.index[take]], self.y[take]

        def on_epoch_end(self):
            if self.rng is not None:
                self.order = self.rng.permutation(len(self.index))

        def release(self):
            """Drop the references to the data (see DropoutHead.fit)."""
            self.X = self.index = self.y = self.order = None

    return Batches


def _Monitor(head: DropoutHead, X: Any, y: Any, rows: Any = None):
    """A Keras callback adding val_loss/val_accuracy on (X[rows], y) to the logs each
    epoch; `X[rows]` is predicted in chunks, never copied whole."""
    import keras
    from sklearn.metrics import log_loss

    X = np.asarray(X)
    rows = np.arange(len(X)) if rows is None else _check_rows(X, rows)
    y = np.asarray(y)
    codes = np.searchsorted(head.classes_, y)
    chunk = chunk_rows(X.shape[1], X.dtype.itemsize)

    class Monitor(keras.callbacks.Callback):
        def __init__(self, data, index):
            super().__init__()
            self.X, self.rows = data, index

        def on_epoch_end(self, epoch, logs=None):
            head.model_ = self.model
            X, rows = self.X, self.rows
            proba = np.concatenate([head.predict_proba(X[rows[i:i + chunk]])
                                    for i in range(0, len(rows), chunk)], axis=0)
            logs["val_loss"] = float(log_loss(codes, proba, labels=range(proba.shape[1])))
            logs["val_accuracy"] = float(np.mean(np.argmax(proba, axis=1) == codes))

        def release(self):
            """Drop the reference to the data once training ends (see DropoutHead.fit)."""
            self.X = self.rows = None

    return Monitor(X, rows)


# --- parameter schemas (the registry, ensembles/registry.py, pairs them with classes) ---

def _C_values(value: Any) -> bool:
    values = value if isinstance(value, (list, tuple)) else [value]
    return len(values) > 0 and all(positive_number().test(c) for c in values)


LOGREG_PARAMS: dict[str, Param] = {
    "C": Param(_C_values, "a positive number or a non-empty list of them"),
    "scale": one_of(SCALES),
    "C_rule": one_of(C_RULES),
    "inner_folds": positive_int(2),
    "inner_repeats": positive_int(),
    "max_iter": positive_int(),
    "tol": positive_number(),
    "copy": boolean(),
    "seed": integer(),
}
RIDGE_PARAMS: dict[str, Param] = {
    "alpha": Param(lambda v: all(positive_number().test(a) for a in
                                 (v if isinstance(v, (list, tuple)) else [v]))
                   and (not isinstance(v, (list, tuple)) or len(v) > 0),
                   "a positive number or a non-empty list of them"),
}
DROPOUT_PARAMS: dict[str, Param] = {
    "dropout": fraction(),
    "epochs": positive_int(),
    "optimizer": one_of(KERAS2_LEARNING_RATES),
    "learning_rate": Param(lambda v: v is None or positive_number().test(v),
                           "a positive number"),
    "batch_size": positive_int(),
    "validation_split": fraction(),
    "early_stopping": Param(lambda v: integer().test(v) and v >= 0,
                            "a patience in epochs (0 = off)"),
    "standardize": boolean(),
    "seed": integer(),
}
