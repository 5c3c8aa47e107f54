"""The finetune head end to end from images (`[ensembles.X] from = "images"`): for a GPU.

The same two phases as ensembles.finetune (whose hooks this overrides), but phase 2 runs the
whole backbone on every training image in every epoch, through random augmentation, instead
of reading the cut's cached maps: the layers below the cut stay frozen (as in the Keras
fine-tuning guide and the seed recipe: InceptionV3's layers[:249]), the layers above it and
the head are trained, BatchNormalization frozen and in inference mode. Fresh augmentations
each epoch are what cached maps cannot give (their `flip` is two fixed views); the price is
a forward pass of the frozen part per image per epoch, which is why a CPU refuses it
(`check_images_device`) unless `allow_cpu = true`.

X is an (n, 1) object array of image paths (`image_matrix` builds it from the maps' feature
file, which says which images decoded and with which weights); images are decoded and
resized by `harness features`' own functions (features.batch), so an unaugmented image gives
the network what the cached maps came from, up to JPEG draft decoding (a large photo decoded
for a run that also had a larger-input backbone is scaled down from a different draft).

BatchNormalization runs in inference mode because it is frozen (`trainable = False`: Keras 3
then always uses its moving statistics), not because of the `training=False` in the graph,
which an outer `fit` overrides; none of the registered backbones has Dropout below its cut.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import clone

from base.config import Param, one_of
from base.errors import HarnessError
from competition.images import list_test_images, list_train_images
from ensembles.data import FeatureMatrix
from ensembles.finetune import FINETUNE_PARAMS, FinetuneHead, FinetuneRegressor
from features.backbones import get_backbone
from features.batch import image_pixels, resize_views
from features.store import feature_path, load_split

# Random augmentation of the training images in phase 2 (Keras preprocessing layers,
# active only while training). With "flip" in the name, predictions (and phase 1's features)
# average each image and its mirror image.
AUGMENTATIONS = {
    "none": "no augmentation",
    "flip": "random horizontal flips",
    "flip-zoom": "random horizontal flips, zoom and shifts of up to 10%",
}
DEFAULT_AUGMENT = "flip"
IMAGES_PARAMS: dict[str, Param] = {**FINETUNE_PARAMS, "augment": one_of(tuple(AUGMENTATIONS))}


class FinetuneImagesHead(FinetuneHead):
    """FinetuneHead trained from images end to end with augmentation (module docstring).

    Args:
        augment: An AUGMENTATIONS name.
        (the rest): As FinetuneHead.
    """

    _schema = IMAGES_PARAMS

    def __init__(self, backbone: str = "", weights: str | None = None, dropout: float = 0.5,
                 head_epochs: int = 30, epochs: int = 6, learning_rate: float = 1e-4,
                 momentum: float = 0.9, batch_size: int = 32, validation_split: float = 0.1,
                 early_stopping: int = 2, seed: int = 0, augment: str = DEFAULT_AUGMENT):
        super().__init__(backbone=backbone, weights=weights, dropout=dropout,
                         head_epochs=head_epochs, epochs=epochs, learning_rate=learning_rate,
                         momentum=momentum, batch_size=batch_size,
                         validation_split=validation_split, early_stopping=early_stopping,
                         seed=seed)
        self.augment = augment

    def _check_X(self, X: Any, spec) -> tuple[np.ndarray, int]:
        """The paths of X (n, 1), and the views predictions average (2 with flips)."""
        X = np.asarray(X, dtype=object)
        if X.ndim != 2 or X.shape[1] != 1:
            raise ValueError(f"X must hold one image path per row, (n, 1), got shape {X.shape}")
        return X[:, 0], 2 if "flip" in str(self.augment) else 1

    def _size(self, spec) -> int:
        return get_backbone(spec.maps_of).input_size

    def _network(self, spec):
        """The whole base backbone on RGB 0-255 images, its own preprocessing inside; the
        layers below the cut frozen, BatchNormalization frozen."""
        import keras

        base = get_backbone(spec.maps_of)
        full = base.build(self.weights)
        above = {id(layer) for layer in base.top(full).layers}
        for layer in full.layers:
            layer.trainable = (id(layer) in above
                               and not isinstance(layer, keras.layers.BatchNormalization))
        preprocess = getattr(base.preprocess, "target", lambda: base.preprocess)()
        size = base.input_size
        images = keras.Input((size, size, 3), dtype="float32")
        x = keras.layers.Lambda(preprocess, name="preprocess")(images)
        return keras.Model(images, full(x, training=False), name=f"{base.name}_from_images")

    def _augmentation(self) -> list:
        import keras

        seed = int(self.seed)
        layers = [] if self.augment == "none" else [
            keras.layers.RandomFlip("horizontal", seed=seed)]
        if self.augment == "flip-zoom":
            layers += [keras.layers.RandomZoom(0.1, seed=seed + 1),
                       keras.layers.RandomTranslation(0.1, 0.1, seed=seed + 2)]
        return layers

    def _model(self, network, head, spec):
        """Images in: augmentation (training only), the network, the phase-1 head."""
        import keras

        size = self._size(spec)
        images = keras.Input((size, size, 3), dtype="float32")
        x = images
        for layer in self._augmentation():
            x = layer(x)
        return keras.Model(images, head.model_(network(x)))

    def _dataset(self, paths: np.ndarray, target: np.ndarray | None, batch: int,
                 seed: int | None):
        """tf.data of (decoded, resized images[, targets]), shuffled each epoch with a seed."""
        import tensorflow as tf

        size = self._size(self._maps_spec())
        encoded = [os.fsencode(str(path)) for path in paths]

        def load(path: Any) -> Any:
            return image_pixels(path.numpy(), size)[0]

        def load_graph(path: Any, *rest: Any) -> tuple:
            pixels = tf.py_function(load, [path], tf.uint8)
            pixels.set_shape([None, None, 3])
            return (resize_views(pixels, [size])[0], *rest)

        slices = (encoded,) if target is None else (encoded, target)
        dataset = tf.data.Dataset.from_tensor_slices(slices)
        if seed is not None:
            dataset = dataset.shuffle(len(encoded), seed=seed, reshuffle_each_iteration=True)
        return (dataset.map(load_graph, num_parallel_calls=os.cpu_count() or 1,
                            deterministic=True).batch(batch).prefetch(2))

    def _forward(self, model, paths: np.ndarray, views: int) -> np.ndarray:
        """`model`'s float64 outputs for the unaugmented images at `paths`, averaged with
        their mirror images' when views is 2."""
        parts = []
        for (batch,) in self._dataset(paths, None, int(self.batch_size), None):
            out = np.asarray(model(batch, training=False), dtype=np.float64)
            if views == 2:
                out = (out + np.asarray(model(batch[:, :, ::-1, :], training=False),
                                        dtype=np.float64)) / 2
            parts.append(out)
        width = model.output.shape[-1]
        return np.concatenate(parts, axis=0) if parts else np.zeros((0, width))

    def _frozen_gap(self, network, data, views, rows, spec) -> np.ndarray:
        return self._forward(network, data[rows], views)

    def _batches(self, data, views, rows, target, training):
        return self._dataset(data[rows], target, int(self.batch_size),
                             int(self.seed) if training else None)

    def _predict(self, data, views) -> np.ndarray:
        return self._forward(self.model_, data, views)


