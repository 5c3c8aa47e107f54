"""Safe unpacking of downloaded archives (zip, tar): nothing may land outside the target.

Entries with absolute paths, `..` components, links or device files are refused before a
single byte is written. Each file is written to a temporary name and renamed when complete,
so an interrupted extraction never leaves a half-written file under the final name; a file
already present with the entry's size is kept (that is how a rerun skips finished work).
"""

from __future__ import annotations

import logging
import stat
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from tqdm.auto import tqdm

from base.atomic import atomic_path
from base.errors import HarnessError

logger = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")


@dataclass(frozen=True)
class _Entry:
    name: str
    size: int
    is_dir: bool
    open: Callable[[], IO[bytes]]


def is_archive(path: Path) -> bool:
    """Whether `path` is a file name the harness unpacks."""
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _checked_target(archive: Path, name: str, dest: Path) -> Path:
    """The destination of entry `name`, or a HarnessError when it would escape `dest`."""
    posix = name.replace("\\", "/")
    parts = PurePosixPath(posix).parts
    drive = len(posix) > 1 and posix[1] == ":"
    if posix.startswith("/") or drive or ".." in parts:
        raise HarnessError(
            f"{archive}: refusing entry {name!r} (absolute path or '..' would escape {dest}); "
            "the archive is unsafe, nothing was extracted from it"
        )
    target = (dest / Path(*[p for p in parts if p not in ("", ".")])).resolve()
    root = dest.resolve()
    if target != root and root not in target.parents:
        raise HarnessError(
            f"{archive}: refusing entry {name!r} (resolves outside {dest}); nothing was extracted"
        )
    return target


def _refused(archive: Path, name: str) -> HarnessError:
    return HarnessError(f"{archive}: refusing entry {name!r} (a link or special file); "
                        "nothing was extracted")


def _zip_entries(archive: Path, handle: zipfile.ZipFile) -> list[_Entry]:
    entries = []
    for info in handle.infolist():
        # Unix file type bits; 0 when the archiver stored none (e.g. Windows zips).
        kind = stat.S_IFMT(info.external_attr >> 16)
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise _refused(archive, info.filename)
        entries.append(_Entry(info.filename, info.file_size, info.is_dir(),
                              lambda info=info: handle.open(info)))
    return entries


def _tar_entries(archive: Path, handle: tarfile.TarFile) -> list[_Entry]:
    entries = []
    for member in handle.getmembers():
        if not (member.isfile() or member.isdir()):
            raise _refused(archive, member.name)
        entries.append(_Entry(member.name, member.size, member.isdir(),
                              lambda m=member: handle.extractfile(m)))
    return entries


def _write_atomically(source: IO[bytes], target: Path, progress: tqdm) -> None:
    with atomic_path(target) as tmp, open(tmp, "wb") as out, source:
        while chunk := source.read(1 << 20):
            out.write(chunk)
            progress.update(len(chunk))


def safe_extract(archive: Path, dest: Path, *, force: bool = False) -> list[Path]:
    """Unpack `archive` (zip or tar) into `dest`, refusing entries that would escape it.

    Every entry is checked before anything is written. Files already present with the
    entry's size are skipped unless `force`.

    Returns:
        The extracted (or already present) files, in archive order.

    Raises:
        HarnessError: an unreadable archive, or an absolute / `..` / link / device entry.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            context: Any = zipfile.ZipFile(archive)
            lister = _zip_entries
        elif tarfile.is_tarfile(archive):
            context = tarfile.open(archive)  # noqa: SIM115 - closed by `with` below
            lister = _tar_entries
        else:
            raise HarnessError(
                f"{archive}: not a zip or tar archive (truncated download?); delete it and run "
                "`harness download` again"
            )
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as exc:
        raise HarnessError(f"{archive}: cannot open ({exc}); delete it and download again") from None
    with context as handle:
        entries = lister(archive, handle)
        targets = [_checked_target(archive, e.name, dest) for e in entries]
        todo = [(e, t) for e, t in zip(entries, targets)
                if not e.is_dir and (force or not (t.is_file() and t.stat().st_size == e.size))]
        files = [t for e, t in zip(entries, targets) if not e.is_dir]
        if len(todo) < len(files):
            logger.info("%s: %d of %d files already present", archive.name,
                        len(files) - len(todo), len(files))
        total = sum(e.size for e, _ in todo)
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                  desc=f"unpack {archive.name}", leave=False,
                  disable=not todo or not logger.isEnabledFor(logging.INFO)) as progress:
            for entry, target in todo:
                try:
                    _write_atomically(entry.open(), target, progress)
                except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
                    raise HarnessError(
                        f"{archive}: entry {entry.name!r} is corrupt ({exc}); delete the archive "
                        "and run `harness download --force`"
                    ) from None
        for entry, target in zip(entries, targets):
            if entry.is_dir:
                target.mkdir(parents=True, exist_ok=True)
    logger.info("unpacked %s: %d files into %s", archive.name, len(files), dest)
    return files


def extract_nested(archive: Path, dest: Path, *, force: bool = False, depth: int = 3) -> list[Path]:
    """`safe_extract`, then unpack every archive found inside next to where it landed.

    Kaggle ships e.g. `dogs-vs-cats-redux-kernels-edition.zip` holding `train.zip` and
    `test.zip`; the inner archives are kept (they are cheap to skip on a rerun).

    Returns:
        Every non-archive file extracted at any level.
    """
    files = []
    for path in safe_extract(archive, dest, force=force):
        if is_archive(path) and depth > 0:
            files += extract_nested(path, path.parent, force=force, depth=depth - 1)
        else:
            files.append(path)
    return files

