"""Locating `../shared` (genuine photos and ImageNet weights) for the real-weights tests.

On a user's clone it is absent and those tests skip; under CI (`CI` set) they must run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """`$HARNESS_SHARED`, or `../shared` beside the repository; skip (or fail under CI)."""
    path = Path(os.environ.get("HARNESS_SHARED", REPO.parent / "shared"))
    needed = [path / "data" / "dogs-vs-cats-mini" / "train",
              path / "weights" / "mobilenet_2_5_224_tf_no_top.h5"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        reason = f"real photos/weights not found: {', '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set, so this test must run)")
        pytest.skip(reason)
    return path
