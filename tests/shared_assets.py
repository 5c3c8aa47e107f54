"""Locating `../shared` (genuine photos and ImageNet weights) for real-weights tests and benches.

On a user's clone it is absent and those tests skip; under CI (`CI` set) they must run, so a
missing or moved `../shared` fails them instead. One lookup, used by tests/ and bench/ alike.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MOBILENET_WEIGHTS = Path("weights") / "mobilenet_2_5_224_tf_no_top.h5"
MINI_DATA = Path("data") / "dogs-vs-cats-mini"


def shared_root() -> Path:
    """`$HARNESS_SHARED`, or `../shared` beside the repository (it may not exist)."""
    return Path(os.environ.get("HARNESS_SHARED", REPO.parent / "shared"))


def shared_dir() -> Path:
    """`shared_root()` when it holds the photos and weights; skip (or fail under CI) if not."""
    path = shared_root()
    needed = [path / MINI_DATA / "train", path / MOBILENET_WEIGHTS]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        reason = f"real photos/weights not found: {', '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set, so this test must run)")
        pytest.skip(reason)
    return path


def mini_photos(n: int, data: Path | None = None):
    """The first `n` genuine training photos of the mini set (or of `data`), cats and dogs
    interleaved so any n holds both classes, as a train ImageList (for benches)."""
    import numpy as np

    from competition.images import ImageList, natural_key

    data = data or shared_root() / MINI_DATA / "train"
    files = sorted((p for p in data.iterdir() if p.suffix.lower() == ".jpg"),
                   key=lambda p: natural_key(p.name))
    cats = [p for p in files if p.name.startswith("cat.")]
    dogs = [p for p in files if p.name.startswith("dog.")]
    chosen = [p for pair in zip(cats, dogs) for p in pair][:n]
    chosen.sort(key=lambda p: natural_key(p.stem))
    labels = np.asarray([int(p.name.startswith("dog.")) for p in chosen], np.int64)
    return ImageList("train", tuple(p.stem for p in chosen), tuple(chosen), labels,
                     ("cat", "dog"))


def no_test_images():
    """An empty test ImageList (benches extract train photos only)."""
    from competition.images import ImageList

    return ImageList("test", (), (), None, ("cat", "dog"))
