"""What a competition is: `CompetitionSpec` and the catalog of built-in ones."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from base.config import check_keys, where
from base.errors import HarnessError
from competition.metrics import METRICS, Metric, get_metric

TASKS = ("binary", "multiclass", "multilabel", "ordinal", "regression")
# How training labels are found:
#   filename: the class is the file-name prefix, as in Kaggle's `train/cat.12.jpg`
#   folders:  one sub-folder per class, `train/<class>/<any>.jpg` (a labels CSV, when
#             named, only supplies other columns such as a [cv] group column)
#   csv:      a labels CSV with named columns: an id column (file names with or without
#             their extension) and a label column (a class, an integer grade, a number,
#             or space-separated tags), or one 0/1 column per class (`label_columns`)
TRAIN_LAYOUTS = ("filename", "folders", "csv")
# What a submission row holds besides the id:
#   probability:   one column, the probability of classes[1] (binary)
#   class_columns: one probability column per class, named as in the sample's header
#   class_name:    one column, the predicted class as named in the training labels
#   class_index:   one column, the predicted class's index (0/1 for binary)
#   tags:          one column, the predicted tags joined by tag_separator
#   value:         one column, a number (regression)
SUBMISSIONS = ("probability", "class_columns", "class_name", "class_index", "tags", "value")
# Which submission shapes each kind of metric can be given.
_SHAPES_FOR = {"proba": ("probability", "class_columns"),
               "ranking": ("probability", "class_columns"),
               "labels": ("class_name", "class_index"), "tags": ("tags",),
               "value": ("value",)}


@dataclass(frozen=True)
class CompetitionSpec:
    """Everything the harness needs to know about one image competition, as data.

    Attributes:
        slug: Kaggle's competition slug (also the default workspace name).
        task: One of TASKS: "binary", "multiclass" (one class per image), "multilabel"
            (any set of tags per image), "ordinal" (ordered integer grades) or
            "regression" (a number per image).
        metric: A name in competition.metrics.METRICS (log_loss, accuracy, roc_auc,
            mean_column_auc, f1_micro, mean_f2, quadratic_kappa, rmse).
        classes: Class names (tags for multilabel) in label order; for binary tasks
            `classes[1]` is the positive class; for ordinal tasks the grades in order.
            Empty means "discover from the data", naturally sorted.
        train_layout: One of TRAIN_LAYOUTS.
        train_dir, test_dir: Folders (relative to the data folder) holding the images;
            they may be the same folder (train and test then come from the labels CSV
            and the sample submission).
        extra_test_dirs: More folders holding test images that the sample lists (Planet's
            test-jpg-additional).
        labels_csv: The labels file for the `csv` layout (optional for `folders`).
        csv_id_column: The labels CSV's id column ("" = id_column).
        label_columns: For a one-hot labels CSV, its 0/1 columns, one per class.
        tag_separator: What separates tags in a multilabel label and submission column.
        sample_submission: The sample submission file, relative to the data folder. Its
            id column lists the test images (file names with or without extension).
        id_column: Name of the id column in the submission.
        label_column: The label column of the labels CSV and of single-column
            submissions.
        submission: One of SUBMISSIONS, or "" for what the task and metric imply.
        downloadable: Whether the data comes from Kaggle (False for `demo`).
        description: One line for `harness competitions`.
    """

    slug: str
    task: str = "binary"
    metric: str = "log_loss"
    classes: tuple[str, ...] = ()
    train_layout: str = "filename"
    train_dir: str = "train"
    test_dir: str = "test"
    extra_test_dirs: tuple[str, ...] = ()
    labels_csv: str = "labels.csv"
    csv_id_column: str = ""
    label_columns: tuple[str, ...] = ()
    tag_separator: str = " "
    sample_submission: str = "sample_submission.csv"
    id_column: str = "id"
    label_column: str = "label"
    submission: str = ""
    downloadable: bool = True
    description: str = ""

    def __post_init__(self) -> None:
        for field, value, allowed in (
            ("task", self.task, TASKS),
            ("metric", self.metric, METRICS),
            ("train_layout", self.train_layout, TRAIN_LAYOUTS),
            ("submission", self.submission or "probability", SUBMISSIONS),
        ):
            if value not in allowed:
                raise HarnessError(
                    f"competition {self.slug!r}: {field} = {value!r} is not one of "
                    f"{', '.join(allowed)}"
                )
        self._check_combination()

    def _check_combination(self) -> None:
        fail = f"competition {self.slug!r}:"
        metric = self.scorer
        if self.task not in metric.tasks:
            raise HarnessError(f"{fail} metric {self.metric!r} scores {'/'.join(metric.tasks)} "
                               f"tasks, not {self.task!r}")
        if self.task == "binary" and self.classes and len(self.classes) != 2:
            raise HarnessError(f"{fail} a binary task needs exactly 2 classes, "
                               f"got {list(self.classes)}")
        if self.task in ("multilabel", "regression") and self.train_layout != "csv":
            raise HarnessError(f"{fail} a {self.task} task reads its labels from a CSV: "
                               "set train_layout = \"csv\"")
        if self.submission_shape not in _SHAPES_FOR[metric.submits]:
            raise HarnessError(f"{fail} submission = {self.submission!r} cannot carry what "
                               f"{self.metric!r} scores; use one of "
                               f"{', '.join(_SHAPES_FOR[metric.submits])}")

    @property
    def scorer(self) -> Metric:
        """The registry entry of this competition's metric."""
        return get_metric(self.metric)

    @property
    def lower_is_better(self) -> bool:
        """True for losses (log loss, RMSE), False for scores (accuracy, AUC, ...)."""
        return not self.scorer.higher_is_better

    @property
    def target(self) -> str:
        """What a head fits: "classes" (class probabilities), "tags" (one probability per
        tag) or "value" (a number; ordinal grades are fitted as numbers and cut)."""
        return {"multilabel": "tags", "ordinal": "value",
                "regression": "value"}.get(self.task, "classes")

    @property
    def submission_shape(self) -> str:
        """`submission`, or the shape the task and metric imply."""
        if self.submission:
            return self.submission
        submits = self.scorer.submits
        if submits in ("proba", "ranking"):
            return "probability" if self.task == "binary" else "class_columns"
        if submits == "labels":
            return "class_index" if self.task == "binary" else "class_name"
        return submits  # "tags" or "value"

    @property
    def labels_id_column(self) -> str:
        """The id column of the labels CSV."""
        return self.csv_id_column or self.id_column

    def with_classes(self, classes: tuple[str, ...]) -> CompetitionSpec:
        """A copy with the class list filled in (for specs that discover classes)."""
        return dataclasses.replace(self, classes=tuple(classes))


