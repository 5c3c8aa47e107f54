"""Running the `harness` CLI as a user does: a subprocess with a clean environment."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_harness(*args: str, cwd: Path, env: dict[str, str] | None = None,
                timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m harness ARGS` in `cwd`; `env` (default: a minimal one with HOME=cwd) gets
    the repository on PYTHONPATH and TensorFlow's start-up chatter silenced."""
    env = dict(env) if env is not None else {"PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    env.update(PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
