"""Running the `harness` CLI as a user does: a subprocess with a clean environment."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# TensorFlow's native start-up lines (glog format, and absl's notice before its logging
# starts): a user's stderr must never show them unless HARNESS_LOG=debug or --verbose.
NATIVE_LOG_LINE = re.compile(
    r"^(WARNING: All log messages before absl|[IWEF]\d{4} \d\d:\d\d:\d\d)", re.MULTILINE)


def run_harness(*args: str, cwd: Path, env: dict[str, str] | None = None,
                timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m harness ARGS` in `cwd`; `env` (default: a minimal one with HOME=cwd) gets
    the repository on PYTHONPATH, and nothing that would hide what a user's run prints."""
    env = dict(env) if env is not None else {"PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    env.update(PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def mobilenet_toml(top: str, *, heads: dict[str, str], weights: str = 'weights = "none"',
                   folds: int = 3, tail: str = "") -> str:
    """A small config for tests: MobileNet-0.25 features and one `mobilenet-<head>` ensemble
    per head (its value: extra parameter lines).

    Args:
        top: Top-level lines (competition, workspace, data_dir).
        weights: The [features] weights line(s).
        tail: More tables ([blends.*], [competition]).
    """
    ensembles = "".join(f'[ensembles.mobilenet-{head}]\nbackbones = ["mobilenet_025"]\n'
                        f'head = "{head}"\n{extra}' for head, extra in heads.items())
    return (f'{top}\n[features]\nbackbones = ["mobilenet_025"]\n{weights}\n'
            f"[cv]\nfolds = {folds}\n{ensembles}{tail}")
