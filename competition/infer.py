"""`harness init`: propose a [competition] table from a downloaded data folder.

Reads what a Kaggle download holds (the sample submission, the other CSVs, the image
folders) and decides, as a Kaggler would by looking: where the test images are (the
folders holding the sample's ids), where the training labels come from (a CSV whose column
names the training images, one folder per class, or class-prefixed file names), the task
(from the label values) and the submission shape (from the sample's columns and values).
What the files cannot tell (the metric above all, which lives on the competition's
Evaluation page; integer grades that may be ordinal) is proposed with a note saying so;
`adopt_kaggle_metric` replaces the metric guess with the name the competition's Kaggle
record gives (competition/record.py reads it; `harness init` asks when it has credentials).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from base.errors import HarnessError
from competition.images import IMAGE_SUFFIXES, natural_key
from competition.metrics import METRICS, metric_for_kaggle_name
from competition.spec import CATALOG, CompetitionSpec

MAX_DEPTH = 3  # image folders are looked for this deep under the data folder
MAX_CODES = 20  # integer labels with more distinct values than this are a regression


@dataclass
class Proposal:
    """What `propose` decided: the [competition] fields and what the user must check."""

    name: str
    fields: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    same_as: str = ""  # a catalog entry with the same layout and metric, if any
    classes: tuple[str, ...] = ()  # every class the labels hold, in the proposed order

    def spec(self) -> CompetitionSpec:
        """The CompetitionSpec these fields describe (checked as a config's would be)."""
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in self.fields.items()}
        return CompetitionSpec(slug=self.name, **fields)


def _image_folders(data_dir: Path) -> dict[Path, list[Path]]:
    """Every folder (MAX_DEPTH deep) holding image files directly, with its images."""
    found: dict[Path, list[Path]] = {}
    frontier = [data_dir]
    for _ in range(MAX_DEPTH + 1):
        deeper = []
        for folder in frontier:
            images = []
            for entry in sorted(folder.iterdir()):
                if entry.is_dir() and not entry.name.startswith("."):
                    deeper.append(entry)
                elif entry.suffix.lower() in IMAGE_SUFFIXES:
                    images.append(entry)
            if images:
                found[folder] = images
        frontier = deeper
    return found


def _find_sample(data_dir: Path) -> Path:
    candidates = [p for p in data_dir.glob("*.csv")
                  if "sample" in p.name.lower() or "submission" in p.name.lower()]
    if not candidates:
        raise HarnessError(f"{data_dir}: no sample submission (a CSV named like "
                           "sample_submission.csv); download the competition's files "
                           "(`harness download`) or pass the folder that holds them")
    # Several versions (Planet's sample_submission.csv and _v2.csv): the latest.
    return max(candidates, key=lambda p: natural_key(p.name))


