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
