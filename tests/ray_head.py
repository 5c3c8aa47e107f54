"""A Ray head as a user starts one (`ray start --head --block`), for tests and bench/.

Stopping the `--block` process stops the head's own processes only (`ray stop` would stop
every Ray on the machine). The head gets its own short temp dir: a head records itself in
its temp dir's `ray_current_cluster`, which a later plain local `ray.init` would try to join
once the head is gone, and Ray's socket paths under it must fit a Unix socket name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

START_TIMEOUT_S = 90


@contextlib.contextmanager
def ray_head(num_cpus: int, env: Mapping[str, str] | None = None) -> Iterator[str]:
    """Start a Ray head on this machine; yield its "127.0.0.1:PORT"; stop it on exit.

    Args:
        num_cpus: The CPUs the head offers.
        env: The head's environment (HOME decides its auth token); None: this one's.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    temp_dir = tempfile.mkdtemp(prefix="rayhead-", dir="/tmp")
    log = Path(temp_dir) / "head.log"
    with open(log, "w") as out:
        head = subprocess.Popen(
            [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
             f"--port={port}", f"--num-cpus={num_cpus}", "--include-dashboard=false",
             "--disable-usage-stats", f"--temp-dir={temp_dir}"],
            env=dict(env) if env is not None else dict(os.environ), stdout=out,
            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while "Ray runtime started" not in log.read_text(errors="replace"):
            if head.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start --head did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        head.terminate()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
        shutil.rmtree(temp_dir, ignore_errors=True)
