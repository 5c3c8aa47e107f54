"""Logging set-up: TensorFlow's native start-up lines hidden unless asked for, and replayed
when its import fails. A stand-in `tensorflow` package writes to file descriptor 2 the way
native code does (os.write, below Python's sys.stderr), so the hook is checked on its own;
tests/test_end_to_end.py checks the real TensorFlow through the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.cli_runner import REPO

STAND_IN = """
import os
os.write(2, b"I0000 00:00:1.0 123 cudart_stub.cc:31] Could not find cuda drivers\\n")
if os.environ.get("STAND_IN_FAILS"):
    raise ImportError("libcudart.so: cannot open shared object file")

class config:
    @staticmethod
    def list_physical_devices():
        os.write(2, b"E0000 00:00:2.0 123 cuda_platform.cc:52] failed call to cuInit\\n")
        return []
"""
DRIVER = """
from base.logs import configure_logging
configure_logging()
import tensorflow
print("imported", tensorflow.__loader__.__class__.__name__)
"""


def run_driver(tmp_path, **env: str) -> subprocess.CompletedProcess:
    package = tmp_path / "site" / "tensorflow"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(textwrap.dedent(STAND_IN), encoding="utf-8")
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
                   "PYTHONPATH": f"{tmp_path / 'site'}{os.pathsep}{REPO}", **env}
    return subprocess.run([sys.executable, "-c", DRIVER], env=environment, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)


def test_native_start_up_lines_are_hidden_by_default(tmp_path):
    done = run_driver(tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # neither the import's line nor the device query's
    # The module's loader is the real one again: nothing downstream sees the hook.
    assert done.stdout.strip() == "imported SourceFileLoader"


@pytest.mark.parametrize("switch", ["HARNESS_LOG=debug", "HARNESS_LOG=DEBUG "])
def test_harness_log_debug_brings_the_native_lines_back(tmp_path, switch):
    name, value = switch.split("=")
    done = run_driver(tmp_path, **{name: value})
    assert done.returncode == 0, done.stderr
    assert "Could not find cuda drivers" in done.stderr


def test_a_failed_import_replays_what_it_wrote(tmp_path):
    done = run_driver(tmp_path, STAND_IN_FAILS="1")
    assert done.returncode == 1
    # The captured native line first, then Python's own error: the user still sees why.
    assert "Could not find cuda drivers" in done.stderr
    assert done.stderr.index("cuda drivers") < done.stderr.index("ImportError: libcudart")


def test_a_user_error_is_one_line_and_harness_log_debug_adds_the_traceback(tmp_path):
    from tests.cli_runner import run_harness

    args = ("--competition", "demo", "features", "--precision", "int8", "--engine",
            "tensorflow")
    plain = run_harness(*args, cwd=tmp_path, timeout=300)
    assert plain.returncode == 2 and plain.stderr.strip().count("\n") == 0, plain.stderr
    assert plain.stderr.startswith("error: ") and "Traceback" not in plain.stderr
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HARNESS_LOG": "debug"}
    debug = run_harness(*args, cwd=tmp_path, env=env, timeout=300)
    assert debug.returncode == 2 and "Traceback" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == plain.stderr.strip()
