"""Shards: split extraction over machines or processes, then merge the files by id.

Shard (i, n), 1 <= i <= n as on the command line (`--shard 1/4` ... `--shard 4/4`), holds
every n-th image of each split starting at the i-th (a deterministic subset of the
naturally ordered lists). Each shard file records the full image lists'
fingerprint, counts and id digests, so the merge can check that the shards belong
together and that no image is missing or doubled before it writes the full file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from base.errors import HarnessError
from competition.images import ImageList, natural_key
from features.fingerprint import ids_digest
from features.store import (
    FeatureFileWriter,
    feature_file_writer,
    feature_path,
    load_split,
    read_attrs,
    read_bad,
    read_ids,
    read_labels,
)

logger = logging.getLogger(__name__)

_FULL_KEYS = ("full_fingerprint", "full_train_count", "full_test_count",
              "full_train_ids_digest", "full_test_ids_digest")


def shard_images(images: ImageList, shard: tuple[int, int] | None) -> ImageList:
    """The deterministic subset of shard (i, n): every n-th image from the i-th (1-based)."""
    if shard is None:
        return images
    i, n = shard
    return images.subset(np.arange(i - 1, len(images), n))


def shard_path(path: Path, shard: tuple[int, int]) -> Path:
    """The file of shard (i, n) beside the full file."""
    i, n = shard
    return path.with_name(f"{path.stem}.shard-{i}-of-{n}{path.suffix}")


def merge_shards(features_dir: Path, backbone: str, tta: str, n: int) -> Path:
    """Assemble the n shard files of (backbone, tta) into the full feature file, by id.

    Returns:
        The merged file's path (store.feature_path), complete and carrying the full
        image lists' fingerprint, so a later unsharded run reuses it.

    Raises:
        HarnessError: a shard is missing, incomplete or from another image list, an id
            appears in two shards, or ids are missing.
    """
    final = feature_path(features_dir, backbone, tta)
    paths = [shard_path(final, (i, n)) for i in range(1, n + 1)]
    for i, path in enumerate(paths, start=1):
        if not path.is_file():
            raise HarnessError(f"shard {i} of {n} is missing: {path}; run `harness features "
                               f"--shard {i}/{n}` first")
    attrs = [read_attrs(path) for path in paths]
    for i, (path, a) in enumerate(zip(paths, attrs), start=1):
        if not a.get("complete"):
            raise HarnessError(f"{path} is incomplete; rerun its shard to finish it")
        if a.get("shard") != f"{i}/{n}":
            raise HarnessError(f"{path} says it is shard {a.get('shard')!r}, not of {n}")
    engines = {json.loads(a.get("full_fingerprint_parts") or "{}").get("engine", "tensorflow")
               for a in attrs}
    if len(engines) > 1:
        raise HarnessError(f"shards of {final.name} were extracted by different engines "
                           f"({', '.join(sorted(engines))}); rerun them with the same "
                           "--engine (e.g. --engine tensorflow on every machine)")
    for key in _FULL_KEYS:
        values = {a.get(key) for a in attrs}
        if len(values) != 1:
            raise HarnessError(f"shards of {final.name} disagree on {key}: they come from "
                               "different image lists or settings; rerun all shards")
    first = attrs[0]
    merged = {k: v for k, v in first.items() if not k.startswith("full_") and k != "complete"}
    merged.update(fingerprint=first["full_fingerprint"],
                  fingerprint_parts=first["full_fingerprint_parts"], shard="",
                  merged_from=json.dumps([p.name for p in paths]))
    bad = [read_bad(path) for path in paths]
    with feature_file_writer(final, merged) as writer:
        for split in ("train", "test"):
            _merge_split(writer, paths, bad, split, first)
    logger.info("merged %d shards into %s", n, final)
    return final


def _merge_split(writer: FeatureFileWriter, paths: list[Path], bad: list[dict], split: str,
                 first: dict) -> None:
    owner: dict[str, int] = {}
    ids_all: list[tuple[str, int, int]] = []  # (id, shard, row in shard)
    bad_all: list[tuple[str, str]] = []
    for s, path in enumerate(paths):
        shard_ids = list(read_ids(path, split))
        shard_bad = bad[s][split]
        for image_id in shard_ids + [pair[0] for pair in shard_bad if split == "train"]:
            if image_id in owner:
                raise HarnessError(f"id {image_id!r} of /{split} is in both {paths[owner[image_id]]}"
                                   f" and {path}; a shard was doubled: rerun it")
            owner[image_id] = s
        ids_all += [(image_id, s, row) for row, image_id in enumerate(shard_ids)]
        bad_all += shard_bad
    expected = int(first[f"full_{split}_count"])
    if len(owner) != expected:
        raise HarnessError(f"/{split}: the shards hold {len(owner)} ids but the image list has "
                           f"{expected}; a shard is missing rows: rerun the shards")
    if ids_digest(sorted(owner, key=natural_key)) != first[f"full_{split}_ids_digest"]:
        raise HarnessError(f"/{split}: the shards' ids differ from the image list's; rerun them")
    ids_all.sort(key=lambda item: natural_key(item[0]))
    shard_of = np.asarray([s for _, s, _ in ids_all], dtype=np.int64)
    row_of = np.asarray([r for _, _, r in ids_all], dtype=np.int64)
    labels = None
    if split == "train":
        for s, path in enumerate(paths):
            shard_labels = read_labels(path)
            if labels is None:
                labels = np.zeros((len(ids_all), *shard_labels.shape[1:]), shard_labels.dtype)
            labels[shard_of == s] = shard_labels[row_of[shard_of == s]]
    bad_all.sort(key=lambda pair: natural_key(pair[0]))
    writer.add_split(split, [i for i, _, _ in ids_all], int(first["feature_dim"]),
                     labels=labels, bad=bad_all,
                     dtype=str(first.get("feature_dtype", "float32")))
    # One shard at a time keeps memory at one shard's features, not the whole file's.
    for s, path in enumerate(paths):
        mine = np.flatnonzero(shard_of == s)
        if len(mine):
            writer.write_rows(split, mine, load_split(path, split).features[row_of[mine]])
