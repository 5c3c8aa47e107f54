"""The harness inside a simulated Kaggle notebook: `harness.run` with the notebook defaults.

Kaggle mounts the competition under /kaggle/input/<slug> (read-only), attached datasets
(here: the weights) beside it, writes nothing but /kaggle/working, has no internet, and at
scoring time runs the notebook again with the hidden test set swapped in. The test builds
that tree in a temporary folder from genuine photos of ../shared (labels known, so the
submission is scored), refuses every network connection, and runs twice with the same
working folder, the test set swapped in between.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness import run
from tests.cli_runner import run_harness
from tests.shared_assets import MOBILENET_WEIGHTS, mini_photos, shared_dir

SLUG = "dogs-vs-cats-redux-kernels-edition"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_network(monkeypatch):
    """Every attempt to open a network connection fails, and fails the test at the end."""
    attempts = []
    connect = socket.socket.connect

    def refuse(self, address, *args, **kwargs):
        if self.family == socket.AF_UNIX:  # local IPC, not the network
            return connect(self, address, *args, **kwargs)
        attempts.append(address)
        raise OSError(f"no network in a Kaggle notebook test: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    yield attempts
    assert not attempts, f"the run tried to reach {attempts}"


def write_test_set(competition: Path, photos, first_id: int) -> dict[str, int]:
    """`photos` as test/N.jpg with ids from `first_id`, and the sample submission; returns
    the withheld labels by id."""
    shutil.rmtree(competition / "test", ignore_errors=True)
    (competition / "test").mkdir(parents=True)
    truth = {}
    for k, (path, label) in enumerate(zip(photos.paths, photos.labels)):
        image_id = str(first_id + k)
        shutil.copyfile(path, competition / "test" / f"{image_id}.jpg")
        truth[image_id] = int(label)
    pd.DataFrame({"id": list(truth), "label": 0.5}).to_csv(
        competition / "sample_submission.csv", index=False)
    return truth


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def scored(csv: Path, truth: dict[str, int]) -> float:
    """The submission's accuracy on the withheld labels, after checking its rows are
    exactly the test set's ids with probabilities."""
    table = pd.read_csv(csv, dtype={"id": str})
    assert list(table.columns) == ["id", "label"]
    assert sorted(table["id"]) == sorted(truth)
    assert table["label"].between(0, 1).all()
    return float(np.mean([(p > 0.5) == truth[i] for i, p in zip(table["id"], table["label"])]))


@pytest.mark.slow
def test_a_notebook_run_reads_input_writes_working_and_predicts_a_swapped_test_set(
        tmp_path, monkeypatch, no_network):
    shared = shared_dir()
    photos = mini_photos(380)
    kaggle = tmp_path / "kaggle"
    competition = kaggle / "input" / SLUG
    (competition / "train").mkdir(parents=True)
    for path in photos.paths[:300]:
        shutil.copyfile(path, competition / "train" / path.name)
    public = write_test_set(competition, photos.subset(np.arange(300, 340)), 1)
    weights = kaggle / "input" / "imagenet-weights"
    weights.mkdir()
    shutil.copyfile(shared / MOBILENET_WEIGHTS, weights / MOBILENET_WEIGHTS.name)
    (kaggle / "working").mkdir()
    monkeypatch.chdir(kaggle / "working")
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")  # as Kaggle sets it
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    inputs = snapshot(kaggle / "input")

    first = run(SLUG, weights_dir=weights, backbones=["mobilenet_025"], progress=False,
                kaggle_root=kaggle)

    assert first.submission == kaggle / "working" / "submission.csv"
    assert scored(first.submission, public) >= 0.8
    assert first.pick in set(first.table["name"])
    assert all(Path(p).is_relative_to(kaggle / "working") for p in first.csvs)
    assert snapshot(kaggle / "input") == inputs, "the run wrote into the input folder"

    # The command line's --kaggle-notebook does the same (cached work reused).
    (kaggle / "working" / "submission.csv").unlink()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HARNESS_KAGGLE_ROOT": str(kaggle),
           "HARNESS_CACHE_DIR": str(tmp_path / "cache")}
    made = run_harness("submit", "--kaggle-notebook", "--competition", SLUG, "--weights-dir",
                       str(weights), "--backbones", "mobilenet_025", cwd=kaggle / "working",
                       env=env)
    assert made.returncode == 0, made.stderr
    assert f"-> {kaggle / 'working' / 'submission.csv'} (" in made.stdout
    assert scored(kaggle / "working" / "submission.csv", public) >= 0.8
    assert snapshot(kaggle / "input") == inputs

    # Scoring time: the hidden test set replaces the public one; same working folder.
    hidden = write_test_set(competition, photos.subset(np.arange(340, 380)), 500)
    inputs = snapshot(kaggle / "input")
    second = run(SLUG, weights_dir=weights, backbones=["mobilenet_025"], progress=False,
                 kaggle_root=kaggle)

    assert scored(second.submission, hidden) >= 0.8  # the new ids, none of the old
    assert snapshot(kaggle / "input") == inputs


def test_notebook_paths_keep_what_is_given_and_never_write_into_input(tmp_path):
    from base.errors import HarnessError
    from harness.api import notebook_paths

    assert notebook_paths(SLUG, None, None, None, tmp_path) == (
        tmp_path / "input" / SLUG, tmp_path / "working" / "harness",
        tmp_path / "working" / "submission.csv")
    assert notebook_paths(SLUG, "mine", "ws", "out.csv", tmp_path) == ("mine", "ws", "out.csv")
    # The demo is generated, so into the workspace: /kaggle/input is read-only.
    assert notebook_paths("demo", None, None, None, tmp_path)[0] is None
    with pytest.raises(HarnessError, match="name the competition"):
        notebook_paths(None, None, None, None, tmp_path)


@pytest.mark.slow
def test_the_example_notebook_runs_on_the_demo(tmp_path, monkeypatch):
    """docs/kaggle-notebook.ipynb, executed cell by cell in a Jupyter kernel as a user's
    notebook is (outside Kaggle it runs the offline demo)."""
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    notebook = nbformat.read(REPO / "docs" / "kaggle-notebook.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = "".join(out.get("text", "") for cell in notebook.cells
                      for out in cell.get("outputs", []))
    assert "mobilenet_025-logreg (" in printed and "-> submission.csv" in printed
    table = notebook.cells[2].outputs[0]["data"]["text/plain"]
    assert "mobilenet_025-logreg" in table and "cv_score" in table
    submission = pd.read_csv(tmp_path / "submission.csv", dtype={"id": str})
    sample = pd.read_csv(tmp_path / "work" / "demo" / "data" / "sample_submission.csv",
                         dtype={"id": str})
    assert list(submission["id"]) == list(sample["id"])
    assert submission["label"].between(0, 1).all()
    assert f"{len(sample)} rows" in printed
