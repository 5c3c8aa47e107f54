"""kaggle-image-harness: `harness` on the command line, `harness.run` in a notebook cell."""

from __future__ import annotations

from typing import Any

__all__ = ["run"]


def run(*args: Any, **kwargs: Any) -> Any:
    """`harness.api.run` (imported on first use: `import harness` stays light)."""
    from harness.api import run as run_harness

    return run_harness(*args, **kwargs)
