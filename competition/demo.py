"""The offline `demo` competition: small generated images in Kaggle's layout.

Circles and squares, drawn deterministically from a seed, with random position, size,
colour shade and background noise, so that the whole pipeline runs without a download.
Its scores say nothing about real photos. The test labels are written to
`solution.csv` beside the data (the harness never reads it; tests score against it).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from base.atomic import usual_mode
from base.errors import HarnessError
from competition.spec import get_spec

logger = logging.getLogger(__name__)

MARKER = ".demo-complete"
CLASSES = get_spec("demo").classes  # ("circle", "square")


def _draw(rng: np.random.Generator, label: int, size: int) -> Image.Image:
    noise = rng.integers(90, 166, size=(size, size, 3), dtype=np.uint8)
    image = Image.fromarray(noise, "RGB")
    draw = ImageDraw.Draw(image)
    extent = int(rng.integers(size // 3, size * 3 // 4))
    left, top = (int(v) for v in rng.integers(0, size - extent, size=2))
    box = (left, top, left + extent, top + extent)
    # Shapes also differ in hue so that even random-init backbones separate them a little.
    shade = int(rng.integers(0, 90))
    if label == 0:
        draw.ellipse(box, fill=(255 - shade, 40 + shade // 2, 40))
    else:
        draw.rectangle(box, fill=(40, 40 + shade // 2, 255 - shade))
    return image


def generate_demo(
    data_dir: Path, *, seed: int = 0, n_train: int = 160, n_test: int = 60, size: int = 48
) -> Path:
    """Write the demo competition into `data_dir` unless an identical one is there.

    Layout: `train/circle.N.jpg`, `train/square.N.jpg`, `test/N.jpg` (ids 1..n_test in
    shuffled class order), `sample_submission.csv` and the withheld `solution.csv`.

    Returns:
        `data_dir`. The folder is built under a temporary name and renamed, so an
        interrupted run never leaves a half-written demo that looks complete.
    """
    data_dir = Path(data_dir)
    params = {"seed": seed, "n_train": n_train, "n_test": n_test, "size": size}
    marker = data_dir / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == params:
        logger.info("demo data already in %s", data_dir)
        return data_dir
    if data_dir.exists() and any(data_dir.iterdir()) and not marker.is_file():
        raise HarnessError(
            f"{data_dir} holds files that the demo generator did not write; "
            "point data_dir elsewhere (or empty it) to generate the demo there"
        )
    rng = np.random.default_rng(seed)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".demo-", dir=data_dir.parent))
    staging.chmod(usual_mode(directory=True))  # mkdtemp's 0700 would hide the data
    (staging / "train").mkdir()
    (staging / "test").mkdir()
    for label, name in enumerate(CLASSES):
        for number in range(n_train // 2):
            _draw(rng, label, size).save(staging / "train" / f"{name}.{number}.jpg", quality=90)
    test_labels = rng.permutation(np.arange(n_test) % 2)
    rows = ["id,label"]
    for test_id, label in enumerate(test_labels, start=1):
        _draw(rng, int(label), size).save(staging / "test" / f"{test_id}.jpg", quality=90)
        rows.append(f"{test_id},{label}")
    (staging / "solution.csv").write_text("\n".join(rows) + "\n")
    sample = ["id,label"] + [f"{i},0.5" for i in range(1, n_test + 1)]
    (staging / "sample_submission.csv").write_text("\n".join(sample) + "\n")
    (staging / MARKER).write_text(json.dumps(params))
    if data_dir.exists():
        shutil.rmtree(data_dir)
    os.replace(staging, data_dir)
    logger.info("generated the demo competition in %s (%d train, %d test images)",
                data_dir, n_train, n_test)
    return data_dir