def _auc_binary(slug: str, labels_csv: str, id_column: str, label_column: str,
                description: str, **more: Any) -> CompetitionSpec:
    """A binary ROC AUC competition with 0/1 labels in a CSV: the commonest shape."""
    return CompetitionSpec(slug=slug, metric="roc_auc", classes=("0", "1"),
                           train_layout="csv", labels_csv=labels_csv, id_column=id_column,
                           label_column=label_column, description=description, **more)


CATALOG: dict[str, CompetitionSpec] = {
    spec.slug: spec
    for spec in (
        CompetitionSpec(
            slug="dogs-vs-cats-redux-kernels-edition",
            classes=("cat", "dog"),
            description="Dogs vs. Cats Redux: log loss, label = probability of dog",
        ),
        CompetitionSpec(
            slug="dogs-vs-cats",
            metric="accuracy",
            classes=("cat", "dog"),
            test_dir="test1",
            sample_submission="sampleSubmission.csv",
            description="the original Dogs vs. Cats: accuracy, label = 1 for dog, 0 for cat",
        ),
        _auc_binary("aerial-cactus-identification", "train.csv", "id", "has_cactus",
                    "columnar cacti in aerial photos: ROC AUC; ids are file names"),
        _auc_binary("histopathologic-cancer-detection", "train_labels.csv", "id", "label",
                    "metastases in lymph-node patches (.tif): ROC AUC"),
        _auc_binary("invasive-species-monitoring", "train_labels.csv", "name", "invasive",
                    "invasive hydrangea in forest photos: ROC AUC"),
        _auc_binary("siim-isic-melanoma-classification", "train.csv", "image_name",
                    "target", "melanoma in skin-lesion photos (jpeg/train): ROC AUC",
                    train_dir="jpeg/train", test_dir="jpeg/test"),
        CompetitionSpec(
            slug="dog-breed-identification", task="multiclass", train_layout="csv",
            labels_csv="labels.csv", label_column="breed",
            description="120 dog breeds: multiclass log loss, one probability column per "
            "breed",
        ),
        CompetitionSpec(
            slug="state-farm-distracted-driver-detection", task="multiclass",
            train_layout="folders", train_dir="imgs/train", test_dir="imgs/test",
            labels_csv="driver_imgs_list.csv", csv_id_column="img", id_column="img",
            description="driver postures c0..c9: multiclass log loss (group folds by "
            "`subject`: [cv] group_column)",
        ),
        CompetitionSpec(
            slug="plant-seedlings-classification", task="multiclass", metric="f1_micro",
            train_layout="folders", id_column="file", label_column="species",
            description="12 seedling species in class folders: micro F1, the species name",
        ),
        CompetitionSpec(
            slug="paddy-disease-classification", task="multiclass", metric="accuracy",
            train_layout="folders", train_dir="train_images", test_dir="test_images",
            labels_csv="train.csv", id_column="image_id",
            description="paddy leaf diseases in class folders: accuracy, the class name",
        ),
        CompetitionSpec(
            slug="cassava-leaf-disease-classification", task="multiclass",
            metric="accuracy", train_layout="csv", labels_csv="train.csv",
            train_dir="train_images", test_dir="test_images", id_column="image_id",
            description="cassava leaf diseases 0-4: accuracy, the integer code",
        ),
        CompetitionSpec(
            slug="aptos2019-blindness-detection", task="ordinal", metric="quadratic_kappa",
            classes=("0", "1", "2", "3", "4"), train_layout="csv", labels_csv="train.csv",
            train_dir="train_images", test_dir="test_images", id_column="id_code",
            label_column="diagnosis",
            description="diabetic retinopathy grades 0-4: quadratic weighted kappa",
        ),
        CompetitionSpec(
            slug="plant-pathology-2020-fgvc7", task="multiclass", metric="mean_column_auc",
            classes=("healthy", "multiple_diseases", "rust", "scab"), train_layout="csv",
            labels_csv="train.csv", label_columns=("healthy", "multiple_diseases", "rust",
                                                   "scab"),
            train_dir="images", test_dir="images", id_column="image_id",
            description="apple leaf diseases, one-hot labels, train and test in images/: "
            "mean column-wise ROC AUC",
        ),
        CompetitionSpec(
            slug="planet-understanding-the-amazon-from-space", task="multilabel",
            metric="mean_f2", train_layout="csv", labels_csv="train_v2.csv",
            train_dir="train-jpg", test_dir="test-jpg",
            extra_test_dirs=("test-jpg-additional",),
            sample_submission="sample_submission_v2.csv", id_column="image_name",
            label_column="tags",
            description="Amazon satellite chips, 17 space-separated tags: mean F2 over "
            "images",
        ),
        CompetitionSpec(
            slug="petfinder-pawpularity-score", task="regression", metric="rmse",
            train_layout="csv", labels_csv="train.csv", id_column="Id",
            label_column="Pawpularity",
            description="pet photo popularity 1-100: RMSE",
        ),
        CompetitionSpec(
            slug="generic-folders",
            task="multiclass",
            train_layout="folders",
            downloadable=False,
            description="any competition with train/<class>/*.jpg and test/*.jpg "
            "(one probability column per class)",
        ),
        CompetitionSpec(
            slug="generic-csv",
            task="multiclass",
            train_layout="csv",
            downloadable=False,
            description="any competition with train/<id>.jpg, labels.csv (id,label) "
            "and test/*.jpg",
        ),
        CompetitionSpec(
            slug="demo",
            classes=("circle", "square"),
            downloadable=False,
            description="offline demo: small generated images of circles and squares "
            "(its scores say nothing about real photos)",
        ),
    )
}


