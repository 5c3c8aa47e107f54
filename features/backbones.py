"""The backbone registry: name -> Keras application, input size, preprocessing, width.

Adding a backbone is one entry in `BACKBONES`; the tests are parametrized over it.
Each backbone also names its `cut`: where its trainable top begins. `MAP_BACKBONES` holds,
for each, a derived entry `<name>_maps` whose "features" are the cut layer's maps
(flattened, stored as float16): `harness features` caches them like GAP features, and the
`finetune` head (ensembles/finetune.py) trains the layers above the cut on them.
Keras is imported lazily (inside the constructors and preprocess functions) so that
checking whether cached features are still valid never pays TensorFlow's import time.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from base.errors import HarnessError, first_line

logger = logging.getLogger(__name__)


def _lazy(module: str, attr: str) -> Callable:
    """A callable that imports `keras.applications.<module>.<attr>` on first use."""

    def target() -> Callable:
        return getattr(importlib.import_module(f"keras.applications.{module}"), attr)

    def call(*args: Any, **kwargs: Any) -> Any:
        return target()(*args, **kwargs)

    # Traced code (tf.function) should call the real function, not this importer.
    call.target = target  # type: ignore[attr-defined]
    call.__name__ = attr
    call.__qualname__ = f"keras.applications.{module}.{attr}"
    return call


# The TTA modes a `_maps` entry can be cached with, and the views each stores per image
# (10-crop would be ten times 195 MiB per 1,000 images; bench/finetune.py).
MAP_VIEWS = {"none": 1, "flip": 2}


def map_views(tta: str) -> int:
    """How many views of each image a maps file cached with `tta` holds."""
    if tta not in MAP_VIEWS:
        raise HarnessError(f"maps are cached with tta {' or '.join(map(repr, MAP_VIEWS))} "
                           f"(flip: the mirror image's maps too, for augmentation), not {tta!r}")
    return MAP_VIEWS[tta]


@dataclass(frozen=True)
class BackboneSpec:
    """One pretrained CNN used as a feature extractor (GlobalAveragePooling output).

    Attributes:
        name: Registry key, also the feature file's name.
        constructor: The `keras.applications` constructor.
        input_size: Native square input size in pixels.
        preprocess: Its own `preprocess_input` (RGB 0-255 in, what the model expects out).
        feature_dim: Width of the GAP features.
        weight_files: File names recognised in a weights directory, Keras' standard
            name first.
        constructor_kwargs: Extra constructor arguments (e.g. MobileNet's alpha).
        min_input_size: The smallest input the architecture accepts (for fast tests).
        cut: The layer at which the trainable top begins: the cached maps are this
            layer's output, or with `cut_input` its input (Keras names auto-numbered
            layers such as `add_11` differently per session, so the cut names a layer
            whose name is fixed).
        map_shape: (height, width, channels) of the maps at `input_size`.
        maps_of: For a `_maps` entry, the backbone it cuts ("" for a GAP backbone).
    """

    name: str
    constructor: Callable
    input_size: int
    preprocess: Callable
    feature_dim: int
    weight_files: tuple[str, ...]
    constructor_kwargs: dict = field(default_factory=dict)
    min_input_size: int = 32
    cut: str = ""
    cut_input: bool = False
    map_shape: tuple[int, int, int] = (0, 0, 0)
    maps_of: str = ""

    @property
    def weights_name(self) -> str:
        """The backbone whose weight files this entry loads (a `_maps` entry: its base)."""
        return self.maps_of or self.name

    @property
    def storage_dtype(self) -> str:
        """What its features are stored as: float16 for maps (half the disk; bench/
        finetune.py measures the difference it makes), float32 for GAP features."""
        return "float16" if self.maps_of else "float32"

    def stored_dim(self, tta: str) -> int:
        """Columns per image in its feature file under TTA mode `tta`: GAP features average
        their views (feature_dim); maps keep them side by side (`flip`: the image's maps,
        then its mirror image's), since an average of two views' maps is no image's maps."""
        return self.feature_dim * (map_views(tta) if self.maps_of else 1)

    @property
    def preprocess_name(self) -> str:
        """A stable name of the preprocess function (part of the fingerprint)."""
        return self.preprocess.__qualname__

    def build(self, weights: str | None, input_size: int | None = None) -> Any:
        """Build the headless model with GAP pooling.

        Args:
            weights: None (random init), "imagenet", or a weights file path.
            input_size: Square input size; default the native one.

        A `_maps` entry's model outputs its cut layer's maps, flattened: (B, h * w * c).

        Raises:
            HarnessError: the file is not this backbone's weights, or the ImageNet weights
                cannot be downloaded (no internet): one line naming the file and the fix.
        """
        if self.maps_of:
            import keras

            base = get_backbone(self.maps_of)
            model = base.build(weights, input_size)
            return keras.Model(model.input, keras.layers.Flatten()(base.cut_tensor(model)),
                               name=self.name)
        size = input_size or self.input_size
        from_file = weights not in (None, "imagenet")
        try:
            # A file is loaded here rather than by the constructor (which does the same
            # `load_weights`), so that only the loading's errors are read as bad weights.
            model = self.constructor(
                include_top=False,
                weights=None if from_file else weights,
                pooling="avg",
                input_shape=(size, size, 3),
                **self.constructor_kwargs,
            )
        except Exception as exc:
            if weights == "imagenet" and _download_failed(exc):
                raise HarnessError(
                    f"{self.name}: cannot download the ImageNet weights ({first_line(exc)}); "
                    f"offline, give the file: --weights FILE or weights_dir holding "
                    f"{self.weight_files[0]} (e.g. ../shared/weights), or --weights none"
                ) from None
            raise
        if from_file:
            try:
                # Keras warns once per layer before it raises on a mismatched file: the one
                # line below says it all; a successful load's warnings are passed on.
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    model.load_weights(weights)
                for warning in caught:
                    logger.warning("%s: %s", weights, warning.message)
            except (OSError, ValueError) as exc:
                raise HarnessError(
                    f"{weights}: not {self.name}'s weights ({first_line(exc)}); give "
                    f"{self.name}'s no-top ImageNet file ({' or '.join(self.weight_files)}), "
                    "\"imagenet\" or \"none\""
                ) from None
        return model


    def cut_tensor(self, model: Any) -> Any:
        """The tensor of `model` (built by `build`) at which its trainable top begins."""
        layer = model.get_layer(self.cut)
        return layer.input if self.cut_input else layer.output

    def top(self, model: Any) -> Any:
        """The layers of `model` above the cut, as a model from maps to GAP features."""
        import keras

        return keras.Model(self.cut_tensor(model), model.output, name=f"{self.name}_top")


def _download_failed(exc: BaseException) -> bool:
    """Keras' `get_file` raises a bare Exception("URL fetch failure ...") without internet,
    a ValueError when the downloaded file's hash is wrong; sockets raise OSError."""
    text = str(exc)
    return isinstance(exc, OSError) or text.startswith("URL fetch failure") or (
        "corrupted" in text and "file" in text)


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            name="resnet50",
            constructor=_lazy("resnet50", "ResNet50"),
            input_size=224,
            preprocess=_lazy("resnet50", "preprocess_input"),
            feature_dim=2048,
            weight_files=(
                "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                "resnet50_imagenet_notop.weights.h5",
            ),
            min_input_size=32,
            cut="conv4_block6_out",  # before conv5 (its last 3 blocks)
            map_shape=(14, 14, 1024),
        ),
        BackboneSpec(
            name="inception_v3",
            constructor=_lazy("inception_v3", "InceptionV3"),
            input_size=299,
            preprocess=_lazy("inception_v3", "preprocess_input"),
            feature_dim=2048,
            weight_files=(
                "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
                "inception_v3_imagenet_notop.weights.h5",
            ),
            min_input_size=75,
            # The Keras fine-tuning guide's cut: layers[:249] frozen, mixed8 is layer 248.
            cut="mixed8",
            map_shape=(8, 8, 1280),
        ),
        BackboneSpec(
            name="xception",
            constructor=_lazy("xception", "Xception"),
            input_size=299,
            preprocess=_lazy("xception", "preprocess_input"),
            feature_dim=2048,
            weight_files=(
                "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
                "xception_imagenet_notop.weights.h5",
            ),
            min_input_size=71,
            # Before block14, the exit flow's last block: block13 too (from 19x19x728 maps)
            # trains at 26 against 65 images/s on 2 cores and takes 2.6x the disk.
            cut="block14_sepconv1",
            cut_input=True,
            map_shape=(10, 10, 1024),
        ),
        BackboneSpec(
            name="vgg16",
            constructor=_lazy("vgg16", "VGG16"),
            input_size=224,
            preprocess=_lazy("vgg16", "preprocess_input"),
            feature_dim=512,
            weight_files=(
                "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                "vgg16_imagenet_notop.weights.h5",
            ),
            min_input_size=32,
            cut="block4_pool",
            map_shape=(14, 14, 512),
        ),
        BackboneSpec(
            name="mobilenet_025",
            constructor=_lazy("mobilenet", "MobileNet"),
            input_size=224,
            preprocess=_lazy("mobilenet", "preprocess_input"),
            feature_dim=256,
            weight_files=(
                "mobilenet_2_5_224_tf_no_top.h5",
                "mobilenet_025_imagenet_notop.weights.h5",
            ),
            constructor_kwargs={"alpha": 0.25},
            min_input_size=32,
            cut="conv_pw_11_relu",  # before its last two depthwise blocks (12, 13)
            map_shape=(14, 14, 128),
        ),
    )
}


def _maps_entry(spec: BackboneSpec) -> BackboneSpec:
    height, width, channels = spec.map_shape
    return dataclasses.replace(spec, name=f"{spec.name}_maps",
                               feature_dim=height * width * channels, maps_of=spec.name)


# `<backbone>_maps`: the cut layer's maps of each backbone, for the finetune head.
MAP_BACKBONES: dict[str, BackboneSpec] = {
    entry.name: entry for entry in map(_maps_entry, BACKBONES.values())
}
KNOWN_BACKBONES: dict[str, BackboneSpec] = {**BACKBONES, **MAP_BACKBONES}


def get_backbone(name: str) -> BackboneSpec:
    """The registry entry `name` (a backbone or a `_maps` entry); an unknown name fails
    listing the known ones."""
    try:
        return KNOWN_BACKBONES[name]
    except KeyError:
        raise HarnessError(
            f"unknown backbone {name!r}; known: {', '.join(KNOWN_BACKBONES)} "
            "(set [features] backbones in the config)"
        ) from None
