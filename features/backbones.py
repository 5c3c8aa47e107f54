"""The backbone registry: name -> Keras application, input size, preprocessing, width.

Adding a backbone is one entry in `BACKBONES`; the tests are parametrized over it.
Keras is imported lazily (inside the constructors and preprocess functions) so that
checking whether cached features are still valid never pays TensorFlow's import time.
"""

from __future__ import annotations

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
    """

    name: str
    constructor: Callable
    input_size: int
    preprocess: Callable
    feature_dim: int
    weight_files: tuple[str, ...]
    constructor_kwargs: dict = field(default_factory=dict)
    min_input_size: int = 32

    @property
    def preprocess_name(self) -> str:
        """A stable name of the preprocess function (part of the fingerprint)."""
        return self.preprocess.__qualname__

    def build(self, weights: str | None, input_size: int | None = None) -> Any:
        """Build the headless model with GAP pooling.

        Args:
            weights: None (random init), "imagenet", or a weights file path.
            input_size: Square input size; default the native one.

        Raises:
            HarnessError: the file is not this backbone's weights, or the ImageNet weights
                cannot be downloaded (no internet): one line naming the file and the fix.
        """
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
        ),
    )
}


def get_backbone(name: str) -> BackboneSpec:
    """The registry entry `name`; an unknown name fails listing the known ones."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise HarnessError(
            f"unknown backbone {name!r}; known: {', '.join(BACKBONES)} "
            "(set [features] backbones in the config)"
        ) from None
