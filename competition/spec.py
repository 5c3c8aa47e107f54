"""What a competition is: `CompetitionSpec` and the catalog of built-in ones."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from base.config import check_keys, where
from base.errors import HarnessError
from competition.metrics import METRICS, Metric, get_metric

TASKS = ("binary", "multiclass")
# How training labels are found:
#   filename: the class is the file-name prefix, as in Kaggle's `train/cat.12.jpg`
#   folders:  one sub-folder per class, `train/<class>/<any>.jpg`
#   csv:      a labels CSV (`id,label`) beside `train/<id>.jpg`
TRAIN_LAYOUTS = ("filename", "folders", "csv")


@dataclass(frozen=True)
class CompetitionSpec:
    """Everything the harness needs to know about one image-classification competition.

    Attributes:
        slug: Kaggle's competition slug (also the default workspace name).
        task: "binary" or "multiclass".
        metric: A name in competition.metrics.METRICS: "log_loss" (lower is better,
            submit probabilities) or "accuracy" (higher is better, submit class labels).
        classes: Class names in label order; for binary tasks `classes[1]` is the positive
            class whose probability is submitted. Empty means "discover from the data"
            (the sub-folder names, or the labels CSV), sorted.
        train_layout: One of TRAIN_LAYOUTS.
        train_dir, test_dir: Folders (relative to the data folder) holding the images.
        labels_csv: The labels file for the `csv` layout.
        sample_submission: The sample submission file, relative to the data folder.
        id_column: Name of the id column in the submission.
        label_column: Name of the label column for binary tasks (multiclass submissions
            have one column per class instead).
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
    labels_csv: str = "labels.csv"
    sample_submission: str = "sample_submission.csv"
    id_column: str = "id"
    label_column: str = "label"
    downloadable: bool = True
    description: str = ""

    def __post_init__(self) -> None:
        for field, value, allowed in (
            ("task", self.task, TASKS),
            ("metric", self.metric, METRICS),
            ("train_layout", self.train_layout, TRAIN_LAYOUTS),
        ):
            if value not in allowed:
                raise HarnessError(
                    f"competition {self.slug!r}: {field} = {value!r} is not one of "
                    f"{', '.join(allowed)}"
                )
        if self.task == "binary" and self.classes and len(self.classes) != 2:
            raise HarnessError(
                f"competition {self.slug!r}: a binary task needs exactly 2 classes, "
                f"got {list(self.classes)}"
            )

    @property
    def scorer(self) -> Metric:
        """The registry entry of this competition's metric."""
        return get_metric(self.metric)

    @property
    def lower_is_better(self) -> bool:
        """True for log loss, False for accuracy."""
        return not self.scorer.higher_is_better

    def with_classes(self, classes: tuple[str, ...]) -> CompetitionSpec:
        """A copy with the class list filled in (for specs that discover classes)."""
        return dataclasses.replace(self, classes=tuple(classes))


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
    if "classes" in table:
        table["classes"] = tuple(table["classes"])
    return dataclasses.replace(get_spec(base), slug=name, **table)
