"""Feature matrices for an ensemble: several backbones' features joined on ids.

Features are read only through `features.store.load_split`. The joined matrix is
allocated once and each backbone is copied into its columns, so peak memory is the
matrix plus one backbone, never two matrices.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from base.errors import HarnessError
from features.store import feature_path, load_split, read_attrs

logger = logging.getLogger(__name__)

# The attributes that decide whether saved predictions still describe these features.
IDENTITY_ATTRS = ("backbone", "fingerprint", "weights", "tta", "feature_dim", "input_size",
                  "preprocessing")


@dataclass
class FeatureMatrix:
    """One split of an ensemble's joined features; every row travels with its id.

    Attributes:
        ids: (N,) str ids, in the first backbone's row order.
        X: (N, sum of widths) float32 (one `_maps` backbone: its float16 maps as read).
        labels: (N,) int64 class indices, (N, T) tags or (N,) float values (train);
            None (test).
        failed: (N,) bool, True where any backbone failed to read the image (test).
        classes: Class names in label order.
    """

    ids: np.ndarray
    X: np.ndarray
    labels: np.ndarray | None
    failed: np.ndarray
    classes: tuple[str, ...]


def feature_identity(features_dir: Path, backbones: tuple[str, ...], tta: str, *,
                     ensemble: str) -> dict[str, dict]:
    """The identity attributes of each backbone's feature file, checked to exist.

    Raises:
        HarnessError: a file is missing or incomplete (naming the ensemble and backbone).
    """
    identity = {}
    for backbone in backbones:
        path = feature_path(features_dir, backbone, tta)
        attrs = read_attrs(path)
        if not attrs:
            raise HarnessError(
                f"ensemble {ensemble!r} needs features of backbone {backbone!r} (tta {tta}), "
                f"but {path} does not exist; run `harness features` for it first")
        if not bool(attrs.get("complete", False)):
            raise HarnessError(f"ensemble {ensemble!r}: {path} is incomplete; rerun "
                               "`harness features` to finish it")
        identity[backbone] = {k: attrs.get(k) for k in IDENTITY_ATTRS}
    return identity


def digest(obj: object) -> str:
    """A stable short hash of a JSON-able object."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _describe_mismatch(first: str, ids_a: np.ndarray, other: str, ids_b: np.ndarray) -> str:
    only_a = sorted(set(ids_a) - set(ids_b))
    only_b = sorted(set(ids_b) - set(ids_a))
    return (f"{len(only_a)} ids only in {first} (e.g. {only_a[:3]}), {len(only_b)} only in "
            f"{other} (e.g. {only_b[:3]})")


def load_matrix(features_dir: Path, backbones: tuple[str, ...], tta: str, split: str, *,
                ensemble: str) -> FeatureMatrix:
    """Read `split` of every backbone and join the columns on ids.

    Rows follow the first backbone's order; the others are aligned to it by id. Any
    difference in the id sets, duplicated ids, classes or labels is an error.

    Raises:
        HarnessError: missing/incomplete files or any mismatch between backbones.
    """
    paths = [feature_path(features_dir, b, tta) for b in backbones]
    first = load_split(paths[0], split)
    ids = first.ids
    if len(set(ids)) != len(ids):
        raise HarnessError(f"{paths[0]}: /{split}/ids has duplicates; rerun "
                           "`harness features --force`")
    widths = [first.features.shape[1]]
    for path in paths[1:]:
        widths.append(int(read_attrs(path).get("feature_dim", 0)) or -1)
    X = None
    if len(paths) == 1:
        X = first.features  # one backbone: its rows as read (float16 maps stay float16)
    elif all(w > 0 for w in widths):
        X = np.empty((len(ids), sum(widths)), dtype=np.float32)
        X[:, :widths[0]] = first.features
    blocks = [first.features] if X is None else []
    failed = first.failed.copy()
    position = {key: row for row, key in enumerate(ids)}
    column = widths[0]
    for backbone, path in zip(backbones[1:], paths[1:]):
        other = load_split(path, split)
        where = f"ensemble {ensemble!r}: /{split} of {paths[0].name} and {path.name}"
        if len(other.ids) != len(ids) or set(other.ids) != set(position):
            raise HarnessError(f"{where} hold different images ("
                               f"{_describe_mismatch(paths[0].name, ids, path.name, other.ids)}"
                               "); re-extract both with `harness features --force`")
        if len(set(other.ids)) != len(other.ids):
            raise HarnessError(f"{path}: /{split}/ids has duplicates; rerun "
                               "`harness features --force`")
        if other.classes != first.classes:
            raise HarnessError(f"{where} disagree on classes ({list(first.classes)} vs "
                               f"{list(other.classes)}); re-extract with --force")
        order = np.fromiter((position[key] for key in other.ids), dtype=np.int64,
                            count=len(other.ids))
        if first.labels is not None and not np.array_equal(first.labels[order], other.labels):
            raise HarnessError(f"{where} disagree on labels for the same ids; "
                               "re-extract with --force")
        failed[order] |= other.failed
        width = other.features.shape[1]
        if X is not None:
            if column + width > X.shape[1]:
                raise HarnessError(f"{path}: feature_dim attribute disagrees with the data; "
                                   "re-extract with --force")
            X[order, column:column + width] = other.features
        else:
            aligned = np.empty_like(other.features)
            aligned[order] = other.features
            blocks.append(aligned)
        column += width
        del other
    if X is None:
        X = np.concatenate(blocks, axis=1)
    elif column != X.shape[1]:
        raise HarnessError(f"ensemble {ensemble!r}: feature widths disagree with the files' "
                           "feature_dim attributes; re-extract with --force")
    return FeatureMatrix(ids=ids, X=X, labels=first.labels, failed=failed,
                         classes=first.classes)
