"""Where every artifact goes: one workspace folder per competition, ignored by git."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def user_cache_dir() -> Path:
    """Where caches that outlive a workspace go (file hashes, converted models):
    `$HARNESS_CACHE_DIR`, else `$XDG_CACHE_HOME` or `~/.cache`, then `kaggle-image-harness`."""
    root = os.environ.get("HARNESS_CACHE_DIR")
    if root:
        return Path(root)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "kaggle-image-harness"


@dataclass(frozen=True)
class Workspace:
    """The folders under a workspace root (default `work/<competition-slug>/`)."""

    root: Path

    @property
    def data_dir(self) -> Path:
        """Downloaded or generated competition files."""
        return self.root / "data"

    @property
    def features_dir(self) -> Path:
        """One HDF5 file per backbone (and TTA mode)."""
        return self.root / "features"

    @property
    def ensembles_dir(self) -> Path:
        """Out-of-fold and test predictions, CV scores and reports."""
        return self.root / "ensembles"

    @property
    def submissions_dir(self) -> Path:
        """Validated submission CSV files."""
        return self.root / "submissions"

    @property
    def ledger_path(self) -> Path:
        """The SQLite ledger of upload attempts."""
        return self.root / "ledger.sqlite"
