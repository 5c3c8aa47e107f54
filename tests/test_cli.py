"""The `harness` CLI: bad input gives one line naming the problem, exit 2, no traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.cli_runner import run_harness
from tests.image_files import write_competition


def harness(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_harness(*args, cwd=cwd, timeout=300)


def test_competitions_lists_the_catalog(tmp_path):
    result = harness("competitions", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "dogs-vs-cats-redux-kernels-edition" in result.stdout
    assert "demo" in result.stdout


@pytest.mark.parametrize(
    "args, toml, message",
    [
        (["--competition", "dogs", "features"], None, "unknown competition 'dogs'"),
        (["features"], "[features]\nbackbone = []\n", "did you mean 'backbones'"),
        (["--competition", "dogs-vs-cats-redux-kernels-edition", "--data-dir", "nowhere",
          "features"], None, "nowhere does not exist; run `harness download`"),
        (["--config", "absent.toml", "features"], None, "absent.toml does not exist"),
    ],
    ids=["unknown-competition", "config-typo", "missing-data", "missing-config"],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, toml, message):
    if toml:
        (tmp_path / "harness.toml").write_text(toml)
    result = harness(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, result.stderr


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--backbones", "resnet5"], "unknown backbone 'resnet5'; known: resnet50"),
        (["--backbones", "mobilenet_025", "--weights-dir", "."], "mobilenet_2_5_224_tf_no_top.h5"),
        (["--backbones", "xception", "--weights", "absent.h5"], "absent.h5"),
    ],
    ids=["unknown-backbone", "weights-dir-without-the-file", "missing-weights-file"],
)
def test_backbone_and_weights_mistakes(tmp_path, extra, message):
    write_competition(tmp_path / "data", n_per_class=2, n_test=2)
    result = harness("--competition", "dogs-vs-cats-redux-kernels-edition", "--data-dir", "data",
                     *extra, "features", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, result.stderr
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").rglob("*.h5"))


def test_verbose_shows_the_traceback(tmp_path):
    result = harness("--verbose", "--competition", "dogs", "features", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "HarnessError" in result.stderr


def test_options_work_after_the_verb(tmp_path):
    result = harness("features", "--competition", "dogs", cwd=tmp_path)
    assert result.returncode == 2 and "unknown competition 'dogs'" in result.stderr


def test_demo_data_is_generated_into_the_workspace(tmp_path):
    result = harness("demo-data", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "work" / "demo" / "data" / "train" / "circle.0.jpg").is_file()


def test_half_unpacked_download_is_not_used(tmp_path):
    data = write_competition(tmp_path / "data", n_per_class=2, n_test=2)
    (data / "dogs-vs-cats-redux-kernels-edition.zip").write_bytes(b"PK")  # no completion record
    result = harness("--competition", "dogs-vs-cats-redux-kernels-edition", "--data-dir", "data",
                     "features", cwd=tmp_path)
    assert result.returncode == 2
    assert "not completely unpacked" in result.stderr and "harness download" in result.stderr


@pytest.mark.parametrize(
    "toml, extra, message",
    [
        ("[ensembles.x]\nbackbones = ['mobilenet_025']\nhead = 'logreg'\nCC = 1\n", [],
         "ensemble 'x': unknown parameter 'CC' for head 'logreg'"),
        ("[ensembles.x]\nbackbones = ['mobilenet_025']\nhead = 'dropout'\nepochs = 0\n", [],
         "ensemble 'x': epochs = 0 must be a positive integer"),
        (("[blends.b]\nmembers = ['x', 'nope']\n[ensembles.x]\nbackbones = ['mobilenet_025']\n"
          "head = 'logreg'\n"), [], "blend 'b': unknown member 'nope'"),
        ("[ensembles.x]\nbackbones = ['mobilenet_025']\nhead = 'logreg'\n", ["--ensemble", "y"],
         "unknown ensemble or blend 'y'; known: x"),
    ],
    ids=["head-param-typo", "bad-value", "unknown-blend-member", "unknown-ensemble-option"],
)
def test_ensemble_mistakes_fail_before_any_extraction(tmp_path, toml, extra, message):
    write_competition(tmp_path / "data", n_per_class=2, n_test=2)
    head = ("competition = 'dogs-vs-cats-redux-kernels-edition'\ndata_dir = 'data'\n"
            "workspace = 'ws'\n[features]\nbackbones = ['mobilenet_025']\nweights = 'none'\n")
    (tmp_path / "harness.toml").write_text(head + toml)
    result = harness("submit", *extra, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [f"error: {result.stderr.strip()[7:]}"]
    assert message in result.stderr
    assert not (tmp_path / "ws" / "features").exists()  # nothing was extracted


@pytest.mark.parametrize("verb, expected", [("competitions", "dogs-vs-cats-redux-kernels-edition"),
                                            ("backbones", "xception")])
def test_listing_verbs_need_no_config(tmp_path, verb, expected):
    (tmp_path / "harness.toml").write_text("this is [not toml", encoding="utf-8")
    result = harness(verb, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout


def test_unknown_ensemble_is_refused_before_any_work(tmp_path):
    result = harness("submit", "--ensemble", "no-such-ensemble", cwd=tmp_path)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert "unknown ensemble or blend 'no-such-ensemble'; known: " in last, result.stderr
    assert not (tmp_path / "work").exists()
