"""A contact sheet of the training photos a model gets most wrong, out of fold.

Each tile: the photo, its id, its label and the predicted probability of that label, with
the photo's out-of-fold log loss. A mislabelled photo (a dog in a file called cat.N.jpg)
shows at a glance; list its id under `exclude_ids` to leave it out of fitting.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from base.figures import save_png
from competition.metrics import row_log_loss
from ensembles.results import EnsembleResult

logger = logging.getLogger(__name__)

THUMB = 160  # pixels, the longer side of a tile's photo


def costliest_rows(result: EnsembleResult, count: int) -> np.ndarray:
    """Row indices of the `count` out-of-fold predictions with the highest log loss."""
    losses = row_log_loss(result.oof_labels, result.oof_proba)
    return np.argsort(-losses, kind="stable")[:count]


def write_contact_sheet(result: EnsembleResult, image_paths: dict[str, Path], path: Path,
                        count: int = 24, columns: int = 6) -> Path | None:
    """Draw the `count` costliest out-of-fold training photos of `result` into `path` (PNG).

    Returns:
        `path`, or None when no photo of those rows can be found (features made from
        images that are no longer on disk).
    """
    from matplotlib.figure import Figure  # not pyplot: base.figures
    from PIL import Image

    rows = [r for r in costliest_rows(result, count) if str(result.oof_ids[r]) in image_paths]
    if not rows:
        logger.info("%s: no training photos found for the contact sheet", result.name)
        return None
    losses = row_log_loss(result.oof_labels, result.oof_proba)
    n_rows = math.ceil(len(rows) / columns)
    fig = Figure(figsize=(2.2 * columns, 2.6 * n_rows))
    axes = fig.subplots(n_rows, columns, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, row in zip(axes.ravel(), rows):
        key = str(result.oof_ids[row])
        label = int(result.oof_labels[row])
        try:
            with Image.open(image_paths[key]) as image:
                image.draft("RGB", (THUMB, THUMB))  # JPEG: decode at a reduced size
                image = image.convert("RGB")
                image.thumbnail((THUMB, THUMB))
                ax.imshow(np.asarray(image))
        except OSError as exc:  # unreadable now: keep the tile, say why
            ax.text(0.5, 0.5, f"unreadable:\n{exc}", ha="center", va="center", fontsize=6,
                    wrap=True)
        ax.set_title(f"{key}\nlabel {result.classes[label]}: "
                     f"p={result.oof_proba[row, label]:.3f} ({losses[row]:.2f} nats)",
                     fontsize=7)
    fig.suptitle(f"{result.name}: the {len(rows)} costliest training photos out of fold "
                 f"(mean log loss {result.cv_log_loss:.4f})", fontsize=9)
    return save_png(fig, path, dpi=80)
