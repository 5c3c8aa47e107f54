"""Saved predictions of one ensemble or blend: `<ensembles_dir>/<name>.h5`.

Layout:
    /oof/ids     (n,) str      training ids
    /oof/proba   (n, k) f64    out-of-fold predictions: probabilities, columns in `classes`
                               order (tags: one per tag; values: one column)
    /oof/labels  (n,) int64    true class indices ((n, t) int64 tags, (n,) f64 values)
    /oof/submitted             out-of-fold submitted values (competition.metrics' forms),
                               decided out of fold (ensembles.decide)
    /oof/folds   (n,) int64    the fold each row was held out in
    /test/ids    (m,) str
    /test/proba  (m, k) f64    UNCLIPPED test probabilities (the submission writer clips)
    /test/failed (m,) bool     test images that could not be read (they get the class prior)
Root attributes: name, kind, backbones, head, metric, scores (cv_metric: the competition's
metric out of fold), decision (JSON: kind and test parameters), clip (JSON, null = none),
classes (JSON), fit_seconds, params (JSON), histories (JSON), key (what the predictions
depend on: features, parameters, folds), complete.

Written to a temporary name and renamed, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from base.atomic import atomic_path
from base.errors import HarnessError

STRING = h5py.string_dtype()


@dataclass
class EnsembleResult:
    """Out-of-fold and test predictions of one ensemble or blend, with its CV scores.

    `oof_proba` and `test_proba` have one column per class in `classes` order (per tag;
    one value column for value targets); `test_proba` is unclipped and `clip` is the
    bounds to apply (None: no clipping). `cv_metric` is the competition's metric on
    `oof_submitted`, the out-of-fold values a submission would hold (decided out of fold);
    `decision` turns test predictions into submitted values (ensembles.decide).
    `cv_log_loss_clipped` is the out-of-fold log loss after applying `clip`; the log loss
    and accuracy fields are NaN for tag and value targets.
    """

    name: str
    kind: str
    backbones: tuple[str, ...]
    head: str
    metric: str
    cv_log_loss: float
    cv_log_loss_std: float
    cv_log_loss_clipped: float
    cv_accuracy: float
    clip: tuple[float, float] | None
    fit_seconds: float
    reused: bool
    classes: tuple[str, ...]
    oof_ids: np.ndarray
    oof_proba: np.ndarray
    test_ids: np.ndarray
    test_proba: np.ndarray
    oof_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    folds: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    test_failed: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    cv_accuracy_std: float = 0.0
    params: dict = field(default_factory=dict)
    histories: list = field(default_factory=list)
    key: str = ""
    cv_metric: float = float("nan")
    oof_submitted: np.ndarray = field(default_factory=lambda: np.zeros(0))
    decision: dict = field(default_factory=lambda: {"kind": "clip", "params": {}})

    @property
    def cv_score(self) -> float:
        """The competition's metric out of fold, on the values a submission would hold."""
        return float(self.cv_metric)


def result_path(ensembles_dir: Path, name: str) -> Path:
    """Where the predictions of ensemble or blend `name` are saved."""
    return Path(ensembles_dir) / f"{name}.h5"


