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

import h5py
import numpy as np

from base.atomic import atomic_path
from base.errors import HarnessError
from competition.images import ImageList, natural_key
from features.fingerprint import ids_digest
from features.store import STRING, feature_path

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


def _attrs(handle: h5py.File) -> dict:
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in handle.attrs.items()}


def _strings(dataset: h5py.Dataset) -> list:
    return list(dataset.asstr()[()]) if dataset.shape[0] else []


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
    handles = [h5py.File(path, "r") for path in paths]
    try:
        attrs = [_attrs(h) for h in handles]
        for path, a in zip(paths, attrs):
            if not a.get("complete"):
                raise HarnessError(f"{path} is incomplete; rerun its shard to finish it")
            if a.get("shard") != f"{paths.index(path) + 1}/{n}":
                raise HarnessError(f"{path} says it is shard {a.get('shard')!r}, not of {n}")
        for key in _FULL_KEYS:
            values = {a.get(key) for a in attrs}
            if len(values) != 1:
                raise HarnessError(f"shards of {final.name} disagree on {key}: they come from "
                                   "different image lists or settings; rerun all shards")
        first = attrs[0]
        with atomic_path(final) as tmp, h5py.File(tmp, "w") as out:
            for split, bad_name in (("train", "skipped"), ("test", "failed")):
                _merge_split(out, handles, paths, split, bad_name, first)
            for key, value in first.items():
                if key not in _FULL_KEYS and not key.startswith("full_"):
                    out.attrs[key] = value
            out.attrs["fingerprint"] = first["full_fingerprint"]
            out.attrs["fingerprint_parts"] = first["full_fingerprint_parts"]
            out.attrs["shard"] = ""
            out.attrs["merged_from"] = json.dumps([p.name for p in paths])
            out.attrs["complete"] = True
    finally:
        for handle in handles:
            handle.close()
    logger.info("merged %d shards into %s", n, final)
    return final


def _merge_split(out: h5py.File, handles: list, paths: list, split: str, bad_name: str,
                 first: dict) -> None:
    owner: dict[str, int] = {}
    ids_all: list[tuple[str, int, int]] = []  # (id, shard, row in shard)
    bad: list[list[str]] = []
    for s, handle in enumerate(handles):
        group = handle[split]
        shard_ids = _strings(group["ids"])
        shard_bad = [list(pair) for pair in group[bad_name].asstr()[()]] if len(group[bad_name]) else []
        for image_id in shard_ids + [pair[0] for pair in shard_bad if split == "train"]:
            if image_id in owner:
                raise HarnessError(f"id {image_id!r} of /{split} is in both {paths[owner[image_id]]}"
                                   f" and {paths[s]}; a shard was doubled: rerun it")
            owner[image_id] = s
        ids_all += [(image_id, s, row) for row, image_id in enumerate(shard_ids)]
        bad += shard_bad
    expected = int(first[f"full_{split}_count"])
    if len(owner) != expected:
        raise HarnessError(f"/{split}: the shards hold {len(owner)} ids but the image list has "
                           f"{expected}; a shard is missing rows: rerun the shards")
    if ids_digest(sorted(owner, key=natural_key)) != first[f"full_{split}_ids_digest"]:
        raise HarnessError(f"/{split}: the shards' ids differ from the image list's; rerun them")
    ids_all.sort(key=lambda item: natural_key(item[0]))
    dim = int(first["feature_dim"])
    group = out.create_group(split)
    rows = len(ids_all)
    features = group.create_dataset("features", shape=(rows, dim), dtype="f4",
                                    chunks=(max(1, min(rows, (1 << 20) // (4 * dim))), dim),
                                    maxshape=(None, dim), fillvalue=0.0)
    group.create_dataset("ids", data=np.asarray([i for i, _, _ in ids_all], dtype=object),
                         dtype=STRING, shape=(rows,))
    positions = np.arange(rows)
    shard_of = np.asarray([s for _, s, _ in ids_all], dtype=np.int64)
    row_of = np.asarray([r for _, _, r in ids_all], dtype=np.int64)
    labels = np.zeros(rows, dtype=np.int64)
    # One shard at a time keeps memory at one shard's features, not the whole file's.
    for s, handle in enumerate(handles):
        mine = shard_of == s
        if not mine.any():
            continue
        source = handle[split]["features"][()]
        features[positions[mine].tolist()] = source[row_of[mine]]
        if split == "train":
            labels[mine] = handle[split]["labels"][()][row_of[mine]]
    if split == "train":
        group.create_dataset("labels", data=labels)
    bad.sort(key=lambda pair: natural_key(pair[0]))
    data = np.asarray(bad, dtype=object).reshape(len(bad), 2)
    group.create_dataset(bad_name, data=data, dtype=STRING, shape=(len(bad), 2))