def get_spec(name: str) -> CompetitionSpec:
    """The catalog entry called `name`; unknown names fail listing the known ones."""
    try:
        return CATALOG[name]
    except KeyError:
        raise HarnessError(
            f"unknown competition {name!r}; known: {', '.join(sorted(CATALOG))} "
            "(or describe a new one in a [competition] table of the config)"
        ) from None


def spec_from_config(value: Any, source: Any = None) -> CompetitionSpec:
    """The competition a config names: a catalog name, or a `[competition]` table with a
    `name` (a Kaggle slug) and the fields that differ from its `base` (a catalog entry;
    default: the same name, else "generic-folders").

    Raises:
        HarnessError: an unknown name or field, naming the config file.
    """
    if isinstance(value, str):
        return get_spec(value)
    if not isinstance(value, dict) or "name" not in value:
        raise HarnessError(
            f"{where(source)}: competition must be a name ({', '.join(sorted(CATALOG))}) "
            "or a [competition] table with a name"
        )
    table = dict(value)
    name = table.pop("name")
    base = table.pop("base", name if name in CATALOG else "generic-folders")
    if name not in CATALOG:
        # A new slug is a Kaggle competition unless the table says otherwise, even when
        # its layout comes from a local-only generic base.
        table.setdefault("downloadable", True)
    fields = {f.name for f in dataclasses.fields(CompetitionSpec)} - {"slug"}
    check_keys(table, fields, "[competition]", source)
    for key in ("classes", "label_columns", "extra_test_dirs"):
        if key in table:
            if not isinstance(table[key], list):
                raise HarnessError(f"{where(source)}: [competition] {key} must be a list of "
                                   f"names, e.g. {key} = [\"a\", \"b\"]")
            table[key] = tuple(str(v) for v in table[key])
    return dataclasses.replace(get_spec(base), slug=name, **table)