def save_result(ensembles_dir: Path, result: EnsembleResult) -> Path:
    """Write `result` atomically (temporary file + rename); returns its path."""
    path = result_path(ensembles_dir, result.name)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        oof = f.create_group("oof")
        oof.create_dataset("ids", data=np.asarray(result.oof_ids, dtype=object), dtype=STRING)
        oof.create_dataset("proba", data=result.oof_proba)
        labels = np.asarray(result.oof_labels)
        oof.create_dataset("labels", data=labels if labels.dtype.kind == "f"
                           else labels.astype(np.int64))
        oof.create_dataset("submitted", data=np.asarray(result.oof_submitted))
        oof.create_dataset("folds", data=result.folds.astype(np.int64))
        test = f.create_group("test")
        test.create_dataset("ids", data=np.asarray(result.test_ids, dtype=object),
                            dtype=STRING)
        test.create_dataset("proba", data=result.test_proba)
        failed = result.test_failed if len(result.test_failed) else \
                np.zeros(len(result.test_ids), dtype=bool)
        test.create_dataset("failed", data=failed.astype(bool))
        attrs = {
            "name": result.name, "kind": result.kind, "head": result.head,
            "metric": result.metric, "cv_log_loss": result.cv_log_loss,
            "cv_log_loss_std": result.cv_log_loss_std,
            "cv_log_loss_clipped": result.cv_log_loss_clipped,
            "cv_accuracy": result.cv_accuracy, "cv_accuracy_std": result.cv_accuracy_std,
            "cv_metric": result.cv_metric, "decision": json.dumps(result.decision),
            "fit_seconds": result.fit_seconds, "key": result.key,
            "backbones": json.dumps(list(result.backbones)),
            "classes": json.dumps(list(result.classes)),
            "clip": json.dumps(None if result.clip is None else list(result.clip)),
            "params": json.dumps(result.params, default=str),
            "histories": json.dumps(result.histories),
        }
        f.attrs.update(attrs)
        f.attrs["complete"] = True
    return path


def _strings(dataset: h5py.Dataset) -> np.ndarray:
    return np.asarray(dataset.asstr()[()], dtype=object)


def saved_key(ensembles_dir: Path, name: str) -> str | None:
    """The key of the saved, complete predictions of `name`, or None."""
    path = result_path(ensembles_dir, name)
    try:
        with h5py.File(path, "r") as f:
            if bool(f.attrs.get("complete", False)):
                return str(f.attrs.get("key", ""))
    except (OSError, KeyError):
        pass
    return None


def load_result(ensembles_dir: Path, name: str) -> EnsembleResult:
    """The saved predictions of ensemble or blend `name` (reused=True).

    Raises:
        HarnessError: nothing complete is saved under that name.
    """
    path = result_path(ensembles_dir, name)
    if saved_key(ensembles_dir, name) is None:
        known = sorted(p.stem for p in Path(ensembles_dir).glob("*.h5")) \
            if Path(ensembles_dir).is_dir() else []
        raise HarnessError(f"no saved predictions for ensemble {name!r} ({path}); run "
                           f"`harness ensembles` first (saved: {', '.join(known) or 'none'})")
    with h5py.File(path, "r") as f:
        a = f.attrs
        if "cv_metric" not in a:
            raise HarnessError(f"{path} was saved by an older harness (no cv_metric); rerun "
                               "`harness ensembles` to refit it")
        clip = json.loads(a["clip"])
        return EnsembleResult(
            name=str(a["name"]), kind=str(a["kind"]),
            backbones=tuple(json.loads(a["backbones"])), head=str(a["head"]),
            metric=str(a["metric"]), cv_log_loss=float(a["cv_log_loss"]),
            cv_log_loss_std=float(a["cv_log_loss_std"]),
            cv_log_loss_clipped=float(a["cv_log_loss_clipped"]),
            cv_accuracy=float(a["cv_accuracy"]), cv_accuracy_std=float(a["cv_accuracy_std"]),
            clip=None if clip is None else (float(clip[0]), float(clip[1])),
            fit_seconds=float(a["fit_seconds"]), reused=True,
            classes=tuple(json.loads(a["classes"])),
            oof_ids=_strings(f["oof/ids"]), oof_proba=f["oof/proba"][()],
            oof_labels=f["oof/labels"][()], folds=f["oof/folds"][()],
            test_ids=_strings(f["test/ids"]), test_proba=f["test/proba"][()],
            test_failed=f["test/failed"][()].astype(bool),
            params=json.loads(a["params"]), histories=json.loads(a["histories"]),
            key=str(a["key"]), cv_metric=float(a["cv_metric"]),
            oof_submitted=f["oof/submitted"][()], decision=json.loads(a["decision"]),
        )