def _read(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise HarnessError(f"{path}: not a readable CSV ({exc})") from None


def _keys(paths: list[Path]) -> set[str]:
    return {p.name for p in paths} | {p.stem for p in paths}


def _relative(path: Path, data_dir: Path) -> str:
    return path.relative_to(data_dir).as_posix()


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _label_task(values: pd.Series, separator: str = " ") -> tuple[str, tuple[str, ...], str]:
    """(task, classes, note) that a labels column's values imply."""
    distinct = sorted(set(values), key=natural_key)
    tokens = {t for v in distinct for t in v.split(separator) if t}
    if any(separator in v for v in distinct) and len(tokens) < len(distinct):
        return "multilabel", tuple(sorted(tokens, key=natural_key)), ""
    if all(_is_number(v) for v in distinct):
        numbers = [float(v) for v in distinct]
        integers = all(n.is_integer() for n in numbers)
        if integers and set(numbers) <= {0.0, 1.0}:
            return "binary", ("0", "1"), ""
        if integers and len(distinct) <= MAX_CODES:
            codes = tuple(str(int(n)) for n in sorted(numbers))
            return "multiclass", codes, (
                f"task: the labels are integer codes {codes[0]}..{codes[-1]}; if they are "
                "ordered grades scored by kappa (e.g. APTOS), set task = \"ordinal\" and "
                "metric = \"quadratic_kappa\"")
        return "regression", (), ""
    if len(distinct) == 2:
        return "binary", tuple(distinct), (
            f"classes: {distinct[1]!r} is taken as the positive class (the probability "
            "submitted); swap the two in classes if the sample wants the other")
    return "multiclass", tuple(distinct), ""


def _labels_csv(tables: dict[Path, pd.DataFrame], folders: dict[Path, list[Path]],
                exclude: set[Path], test_ids: set[str]) -> tuple[Path, str, Path, float] | None:
    """The CSV (of `tables`, each read once) whose column names the most training images:
    (csv, column, folder, share of the folder's training images it names). Test ids do not
    count (a test.csv lists them), nor do they count as the folder's training images (a
    shared folder)."""
    # Each folder's file keys and training-image count, once (not per CSV column).
    keys = {f: _keys(images) for f, images in folders.items() if f not in exclude}
    n_train = {f: max(1, sum(not ({p.name, p.stem} & test_ids) for p in folders[f]))
               for f in keys}
    best = None
    for path, table in tables.items():
        for column in table.columns:
            values = set(table[column]) - test_ids
            for folder, files in keys.items():
                named = len(values & files)
                share = named / n_train[folder]
                if named and (best is None or share > best[3]):
                    best = (path, column, folder, share)
    return best if best and best[3] >= 0.5 else None


def _class_folders(folders: dict[Path, list[Path]], exclude: set[Path]
                   ) -> tuple[Path, list[Path]] | None:
    """A folder whose sub-folders (two or more) each hold images: one per class."""
    parents: dict[Path, list[Path]] = {}
    for folder in folders:
        if folder not in exclude:
            parents.setdefault(folder.parent, []).append(folder)
    best = max(parents.items(), key=lambda kv: len(kv[1]), default=None)
    if best is None or len(best[1]) < 2:
        return None
    return best[0], sorted(best[1])


def _filename_classes(images: list[Path]) -> tuple[str, ...]:
    """Class prefixes of `cat.12.jpg`-style names, or () when the names are not so."""
    prefixes = [p.name.split(".", 1)[0] for p in images if p.name.count(".") >= 2]
    distinct = sorted(set(prefixes))
    if len(prefixes) >= 0.9 * len(images) and 2 <= len(distinct) <= 50:
        return tuple(distinct)
    return ()


def _default_metric(task: str, shape: str) -> tuple[str, str]:
    """The metric proposed for (task, submission shape), and the note that asks the user
    to check it against the competition's Evaluation page."""
    only = {"multilabel": "mean_f2", "regression": "rmse"}
    if task in only:
        return only[task], ""
    metric = "log_loss" if shape in ("probability", "class_columns") else "accuracy"
    alternatives = {
        "probability": "roc_auc (ROC AUC)",
        "class_columns": "mean_column_auc (mean column-wise ROC AUC)",
        "class_name": "f1_micro (micro F1)", "class_index": "f1_micro (micro F1)",
    }[shape]
    return metric, (f"metric: {metric} is a guess from the sample's shape; read the "
                    f"competition's Evaluation page (often {alternatives}); known: "
                    f"{', '.join(METRICS)}")


def _single_shape(task: str, values: pd.Series, classes: tuple[str, ...]) -> str:
    """The shape of a one-column submission from the sample's placeholder values."""
    if task == "regression":
        return "value"
    if task == "multilabel":
        return "tags"
    floats = [v for v in values if _is_number(v)]
    if task == "binary":
        fractional = any(not float(v).is_integer() for v in floats)
        return "probability" if fractional or not floats else "class_index"
    return "class_name" if set(values) <= set(classes) or not floats else "class_index"


def propose(data_dir: Path, name: str = "") -> Proposal:
    """The [competition] table that describes `data_dir` (a competition's download).

    Raises:
        HarnessError: no sample submission, no folder holding its ids, or no way to find
            the training labels; each naming what was looked for.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise HarnessError(f"data folder {data_dir} does not exist; download the "
                           "competition's files first (kaggle competitions download -c SLUG)")
    notes: list[str] = []
    sample_path = _find_sample(data_dir)
    sample = _read(sample_path)
    id_column, value_columns = sample.columns[0], list(sample.columns[1:])
    ids = set(sample[id_column])
    folders = _image_folders(data_dir)
    # The folder holding most sample ids, then folders holding ids still missing (Planet's
    # test-jpg-additional); a train folder whose names merely repeat test ids is not one.
    test_folders: list[Path] = []
    found: set[str] = set()
    while True:
        hits = {f: (ids - found) & _keys(images) for f, images in folders.items()
                if f not in test_folders}
        best = max(hits, key=lambda f: len(hits[f]), default=None)
        if best is None or not hits[best]:
            break
        test_folders.append(best)
        found |= hits[best]
    if not test_folders:
        raise HarnessError(f"{sample_path}: none of its {id_column!r} ids names an image "
                           f"under {data_dir} ({MAX_DEPTH} folders deep); unpack the image "
                           "archives (`harness download` does)")
    if len(found) < len(ids):
        notes.append(f"test: {len(ids) - len(found)} of the sample's ids have no image")
    fields: dict[str, Any] = {
        "sample_submission": _relative(sample_path, data_dir), "id_column": id_column,
        "test_dir": _relative(test_folders[0], data_dir),
    }
    if len(test_folders) > 1:
        fields["extra_test_dirs"] = [_relative(f, data_dir) for f in test_folders[1:]]
    # A test folder with images the sample does not list also holds the training images.
    shared = [f for f in test_folders
              if sum(not ({p.name, p.stem} & ids) for p in folders[f]) > len(folders[f]) / 2]
    exclude = set(test_folders) - set(shared)

    classes: tuple[str, ...] = ()
    by_folder = _class_folders(folders, exclude)
    tables = {path: _read(path) for path in sorted(data_dir.glob("*.csv"))
              if path != sample_path}
    csv_match = _labels_csv(tables, folders, exclude, ids)
    flat = [(f, imgs) for f, imgs in folders.items() if f not in exclude]
    prefixed = [(f, _filename_classes(imgs)) for f, imgs in flat]
    prefixed = [(f, c) for f, c in prefixed if c]
    if by_folder and (csv_match is None or csv_match[2] in by_folder[1]):
        parent, class_dirs = by_folder
        classes = tuple(sorted((d.name for d in class_dirs), key=natural_key))
        task = "binary" if len(classes) == 2 else "multiclass"
        fields.update(train_layout="folders", train_dir=_relative(parent, data_dir))
        every = [p for d in class_dirs for p in folders[d]]
        extra = _labels_csv(tables, {parent: every}, set(), ids)
        if extra:  # State Farm's driver list, Paddy's train.csv: for [cv] group_column
            fields["labels_csv"] = _relative(extra[0], data_dir)
            if extra[1] != id_column:
                fields["csv_id_column"] = extra[1]
            notes.append(f"cv: {fields['labels_csv']} has columns "
                         f"{list(tables[extra[0]].columns)}; if one is a person, patient or "
                         "site, set [cv] group_column to it")
    elif csv_match:
        labels_path, csv_id, folder, _ = csv_match
        table = tables[labels_path]
        fields.update(train_layout="csv", train_dir=_relative(folder, data_dir),
                      labels_csv=_relative(labels_path, data_dir))
        if csv_id != id_column:
            fields["csv_id_column"] = csv_id
        others = [c for c in table.columns if c != csv_id]
        if len(value_columns) > 1 and set(value_columns) <= set(others):
            fields["label_columns"] = value_columns
            one_hot = table[value_columns].astype(float).sum(axis=1)
            task = "multiclass" if (one_hot == 1).all() else "multilabel"
            classes = tuple(value_columns)
        else:
            label = (value_columns[0] if len(value_columns) == 1
                     and value_columns[0] in others else None)
            if label is None and len(value_columns) > 1:
                label = next((c for c in others if set(table[c]) <= set(value_columns)), None)
            if label is None:
                label = others[-1] if others else ""
                notes.append(f"labels: took {label!r} of {labels_path.name} as the label "
                             f"column (of {others}); set label_column if it is another")
            if not label:
                raise HarnessError(f"{labels_path}: only an id column; no labels to learn")
            fields["label_column"] = label
            task, classes, note = _label_task(table[label])
            if note:
                notes.append(note)
            rest = [c for c in others if c != label]
            if rest:
                notes.append(f"cv: {labels_path.name} also has columns {rest}; if one is a "
                             "person, patient or site, set [cv] group_column to it")
    elif prefixed:
        folder, classes = max(prefixed, key=lambda fc: len(folders[fc[0]]))
        task = "binary" if len(classes) == 2 else "multiclass"
        fields.update(train_layout="filename", train_dir=_relative(folder, data_dir))
    else:
        raise HarnessError(f"{data_dir}: found no training labels: no CSV column naming the "
                           "training images, no class folders, no class-prefixed file names; "
                           "write the [competition] table by hand (README: Your competition)")
    if fields["train_layout"] != "csv" and len(value_columns) == 1:
        fields["label_column"] = value_columns[0]  # the submission's column name

    if len(value_columns) > 1:
        shape = "class_columns"
    else:
        shape = _single_shape(task, sample[value_columns[0]], classes)
    metric, note = _default_metric(task, shape)
    if note:
        notes.append(note)
    fields.update(task=task, metric=metric, submission=shape)
    if task in ("binary", "multilabel") or fields.get("label_columns") or task == "ordinal":
        fields["classes"] = list(classes)
    if len(test_folders) > 1 and shared:
        notes.append("test: train and test images share a folder")
    proposal = Proposal(name or data_dir.resolve().name, fields, notes, classes=classes)
    proposal.spec()  # fails here, naming the field, if the combination is not one we can run
    proposal.same_as = _same_catalog_entry(proposal)
    known = CATALOG.get(proposal.name)
    if known is not None and proposal.same_as == proposal.name:
        # The user named a built-in competition and its files look as the catalog says:
        # its metric and task come from its Evaluation page, not from a guess.
        fields.update(task=known.task, metric=known.metric, submission=known.submission_shape)
        if known.classes:
            fields["classes"] = list(known.classes)
        proposal.notes = [n for n in notes if not n.startswith(("metric:", "task:"))]
        proposal.notes.append(f"metric: {known.metric} and task: {known.task}, from the "
                              f"built-in {known.slug!r}")
        proposal.spec()
    elif proposal.same_as:
        twin = CATALOG[proposal.same_as]
        proposal.notes.append(f"layout: as the built-in {twin.slug!r}, whose metric is "
                              f"{twin.metric}")
    return proposal


def adopt_kaggle_metric(proposal: Proposal, kaggle_name: str) -> None:
    """Use the metric Kaggle's record names (`kaggle_name`, its `evaluationMetric`) instead of
    the guess from the sample's shape, and say so in the notes. A name the registry has no
    entry for, or a metric that cannot score the proposed task, keeps the guess, with a note
    naming what Kaggle said. Kappa on integer codes makes the task ordinal (graded classes)."""
    guess = proposal.fields["metric"]
    metric = metric_for_kaggle_name(kaggle_name)
    notes = [n for n in proposal.notes if not n.startswith("metric:")]
    task = proposal.fields["task"]
    if metric == "quadratic_kappa" and task == "multiclass" and proposal.classes and all(
            c.lstrip("-").isdigit() for c in proposal.classes):
        task = "ordinal"
        proposal.fields.update(task=task, classes=list(proposal.classes))
        notes = [n for n in notes if not n.startswith("task:")]
        notes.append(f"task: ordinal (grades {proposal.classes[0]}..{proposal.classes[-1]}), "
                     "because Kaggle scores it by quadratic kappa")
    if metric is None:
        notes.append(f"metric: Kaggle calls it {kaggle_name!r}, which the harness has no entry "
                     f"for; {guess} is a guess, set the nearest of: {', '.join(METRICS)}")
    elif task not in METRICS[metric].tasks:
        notes.append(f"metric: Kaggle calls it {kaggle_name!r} ({metric}), which does not "
                     f"score a {task} task; {guess} is a guess, check the task and metric")
    else:
        proposal.fields["metric"] = metric
        if _fit_shape_to_metric(proposal, notes):
            notes.append(f"metric: {metric}, from the competition's Kaggle record "
                         f"({kaggle_name!r})")
        else:
            proposal.fields["metric"] = guess
            notes.append(f"metric: Kaggle calls it {kaggle_name!r} ({metric}), which the "
                         f"sample's {proposal.fields['submission']} columns cannot carry; "
                         f"{guess} is a guess, check the sample and the Evaluation page")
    proposal.notes = notes
    proposal.spec()


def _fit_shape_to_metric(proposal: Proposal, notes: list[str]) -> bool:
    """Whether the proposal's submission shape carries its metric, after one repair: a
    sample's placeholder values can mislead the shape (Kaggle's AUC samples often hold 0,
    read as a class index), so a binary task scored on probabilities submits them."""
    try:
        proposal.spec()
        return True
    except HarnessError:
        pass
    fields = proposal.fields
    shape = fields["submission"]
    if METRICS[fields["metric"]].submits in ("proba", "ranking") and shape in (
            "class_index", "class_name") and fields["task"] == "binary":
        fields["submission"] = "probability"
        try:
            proposal.spec()
            notes.append(f"submission: probability, not {shape} (the sample's placeholder "
                         f"values looked like one), because {fields['metric']} scores "
                         "probabilities")
            return True
        except HarnessError:
            fields["submission"] = shape
    return False


def _same_catalog_entry(proposal: Proposal) -> str:
    """The catalog entry this layout matches (every layout field equal), or ""."""
    spec = proposal.spec()
    layout = ("train_layout", "train_dir", "test_dir", "labels_csv", "id_column",
              "sample_submission", "submission_shape")
    for slug, entry in CATALOG.items():
        if entry.downloadable and all(
                getattr(entry, key) == getattr(spec, key) for key in layout) and \
                (spec.train_layout != "csv" or entry.label_column == spec.label_column):
            return slug
    return ""


def to_toml(proposal: Proposal, data_dir: str) -> str:
    """The config file `harness init` writes: data_dir and the [competition] table, with
    the notes as comments above the lines they concern."""
    lines = [f"# Written by `harness init` from {data_dir}. Check every NOTE, then run",
             "#   harness submit --config THIS_FILE     (or make submit CONFIG=THIS_FILE)",
             "# README: Your competition."]
    lines += [f"data_dir = {json.dumps(data_dir)}", "", "[competition]",
              f"name = {json.dumps(proposal.name)}"]
    for note in proposal.notes:
        lines.append(f"# NOTE {note}")
    defaults = {f.name: f.default for f in dataclasses.fields(CompetitionSpec)}
    for key, value in proposal.fields.items():
        if key in ("task", "train_layout", "metric") or (
                value not in ("", [], ()) and value != defaults.get(key)):
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"
