"""The finetune head: a backbone's layers above its cut, trained on the cut's cached maps.

A `<backbone>_maps` feature file holds each image's maps at the backbone's cut (flattened,
float16; features/backbones.py). On a CPU, training the whole backbone is hours per epoch;
training only the layers above the cut is not, because the frozen part ran once, during
`harness features`. This head rebuilds the backbone from the weights the maps were made
with, keeps the layers above the cut (the "top"), and trains them in the two phases of the
Keras fine-tuning guide:

1. the dropout head alone (`DropoutHead`: Dropout -> Dense) on the top's GAP output,
   computed once with the top frozen, so the new layer does not start random when the top
   starts moving;
2. the top and that head together with a small learning rate (SGD 1e-4, momentum 0.9: the
   seed recipe's), BatchNormalization layers frozen and in inference mode (their ImageNet
   statistics; a few hundred images would overwrite them), early stopping on the same
   stratified inner split as phase 1. If no epoch scores better on it than phase 1 did,
   phase 1's weights are kept: fine-tuning can only help on the inner split.

Maps cached with tta "flip" hold each image's maps and its mirror image's side by side
(2 x h * w * c columns): phase 1 then trains on the two views' mean GAP output, phase 2 on
both views of every training image (flipped copies: the seed recipe's horizontal-flip
augmentation, computed once), stops on both views of the held-out images, and predictions
are the mean over the two views (test-time augmentation for free).

It is a head like the others: scikit-learn's contract (fit(X, y, rows=...), predict_proba),
scored out of fold on the ensemble's folds, blendable, cached by its parameters. `backbone`
and `weights` are not the user's to set: the ensembles run takes them from the feature
file (`maps_source`).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from base.config import Param, check_params, fraction, integer, positive_int, positive_number
from base.errors import HarnessError
from base.hashing import cached_file_sha256
from ensembles.heads import (
    DROPOUT_PARAMS,
    DropoutHead,
    DropoutRegressor,
    _batches_class,
    _check_rows,
    inner_split,
)
from features.backbones import MAP_BACKBONES, MAP_VIEWS, get_backbone
from features.store import feature_path, read_attrs, read_ids

logger = logging.getLogger(__name__)

PREDICT_ROWS = 64  # maps per forward pass at prediction (a 10x10x1024 map is 400 KB)

FINETUNE_PARAMS: dict[str, Param] = {
    "backbone": Param(lambda v: v == "" or v in MAP_BACKBONES, "a `_maps` backbone name"),
    "weights": Param(lambda v: v is None or isinstance(v, str), "a weights file or None"),
    "dropout": fraction(),
    "head_epochs": positive_int(),
    "epochs": Param(lambda v: integer().test(v) and v >= 0, "a number of epochs (0 = off)"),
    "learning_rate": positive_number(),
    "momentum": fraction(),
    "batch_size": positive_int(),
    "validation_split": Param(lambda v: fraction().test(v) and v > 0,
                              "a fraction above 0 (early stopping needs it)"),
    "early_stopping": positive_int(),
    "seed": integer(),
}
# Set by the ensembles run from the feature file, never in a config.
INJECTED = ("backbone", "weights")
# Run parameters (ensembles.run_params) that only a finetune ensemble takes: its input, and
# from = "images"'s augmentation and permission to run on a CPU.
INPUT_PARAMS = ("from", "augment", "allow_cpu")


class FinetuneHead(ClassifierMixin, BaseEstimator):
    """The layers of `backbone`'s base above its cut, then Dropout -> Dense, trained on
    flattened maps X (n, h * w * c) of a `_maps` feature file, or (n, 2 * h * w * c) for
    maps cached with their mirror images' (tta "flip"; see the module docstring).

    Args:
        backbone: The `_maps` entry whose maps X holds (e.g. "xception_maps").
        weights: What the maps were made with: a weights file, "imagenet" or None.
        dropout: Dropout rate before the Dense layer.
        head_epochs: Phase 1's most epochs (Adam, early stopping as the dropout head's).
        epochs: Phase 2's most epochs (0: phase 1 only, the frozen top).
        learning_rate, momentum: Phase 2's SGD.
        batch_size: Maps per gradient step in phase 2.
        validation_split: Fraction of the training rows held out (stratified) to stop on.
        early_stopping: Patience in epochs of phase 2 on the held-out loss.
        seed: Seeds Keras (dropout, shuffling) and the inner split.

    `history_` holds phase 2's per-epoch loss and val_loss (val_loss[0] is phase 1's),
    `phase1_loss_`/`best_loss_` the held-out loss before and after phase 2,
    `phase2_seconds_` its time. With too few rows for the inner split, phase 2 is skipped
    (a warning says so).
    """

    _fits_values = False
    _schema = FINETUNE_PARAMS

    def __init__(self, backbone: str = "", weights: str | None = None, dropout: float = 0.5,
                 head_epochs: int = 30, epochs: int = 6, learning_rate: float = 1e-4,
                 momentum: float = 0.9, batch_size: int = 32, validation_split: float = 0.1,
                 early_stopping: int = 2, seed: int = 0):
        self.backbone = backbone
        self.weights = weights
        self.dropout = dropout
        self.head_epochs = head_epochs
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.batch_size = batch_size
        self.validation_split = validation_split
        self.early_stopping = early_stopping
        self.seed = seed

    def _maps_spec(self):
        spec = get_backbone(self.backbone) if self.backbone else None
        if spec is None or not spec.maps_of:
            raise HarnessError(f"the finetune head trains on a `_maps` backbone's maps, not "
                               f"{self.backbone!r}; set the ensemble's backbones to one, e.g. "
                               "[\"xception_maps\"] (and extract it with `harness features`)")
        return spec

    # The input hooks: maps here, decoded images in ensembles.finetune_images. `data` is
    # what `_check_X` made of X; `rows` index images (not views).

    def _check_X(self, X: Any, spec) -> tuple[np.ndarray, int]:
        """X as one map per row, (n * views, h * w * c) (a view of X, not a copy, for the
        C-ordered arrays feature files give: image i's views are rows i * views + v), and
        the number of views."""
        X = np.asarray(X)
        widths = {spec.stored_dim(tta): views for tta, views in MAP_VIEWS.items()}
        if X.ndim != 2 or X.shape[1] not in widths:
            raise ValueError(f"X must hold {spec.name}'s flattened maps "
                             f"{list(spec.map_shape)} ({spec.feature_dim} columns per row, "
                             f"{2 * spec.feature_dim} with the mirror images' maps), "
                             f"got shape {X.shape}")
        if X.dtype not in (np.float16, np.float32):
            X = X.astype(np.float32)
        return X.reshape(-1, spec.feature_dim), widths[X.shape[1]]

    def _network(self, spec):
        """What phase 1 reads GAP features from and phase 2 trains: here the layers above
        the base backbone's cut, BatchNormalization frozen."""
        import keras

        base = get_backbone(spec.maps_of)
        top = base.top(base.build(self.weights))
        for layer in top.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
        return top

    def _frozen_gap(self, network, data: np.ndarray, views: int, rows: np.ndarray,
                    spec) -> np.ndarray:
        """The network's GAP output for images `rows` before training, the mean over their
        views: phase 1's features, (len(rows), width). One row per image keeps phase 1's
        inner split over images; the head then predicts each view and averages the outputs,
        which for a linear head on features this close is nearly the same (phase 2's
        starting loss, counted as an epoch to beat, is measured that way)."""
        gap = _forward(network, data, view_rows(rows, views), spec.map_shape)
        return gap.reshape(len(rows), views, gap.shape[1]).mean(axis=1)

    def _model(self, network, head, spec):
        """One view in, the head's output out: the network then the phase-1 head."""
        import keras

        maps = keras.Input((spec.feature_dim,), dtype="float32")
        x = keras.layers.Reshape(spec.map_shape)(maps)
        return keras.Model(maps, head.model_(network(x, training=False)))

    def _batches(self, data: np.ndarray, views: int, rows: np.ndarray, target: np.ndarray,
                 training: bool):
        """Phase 2's training (shuffled, seeded) or held-out batches of images `rows`, every
        view a row of its own (flipped copies are the augmentation of maps)."""
        size, seed = (int(self.batch_size), int(self.seed)) if training else (PREDICT_ROWS, None)
        return _batches_class()(data, view_rows(rows, views), np.repeat(target, views, axis=0),
                                size, seed)

    def _predict(self, data: np.ndarray, views: int) -> np.ndarray:
        """The fitted model's outputs, averaged over each image's views."""
        out = _forward(self.model_, data, np.arange(len(data)), data.shape[1:])
        return out.astype(np.float64).reshape(-1, views, out.shape[1]).mean(axis=1)

    def fit(self, X: Any, y: Any, rows: Any = None) -> FinetuneHead:
        """Fit on maps `X` (n, views * h * w * c) and labels `y` (aligned to `rows` when
        given: fit on X[rows], batches read from X without copying it); returns self."""
        import keras

        check_params(self._schema, self.get_params(), where=type(self).__name__,
                     error=ValueError)
        spec = self._maps_spec()
        index = _check_rows(X, rows)
        index = np.arange(len(X)) if index is None else index
        data, views = self._check_X(X, spec)
        keras.utils.set_random_seed(int(self.seed))
        network = self._network(spec)
        head_params = {key: value for key, value in
                       {"dropout": self.dropout, "epochs": self.head_epochs,
                        "validation_split": self.validation_split,
                        "seed": self.seed}.items() if key in DROPOUT_PARAMS}
        head = (DropoutRegressor if self._fits_values else DropoutHead)(**head_params)
        # Phase 1: the dropout head on the frozen network's GAP output. Its inner split is
        # inner_split(...) with these arguments, the same as phase 2's below.
        head.fit(self._frozen_gap(network, data, views, index, spec), y)
        target, codes = head._targets(y, len(index))
        self.classes_, self.target_ = head.classes_, head.target_
        fit_pos, val_pos = inner_split(len(index), self.validation_split, codes,
                                       len(self.classes_), int(self.seed), int(self.epochs),
                                       warn=False)
        model = self._model(network, head, spec)
        self.history_ = {"loss": [], "val_loss": []}
        self.phase1_loss_ = self.best_loss_ = float("nan")
        self.phase2_seconds_ = 0.0
        if self.epochs and len(val_pos):
            self._phase2(model, head, self._batches(data, views, index[fit_pos],
                                                    target[fit_pos], True),
                         self._batches(data, views, index[val_pos], target[val_pos], False))
        elif self.epochs:
            logger.warning("finetune %s: %d training rows are too few for a %.0f%% "
                           "validation split; the top is not trained (phase 1 only)",
                           self.backbone, len(index), 100 * self.validation_split)
        self.head_, self.model_ = head, model
        self.views_ = views
        self.n_features_in_ = np.asarray(X).shape[1]
        self.n_epochs_ = max(0, len(self.history_["loss"]) - 1)  # phase 2's epochs
        return self

    def _phase2(self, model, head, batches, validation) -> None:
        """The network and the head together, SGD, early stopping; phase 1 kept unless
        beaten."""
        import keras

        model.compile(optimizer=keras.optimizers.SGD(float(self.learning_rate),
                                                     momentum=float(self.momentum)),
                      loss=head.model_.loss)
        keep = _KeepBest(int(self.early_stopping))
        start = time.perf_counter()
        try:
            keep.set_model(model)
            keep.start(float(model.evaluate(validation, verbose=0)))
            history = model.fit(batches, validation_data=validation, epochs=int(self.epochs),
                                callbacks=[keep], shuffle=False, verbose=0)  # batches shuffle themselves
        finally:
            for holder in (batches, validation):
                if hasattr(holder, "release"):
                    holder.release()
        self.phase2_seconds_ = time.perf_counter() - start
        self.history_ = {"loss": [math.nan] + [float(v) for v in history.history["loss"]],
                         "val_loss": [keep.initial]
                         + [float(v) for v in history.history["val_loss"]]}
        self.phase1_loss_, self.best_loss_ = keep.initial, keep.best
        logger.info("finetune %s: held-out loss %.4f after the head, %.4f after %d epochs "
                    "of the top", self.backbone, keep.initial, keep.best,
                    len(history.history["loss"]))

    def _outputs(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "model_")
        data, views = self._check_X(X, self._maps_spec())
        if views != self.views_:
            raise ValueError(f"X holds {views} view(s) of each image's maps; this head was "
                             f"fitted on {self.views_} (the maps' tta must not change)")
        return self._predict(data, views)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class (or tag) probabilities, (n, len(classes_)), in `classes_` order."""
        out = self._outputs(X)
        if self.target_ == "classes" and out.shape[1] == 1:
            return np.hstack([1.0 - out, out])
        return out

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each row."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


class FinetuneRegressor(RegressorMixin, FinetuneHead):
    """The finetune head with a linear output on squared error: regression targets and
    ordinal grades (see DropoutRegressor)."""

    _fits_values = True

    def predict(self, X: Any) -> np.ndarray:
        """The predicted value of each row, in the target's units."""
        head = self.head_
        return self._outputs(X)[:, 0] * head.y_scale_ + head.y_mean_

    def predict_proba(self, X: Any) -> np.ndarray:
        """As DropoutRegressor: one column holding the predicted values."""
        return self.predict(X).reshape(-1, 1)


def _forward(model, data: np.ndarray, rows: np.ndarray, shape) -> np.ndarray:
    """`model`'s float32 outputs for data[rows], each row reshaped to `shape`, in chunks of
    PREDICT_ROWS (a chunk copies only its own rows)."""
    out = [np.asarray(model(data[rows[i:i + PREDICT_ROWS]].astype(np.float32)
                            .reshape(-1, *shape), training=False))
           for i in range(0, len(rows), PREDICT_ROWS)]
    return np.concatenate(out, axis=0) if out else np.zeros((0, model.output.shape[-1]),
                                                            np.float32)


def view_rows(images: np.ndarray, views: int) -> np.ndarray:
    """The rows of one-map-per-row X (FinetuneHead._check_X) holding these images' views."""
    return (np.asarray(images, np.int64)[:, None] * views + np.arange(views)).ravel()


def _KeepBest(patience: int):
    """A Keras callback: early stopping on val_loss that counts the loss before training
    (`start(loss)`) as an epoch to beat, and ends with the best weights seen, phase 1's
    when no epoch beat it."""
    import keras

    class KeepBest(keras.callbacks.Callback):
        def start(self, loss: float) -> None:
            self.initial = self.best = loss
            self.weights = self.model.get_weights()
            self.wait = 0

        def on_epoch_end(self, epoch, logs=None):
            loss = float(logs["val_loss"])
            if loss < self.best:
                self.best, self.weights, self.wait = loss, self.model.get_weights(), 0
            else:
                self.wait += 1
                if self.wait >= patience:
                    self.model.stop_training = True

        def on_train_end(self, logs=None):
            self.model.set_weights(self.weights)

    return KeepBest()


def check_maps_use(head: str, backbones: tuple[str, ...], tta: str, *, ensemble: str,
                   params: dict | None = None) -> None:
    """A finetune ensemble has exactly one `_maps` backbone, tta none or flip (MAP_VIEWS;
    none from images, check_images_use), and leaves `backbone` and `weights` to the run;
    maps feed no other head (a linear model on 100,000 map values per image is not what
    they are for).

    Raises:
        HarnessError: naming the ensemble and the fix.
    """
    maps = [b for b in backbones if get_backbone(b).maps_of]
    if head != "finetune":
        own = sorted(set(INPUT_PARAMS) & set(params or {}))
        if own:
            raise HarnessError(f"ensemble {ensemble!r}: {own} are the finetune head's (its "
                               f"input); remove them for head {head!r}")
        if maps:
            raise HarnessError(f"ensemble {ensemble!r}: {maps} hold maps for the finetune "
                               f"head, not features for {head!r}; use their backbones "
                               f"({[get_backbone(b).maps_of for b in maps]}) or head = "
                               "\"finetune\"")
        return
    if len(backbones) != 1 or not maps:
        raise HarnessError(f"ensemble {ensemble!r}: the finetune head trains on one `_maps` "
                           f"backbone's maps, not {list(backbones)}; set backbones = "
                           "[\"xception_maps\"] (or another <backbone>_maps)")
    if tta not in MAP_VIEWS:
        raise HarnessError(f"ensemble {ensemble!r}: the finetune head's maps are cached with "
                           f"tta \"none\" or \"flip\" (the mirror images' maps too), not "
                           f"{tta!r}; set one of them")
    check_images_use(tta, params or {}, ensemble=ensemble)
    given = sorted(set(params or {}) & set(INJECTED))
    if given:
        raise HarnessError(f"ensemble {ensemble!r}: {given} of the finetune head come from "
                           "the maps' feature file (its backbone and weights); remove them")


# Training a network costs about three forward passes per image (forward, and the backward
# pass's two products per layer): the usual rule, used only for the estimate below (an upper
# bound: the layers below the cut are frozen and only run forward).
TRAIN_FORWARDS = 3


def check_images_device(features_dir, backbones: tuple[str, ...], epochs: int, *,
                         ensemble: str, allow_cpu: bool = False) -> None:
    """`from = "images"` runs the whole backbone on every training image in every epoch:
    on a CPU it is refused with an estimate of its time from the forward pass's measured
    speed, unless `allow_cpu` (then the estimate is logged). A GPU passes.

    Raises:
        HarnessError: on a CPU without allow_cpu, with the estimate and the alternatives.
    """
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return
    base = get_backbone(backbones[0]).maps_of or backbones[0]
    rows = len(read_ids(feature_path(features_dir, backbones[0]), "train"))
    rates = [float(read_attrs(feature_path(features_dir, name)).get("seconds_per_image", 0))
             for name in (base, backbones[0])]
    per_image = next((r for r in rates if r > 0), 0.0)
    if per_image:
        hours = per_image * TRAIN_FORWARDS * rows * max(1, epochs) / 3600
        estimate = (f"at this CPU's measured {1 / per_image:.1f} images/s forward, "
                    f"{max(1, epochs)} epochs over {rows} images would take up to "
                    f"{hours:.1f} h per fold")
    else:
        estimate = "its forward speed on this CPU is not recorded (re-extract to measure it)"
    if allow_cpu:
        logger.warning("ensemble %s: from = \"images\" on a CPU (allow_cpu): %s",
                       ensemble, estimate)
        return
    raise HarnessError(f"ensemble {ensemble!r}: from = \"images\" runs all of {base} on "
                       f"every image in every epoch and needs a GPU; {estimate}; from = "
                       "\"maps\" trains the layers above the cut from the cached maps (or "
                       "set allow_cpu = true to run it here anyway)")


def check_images_use(tta: str, params: dict, *, ensemble: str) -> None:
    """`augment` and `allow_cpu` belong to from = "images", which reads the maps file made
    without TTA (its ids and weights) and augments images itself.

    Raises:
        HarnessError: naming the ensemble and the fix.
    """
    images = params.get("from", "maps") == "images"
    stray = sorted(key for key in INPUT_PARAMS if key != "from" and key in params)
    if stray and not images:
        raise HarnessError(f"ensemble {ensemble!r}: {stray} are for from = \"images\"; "
                           "remove them (maps are augmented by tta = \"flip\")")
    if images and tta != "none":
        raise HarnessError(f"ensemble {ensemble!r}: from = \"images\" augments the images "
                           f"itself (augment = ...); set tta = \"none\", not {tta!r}")


def maps_source(features_dir, backbones: tuple[str, ...], tta: str, *, ensemble: str,
                current: Any = None) -> dict[str, Any]:
    """The finetune head's `backbone` and `weights`: the weights the maps were made with,
    found as the config gives them now (`current`, a WeightsChoice, when its identity is
    the file's) or at the path recorded in the feature file.

    Raises:
        HarnessError: not exactly one `_maps` backbone, a file that does not say its
            weights, or weights no longer there (or changed): naming the ensemble and the fix.
    """
    check_maps_use("finetune", backbones, tta, ensemble=ensemble)
    path = feature_path(features_dir, backbones[0], tta)
    attrs = read_attrs(path)
    source = str(attrs.get("weights_source", ""))
    identity = str(attrs.get("weights", ""))
    if not source:
        raise HarnessError(f"ensemble {ensemble!r}: {path} does not say which weights made "
                           "its maps; re-extract it with `harness features --force`")
    if current is not None and current.identity == identity:
        return {"backbone": backbones[0], "weights": current.keras_arg}
    if source == "none":
        return {"backbone": backbones[0], "weights": None}
    if source != "imagenet" and not (identity.startswith("sha256:")
                                     and _same_file(source, identity)):
        raise HarnessError(f"ensemble {ensemble!r}: {path} was made with the weights "
                           f"file {source}, which is gone or changed; re-extract with "
                           "`harness features --force` or restore the file")
    return {"backbone": backbones[0], "weights": source}


def _same_file(path: str, identity: str) -> bool:
    try:
        return f"sha256:{cached_file_sha256(path)}" == identity
    except OSError:
        return False
