"""Plots written as PNG files without pyplot.

Every plot of the harness is a `matplotlib.figure.Figure` of its own: no global backend is
switched (a notebook's inline plots keep working), nothing is left open, and it renders
with the Agg canvas. This writes one atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from base.atomic import atomic_path


def save_png(figure: Any, path: Path, dpi: float | str = "figure") -> Path:
    """Lay `figure` out tightly and write it to `path` as a PNG, atomically; returns path."""
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=dpi, format="png")
    return Path(path)
