"""Ray nodes as a user starts them (`ray start --head --block`, `ray start --address
--block`), for tests and bench/.

Stopping a `--block` process stops that node's own processes only (`ray stop` would stop
every Ray on the machine). Each node gets its own short temp dir: a head records itself in
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


def free_port() -> int:
    """A TCP port free on this machine now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def ray_head(num_cpus: int, env: Mapping[str, str] | None = None,
             client_port: int = 0) -> Iterator[str]:
    """Start a Ray head on this machine; yield its "127.0.0.1:PORT"; stop it on exit.

    Args:
        num_cpus: The CPUs the head offers.
        env: The head's environment (HOME decides its auth token); None: this one's.
        client_port: The port of its Ray Client server (0: Ray's default, 10001).
    """
    port = free_port()
    client = [f"--ray-client-server-port={client_port}"] if client_port else []
    with _ray_start(["--head", f"--port={port}", f"--num-cpus={num_cpus}",
                     "--include-dashboard=false", *client], env):
        yield f"127.0.0.1:{port}"


@contextlib.contextmanager
def ray_node(address: str, num_cpus: int,
             env: Mapping[str, str] | None = None) -> Iterator[None]:
    """Join a second node on this machine to the head at `address` (a two-node cluster on
    one machine, as Ray's own tests build one); stop it on exit.

    Args:
        address: The head's "HOST:PORT".
        num_cpus: The CPUs the node offers.
        env: The node's environment; a head with token authentication needs
            RAY_AUTH_MODE=token and the token here (`ray start --address` does not turn it
            on by itself in Ray 2.60); None: this one's.
    """
    with _ray_start([f"--address={address}", f"--num-cpus={num_cpus}"], env, prefix="raynode-"):
        yield


@contextlib.contextmanager
def _ray_start(args: list[str], env: Mapping[str, str] | None,
               prefix: str = "rayhead-") -> Iterator[None]:
    """`ray start ARGS --block` with its own temp dir, its output in a log file polled
    against a deadline (a silent node cannot hang the caller; a pipe nobody drains cannot
    block the node), stopped (SIGTERM, then SIGKILL) on exit."""
    temp_dir = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    log = Path(temp_dir) / "ray-start.log"
    env = dict(env) if env is not None else dict(os.environ)
    # On SIGTERM a `--block` node first drains, and once a driver has run Ray Data there
    # (its detached helper actors) it waited out the whole 30 s default before stopping.
    env.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")
    with open(log, "w") as out:
        node = subprocess.Popen(
            [str(Path(sys.executable).with_name("ray")), "start", *args, "--block",
             "--disable-usage-stats", f"--temp-dir={temp_dir}"],
            env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while "Ray runtime started" not in log.read_text(errors="replace"):
            if node.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start {args[0]} did not start:\n"
                                   f"{log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield
    finally:
        node.terminate()
        try:
            node.wait(timeout=60)
        except subprocess.TimeoutExpired:
            node.kill()
        shutil.rmtree(temp_dir, ignore_errors=True)
