"""Fixtures for the ensemble tests: real HDF5 feature files in features/store.py's layout,
synthetic features with class structure, and configs loaded from real TOML files."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import h5py
import numpy as np

from features.store import FeatureSplit, feature_path
from features.store import write_feature_file as write_store_file
from harness.config import Config, load_config


def write_feature_file(path: Path, *, backbone: str, classes: list[str], train_ids: list[str],
                       train_labels: np.ndarray, train_X: np.ndarray, test_ids: list[str],
                       test_X: np.ndarray, failed_test: dict[str, str] | None = None,
                       fingerprint: str = "fp-1", weights: str = "synthetic",
                       tta: str = "none", complete: bool = True) -> Path:
    """One feature file in the store's layout, through the store's own writer."""
    failed = set(failed_test or {})
    train = FeatureSplit(np.asarray(train_ids, dtype=object), train_X,
                         np.asarray(train_labels), np.zeros(len(train_ids), bool),
                         tuple(classes), {})
    test = FeatureSplit(np.asarray(test_ids, dtype=object), test_X, None,
                        np.array([key in failed for key in test_ids], dtype=bool),
                        tuple(classes), {})
    write_store_file(path, {"backbone": backbone, "input_size": 32,
                            "feature_dim": int(train_X.shape[1]), "weights": weights,
                            "tta": tta, "preprocessing": "synthetic",
                            "classes": json.dumps(classes), "fingerprint": fingerprint},
                     train=train, test=test, test_failed_reasons=failed_test)
    if not complete:
        with h5py.File(path, "r+") as f:
            f.attrs["complete"] = False
    return path


def synthetic_features(features_dir: Path, backbones: dict[str, int], *, classes: list[str],
                       n_train: int = 120, n_test: int = 30, signal: float = 1.0,
                       seed: int = 0, failed_test: dict[str, str] | None = None,
                       shuffle_backbone: str | None = None) -> dict:
    """Write one file per backbone {name: width}: shared class means plus backbone noise.

    Train ids are `1..n_train` (so 1, 2, 10 sort wrongly as text), test ids
    `t1..t<n_test>`. `shuffle_backbone` stores that backbone's rows in another order.
    """
    rng = np.random.default_rng(seed)
    k = len(classes)
    train_labels = np.arange(n_train) % k
    rng.shuffle(train_labels)
    test_labels = rng.integers(0, k, n_test)
    train_ids = [str(i) for i in range(1, n_train + 1)]
    test_ids = [f"t{i}" for i in range(1, n_test + 1)]
    truth = {"train_labels": train_labels, "test_labels": test_labels,
             "train_ids": train_ids, "test_ids": test_ids}
    for b, (backbone, width) in enumerate(backbones.items()):
        means = rng.normal(0, signal, (k, width))
        train_X = means[train_labels] + rng.normal(0, 1.0, (n_train, width))
        test_X = means[test_labels] + rng.normal(0, 1.0, (n_test, width))
        if failed_test:
            for i, key in enumerate(test_ids):
                if key in failed_test:
                    test_X[i] = 0.0
        ids, labels, X = list(train_ids), train_labels, train_X
        if backbone == shuffle_backbone:
            order = rng.permutation(n_train)
            ids, labels, X = [train_ids[i] for i in order], train_labels[order], train_X[order]
        write_feature_file(feature_path(features_dir, backbone), backbone=backbone,
                           classes=classes, train_ids=ids, train_labels=labels, train_X=X,
                           test_ids=test_ids, test_X=test_X, failed_test=failed_test,
                           fingerprint=f"fp-{seed}")
    return truth


def make_config(root: Path, body: str = "", *, backbones: list[str],
                competition: str = '"demo"') -> Config:
    """A config from a real TOML file whose workspace is `root/work`."""
    text = textwrap.dedent(f"""\
        competition = {competition}
        workspace = "work"
        [features]
        backbones = {json.dumps(backbones)}
        [cv]
        folds = 3
        seed = 0
        """) + textwrap.dedent(body)
    path = root / "harness.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)
