"""Content hashes of files (weights identity, uploaded-file identity)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from base.atomic import atomic_path
from base.workspace import user_cache_dir

logger = logging.getLogger(__name__)

_MEMORY_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """The hex sha256 of the file's bytes, read in 1 MiB blocks (weights files are ~100 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cache_file() -> Path:
    return user_cache_dir() / "sha256.json"


def cached_file_sha256(path: Path) -> str:
    """`file_sha256`, cached in memory and on disk by (resolved path, size, mtime_ns).

    For large files hashed on every run (weights: an 83 MB file is hashed once)."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key in _MEMORY_CACHE:
        return _MEMORY_CACHE[key]
    cache_path = _cache_file()
    text_key = f"{key[0]}|{key[1]}|{key[2]}"
    try:
        disk = json.loads(cache_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        disk = {}
    if text_key in disk:
        _MEMORY_CACHE[key] = disk[text_key]
        return disk[text_key]
    value = file_sha256(path)
    _MEMORY_CACHE[key] = value
    disk[text_key] = value
    # The cache is an optimisation: failing to write it must never fail a run.
    try:
        with atomic_path(cache_path) as tmp:
            tmp.write_text(json.dumps(disk), encoding="utf-8")
    except OSError as exc:
        logger.debug("could not write the sha256 cache %s: %s", cache_path, exc)
    return value
