"""Image lists: which files are the train and test images, their ids and labels.

Ids are data, not positions: every list keeps ids, paths and labels side by side and
orders them naturally (`1, 2, 10`, never `1, 10, 2`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from base.errors import HarnessError
from competition.spec import CompetitionSpec

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
_DIGITS = re.compile(r"(\d+)")


def natural_key(text: str) -> tuple:
    """Sort key that orders embedded numbers numerically: `cat.2` before `cat.10`."""
    return tuple(int(part) if part.isdigit() else part for part in _DIGITS.split(text))


@dataclass(frozen=True)
class ImageList:
    """The images of one split, in natural id order.

    Attributes:
        split: "train" or "test".
        ids: One string id per image (the submission's id for test images).
        paths: One file per image, aligned with `ids`.
        labels: The training targets, aligned with `ids` (None for test): (n,) int64
            class indices into `classes` (binary, multiclass, ordinal), (n, t) int64 0/1
            per tag (multilabel) or (n,) float64 values (regression).
        classes: The class names (tags; for regression the label column's name).
    """

    split: str
    ids: tuple[str, ...]
    paths: tuple[Path, ...]
    labels: np.ndarray | None
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, rows: np.ndarray) -> ImageList:
        """The images at positions `rows` (kept in the given order)."""
        rows = np.asarray(rows, dtype=np.int64)
        return ImageList(
            split=self.split,
            ids=tuple(self.ids[i] for i in rows),
            paths=tuple(self.paths[i] for i in rows),
            labels=None if self.labels is None else self.labels[rows],
            classes=self.classes,
        )


def _image_files(folder: Path) -> list[Path]:
    return [
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    ]


def _require_folder(folder: Path, what: str) -> None:
    if not folder.is_dir():
        raise HarnessError(
            f"{what} folder {folder} does not exist; run `harness download` (or `make data`) "
            "or point data_dir / DATA_DIR at a folder in Kaggle's layout"
        )


class _FileIndex:
    """The image files of one folder, found by file name (`abc.jpg`) or by stem (`abc`):
    Kaggle's CSVs spell ids both ways."""

    def __init__(self, *folders: Path):
        self.folder = ", ".join(str(f) for f in folders)
        self.files = [path for folder in folders for path in _image_files(folder)]
        self.by_name = {p.name: p for p in self.files}
        self.by_stem: dict[str, Path | None] = {}
        for path in self.files:
            # Two files with one stem (a.jpg, a.png) make the stem ambiguous.
            self.by_stem[path.stem] = None if path.stem in self.by_stem else path

    def find(self, image_id: str, where: str) -> Path:
        """The file of `image_id`; `where` names the CSV row that asked, for the error."""
        path = self.by_name.get(image_id) or self.by_stem.get(image_id)
        if path is None:
            why = ("two files share that stem; use the file name" if image_id in self.by_stem
                   else "no such image")
            raise HarnessError(f"{where}: id {image_id!r} has no image in {self.folder} "
                               f"({why}); check the CSV and the data folder")
        return path


def _ordered(ids: list[str], paths: list[Path], labels: list | None) -> tuple:
    dupes = pd.Series(ids).duplicated()
    if dupes.any():
        first = pd.Series(ids)[dupes].iloc[0]
        raise HarnessError(f"two images share the id {first!r}: ids must be unique")
    order = sorted(range(len(ids)), key=lambda i: natural_key(ids[i]))
    return (
        tuple(ids[i] for i in order),
        tuple(paths[i] for i in order),
        None if labels is None else np.asarray([labels[i] for i in order]),
    )


def read_labels_csv(spec: CompetitionSpec, data_dir: Path,
                    columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """The labels CSV as text, checked to have its id column and `columns` (default: the
    label column(s) the spec reads), with no empty or repeated id.

    Raises:
        HarnessError: a missing file, column or id, naming the file (and the row).
    """
    path = data_dir / spec.labels_csv
    if not path.is_file():
        raise HarnessError(f"labels file {path} does not exist ({spec.slug} reads its "
                           "training labels from it; set labels_csv)")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    wanted = columns or (spec.label_columns or (spec.label_column,))
    missing = [c for c in (spec.labels_id_column, *wanted) if c not in table.columns]
    if missing:
        raise HarnessError(f"{path}: no column {', '.join(map(repr, missing))} (columns: "
                           f"{', '.join(table.columns)}); set csv_id_column / label_column "
                           "/ label_columns in [competition]")
    ids = table[spec.labels_id_column]
    for bad, what in ((ids.eq(""), "an empty"), (ids.duplicated(), "a repeated")):
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise HarnessError(f"{path}: row {row + 2} has {what} {spec.labels_id_column!r} "
                               f"({ids.iloc[row]!r}); each training image needs one row")
    return table


def _row(spec: CompetitionSpec, data_dir: Path, row: int) -> str:
    """How an error names row `row` (0-based data row) of the labels CSV: its line."""
    return f"{data_dir / spec.labels_csv} line {row + 2}"


def _split_tags(spec: CompetitionSpec, value: str) -> list[str]:
    return [tag for tag in value.split(spec.tag_separator) if tag]


def discover_classes(spec: CompetitionSpec, data_dir: Path) -> tuple[str, ...]:
    """The spec's classes, or the ones found in the data when the spec leaves them open:
    sub-folder names, the label column's values (tags, for multilabel), the one-hot
    columns; for regression the label column's name."""
    if spec.classes:
        return spec.classes
    if spec.task == "regression":
        return (spec.label_column,)
    if spec.label_columns:
        return spec.label_columns
    train = data_dir / spec.train_dir
    _require_folder(train, "train")
    if spec.train_layout == "folders":
        classes = sorted((p.name for p in train.iterdir() if p.is_dir()), key=natural_key)
    elif spec.train_layout == "csv":
        values = read_labels_csv(spec, data_dir)[spec.label_column]
        if spec.task == "multilabel":
            values = pd.Series([t for v in values for t in _split_tags(spec, v)], dtype=str)
        classes = sorted(set(values) - {""}, key=natural_key)
    else:
        classes = sorted({p.name.split(".", 1)[0] for p in _image_files(train)}, key=natural_key)
    if len(classes) < 2:
        raise HarnessError(
            f"found {len(classes)} class(es) {classes} under {train}: training needs at least 2"
        )
    return tuple(classes)


def _csv_target(spec: CompetitionSpec, data_dir: Path, table: pd.DataFrame, row: int,
                class_index: dict[str, int]) -> object:
    """One labels-CSV row's target, in ImageList.labels form."""
    where = _row(spec, data_dir, row)
    if spec.label_columns:
        bits = table.loc[row, list(spec.label_columns)].to_numpy()
        if not set(bits) <= {"0", "1", "0.0", "1.0"}:
            raise HarnessError(f"{where}: one-hot columns hold {list(bits)}, not 0/1")
        hot = np.asarray([float(b) for b in bits], dtype=np.int64)
        if spec.task == "multilabel":
            return hot
        if hot.sum() != 1:
            raise HarnessError(f"{where}: {int(hot.sum())} of the one-hot columns "
                               f"{list(spec.label_columns)} are 1; exactly one must be")
        return class_index[spec.label_columns[int(np.argmax(hot))]]
    value = table.at[row, spec.label_column]
    if spec.task == "regression":
        try:
            return float(value)
        except ValueError:
            raise HarnessError(f"{where}: {spec.label_column} = {value!r} is not a number"
                               ) from None
    if spec.task == "multilabel":
        hot = np.zeros(len(class_index), dtype=np.int64)
        for tag in _split_tags(spec, value):
            if tag not in class_index:
                raise HarnessError(f"{where}: tag {tag!r} is not one of the classes "
                                   f"{list(class_index)}")
            hot[class_index[tag]] = 1
        return hot
    if value not in class_index:
        raise HarnessError(f"{where}: {spec.label_column} = {value!r} is not one of the "
                           f"classes {list(class_index)}")
    return class_index[value]


def list_train_images(spec: CompetitionSpec, data_dir: Path) -> ImageList:
    """The labelled training images of `data_dir`, in natural id order.

    Raises:
        HarnessError: the folder is missing or empty, a file name has no known class, a
            labels CSV row names a missing image or an unknown class, or a class has no
            training image (fewer than two classes for a single-label task).
    """
    classes = discover_classes(spec, data_dir)
    class_index = {name: i for i, name in enumerate(classes)}
    train = data_dir / spec.train_dir
    _require_folder(train, "train")
    ids: list[str] = []
    paths: list[Path] = []
    labels: list = []
    if spec.train_layout == "filename":
        for path in _image_files(train):
            prefix = path.name.split(".", 1)[0]
            if prefix not in class_index:
                raise HarnessError(
                    f"{path}: file name does not start with a class name "
                    f"({', '.join(classes)}), e.g. {classes[0]}.1.jpg"
                )
            ids.append(path.stem)
            paths.append(path)
            labels.append(class_index[prefix])
    elif spec.train_layout == "folders":
        for name in classes:
            for path in _image_files(train / name) if (train / name).is_dir() else ():
                ids.append(f"{name}/{path.stem}")
                paths.append(path)
                labels.append(class_index[name])
    else:
        files = _FileIndex(train)
        table = read_labels_csv(spec, data_dir)
        for row, image_id in enumerate(table[spec.labels_id_column]):
            paths.append(files.find(image_id, _row(spec, data_dir, row)))
            ids.append(image_id)
            labels.append(_csv_target(spec, data_dir, table, row, class_index))
    if not ids:
        raise HarnessError(
            f"train folder {train} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
            "check data_dir / DATA_DIR"
        )
    _check_every_class_seen(spec, train, classes, labels)
    ids_t, paths_t, labels_a = _ordered(ids, paths, labels)
    dtype = np.float64 if spec.task == "regression" else np.int64
    return ImageList("train", ids_t, paths_t, labels_a.astype(dtype), classes)


def _check_every_class_seen(spec: CompetitionSpec, train: Path, classes: tuple[str, ...],
                            labels: list) -> None:
    """A class (or tag) without a training image cannot be learnt: fail naming it."""
    if spec.task == "regression":
        return
    if spec.task == "multilabel":
        counts = np.asarray(labels).sum(axis=0)
    else:
        counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes))
    if spec.task != "multilabel" and np.count_nonzero(counts) < 2:
        raise HarnessError(
            f"train folder {train} holds only class {classes[int(np.argmax(counts))]!r}: "
            "training needs images of at least 2 classes"
        )
    unseen = [c for c, n in zip(classes, counts) if n == 0]
    if unseen:
        what = "tag(s)" if spec.task == "multilabel" else "class(es)"
        raise HarnessError(f"{what} {unseen} have no training image under {train}; remove "
                           "them from classes or add their images")


def list_test_images(spec: CompetitionSpec, data_dir: Path) -> ImageList:
    """The test images: the sample submission's ids, each found in the test folder by
    file name or stem, in natural order. The ids are spelt exactly as in the sample.
    Without a sample submission (and a test folder of its own) every image of the test
    folder, its id the file stem.

    Raises:
        HarnessError: a sample id without an image, or (when the test folder is not also
            the train folder) an image the sample does not list.
    """
    classes = discover_classes(spec, data_dir)
    folders = [data_dir / name for name in (spec.test_dir, *spec.extra_test_dirs)]
    for folder in folders:
        _require_folder(folder, "test")
    files = _FileIndex(*folders)
    test = files.folder
    if not (data_dir / spec.sample_submission).is_file() and spec.test_dir != spec.train_dir:
        # Features can be extracted before the sample is downloaded; the submission
        # stage still requires it and checks these ids against it.
        stems = [p.stem for p in files.files]
        ids_t, paths_t, _ = _ordered(stems, list(files.files), None)
        return ImageList("test", ids_t, paths_t, None, classes)
    sample_ids = list(read_sample_submission(spec, data_dir)[spec.id_column])
    found = {i: files.by_name.get(i) or files.by_stem.get(i) for i in sample_ids}
    missing = sorted((i for i, p in found.items() if p is None), key=natural_key)
    extra = [] if spec.test_dir == spec.train_dir else sorted(
        (p.stem for p in set(files.files) - set(found.values())), key=natural_key)
    if missing or extra:
        raise HarnessError(
            f"{data_dir / spec.sample_submission} does not match {test}: "
            f"{len(missing)} id(s) without an image (e.g. {missing[:3]}), "
            f"{len(extra)} image(s) not in the sample (e.g. {extra[:3]}); "
            "re-download the data or fix data_dir"
        )
    ids_t, paths_t, _ = _ordered(sample_ids, [found[i] for i in sample_ids], None)
    return ImageList("test", ids_t, paths_t, None, classes)


def train_groups(spec: CompetitionSpec, data_dir: Path, column: str,
                 train: ImageList) -> np.ndarray:
    """The labels CSV's `column` for every training image (e.g. State Farm's driver), found
    by the image's id or file name: what [cv] group_column keeps in one fold.

    Raises:
        HarnessError: no labels CSV, no such column, or a training image it does not list.
    """
    table = read_labels_csv(spec, data_dir, columns=(column,))
    value = dict(zip(table[spec.labels_id_column], table[column]))
    groups = []
    for image_id, path in zip(train.ids, train.paths):
        group = value.get(image_id, value.get(path.name, value.get(path.stem)))
        if group is None:
            raise HarnessError(f"{data_dir / spec.labels_csv}: no row for training image "
                               f"{path.name} ([cv] group_column = {column!r} needs one per "
                               "image)")
        groups.append(group)
    return np.asarray(groups, dtype=object)


def read_sample_submission(spec: CompetitionSpec, data_dir: Path) -> pd.DataFrame:
    """The sample submission, every column read as text (ids keep their exact spelling).

    Raises:
        HarnessError: the file or its id column is missing, or an id is empty or repeated
            (a repeated id would be copied into the CSV: one row too many for Kaggle).
    """
    path = data_dir / spec.sample_submission
    if not path.is_file():
        raise HarnessError(
            f"sample submission {path} does not exist; download the competition's files "
            "(`harness download`) or set data_dir to a complete copy"
        )
    table = pd.read_csv(path, dtype=str)
    if spec.id_column not in table.columns:
        raise HarnessError(
            f"{path}: no {spec.id_column!r} column (columns: {', '.join(table.columns)})"
        )
    ids = table[spec.id_column]
    if ids.isna().any():
        row = int(ids.isna().to_numpy().argmax())
        raise HarnessError(
            f"{path}: row {row + 1} has an empty {spec.id_column!r}; "
            "re-download the sample submission or fix data_dir"
        )
    dupes = ids[ids.duplicated()]
    if len(dupes):
        raise HarnessError(
            f"{path}: {len(dupes)} duplicated {spec.id_column!r} value(s) "
            f"(e.g. {sorted(set(dupes), key=natural_key)[:3]}); each test image needs one row: "
            "re-download the sample submission or fix data_dir"
        )
    return table


def check_sample_submission(spec: CompetitionSpec, data_dir: Path, test: ImageList) -> None:
    """Fail early when the sample submission cannot be written as the spec says: its test
    images (checked by `list_test_images`) and its header (one value column, or one column
    per class for `class_columns`, naming exactly the classes).

    Raises:
        HarnessError: naming the file, the columns and the fix.
    """
    path = data_dir / spec.sample_submission
    columns = [c for c in read_sample_submission(spec, data_dir).columns if c != spec.id_column]
    if spec.submission_shape == "class_columns":
        unknown = [c for c in columns if c not in test.classes]
        absent = [c for c in test.classes if c not in columns]
        if unknown or absent:
            raise HarnessError(
                f"{path}: header columns {unknown} are not classes, and classes {absent} "
                f"have no column (classes: {list(test.classes)}); fix classes / "
                "label_columns in [competition] or re-download the sample")
    elif len(columns) != 1:
        raise HarnessError(f"{path}: a {spec.submission_shape!r} submission has one column "
                           f"besides {spec.id_column!r}, the sample has {columns}")
