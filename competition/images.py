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

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
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
        labels: Class indices into `classes` (train only), aligned with `ids`.
        classes: The class names.
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


def _ordered(ids: list[str], paths: list[Path], labels: list[int] | None) -> tuple:
    order = sorted(range(len(ids)), key=lambda i: natural_key(ids[i]))
    dupes = pd.Series(ids).duplicated()
    if dupes.any():
        first = pd.Series(ids)[dupes].iloc[0]
        raise HarnessError(f"two images share the id {first!r}: ids must be unique")
    return (
        tuple(ids[i] for i in order),
        tuple(paths[i] for i in order),
        None if labels is None else np.asarray([labels[i] for i in order], dtype=np.int64),
    )


def discover_classes(spec: CompetitionSpec, data_dir: Path) -> tuple[str, ...]:
    """The spec's classes, or the ones found in the data when the spec leaves them open."""
    if spec.classes:
        return spec.classes
    train = data_dir / spec.train_dir
    _require_folder(train, "train")
    if spec.train_layout == "folders":
        classes = sorted((p.name for p in train.iterdir() if p.is_dir()), key=natural_key)
    elif spec.train_layout == "csv":
        classes = sorted(_read_labels_csv(spec, data_dir).label.unique(), key=natural_key)
    else:
        classes = sorted({p.name.split(".", 1)[0] for p in _image_files(train)}, key=natural_key)
    if len(classes) < 2:
        raise HarnessError(
            f"found {len(classes)} class(es) {classes} under {train}: training needs at least 2"
        )
    return tuple(classes)


def _read_labels_csv(spec: CompetitionSpec, data_dir: Path) -> pd.DataFrame:
    path = data_dir / spec.labels_csv
    if not path.is_file():
        raise HarnessError(f"labels file {path} does not exist (the csv layout needs it)")
    table = pd.read_csv(path, dtype=str)
    if list(table.columns[:2]) != [spec.id_column, spec.label_column]:
        raise HarnessError(
            f"{path}: expected columns {spec.id_column},{spec.label_column}, "
            f"found {','.join(table.columns)}"
        )
    return table.rename(columns={spec.id_column: "id", spec.label_column: "label"})


def list_train_images(spec: CompetitionSpec, data_dir: Path) -> ImageList:
    """The labelled training images of `data_dir`, in natural id order.

    Raises:
        HarnessError: the folder is missing or empty, a file name has no known class,
            or fewer than two classes are present.
    """
    classes = discover_classes(spec, data_dir)
    class_index = {name: i for i, name in enumerate(classes)}
    train = data_dir / spec.train_dir
    _require_folder(train, "train")
    ids: list[str] = []
    paths: list[Path] = []
    labels: list[int] = []
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
            for path in _image_files(train / name):
                ids.append(f"{name}/{path.stem}")
                paths.append(path)
                labels.append(class_index[name])
    else:
        by_stem = {p.stem: p for p in _image_files(train)}
        for row in _read_labels_csv(spec, data_dir).itertuples():
            if row.id not in by_stem:
                raise HarnessError(f"{spec.labels_csv}: id {row.id!r} has no image in {train}")
            ids.append(row.id)
            paths.append(by_stem[row.id])
            labels.append(class_index[row.label])
    if not ids:
        raise HarnessError(
            f"train folder {train} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
            "check data_dir / DATA_DIR"
        )
    present = set(labels)
    if len(present) < 2:
        raise HarnessError(
            f"train folder {train} holds only class {classes[labels[0]]!r}: "
            "training needs images of at least 2 classes"
        )
    ids_t, paths_t, labels_a = _ordered(ids, paths, labels)
    return ImageList("train", ids_t, paths_t, labels_a, classes)


def list_test_images(spec: CompetitionSpec, data_dir: Path) -> ImageList:
    """The unlabelled test images of `data_dir`, ids = file stems, in natural order."""
    classes = discover_classes(spec, data_dir)
    test = data_dir / spec.test_dir
    _require_folder(test, "test")
    files = _image_files(test)
    if not files:
        raise HarnessError(f"test folder {test} holds no images; check data_dir / DATA_DIR")
    ids_t, paths_t, _ = _ordered([p.stem for p in files], files, None)
    return ImageList("test", ids_t, paths_t, None, classes)


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
    """Fail early when the sample submission's ids are not exactly the test images' ids."""
    sample_ids = read_sample_submission(spec, data_dir)[spec.id_column]
    missing = sorted(set(sample_ids) - set(test.ids), key=natural_key)
    extra = sorted(set(test.ids) - set(sample_ids), key=natural_key)
    if missing or extra:
        raise HarnessError(
            f"{data_dir / spec.sample_submission} does not match {data_dir / spec.test_dir}: "
            f"{len(missing)} id(s) without an image (e.g. {missing[:3]}), "
            f"{len(extra)} image(s) not in the sample (e.g. {extra[:3]}); "
            "re-download the data or fix data_dir"
        )
