"""Which weights each backbone loads, and a stable identity for the fingerprint.

Order of resolution for one backbone:
1. `[features] weights_for[backbone]` when set;
2. else, when `weights_dir` is set, the backbone's file found there (see
   `BackboneSpec.weight_files`), so `../shared/weights` or an offline Kaggle dataset works;
3. else `[features] weights`: "auto" ("none" for the demo, "imagenet" otherwise),
   "imagenet", "none", or a file path.
A command-line `--weights` replaces the file's weights_dir and weights_for (see
`harness.config.load_config`), so the command line always wins.

A file's identity is its sha256, cached by (path, size, mtime) so that an 83 MB file is
hashed once, not on every run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from base.errors import HarnessError
from base.hashing import cached_file_sha256
from competition.spec import CompetitionSpec
from features.backbones import get_backbone
from features.settings import FeaturesConfig

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class WeightsChoice:
    """What to pass to the Keras constructor and how to name it in the fingerprint.

    Attributes:
        keras_arg: None (random init), "imagenet", or a file path.
        identity: "none", "imagenet:keras-<version>" or "sha256:<hex>".
    """

    keras_arg: str | None
    identity: str


def keras_version() -> str:
    """Keras' installed version, read without importing Keras (which is slow)."""
    try:
        return metadata.version("keras")
    except metadata.PackageNotFoundError:  # pragma: no cover - keras is a dependency
        return "unknown"


def _from_value(value: str, backbone: str, what: str) -> WeightsChoice:
    lowered = value.strip().lower()
    if lowered == "none":
        return WeightsChoice(None, "none")
    if lowered == "imagenet":
        return WeightsChoice("imagenet", f"imagenet:keras-{keras_version()}")
    path = Path(value).expanduser()
    if not path.is_file():
        raise HarnessError(
            f"{what}: weights file {path} for {backbone} does not exist; give an existing "
            "file, \"imagenet\", \"none\", or set weights_dir to a folder holding it"
        )
    return WeightsChoice(str(path.resolve()), f"sha256:{cached_file_sha256(path)}")


def find_in_dir(backbone: str, weights_dir: Path) -> Path:
    """The weights file of `backbone` in `weights_dir`.

    Raises:
        HarnessError: the folder or the file is missing (names the file names looked for).
    """
    spec = get_backbone(backbone)
    weights_dir = Path(weights_dir)
    if not weights_dir.is_dir():
        raise HarnessError(
            f"weights_dir {weights_dir} does not exist; point [features] weights_dir "
            "(or --weights-dir) at the folder that holds the weight files"
        )
    for name in spec.weight_files:
        if (weights_dir / name).is_file():
            return weights_dir / name
    raise HarnessError(
        f"weights_dir {weights_dir} holds no weights for {backbone} (looked for "
        f"{' or '.join(spec.weight_files)}); copy the file there, set "
        f"[features.weights_for] {backbone} = \"PATH\", or use weights = \"imagenet\"/\"none\""
    )


def resolve_weights(backbone: str, features: FeaturesConfig,
                    spec: CompetitionSpec) -> WeightsChoice:
    """Decide which weights `backbone` loads (see the module docstring for the order).

    Raises:
        HarnessError: unknown backbone, missing file or weights folder entry.
    """
    backbone = get_backbone(backbone).weights_name  # a `_maps` entry loads its base's
    if backbone in features.weights_for:
        return _from_value(features.weights_for[backbone], backbone,
                           f"[features.weights_for] {backbone}")
    if features.weights_dir is not None:
        path = find_in_dir(backbone, features.weights_dir)
        return WeightsChoice(str(path.resolve()), f"sha256:{cached_file_sha256(path)}")
    value = features.weights
    if value.strip().lower() == "auto":
        value = "none" if spec.slug == "demo" else "imagenet"
    return _from_value(value, backbone, "[features] weights")
