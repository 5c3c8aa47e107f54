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
from ensembles.decide import Decision, apply, decision_kind

logger = logging.getLogger(__name__)


def submission_path(submissions_dir: Path, spec: CompetitionSpec, ensemble: str) -> Path:
    """Where the CSV of `ensemble` goes: `<submissions_dir>/<slug>-<ensemble>.csv`."""
    return Path(submissions_dir) / f"{spec.slug}-{ensemble}.csv"


def _label_columns(spec: CompetitionSpec, sample: pd.DataFrame) -> list[str]:
    return [c for c in sample.columns if c != spec.id_column]


def _decision(spec: CompetitionSpec, decision: dict | None) -> Decision:
    """The decision to apply: the result's, or the parameter-free default of the metric
    (clip or argmax; cut points and thresholds come only from a fitted result)."""
    if decision is None:
        kind = decision_kind(spec.scorer, spec.target)
        if kind in ("cuts", "thresholds"):
            raise HarnessError(f"{spec.slug}: {kind} are fitted on out-of-fold predictions; "
                               "write the CSV from an ensemble result")
        return Decision(kind, {"range": [-np.inf, np.inf]} if kind == "range" else {})
    return Decision(decision["kind"], decision.get("params", {}))


def format_predictions(
    spec: CompetitionSpec,
    sample: pd.DataFrame,
    ids: np.ndarray,
    proba: np.ndarray,
    classes: tuple[str, ...],
    clip: tuple[float, float] | None,
    decision: dict | None = None,
) -> pd.DataFrame:
    """Turn predictions into the submission table, rows in the sample's order.

    `decision` (an EnsembleResult's: ensembles.decide) turns the predictions into the
    submitted values, which are written as the spec's submission shape says: the
    probability of `classes[1]` (probability), one probability column per class named as
    in the sample, renormalised for log loss (class_columns), the class name or index,
    the tags joined by the spec's separator, or the value.

    Raises:
        HarnessError: ids missing or duplicated, or class columns that do not match.
    """
    ids = np.asarray(ids, dtype=str)
    proba = np.asarray(proba, dtype=np.float64)
    width = 1 if spec.target == "value" else len(classes)
    if proba.ndim != 2 or proba.shape != (len(ids), width):
        raise HarnessError(
            f"predictions have shape {proba.shape}, expected ({len(ids)}, {width})"
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
    submitted = apply(_decision(spec, decision), rows, clip)
    table = pd.DataFrame({spec.id_column: wanted.to_numpy()})
    columns = _label_columns(spec, sample)
    shape = spec.submission_shape
    if shape == "class_columns":
        if sorted(columns) != sorted(classes):
            raise HarnessError(
                f"sample submission columns {columns} do not match the classes {list(classes)}"
            )
        if spec.scorer.clips:  # log loss: rows are probability distributions
            submitted = submitted / submitted.sum(axis=1, keepdims=True)
        for name in columns:
            table[name] = submitted[:, classes.index(name)]
        return table
    if len(columns) != 1:
        raise HarnessError(f"{spec.slug}: a {shape!r} submission needs one column besides "
                           f"{spec.id_column!r}, the sample has {columns}")
    if shape == "probability":
        values = submitted[:, 1]
    elif shape == "class_name":
        values = np.asarray(classes, dtype=object)[submitted]
    elif shape == "tags":
        names = np.asarray(classes, dtype=object)
        values = [spec.tag_separator.join(names[np.flatnonzero(row)]) for row in submitted]
    else:  # class_index, value
        values = submitted
    table[columns[0]] = values
    return table


def _bad_row(path: Path, column: str, shown: pd.Series, bad: pd.Series, what: str) -> None:
    """Raise naming the first `bad` row of `column`, showing its value as in `shown`."""
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        value = shown.iloc[row]
        value = repr(value) if isinstance(value, str) else value
        raise HarnessError(f"{path}: column {column!r} row {row + 1} is {value}, not {what}")


def validate_submission(path: Path, spec: CompetitionSpec, data_dir: Path,
                        classes: tuple[str, ...] = ()) -> pd.DataFrame:
    """Check a submission CSV against the sample submission and return it.

    Checks: same columns, same ids in the same order (so same row count), no missing
    values, and each value as the submission shape says: probabilities in [0, 1]; class
    names (one of `classes`, any non-empty name when not given); class indices (0/1 when
    binary); tags (each one of `classes` when given); finite numbers.

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
    shape = spec.submission_shape
    for column in _label_columns(spec, sample):
        text = table[column]
        if shape == "class_name":
            bad = text.eq("") if not classes else ~text.isin(classes)
            _bad_row(path, column, text, bad, "a class name")
            continue
        if shape == "tags":
            bad = text.map(lambda v, known=frozenset(classes): bool(known) and not (
                set(v.split(spec.tag_separator)) - {""} <= known))
            _bad_row(path, column, text, bad, "tags among the classes")
            continue
        values = pd.to_numeric(text, errors="coerce")
        _bad_row(path, column, text, values.isna() | ~np.isfinite(values), "a number")
        if shape == "class_index":
            top = len(classes) if classes else (2 if spec.task == "binary" else None)
            bad = (values < 0) | (values != values.round()) | \
                (values >= top if top else False)
            _bad_row(path, column, values, bad, "a class index"
                     + (f" (0 to {top - 1})" if top else ""))
        elif shape in ("probability", "class_columns"):
            _bad_row(path, column, values, (values < 0) | (values > 1),
                     "a probability in [0, 1]")
    return table


def write_submission(
    path: Path,
    spec: CompetitionSpec,
    data_dir: Path,
    ids: np.ndarray,
    proba: np.ndarray,
    classes: tuple[str, ...],
    clip: tuple[float, float] | None,
    decision: dict | None = None,
) -> Path:
    """Format (see `format_predictions`), write atomically (temp file + rename) and
    validate a submission CSV.

    Returns:
        The path of the validated CSV. A file that fails validation is not left behind.
    """
    path = Path(path)
    sample = read_sample_submission(spec, data_dir)
    table = format_predictions(spec, sample, ids, proba, classes, clip, decision)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
        validate_submission(tmp, spec, data_dir, classes)
    logger.debug("wrote %s (%d rows, validated against %s)", path, len(table),
                spec.sample_submission)
    return path