class FinetuneImagesRegressor(FinetuneImagesHead, FinetuneRegressor):
    """FinetuneImagesHead with FinetuneRegressor's linear output (values, ordinal grades)."""


def finetune_input(params: dict) -> dict[str, str]:
    """A finetune ensemble's input from its table: {"from": "maps"} or {"from": "images",
    "augment": ...}, defaults filled (what its result key records; allow_cpu is left out:
    it says where the same training may run)."""
    if params.get("from", "maps") != "images":
        return {"from": "maps"}
    return {"from": "images", "augment": params.get("augment", DEFAULT_AUGMENT)}


def images_head(head: FinetuneHead, augment: str) -> FinetuneImagesHead:
    """The from-images head with `head`'s parameters (its class's target kind kept)."""
    kind = FinetuneImagesRegressor if isinstance(head, FinetuneRegressor) else FinetuneImagesHead
    params = {**clone(head).get_params(), "augment": augment}
    return kind(**params)


def image_matrix(spec, data_dir: Path, features_dir: Path, backbone: str, split: str, *,
                 ensemble: str) -> FeatureMatrix:
    """`split` of the maps' feature file with X the images' paths (n, 1) instead of maps:
    the same ids (images that failed to decode already left out of train), labels, classes
    and failed test images, the paths found where the competition's data lists them.

    Raises:
        HarnessError: an id of the file that the data folder no longer has.
    """
    path = feature_path(features_dir, backbone)
    stored = load_split(path, split, features=False)
    if len(set(stored.ids)) != len(stored.ids):
        raise HarnessError(f"{path}: /{split}/ids has duplicates; rerun "
                           "`harness features --force`")
    images = (list_train_images if split == "train" else list_test_images)(spec, data_dir)
    where = dict(zip(images.ids, images.paths))
    missing = [key for key in stored.ids if key not in where]
    if missing:
        raise HarnessError(f"ensemble {ensemble!r}: {len(missing)} {split} images of {path} "
                           f"are not in {data_dir} any more (e.g. {missing[:3]}); restore "
                           "them or re-extract with `harness features --force`")
    paths = np.array([[str(where[key])] for key in stored.ids], dtype=object).reshape(-1, 1)
    return FeatureMatrix(ids=stored.ids, X=paths, labels=stored.labels, failed=stored.failed,
                         classes=stored.classes)
