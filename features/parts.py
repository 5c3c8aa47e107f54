"""Crash-safe streaming storage: per-batch part files, assembled into the final HDF5.

HDF5 is not crash-safe: a process killed mid-write can leave a file h5py cannot open.
So extraction writes every batch to its own small `.npz` part, atomically (temporary name,
then `os.replace`), in a partial folder keyed by the fingerprint. A rerun reads which rows
the parts already hold and computes only the rest. When every row is present the parts are
streamed, one at a time, through the store's writer (features.store: a temporary name,
renamed into place only when complete): memory stays flat in the number of images.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from base.atomic import atomic_path
from competition.images import ImageList
from features.store import feature_file_writer

logger = logging.getLogger(__name__)

PARTIAL = ".partial"


def partial_dir(final_path: Path, fingerprint: str) -> Path:
    """The folder holding the parts of `final_path` for this fingerprint."""
    return final_path.parent / PARTIAL / f"{final_path.stem}-{fingerprint[:16]}"


def _parts(folder: Path, split: str) -> list[Path]:
    return sorted(folder.glob(f"{split}-*.npz"))


def write_part(folder: Path, split: str, rows: np.ndarray, ids: list[str],
               features: np.ndarray, reasons: list[str], dtype: str = "float32") -> Path:
    """Write one batch atomically (features as `dtype`): a reader sees the whole part or
    none of it."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{split}-{int(rows[0]):09d}-{len(rows):05d}.npz"
    with atomic_path(final) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, rows=np.asarray(rows, dtype=np.int64),
                 ids=np.asarray(ids, dtype=str),
                 features=np.asarray(features, dtype=dtype),
                 reasons=np.asarray(reasons, dtype=str))
    return final


def _load(path: Path, keys: tuple[str, ...]) -> dict | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in keys}
    except (OSError, ValueError, KeyError) as exc:
        # Cannot happen through write_part (atomic); a hand-damaged part is recomputed.
        logger.warning("%s: unreadable part (%s); its rows will be recomputed", path, exc)
        path.unlink(missing_ok=True)
        return None


def done_rows(folder: Path, split: str, images: ImageList) -> np.ndarray:
    """(N,) bool: which rows of `images` the parts in `folder` already hold."""
    done = np.zeros(len(images), dtype=bool)
    if not folder.is_dir():
        return done
    for path in _parts(folder, split):
        part = _load(path, ("rows", "ids"))
        if part is None:
            continue
        rows = part["rows"]
        if len(rows) and (rows.max() >= len(images)
                          or any(images.ids[r] != i for r, i in zip(rows, part["ids"]))):
            logger.warning("%s: ids do not match the image list; recomputing", path)
            path.unlink(missing_ok=True)
            continue
        done[rows] = True
    return done


def _iter_parts(folder: Path, split: str) -> Iterator[dict]:
    for path in _parts(folder, split):
        part = _load(path, ("rows", "features", "reasons"))
        if part is not None:
            yield part


def assemble(folder: Path, final_path: Path, train: ImageList, test: ImageList,
             feature_dim: int, attrs: dict) -> dict[str, list[tuple[str, str]]]:
    """Stream the parts into `final_path` (temp name + rename); return the bad images.

    Train images that could not be read get no row (listed in /train/skipped); test images
    keep their row with zero features (listed in /test/failed), so no test id is lost.

    Returns:
        {"train": [(id, reason), ...], "test": [...]}.

    Raises:
        RuntimeError: a row is missing from the parts (a bug, never a user error).
    """
    bad: dict[str, list[tuple[str, str]]] = {}
    with feature_file_writer(final_path, attrs) as writer:
        for split, images in (("train", train), ("test", test)):
            n = len(images)
            reasons = np.full(n, "", dtype=object)
            covered = np.zeros(n, dtype=bool)
            for path in _parts(folder, split):
                part = _load(path, ("rows", "reasons"))
                if part is not None:
                    reasons[part["rows"]] = part["reasons"]
                    covered[part["rows"]] = True
            if not covered.all():
                raise RuntimeError(f"{folder}: {int((~covered).sum())} {split} rows missing")
            keep = (reasons == "") if split == "train" else np.ones(n, dtype=bool)
            target = np.cumsum(keep) - 1
            pairs = [(images.ids[r], str(reasons[r])) for r in np.flatnonzero(reasons != "")]
            bad[split] = pairs
            labels = None
            if split == "train" and images.labels is not None:
                labels = np.asarray(images.labels)[keep]
            writer.add_split(split, [i for i, k in zip(images.ids, keep) if k], feature_dim,
                             labels=labels, bad=pairs,
                             dtype=attrs.get("feature_dtype", "float32"))
            for part in _iter_parts(folder, split):
                rows, values = part["rows"], part["features"]
                if split == "test":
                    values = np.where((part["reasons"] == "")[:, None], values, 0.0)
                chosen = keep[rows]
                writer.write_rows(split, target[rows[chosen]], values[chosen])
    return bad


def discard(folder: Path) -> None:
    """Remove a partial folder (after its file is complete, or on --force), and the
    `.partial` folder above it once nothing else is in it."""
    shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.parent.rmdir()
    except OSError:
        pass  # another backbone's parts are still there


def discard_stale(final_path: Path, keep: Path | None = None) -> None:
    """Remove partial folders of `final_path` left by runs with other fingerprints."""
    root = final_path.parent / PARTIAL
    for folder in root.glob(f"{final_path.stem}-*"):
        if folder != keep and folder.is_dir() and len(folder.name) == len(final_path.stem) + 17:
            shutil.rmtree(folder, ignore_errors=True)


def json_attr(value: object) -> str:
    """Attributes that are dicts or lists are stored as JSON text."""
    return json.dumps(value, sort_keys=True)
