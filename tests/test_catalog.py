"""Every catalog competition end to end, on a data folder laid out as its Kaggle download.

Each case (tests/competition_layouts.py) writes tiny genuine images whose label is their
content. Features are MobileNet-0.25 with random weights (colour survives random
convolutions), so a row written under the wrong id scores at chance. The CSV is checked
column by column against the sample submission and scored on the withheld test labels by
the metric as each competition's evaluation page defines it, written from those pages
and independent of competition.metrics (which the last test compares to them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from competition.spec import CATALOG
from tests.cli_runner import mobilenet_toml
from tests.competition_layouts import (
    CASES,
    TAGS,
    dog_breed,
    kaggle_log_loss,
    mean_f2,
    micro_f1,
    pairwise_auc,
    petfinder,
    planet,
    plant_pathology,
    quadratic_kappa,
    rmse,
)


def test_every_catalog_entry_has_a_case():
    assert set(CATALOG) - {"demo"} == set(CASES)  # demo: tests/test_end_to_end.py


def check_against_sample(table: pd.DataFrame, sample: pd.DataFrame, spec) -> None:
    """The CSV has the sample's columns in order, its ids in order, and values of the
    submission's shape."""
    assert list(table.columns) == list(sample.columns)
    assert table.iloc[:, 0].astype(str).tolist() == sample.iloc[:, 0].astype(str).tolist()
    values = table.iloc[:, 1:]
    shape = spec.submission_shape
    if shape in ("probability", "class_columns"):
        assert values.map(np.isreal).all().all() and values.stack().between(0, 1).all()
        if shape == "class_columns" and spec.metric == "log_loss":
            np.testing.assert_allclose(values.sum(axis=1), 1.0, atol=1e-6)
    elif shape == "class_name":
        assert set(values.iloc[:, 0].astype(str)) <= set(spec.classes) or not spec.classes
    elif shape == "class_index":
        assert values.iloc[:, 0].map(lambda v: float(v).is_integer()).all()
    elif shape == "tags":
        for cell in values.iloc[:, 0].fillna(""):
            assert set(cell.split()) <= set(TAGS), cell
    else:
        assert np.isfinite(values.iloc[:, 0].to_numpy(float)).all()


@pytest.mark.slow
@pytest.mark.parametrize("slug", sorted(CASES))
def test_catalog_competition_end_to_end(slug, tmp_path, monkeypatch):
    from harness.config import load_config
    from harness.pipeline import submit

    case = CASES[slug]
    truth = case.build(tmp_path / "data")
    heads = {head: "epochs = 20\n" if head == "dropout" else "" for head in case.heads}
    toml = mobilenet_toml(f'competition = "{slug}"\nworkspace = "ws"\ndata_dir = "data"',
                          heads=heads, folds=3)
    if case.cv:
        toml = toml.replace("[cv]\n", "[cv]\n" + case.cv)
    (tmp_path / "harness.toml").write_text(toml)
    monkeypatch.chdir(tmp_path)
    config = load_config(tmp_path / "harness.toml")

    made = submit(config, progress=False)

    spec = config.spec
    sample = pd.read_csv(tmp_path / "data" / spec.sample_submission, dtype=str)
    for path in made.paths:  # every ensemble's CSV, the pick's first
        table = pd.read_csv(path, dtype={spec.id_column: str}, keep_default_na=False,
                            na_values=[""] if spec.submission_shape != "tags" else [])
        check_against_sample(table, sample, spec.with_classes(made.pick.classes))
    table = pd.read_csv(made.paths[0], dtype={spec.id_column: str}, keep_default_na=False)
    score = case.score(truth, table)
    assert (score < case.bound) if case.loss else (score > case.bound), \
        (slug, score, made.pick.name)
    # The harness's CV score is in the competition's metric and direction.
    assert np.isfinite(made.pick.cv_score)


# --- bad downloads: one line naming the file, the row and the fix ------------------------

def harness_error(spec, data_dir: Path) -> str:
    """The error listing the images and checking the sample raises (one line)."""
    from base.errors import HarnessError
    from competition.images import check_sample_submission, list_test_images, list_train_images

    with pytest.raises(HarnessError) as caught:
        list_train_images(spec, data_dir)
        check_sample_submission(spec, data_dir, list_test_images(spec, data_dir))
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def test_a_labels_row_without_its_image_names_the_file_and_line(tmp_path):
    dog_breed(tmp_path)
    labels = pd.read_csv(tmp_path / "labels.csv")
    labels.loc[len(labels)] = ["0badc0ffee", "beagle"]
    labels.to_csv(tmp_path / "labels.csv", index=False)
    message = harness_error(CATALOG["dog-breed-identification"], tmp_path)
    assert f"{tmp_path / 'labels.csv'} line {len(labels) + 1}" in message
    assert "'0badc0ffee' has no image" in message


