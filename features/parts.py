"""Crash-safe streaming storage: per-batch part files, assembled into the final HDF5.

HDF5 is not crash-safe: a process killed mid-write can leave a file h5py cannot open.
So extraction writes every batch to its own small `.npz` part, atomically (temporary name,
then `os.replace`), in a partial folder keyed by the fingerprint. A rerun reads which rows
the parts already hold and computes only the rest. When every row is present the parts are
streamed, one at a time, into the chunked HDF5 file under a temporary name, which is
renamed into place only after it is complete: memory stays flat in the number of images.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from base.atomic import atomic_path
from competition.images import ImageList
from features.store import STRING

logger = logging.getLogger(__name__)

PARTIAL = ".partial"
CHUNK_BYTES = 1 << 20  # HDF5 chunks of about 1 MiB, h5py's recommended range


def partial_dir(final_path: Path, fingerprint: str) -> Path:
    """The folder holding the parts of `final_path` for this fingerprint."""
    return final_path.parent / PARTIAL / f"{final_path.stem}-{fingerprint[:16]}"


def _parts(folder: Path, split: str) -> list[Path]:
    return sorted(folder.glob(f"{split}-*.npz"))


def write_part(folder: Path, split: str, rows: np.ndarray, ids: list[str],
               features: np.ndarray, reasons: list[str]) -> Path:
    """Write one batch atomically: a reader sees the whole part or none of it."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{split}-{int(rows[0]):09d}-{len(rows):05d}.npz"
    with atomic_path(final) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, rows=np.asarray(rows, dtype=np.int64),
                 ids=np.asarray(ids, dtype=str),
                 features=np.asarray(features, dtype=np.float32),
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


def _chunks(rows: int, dim: int) -> tuple[int, int]:
    return (max(1, min(rows, CHUNK_BYTES // (4 * dim))), dim)


def _write_rows(dataset: h5py.Dataset, targets: np.ndarray, values: np.ndarray) -> None:
    if not len(targets):
        return
    order = np.argsort(targets, kind="stable")
    targets, values = targets[order], values[order]
    if targets[-1] - targets[0] + 1 == len(targets):
        dataset[int(targets[0]):int(targets[-1]) + 1] = values
    else:
        dataset[targets.tolist()] = values


def _reason_table(group: h5py.Group, name: str, pairs: list[tuple[str, str]]) -> None:
    data = np.asarray(pairs, dtype=object).reshape(len(pairs), 2)
    group.create_dataset(name, data=data, dtype=STRING, shape=(len(pairs), 2))


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
    with atomic_path(final_path) as tmp, h5py.File(tmp, "w") as handle:
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
            rows_out = int(keep.sum())
            group = handle.create_group(split)
            features = group.create_dataset(
                "features", shape=(rows_out, feature_dim), dtype="f4",
                chunks=_chunks(rows_out, feature_dim), maxshape=(None, feature_dim),
                fillvalue=0.0)
            for part in _iter_parts(folder, split):
                rows, values = part["rows"], part["features"]
                if split == "test":
                    values = np.where((part["reasons"] == "")[:, None], values, 0.0)
                chosen = keep[rows]
                _write_rows(features, target[rows[chosen]], values[chosen])
            kept_ids = [i for i, k in zip(images.ids, keep) if k]
            group.create_dataset("ids", data=np.asarray(kept_ids, dtype=object),
                                 dtype=STRING, shape=(rows_out,))
            pairs = [(images.ids[r], str(reasons[r])) for r in np.flatnonzero(reasons != "")]
            bad[split] = pairs
            if split == "train":
                labels = (np.zeros(n, np.int64) if images.labels is None
                          else np.asarray(images.labels, np.int64))
                group.create_dataset("labels", data=labels[keep])
                _reason_table(group, "skipped", pairs)
            else:
                _reason_table(group, "failed", pairs)
        for key, value in attrs.items():
            handle.attrs[key] = value
        handle.attrs["complete"] = True
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
