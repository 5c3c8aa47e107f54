"""End to end through the CLI: demo data -> features -> ensembles -> validated CSV.

Uses a small demo and the fast `mobilenet_025` backbone (random init: the demo's shapes
differ in colour, which even random convolutions carry), so the ids' alignment from image
files to CSV rows is checked against the withheld solution: shifted rows would score at
chance.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss

from competition.demo import generate_demo
from tests.cli_runner import NATIVE_LOG_LINE, mobilenet_toml, run_harness
from tests.cli_runner import REPO as ROOT
from tests.image_files import write_jpeg

CONFIG = mobilenet_toml('competition = "demo"\nworkspace = "ws"',
                        heads={"logreg": "", "dropout": "epochs = 3\n"})


def harness(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_harness(*args, cwd=cwd)


@pytest.mark.slow
def test_submit_writes_a_validated_csv_and_reuses_features(tmp_path):
    (tmp_path / "harness.toml").write_text(CONFIG)
    generate_demo(tmp_path / "ws" / "data", n_train=60, n_test=30)

    first = harness("submit", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    # TensorFlow was imported (extraction, the Keras head) without a line of its own.
    assert not NATIVE_LOG_LINE.search(first.stderr), first.stderr[:2000]
    csv = tmp_path / "ws" / "submissions" / "demo-mobilenet-logreg.csv"
    assert f"validated: {csv}" in first.stdout
    assert re.search(r"submission: mobilenet-(logreg|dropout) -> .*\.csv \(.*CV.*\)", first.stdout)
    for name in ("mobilenet-logreg", "mobilenet-dropout"):
        assert name in first.stdout

    submission = pd.read_csv(csv, dtype={"id": str})
    solution = pd.read_csv(tmp_path / "ws" / "data" / "solution.csv", dtype={"id": str})
    assert submission["id"].tolist() == [str(i) for i in range(1, 31)]
    merged = submission.merge(solution, on="id", suffixes=("", "_true"))
    assert merged["label"].between(0, 1).all()
    # Rows joined on the right ids carry the signal; shifted rows would sit near 0.693.
    assert log_loss(merged["label_true"], merged["label"]) < 0.5

    features = tmp_path / "ws" / "features" / "mobilenet_025.h5"
    mtime = features.stat().st_mtime_ns
    second = harness("submit", cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert features.stat().st_mtime_ns == mtime
    assert "mobilenet_025 reused" in second.stderr
    assert "mobilenet-logreg: unchanged, reusing saved predictions" in second.stderr


MULTICLASS_CONFIG = mobilenet_toml(
    'workspace = "ws"\ndata_dir = "data"', heads={"logreg": "", "dropout": ""},
    tail='[blends.both]\nmembers = ["mobilenet-logreg", "mobilenet-dropout"]\nmethod = "mean"\n'
         '[competition]\nname = "tiny-multiclass"\nbase = "generic-folders"\n')
COLOURS = {"ant": (220, 40, 40), "bee": (40, 200, 40), "wasp": (40, 40, 220)}


@pytest.mark.slow
def test_folder_per_class_competition_gets_a_probability_column_per_class(tmp_path):
    (tmp_path / "harness.toml").write_text(MULTICLASS_CONFIG)
    for k, (name, colour) in enumerate(COLOURS.items()):
        for i in range(9):
            write_jpeg(tmp_path / "data" / "train" / name / f"{i}.jpg", seed=100 * k + i,
                       colour=colour)
    truth = {}
    for test_id in range(1, 13):
        name = list(COLOURS)[test_id % 3]
        write_jpeg(tmp_path / "data" / "test" / f"t{test_id}.jpg", seed=900 + test_id,
                   colour=COLOURS[name])
        truth[f"t{test_id}"] = name
    # Kaggle's multiclass samples list class columns in their own order, not ours.
    sample = pd.DataFrame({"id": list(truth), "wasp": 1 / 3, "ant": 1 / 3, "bee": 1 / 3})
    sample.to_csv(tmp_path / "data" / "sample_submission.csv", index=False)

    result = harness("submit", "--ensemble", "both", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(tmp_path / "ws" / "submissions" / "tiny-multiclass-both.csv")
    assert list(table.columns) == ["id", "wasp", "ant", "bee"]
    assert table["id"].tolist() == list(truth)
    np.testing.assert_allclose(table[["wasp", "ant", "bee"]].sum(axis=1), 1.0, atol=1e-6)
    predicted = table[["wasp", "ant", "bee"]].idxmax(axis=1)
    assert (predicted == table["id"].map(truth)).mean() >= 0.75


@pytest.mark.slow
def test_shards_from_the_command_line_merge_into_the_full_file(tmp_path):
    """`--shard 1/2`, `--shard 2/2`, `--merge 2`, as the README tells a user to run them."""
    (tmp_path / "harness.toml").write_text(CONFIG)
    generate_demo(tmp_path / "ws" / "data", n_train=10, n_test=5)
    features = tmp_path / "ws" / "features"
    for i in (1, 2):
        done = harness("-q", "features", "--shard", f"{i}/2", cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        assert (features / f"mobilenet_025.shard-{i}-of-2.h5").is_file()
    merged = harness("-q", "features", "--merge", "2", cwd=tmp_path)
    assert merged.returncode == 0, merged.stderr[-3000:]
    with h5py.File(features / "mobilenet_025.h5", "r") as handle:
        assert handle.attrs["complete"] and handle["train"]["features"].shape[0] == 10
        assert handle["test"]["ids"].asstr()[()].tolist() == ["1", "2", "3", "4", "5"]
    # The merged file is the one an unsharded run would have written: it is reused.
    again = harness("features", cwd=tmp_path)
    assert again.returncode == 0 and "mobilenet_025 reused" in again.stderr, again.stderr[-3000:]
    wrong = harness("features", "--shard", "3/2", cwd=tmp_path)
    assert wrong.returncode == 2 and "need 1 <= i <= n" in wrong.stderr


IMPORTS_AFTER = """
import sys
from harness.cli import main
code = main(sys.argv[1:])
print("tensorflow imported:", "tensorflow" in sys.modules, "exit", code)
"""


@pytest.mark.slow
def test_reusing_cached_features_never_imports_tensorflow(tmp_path):
    (tmp_path / "harness.toml").write_text(CONFIG)
    generate_demo(tmp_path / "ws" / "data", n_train=20, n_test=6)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT),
           "TF_CPP_MIN_LOG_LEVEL": "3"}

    def features() -> str:
        done = subprocess.run([sys.executable, "-c", IMPORTS_AFTER, "features"], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=300,
                              check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    assert "tensorflow imported: True exit 0" in features()   # extraction needs it
    assert "tensorflow imported: False exit 0" in features()  # reuse does not
