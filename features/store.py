"""The HDF5 feature store: one file per backbone (and TTA mode) per competition.

This module is the only one that knows the layout: every feature file is written through
`feature_file_writer` (extraction's parts, shard merges, `write_feature_file` for benches
and fixtures) and read through `load_split`, `read_attrs`, `read_ids` and `read_bad`.

Layout:

    /train/features  (N, D) float32   GAP features, one row per readable train image
                                      (float16: a `_maps` entry's flattened cut maps)
    /train/ids       (N,)   str       image ids, aligned with the rows
    /train/labels    (N,)   int64     class indices into the `classes` attribute; for
                     (N, T) int64 multilabel tasks 0/1 per tag, for regression (N,) float64
    /train/skipped   (K, 2) str       [id, reason] of train images that could not be read
    /test/features   (M, D) float32   one row per test image (zeros where it failed)
    /test/ids        (M,)   str
    /test/failed     (F, 2) str       [id, reason] of test images that could not be read

Root attributes: backbone, input_size, feature_dim, feature_dtype, weights (identity), tta,
preprocessing, precision, engine, executor, classes (JSON), library versions, fingerprint
and fingerprint_parts (JSON), complete (bool); shard files add shard and full_*; merged
files merged_from.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from base.atomic import atomic_path
from base.errors import HarnessError

STRING = h5py.string_dtype()
BAD_TABLE = {"train": "skipped", "test": "failed"}  # the [id, reason] table of each split
CHUNK_BYTES = 1 << 20  # HDF5 chunks of about 1 MiB, h5py's recommended range


def feature_path(features_dir: Path, backbone: str, tta: str = "none") -> Path:
    """Where the features of `backbone` (with test-time augmentation `tta`) are stored."""
    suffix = "" if tta == "none" else f"-{tta}"
    return Path(features_dir) / f"{backbone}{suffix}.h5"


@dataclass(frozen=True)
class FeatureSplit:
    """One split of one feature file, ids alongside every row.

    Attributes:
        ids: (N,) array of str ids.
        features: (N, D) float32 (float16 for a `_maps` entry's maps).
        labels: (N,) int64 class indices (train) or None (test).
        failed: (N,) bool, True for rows whose image could not be read (test only;
            failed train images have no row at all).
        classes: Class names, in label order.
        attrs: The file's root attributes (backbone, weights, fingerprint, ...).
    """

    ids: np.ndarray
    features: np.ndarray
    labels: np.ndarray | None
    failed: np.ndarray
    classes: tuple[str, ...]
    attrs: dict


def _strings(dataset: h5py.Dataset) -> np.ndarray:
    return np.asarray(dataset.asstr()[()], dtype=object)


def _chunks(rows: int, dim: int) -> tuple[int, int]:
    return (max(1, min(rows, CHUNK_BYTES // (4 * dim))), dim)


def read_attrs(path: Path) -> dict:
    """The root attributes of a feature file ({} when it cannot be opened)."""
    try:
        with h5py.File(path, "r") as f:
            return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
    except (OSError, KeyError):
        return {}


def load_split(path: Path, split: str, *, features: bool = True) -> FeatureSplit:
    """Read `split` ("train" or "test") of a complete feature file; with features=False
    only its ids, labels and failed images (features (n, 0): a maps file is gigabytes).

    Raises:
        HarnessError: the file is missing, incomplete, or lacks the split.
    """
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"feature file {path} does not exist; run `harness features` first")
    with h5py.File(path, "r") as f:
        if not bool(f.attrs.get("complete", False)):
            raise HarnessError(f"{path} is incomplete; rerun `harness features` to finish it")
        if split not in f:
            raise HarnessError(f"{path} has no /{split} group; rerun `harness features --force`")
        group = f[split]
        ids = _strings(group["ids"])
        values = group["features"][()] if features else np.zeros((len(ids), 0), np.float32)
        if values.dtype != np.float16:  # maps stay float16 in memory too: half the RAM
            values = values.astype(np.float32, copy=False)
        labels = _labels(group["labels"]) if "labels" in group else None
        failed = np.zeros(len(ids), dtype=bool)
        if "failed" in group and len(group["failed"]):
            failed_ids = set(_strings(group["failed"])[:, 0])
            failed = np.fromiter((i in failed_ids for i in ids), dtype=bool, count=len(ids))
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
    classes = tuple(json.loads(attrs.get("classes", "[]")))
    return FeatureSplit(ids, values, labels, failed, classes, attrs)


class FeatureFileWriter:
    """Writes the layout above into an open HDF5 file; made by `feature_file_writer`.

    A split is declared once with its ids (and labels, and bad images), then its feature
    rows are written in any order and any number of calls, so a caller can stream parts
    or shards through it with memory flat in the number of images.
    """

    def __init__(self, handle: h5py.File):
        self._handle = handle

    def add_split(self, split: str, ids: Sequence[str], feature_dim: int, *,
                  labels: Sequence[int] | np.ndarray | None = None,
                  bad: Sequence[tuple[str, str]] = (), dtype: str = "float32") -> None:
        """Create /`split`: ids, zero features (N, feature_dim) of `dtype` (float16 for
        maps), labels (train) and the [id, reason] table of bad images (/train/skipped or
        /test/failed)."""
        group = self._handle.create_group(split)
        rows = len(ids)
        group.create_dataset("features", shape=(rows, feature_dim), dtype=np.dtype(dtype),
                             chunks=_chunks(rows, feature_dim), maxshape=(None, feature_dim),
                             fillvalue=0.0)
        group.create_dataset("ids", data=np.asarray(list(ids), dtype=object), dtype=STRING,
                             shape=(rows,))
        if split == "train":
            values = np.zeros(rows, np.int64) if labels is None else np.asarray(labels)
            if values.dtype.kind != "f":
                values = values.astype(np.int64)
            group.create_dataset("labels", data=values)
        pairs = np.asarray([list(pair) for pair in bad], dtype=object).reshape(len(bad), 2)
        group.create_dataset(BAD_TABLE[split], data=pairs, dtype=STRING, shape=(len(bad), 2))

    def write_rows(self, split: str, rows: np.ndarray, values: np.ndarray) -> None:
        """Write `values[k]` to row `rows[k]` of /`split`/features (contiguous runs in one
        slice write, others by index)."""
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return
        order = np.argsort(rows, kind="stable")
        features = self._handle[split]["features"]
        rows, values = rows[order], np.asarray(values, dtype=features.dtype)[order]
        if rows[-1] - rows[0] + 1 == len(rows):
            features[int(rows[0]):int(rows[-1]) + 1] = values
        else:
            features[rows.tolist()] = values


@contextmanager
def feature_file_writer(path: Path, attrs: dict) -> Iterator[FeatureFileWriter]:
    """Write a feature file under a temporary name; on a clean exit set `attrs` and
    `complete` and rename it into place, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        yield FeatureFileWriter(handle)
        handle.attrs.update(attrs)
        handle.attrs["complete"] = True


def write_feature_file(path: Path, attrs: dict, *, train: FeatureSplit, test: FeatureSplit,
                       train_skipped: Sequence[tuple[str, str]] = (),
                       test_failed_reasons: dict[str, str] | None = None) -> Path:
    """Write a complete feature file from in-memory splits.

    For files made from others' rows (bench/quality.py's fitting/held-out splits, test
    fixtures); extraction streams its parts through `feature_file_writer`. A failed test
    row's reason comes from `test_failed_reasons` (default "failed").
    """
    reasons = test_failed_reasons or {}
    failed = [(key, reasons.get(key, "failed")) for key, bad in zip(test.ids, test.failed) if bad]
    with feature_file_writer(path, attrs) as writer:
        for split, data, bad in (("train", train, train_skipped), ("test", test, failed)):
            dtype = str(attrs.get("feature_dtype", "float32"))
            features = np.asarray(data.features, dtype=dtype)
            writer.add_split(split, data.ids, features.shape[1], labels=data.labels, bad=bad,
                             dtype=dtype)
            writer.write_rows(split, np.arange(len(features)), features)
    return Path(path)


def read_ids(path: Path, split: str) -> np.ndarray:
    """The ids of /`split` of a feature file, without reading its features."""
    with h5py.File(path, "r") as f:
        return _strings(f[split]["ids"])


def _labels(dataset: h5py.Dataset) -> np.ndarray:
    """Labels as stored: int64 class indices or tags, float64 regression values."""
    values = dataset[()]
    return values.astype(np.float64 if values.dtype.kind == "f" else np.int64)


def read_labels(path: Path) -> np.ndarray:
    """/train/labels of a feature file."""
    with h5py.File(path, "r") as f:
        return _labels(f["train"]["labels"])


def read_bad(path: Path) -> dict[str, list[tuple[str, str]]]:
    """{"train": [(id, reason)] skipped, "test": [(id, reason)] failed} of a feature file."""
    bad = {}
    with h5py.File(path, "r") as f:
        for split, name in BAD_TABLE.items():
            table = f[split].get(name)
            bad[split] = ([(str(i), str(r)) for i, r in _strings(table)]
                          if table is not None and len(table) else [])
    return bad
