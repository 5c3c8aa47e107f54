"""Fingerprints: what a feature file was computed from, and what changed since.

The fingerprint is the sha256 of a JSON dict of parts (image lists, backbone, input size,
weights identity, TTA, preprocessing, precision, decoder). The parts are stored beside it
in the file, so a mismatch can say which part changed instead of only "it differs".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import numpy as np

from competition.images import ImageList


def installed_version(name: str) -> str:
    """The installed version of package `name`, read without importing it; "absent" when
    it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def ids_digest(ids: Sequence[str]) -> str:
    """sha256 of the ids in order (verifies merged shards without the image files)."""
    return hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest()


def image_list_digest(images: ImageList) -> dict:
    """Digest of an image list: ids, file names, sizes and modification times.

    Content is not hashed (stat only) so that checking a cached file over 25,000 images
    takes milliseconds; a file rewritten in place changes its size or mtime.
    """
    digest = hashlib.sha256()
    for image_id, path in zip(images.ids, images.paths):
        try:
            stat = Path(path).stat()
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:
            size, mtime = -1, -1
        digest.update(f"{image_id}\0{Path(path).name}\0{size}\0{mtime}\n".encode())
    if images.labels is not None:
        labels = np.asarray(images.labels)
        if labels.ndim == 1 and labels.dtype.kind in "iu":
            # Class indices, spelt as before: existing feature files keep their fingerprint.
            digest.update(",".join(str(int(v)) for v in labels).encode("ascii"))
        else:  # tags (n, t) or regression values
            digest.update(json.dumps([labels.dtype.str, labels.tolist()]).encode("ascii"))
    digest.update(json.dumps(list(images.classes)).encode("utf-8"))
    return {"count": len(images), "digest": digest.hexdigest()}


def fingerprint_of(parts: dict) -> str:
    """The sha256 of `parts` (a JSON-serialisable dict)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()


def describe_changes(old: dict, new: dict) -> str:
    """One line saying which parts differ between two fingerprint dicts."""
    changes = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        if isinstance(before, dict) and isinstance(after, dict) and "count" in after:
            if before.get("count") != after.get("count"):
                changes.append(f"{key} images changed ({before.get('count')} -> "
                               f"{after.get('count')} images)")
            else:
                changes.append(f"{key} images changed (same count; names, sizes, "
                               "modification times or labels differ)")
        else:
            changes.append(f"{key} changed ({before!r} -> {after!r})")
    return "; ".join(changes) or "fingerprint differs"
