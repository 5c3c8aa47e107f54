"""submissions/writer.py: CSVs joined on id, clipped, validated, written atomically."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from base.errors import HarnessError
from competition.spec import get_spec
from submissions.writer import submission_path, validate_submission, write_submission

REDUX = get_spec("dogs-vs-cats-redux-kernels-edition")


@pytest.fixture
def data_dir(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    rows = ["id,label"] + [f"{i},0.5" for i in (1, 2, 10, 11)]
    (root / "sample_submission.csv").write_text("\n".join(rows) + "\n")
    return root


def test_rows_follow_the_sample_not_the_prediction_order(tmp_path, data_dir):
    ids = np.array(["10", "1", "11", "2"])
    p_dog = np.array([0.9, 0.0001, 0.6, 0.9999])
    proba = np.column_stack([1 - p_dog, p_dog])
    path = submission_path(tmp_path / "subs", REDUX, "all3-dropout")
    write_submission(path, REDUX, data_dir, ids, proba, ("cat", "dog"), (0.005, 0.995))
    table = pd.read_csv(path, dtype={"id": str})
    assert path.name == "dogs-vs-cats-redux-kernels-edition-all3-dropout.csv"
    assert table["id"].tolist() == ["1", "2", "10", "11"]
    np.testing.assert_allclose(table["label"], [0.005, 0.995, 0.9, 0.6])
    assert not list(path.parent.glob(".*tmp"))


def test_accuracy_competitions_get_class_labels(tmp_path, data_dir):
    spec = get_spec("dogs-vs-cats")
    (data_dir / "sampleSubmission.csv").write_text("id,label\n1,0\n2,0\n")
    proba = np.array([[0.2, 0.8], [0.7, 0.3]])
    path = write_submission(tmp_path / "s.csv", spec, data_dir, np.array(["2", "1"]), proba,
                            ("cat", "dog"), None)
    assert path.read_text().split() == ["id,label", "1,0", "2,1"]


def test_multiclass_gets_a_column_per_class(tmp_path):
    spec = get_spec("generic-folders")
    (tmp_path / "sample_submission.csv").write_text("id,bee,ant\na,0,0\nb,0,0\n")
    proba = np.array([[0.7, 0.3], [0.0, 1.0]])  # columns in classes order: ant, bee
    path = write_submission(tmp_path / "s.csv", spec, tmp_path, np.array(["a", "b"]), proba,
                            ("ant", "bee"), (0.01, 0.99))
    table = pd.read_csv(path)
    np.testing.assert_allclose(table["ant"], [0.7, 0.01 / 1.0])
    np.testing.assert_allclose(table["bee"], [0.3, 0.99 / 1.0])


def test_missing_prediction_is_refused(tmp_path, data_dir):
    proba = np.full((3, 2), 0.5)
    with pytest.raises(HarnessError, match=r"no prediction for 1 test id.*'11'"):
        write_submission(tmp_path / "s.csv", REDUX, data_dir, np.array(["1", "2", "10"]),
                         proba, ("cat", "dog"), None)
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize(
    "body, message",
    [
        ("id,label\n1,0.5\n2,0.5\n10,0.5\n", "3 rows, the sample submission has 4"),
        ("id,label\n1,0.5\n10,0.5\n2,0.5\n11,0.5\n", "row 2 has id '10' where the sample has '2'"),
        ("id,label\n1,0.5\n2,\n10,0.5\n11,0.5\n", "row 2 is '', not a number"),
        ("id,label\n1,0.5\n2,1.5\n10,0.5\n11,0.5\n", "row 2 is 1.5, not a probability"),
        ("id,prob\n1,0.5\n2,0.5\n10,0.5\n11,0.5\n", "columns \\['id', 'prob'\\] differ"),
    ],
    ids=["short", "shifted", "empty-value", "out-of-range", "columns"],
)
def test_validation_names_the_file_and_the_problem(tmp_path, data_dir, body, message):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(HarnessError, match=message):
        validate_submission(path, REDUX, data_dir)


def test_multiclass_accuracy_competitions_get_class_names(tmp_path):
    spec = get_spec("generic-folders").__class__(
        slug="species", task="multiclass", metric="accuracy", train_layout="folders")
    (tmp_path / "sample_submission.csv").write_text("id,species\na,x\nb,x\nc,x\n")
    proba = np.array([[0.1, 0.2, 0.7], [0.8, 0.1, 0.1], [0.2, 0.5, 0.3]])
    path = write_submission(tmp_path / "s.csv", spec, tmp_path, np.array(["a", "b", "c"]),
                            proba, ("ant", "bee", "wasp"), None)
    assert path.read_text().split() == ["id,species", "a,wasp", "b,ant", "c,bee"]
    (tmp_path / "bad.csv").write_text("id,species\na,wasp\nb,moth\nc,bee\n")
    with pytest.raises(HarnessError, match="row 2 is 'moth', not a class name"):
        validate_submission(tmp_path / "bad.csv", spec, tmp_path, ("ant", "bee", "wasp"))


@pytest.mark.parametrize(
    "sample, message",
    [
        ("id,label\n1,0.5\n2,0.5\n10,0.5\n2,0.5\n11,0.5\n", r"1 duplicated 'id' value\(s\) .*'2'"),
        ("id,label\n1,0.5\n,0.5\n10,0.5\n11,0.5\n", r"row 2 has an empty 'id'"),
    ],
    ids=["duplicated-id", "empty-id"],
)
def test_a_sample_with_a_repeated_or_empty_id_is_refused(tmp_path, data_dir, sample, message):
    """A repeated id used to be copied into the CSV (one row more than images) and validated."""
    (data_dir / "sample_submission.csv").write_text(sample)
    proba = np.full((4, 2), 0.5)
    with pytest.raises(HarnessError, match=message):
        write_submission(tmp_path / "s.csv", REDUX, data_dir, np.array(["1", "2", "10", "11"]),
                         proba, ("cat", "dog"), None)
    assert not (tmp_path / "s.csv").exists()
