"""Atomic file writes: nothing half-written is ever read as complete."""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

FILE_MODE = 0o666
DIR_MODE = 0o777


def current_umask() -> int:
    """The process's umask, read without changing it where Linux tells it (/proc), so that
    another thread creating a file meanwhile never sees a umask of 0."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def usual_mode(directory: bool = False) -> int:
    """The mode `open()` or `mkdir()` would give a new file or folder: 0666 (0777) & ~umask.

    `mkstemp` and `mkdtemp` create theirs 0600 / 0700 whatever the umask; the harness's
    outputs get the usual mode back so that teammates, Docker volumes and notebook viewers
    read them as they read any other file the user writes.
    """
    return (DIR_MODE if directory else FILE_MODE) & ~current_umask()


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A fresh temporary file beside `path` to write; renamed onto `path` when the block
    succeeds, deleted when it raises (so an error or Ctrl-C leaves the old file as it was).

    The temporary name starts with a dot and ends in `.tmp`: never mistaken for the real one.
    It names the writer (`.NAME.HOST-PID.XXXX.tmp`) so that `remove_stale_temps` can delete
    what a killed writer left behind. The file gets the mode a plain `open()` would give it (0666 & ~umask), not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.{writer_tag()}.", suffix=".tmp",
                                dir=path.parent)
    try:
        os.fchmod(fd, usual_mode())
    finally:
        os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# `.NAME.HOST-PID.XXXX.tmp`; the host keeps a shared folder's other machines' files safe.
_TEMP_NAME = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)\.[^.]+\.tmp$")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


def writer_tag() -> str:
    return f"{_host()}-{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete the temporary files (and staging folders named like them:
    `.NAME.HOST-PID.XXXX.tmp`) under `folder` (recursively) whose writer is gone.

    A writer killed mid-write (SIGKILL, power loss) cannot clean up its temp file, which may
    be hundreds of MB (a feature file). Only files written by `atomic_path` on this host by a
    process that no longer exists are deleted; a live writer's file, another machine's file
    on a shared folder and any other name are left alone.

    Returns:
        The deleted paths.
    """
    host, removed = _host(), []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for path in folder.rglob(".*.tmp"):
        match = _TEMP_NAME.match(path.name)
        if not match or match["host"] != host or _alive(int(match["pid"])):
            continue
        try:
            if path.is_dir():
                size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
                shutil.rmtree(path)
            else:
                size = path.stat().st_size
                path.unlink()
        except FileNotFoundError:
            continue
        logger.info("removed %s (%d bytes) left by a killed writer (pid %s)", path, size,
                    match["pid"])
        removed.append(path)
    return removed