def test_a_sample_header_class_unknown_to_the_labels_is_named(tmp_path):
    dog_breed(tmp_path)
    sample = pd.read_csv(tmp_path / "sample_submission.csv")
    sample.rename(columns={"collie": "corgi"}).to_csv(tmp_path / "sample_submission.csv",
                                                      index=False)
    message = harness_error(CATALOG["dog-breed-identification"], tmp_path)
    assert str(tmp_path / "sample_submission.csv") in message
    assert "['corgi'] are not classes" in message and "['collie'] have no column" in message


def test_a_class_without_a_training_image_is_named(tmp_path):
    plant_pathology(tmp_path)
    train = pd.read_csv(tmp_path / "train.csv")
    scab = train["scab"] == 1
    train.loc[scab, "scab"], train.loc[scab, "rust"] = 0, 1
    train.to_csv(tmp_path / "train.csv", index=False)
    message = harness_error(CATALOG["plant-pathology-2020-fgvc7"], tmp_path)
    assert "class(es) ['scab'] have no training image" in message


def test_tags_unknown_or_never_seen_are_named_with_their_row(tmp_path):
    planet(tmp_path)
    listed = CATALOG["planet-understanding-the-amazon-from-space"].with_classes(
        (*TAGS, "cloudy"))
    assert "tag(s) ['cloudy'] have no training image" in harness_error(listed, tmp_path)
    train = pd.read_csv(tmp_path / "train_v2.csv")
    train.loc[3, "tags"] = "water haze"
    train.to_csv(tmp_path / "train_v2.csv", index=False)
    message = harness_error(listed, tmp_path)
    assert f"{tmp_path / 'train_v2.csv'} line 5: tag 'haze' is not one of" in message


def test_a_value_that_is_not_a_number_is_named_with_its_row(tmp_path):
    petfinder(tmp_path)
    train = pd.read_csv(tmp_path / "train.csv")
    train["Pawpularity"] = train["Pawpularity"].astype(str)
    train.loc[0, "Pawpularity"] = "n/a"
    train.to_csv(tmp_path / "train.csv", index=False)
    message = harness_error(CATALOG["petfinder-pawpularity-score"], tmp_path)
    assert f"{tmp_path / 'train.csv'} line 2: Pawpularity = 'n/a' is not a number" in message


def test_the_registry_scores_as_the_competitions_define_their_metrics():
    """competition.metrics against the definitions above, on random predictions."""
    from competition.metrics import METRICS

    rng = np.random.default_rng(0)
    n = 200
    y2, y4 = rng.integers(0, 2, n), rng.integers(0, 4, n)
    p4 = rng.dirichlet(np.ones(4), n)
    p4[:3] = [1.0, 0.0, 0.0, 0.0]  # a certain wrong row: the clip matters
    p2 = rng.random(n)
    ranked = np.column_stack([1 - p2, p2])
    guess4 = rng.integers(0, 4, n)
    tags = rng.integers(0, 2, (n, 3))
    guessed_tags = rng.integers(0, 2, (n, 3))
    grades, graded = rng.integers(0, 5, n), rng.integers(0, 5, n)
    values, predicted = rng.normal(40, 20, n), rng.normal(40, 20, n)

    def sets(mask):
        return {TAGS[t] for t in np.flatnonzero(mask)}

    expected = {
        "log_loss": (METRICS["log_loss"].score(y4, p4),
                     kaggle_log_loss(np.eye(4)[y4], p4)),
        "accuracy": (METRICS["accuracy"].score(y4, guess4), float(np.mean(y4 == guess4))),
        "roc_auc": (METRICS["roc_auc"].score(y2, ranked), pairwise_auc(y2, p2)),
        "mean_column_auc": (METRICS["mean_column_auc"].score(y4, p4), float(np.mean(
            [pairwise_auc((y4 == k).astype(int), p4[:, k]) for k in range(4)]))),
        "f1_micro": (METRICS["f1_micro"].score(y4, guess4),
                     micro_f1(list(y4), list(guess4))),
        "mean_f2": (METRICS["mean_f2"].score(tags, guessed_tags),
                    mean_f2([sets(m) for m in tags], [sets(m) for m in guessed_tags])),
        "quadratic_kappa": (METRICS["quadratic_kappa"].score(grades, graded),
                            quadratic_kappa(grades, graded, 5)),
        "rmse": (METRICS["rmse"].score(values, predicted), rmse(values, predicted)),
    }
    assert set(expected) == set(METRICS)
    for name, (ours, theirs) in expected.items():
        assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12), name
