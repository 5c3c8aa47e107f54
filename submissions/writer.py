"""Submission CSV files: clip, format, join on id, validate against the sample, write atomically."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from base.atomic import atomic_path
from base.errors import HarnessError
from competition.images import read_sample_submission
from competition.spec import CompetitionSpec

logger = logging.getLogger(__name__)


def submission_path(submissions_dir: Path, spec: CompetitionSpec, ensemble: str) -> Path:
    """Where the CSV of `ensemble` goes: `<submissions_dir>/<slug>-<ensemble>.csv`."""
    return Path(submissions_dir) / f"{spec.slug}-{ensemble}.csv"


def _label_columns(spec: CompetitionSpec, sample: pd.DataFrame) -> list[str]:
    return [c for c in sample.columns if c != spec.id_column]


def format_predictions(
    spec: CompetitionSpec,
    sample: pd.DataFrame,
    ids: np.ndarray,
    proba: np.ndarray,
    classes: tuple[str, ...],
    clip: tuple[float, float] | None,
) -> pd.DataFrame:
    """Turn per-class probabilities into the submission table, rows in the sample's order.

    Binary log-loss competitions get the clipped probability of `classes[1]`; accuracy
    competitions get the predicted class (index 0/1 when binary, else its name); multiclass
    log-loss ones get one clipped,
    renormalised probability column per class, named as in the sample submission.

    Raises:
        HarnessError: ids missing or duplicated, or class columns that do not match.
    """
    ids = np.asarray(ids, dtype=str)
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape != (len(ids), len(classes)):
        raise HarnessError(
            f"predictions have shape {proba.shape}, expected ({len(ids)}, {len(classes)})"
        )
    if len(set(ids)) != len(ids):
        raise HarnessError("the predictions hold a duplicated test id; rerun `harness ensembles`")
    position = pd.Series(np.arange(len(ids)), index=ids)
    wanted = sample[spec.id_column]
    missing = wanted[~wanted.isin(position.index)]
    if len(missing):
        raise HarnessError(
            f"no prediction for {len(missing)} test id(s) of the sample submission "
            f"(e.g. {list(missing[:3])}); rerun `harness features` and `harness ensembles`"
        )
    rows = proba[position[wanted].to_numpy()]
    table = pd.DataFrame({spec.id_column: wanted.to_numpy()})
    columns = _label_columns(spec, sample)
    if spec.scorer.submits_labels:
        if len(columns) != 1:
            raise HarnessError(
                f"{spec.slug}: an accuracy submission needs one label column, sample has {columns}"
            )
        best = rows.argmax(axis=1)
        # Binary accuracy competitions (the original Dogs vs. Cats) want 0/1; multiclass
        # ones want the class name.
        table[columns[0]] = best if spec.task == "binary" else np.asarray(classes)[best]
        return table
    if clip is not None:
        rows = np.clip(rows, clip[0], clip[1])
    if spec.task == "binary":
        table[columns[0] if columns else spec.label_column] = rows[:, 1]
        return table
    if sorted(columns) != sorted(classes):
        raise HarnessError(
            f"sample submission columns {columns} do not match the classes {list(classes)}"
        )
    rows = rows / rows.sum(axis=1, keepdims=True)
    for name in columns:
        table[name] = rows[:, classes.index(name)]
    return table


def validate_submission(path: Path, spec: CompetitionSpec, data_dir: Path,
                        classes: tuple[str, ...] = ()) -> pd.DataFrame:
    """Check a submission CSV against the sample submission and return it.

    Checks: same columns, same ids in the same order (so same row count), no missing
    values, probabilities in [0, 1], or for accuracy competitions class labels: 0/1 when
    binary, else one of `classes` (any non-empty name when `classes` is not given).

    Raises:
        HarnessError: naming the file and the first problem found.
    """
    path = Path(path)
    sample = read_sample_submission(spec, data_dir)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise HarnessError(f"{path}: cannot read as CSV ({exc})") from None
    if list(table.columns) != list(sample.columns):
        raise HarnessError(
            f"{path}: columns {list(table.columns)} differ from the sample's {list(sample.columns)}"
        )
    if len(table) != len(sample):
        raise HarnessError(f"{path}: {len(table)} rows, the sample submission has {len(sample)}")
    mismatch = np.flatnonzero(table[spec.id_column].to_numpy() != sample[spec.id_column].to_numpy())
    if len(mismatch):
        row = mismatch[0]
        raise HarnessError(
            f"{path}: row {row + 1} has id {table[spec.id_column].iloc[row]!r} where the sample "
            f"has {sample[spec.id_column].iloc[row]!r} (ids must match the sample, in order)"
        )
    for column in _label_columns(spec, sample):
        if spec.scorer.submits_labels and spec.task == "multiclass":
            allowed = set(classes) if classes else None
            bad = table[column].eq("") if allowed is None else ~table[column].isin(allowed)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise HarnessError(f"{path}: column {column!r} row {row + 1} is "
                                   f"{table[column].iloc[row]!r}, not a class name")
            continue
        values = pd.to_numeric(table[column], errors="coerce")
        if values.isna().any():
            row = int(np.flatnonzero(values.isna())[0])
            raise HarnessError(
                f"{path}: column {column!r} row {row + 1} is {table[column].iloc[row]!r}, "
                "not a number"
            )
        if spec.scorer.submits_labels:
            bad = ~values.isin((0, 1))
            what = "a class label (0 or 1)"
        else:
            bad = (values < 0) | (values > 1)
            what = "a probability in [0, 1]"
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise HarnessError(
                f"{path}: column {column!r} row {row + 1} is {values.iloc[row]}, not {what}"
            )
    return table


def write_submission(
    path: Path,
    spec: CompetitionSpec,
    data_dir: Path,
    ids: np.ndarray,
    proba: np.ndarray,
    classes: tuple[str, ...],
    clip: tuple[float, float] | None,
) -> Path:
    """Format, write atomically (temp file + rename) and validate a submission CSV.

    Returns:
        The path of the validated CSV. A file that fails validation is not left behind.
    """
    path = Path(path)
    sample = read_sample_submission(spec, data_dir)
    table = format_predictions(spec, sample, ids, proba, classes, clip)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
        validate_submission(tmp, spec, data_dir, classes)
    logger.debug("wrote %s (%d rows, validated against %s)", path, len(table),
                spec.sample_submission)
    return path
