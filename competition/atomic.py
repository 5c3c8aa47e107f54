"""Atomic file writes: nothing half-written is ever read as complete."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
    The file gets the mode a plain `open()` would give it (0666 & ~umask), not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
