"""The Makefile passes every path to `harness` as one argument, spaces and quotes included."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def _fake_venv(tmp_path: Path) -> Path:
    """A VENV whose `bin/harness` prints its argv as JSON, and whose install stamp is fresh
    (so `setup` installs nothing)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    harness = venv / "bin" / "harness"
    harness.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    harness.chmod(0o755)
    stamp = venv / ".installed"
    stamp.touch()
    newest = max((REPO / name).stat().st_mtime for name in ("requirements.lock", "pyproject.toml"))
    os.utime(stamp, (newest + 60, newest + 60))
    return venv


@pytest.mark.parametrize("target", ["submit", "upload", "leaderboard"])
def test_make_passes_paths_with_spaces_and_quotes_as_one_argument(tmp_path, target):
    venv = _fake_venv(tmp_path)
    values = {"CONFIG": "my config.toml", "WORKSPACE": "a b", "DATA_DIR": "it's here",
              "WEIGHTS_DIR": "w `x` \"q\"; exit 3", "WEIGHTS": "two  spaces.h5",
              "ENSEMBLE": "e f"}
    done = subprocess.run(["make", "-s", "-C", str(REPO), target, f"VENV={venv}",
                           *(f"{name}={value}" for name, value in values.items())],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    argv = json.loads(done.stdout)
    expected = [target, "--config", "my config.toml", "--data-dir", "it's here",
                "--weights-dir", "w `x` \"q\"; exit 3", "--weights", "two  spaces.h5",
                "--workspace", "a b"]
    if target in ("submit", "upload"):
        expected += ["--ensemble", "e f"]
    assert argv == expected
