"""Tiny real image files for tests (generated, never committed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_jpeg(path: Path, seed: int = 0, size: int = 40, colour: tuple | None = None) -> Path:
    """A small genuine image, JPEG or whatever format the suffix names (.png, .tif, .bmp,
    .webp): noise, or a flat colour plus noise."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
    if colour is not None:
        pixels = (np.asarray(colour, dtype=np.uint8) * 0.8 + pixels * 0.2).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"quality": 90} if path.suffix.lower() in (".jpg", ".jpeg", ".webp") else {}
    Image.fromarray(pixels, "RGB").save(path, **options)
    return path


def write_competition(root: Path, n_per_class: int = 6, n_test: int = 12,
                      classes: tuple[str, str] = ("cat", "dog")) -> Path:
    """A Kaggle-layout binary competition: train/<class>.N.jpg, test/N.jpg, sample CSV."""
    for label, name in enumerate(classes):
        for number in range(n_per_class):
            write_jpeg(root / "train" / f"{name}.{number}.jpg", seed=label * 1000 + number,
                       colour=(220, 40, 40) if label == 0 else (40, 40, 220))
    for test_id in range(1, n_test + 1):
        write_jpeg(root / "test" / f"{test_id}.jpg", seed=5000 + test_id)
    rows = ["id,label"] + [f"{i},0.5" for i in range(1, n_test + 1)]
    (root / "sample_submission.csv").write_text("\n".join(rows) + "\n")
    return root
