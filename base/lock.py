"""A workspace lock: one writer of a workspace's feature files at a time.

Two `harness features` runs on one workspace share its partial folders: the first to finish
deletes what the second is still writing. The lock is an `fcntl.flock` on a small file in
the workspace; the kernel releases it when its holder exits, however it exits (a SIGKILL
included), so a killed run's lock is simply taken over by the next one. The file holds the
holder's pid, host and command, only to say who is using the workspace.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from base.atomic import usual_mode
from base.errors import HarnessError


@contextmanager
def workspace_lock(path: Path, what: str) -> Iterator[Path]:
    """Hold the lock file `path` for the block; refuse at once when another process holds it.

    Args:
        path: The lock file (created, never deleted: deleting a flock'ed file would let two
            processes lock two different files of the same name).
        what: What the holder is doing, written into the file for the refusal message.

    Raises:
        HarnessError: another live process holds the lock (names the file and its pid).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, usual_mode())
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown"
            raise HarnessError(
                f"the workspace is in use: {path} is locked by {holder}; wait for that run to "
                "finish (or stop it) and rerun"
            ) from None
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        record = f"pid {os.getpid()} on {socket.gethostname()} ({what}, since {stamp})\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the flock

