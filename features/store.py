"""The HDF5 feature store: one file per backbone (and TTA mode) per competition.

Layout (all written by features.extract, read by later stages through `load_split`):

    /train/features  (N, D) float32   GAP features, one row per readable train image
    /train/ids       (N,)   str       image ids, aligned with the rows
    /train/labels    (N,)   int64     class indices into the `classes` attribute
    /train/skipped   (K, 2) str       [id, reason] of train images that could not be read
    /test/features   (M, D) float32   one row per test image (zeros where it failed)
    /test/ids        (M,)   str
    /test/failed     (F, 2) str       [id, reason] of test images that could not be read

Root attributes: backbone, input_size, feature_dim, weights (identity), tta,
preprocessing, classes (JSON), library versions, fingerprint, complete (bool).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from base.errors import HarnessError

STRING = h5py.string_dtype()


def feature_path(features_dir: Path, backbone: str, tta: str = "none") -> Path:
    """Where the features of `backbone` (with test-time augmentation `tta`) are stored."""
    suffix = "" if tta == "none" else f"-{tta}"
    return Path(features_dir) / f"{backbone}{suffix}.h5"


@dataclass(frozen=True)
class FeatureSplit:
    """One split of one feature file, ids alongside every row.

    Attributes:
        ids: (N,) array of str ids.
        features: (N, D) float32.
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


def read_attrs(path: Path) -> dict:
    """The root attributes of a feature file ({} when it cannot be opened)."""
    try:
        with h5py.File(path, "r") as f:
            return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
    except (OSError, KeyError):
        return {}


def load_split(path: Path, split: str) -> FeatureSplit:
    """Read `split` ("train" or "test") of a complete feature file.

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
        features = group["features"][()].astype(np.float32, copy=False)
        labels = group["labels"][()].astype(np.int64) if "labels" in group else None
        failed = np.zeros(len(ids), dtype=bool)
        if "failed" in group and len(group["failed"]):
            failed_ids = set(_strings(group["failed"])[:, 0])
            failed = np.fromiter((i in failed_ids for i in ids), dtype=bool, count=len(ids))
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
    classes = tuple(json.loads(attrs.get("classes", "[]")))
    return FeatureSplit(ids, features, labels, failed, classes, attrs)


def write_feature_file(path: Path, attrs: dict, *, train: FeatureSplit, test: FeatureSplit,
                       train_skipped: list[tuple[str, str]] = (),
                       test_failed_reasons: dict[str, str] | None = None) -> Path:
    """Write a complete feature file from in-memory splits, in the layout above.

    For files made from others' rows (bench/quality.py's fitting/held-out splits, test
    fixtures); extraction writes its files batch by batch (features.parts).
    `attrs` are the root attributes; `complete` is set True. A test row's failure reason
    comes from `test_failed_reasons` (default "failed").
    """
    reasons = test_failed_reasons or {}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        group = f.create_group("train")
        group.create_dataset("features", data=np.asarray(train.features, dtype=np.float32))
        group.create_dataset("ids", data=np.asarray(train.ids, dtype=object), dtype=STRING)
        group.create_dataset("labels", data=np.asarray(train.labels, dtype=np.int64))
        group.create_dataset("skipped", data=np.asarray(list(train_skipped), dtype=object)
                             .reshape(-1, 2), dtype=STRING)
        group = f.create_group("test")
        group.create_dataset("features", data=np.asarray(test.features, dtype=np.float32))
        group.create_dataset("ids", data=np.asarray(test.ids, dtype=object), dtype=STRING)
        failed = [(key, reasons.get(key, "failed"))
                  for key, bad in zip(test.ids, test.failed) if bad]
        group.create_dataset("failed", data=np.asarray(failed, dtype=object).reshape(-1, 2),
                             dtype=STRING)
        f.attrs.update({**attrs, "complete": True})
    return path
