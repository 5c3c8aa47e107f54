"""The per-batch pipeline that every executor runs: decode, resize views, forward, pool.

The local loop (features.extract) and the Ray actors (features.ray_engine) both call these,
so a batch gives the same numbers wherever it runs. Below both executors, above the engines
(a `forward` is any engine's: numpy images in, numpy features out).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from competition.images import ImageList
from features.backbones import BackboneSpec
from features.decode import decode_file

RESIZE = "bilinear"  # tf.image.resize, as keras.utils.image_dataset_from_directory does
CROP_SCALE = 256 / 224  # 10-crop: resize to 256 for 224 crops (342 for 299), as in AlexNet


def crop_size(input_size: int) -> int:
    """The side an image is resized to before 10-crop oversampling."""
    return round(input_size * CROP_SCALE)


def view_sizes(jobs: Sequence[Any]) -> list[int]:
    """The sides the decoded images are resized to, once each, for these jobs (job_side)."""
    return sorted({job_side(job.spec, job.tta) for job in jobs})


def image_pixels(path: str | bytes, min_side: int) -> tuple[np.ndarray, str]:
    """One image's RGB uint8 pixels and "" or, when it cannot be read, a 1x1 black
    placeholder and the reason (its features are dropped or zeroed at assembly).

    Shared by the local tf.data pipeline and the Ray actors (features.ray_engine)."""
    pixels, reason = decode_file(os.fsdecode(path), min_side)
    if pixels is None:
        return np.zeros((1, 1, 3), np.uint8), reason
    return pixels, ""


def resize_views(pixels: Any, sizes: Sequence[int]) -> tuple:
    """One float32 (s, s, 3) view of `pixels` per size: traced into tf.data locally, run
    eagerly in a Ray actor (the same op, so the same numbers)."""
    import tensorflow as tf

    return tuple(tf.image.resize(pixels, (s, s), method=RESIZE) for s in sizes)


def job_side(spec: BackboneSpec, tta: str) -> int:
    """The side of the resized view a (backbone, tta) job reads."""
    return crop_size(spec.input_size) if tta == "crops" else spec.input_size


def batch_features(wanted: Sequence[tuple[BackboneSpec, str]], views: Mapping[int, Any],
                   forwards: Mapping[str, Any]) -> list[tuple[np.ndarray, float]]:
    """The per-batch step of every executor: features (and model seconds) of each wanted
    (backbone, tta) job from the batch's resized views ({side: (B, side, side, 3)}).

    The local loop (`_run_split`) and the Ray actors (features.ray_engine) both call it."""
    cache: dict = {}
    out = []
    for spec, tta in wanted:
        start = time.perf_counter()
        values = tta_features(forwards[spec.name], views[job_side(spec, tta)], tta, cache)
        out.append((np.asarray(values, dtype=np.float32), time.perf_counter() - start))
    return out


def tta_features(forward: Any, batch: Any, tta: str, cache: dict) -> np.ndarray:
    """Features of one batch under a TTA mode; plain features are shared across modes.
    GAP features average the views; a `_maps` entry's flip keeps both (stored_dim).

    One copy for every engine: `forward` takes and returns numpy arrays (features.engines).
    """
    batch = np.asarray(batch)
    key = (id(forward), "plain")
    if tta in ("none", "flip"):
        if key not in cache:
            cache[key] = forward(batch)
        if tta == "none":
            return cache[key]
        mirrored = forward(batch[:, :, ::-1, :])
        if forward.spec.maps_of:  # maps side by side: an average of two maps is no image's
            return np.concatenate([cache[key], mirrored], axis=1)
        return (cache[key] + mirrored) / 2.0
    side, size = int(batch.shape[1]), forward.spec.input_size
    far = side - size
    mid = far // 2
    total = None
    for top, left in ((0, 0), (0, far), (far, 0), (far, far), (mid, mid)):
        crop = batch[:, top:top + size, left:left + size, :]
        for view in (crop, crop[:, :, ::-1, :]):
            out = forward(view)
            total = out if total is None else total + out
    return total / 10.0


def decoded_batches(images: ImageList, rows: np.ndarray, sizes: list[int], batch_size: int,
                    map_threads: int) -> Any:
    """tf.data: decode each image once (parallel), resize once per size, batch, prefetch."""
    import tensorflow as tf

    # Paths travel as bytes: a folder name that is not UTF-8 (a Latin-1 byte) has no
    # TensorFlow string form, and os.fsdecode gives back exactly the name on disk.
    paths = [os.fsencode(images.paths[r]) for r in rows]
    min_side = max(sizes)

    def load(path: Any) -> tuple:
        return image_pixels(path.numpy(), min_side)

    def load_graph(path: Any, row: Any) -> tuple:
        pixels, reason = tf.py_function(load, [path], [tf.uint8, tf.string])
        pixels.set_shape([None, None, 3])
        return resize_views(pixels, sizes), reason, row

    # Decoding is 1-2% of the models' compute on CPU, so one call per core hides it;
    # tf.data's autotuner adds nothing here and its background thread made every iterator's
    # teardown wait seconds (measured 3-4.5 s per split with three backbones).
    parallel = map_threads if map_threads > 0 else (os.cpu_count() or 1)
    options = tf.data.Options()
    options.autotune.enabled = False
    dataset = tf.data.Dataset.from_tensor_slices((paths, np.asarray(rows, np.int64)))
    return (dataset.map(load_graph, num_parallel_calls=parallel, deterministic=True)
            .batch(batch_size).prefetch(2).with_options(options))
