"""The images precision int8 calibrates on: a fixed seeded subset of the training images,
decoded by the extraction's own pipeline (features.batch), and the recipe's identity.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from base.errors import HarnessError
from competition.images import ImageList
from features.batch import decoded_batches
from features.fingerprint import image_list_digest
from features.openvino_engine import QUANTIZER_VERSION

# Precision int8 calibrates NNCF on this many training images (all when there are fewer):
# 300 is NNCF's own default subset_size. Measured on Xception with genuine weights: 26.6 s
# to quantise on 2 cores, per-row cosine to float32 0.997 (median), the same held-out log
# loss (bench/README.md "int8").
CALIBRATION_IMAGES = 300


CALIBRATION_SEED = 0


# How an int8 file was quantised: its fingerprint's "quantization" part (int8 files only).
QUANTIZATION = (f"calibrated on {CALIBRATION_IMAGES} training images (seed "
                f"{CALIBRATION_SEED}); {QUANTIZER_VERSION}")


@dataclass(frozen=True)
class Calibration:
    """The images precision int8 calibrates on: a fixed seeded subset of the training images,
    decoded and resized by the extraction's own pipeline (`decoded_batches`).

    Attributes:
        images: The training images chosen (CALIBRATION_IMAGES, or all when fewer).
        identity: What the quantised model depends on (OpenVINO's cache key): the recipe and
            a digest of the chosen ids, file names, sizes and modification times (stat only,
            as the feature files' fingerprints).
        map_threads: Parallel decode calls (0: one per core).
    """

    images: ImageList
    identity: str
    map_threads: int = 0

    @property
    def count(self) -> int:
        return len(self.images)

    @property
    def description(self) -> str:
        return f"{self.count} training images"

    def samples(self, size: int) -> _CalibrationSamples:
        """A re-iterable of (1, size, size, 3) float32 RGB 0-255 images (the forward's
        input); an image that cannot be read is left out."""
        return _CalibrationSamples(self, size)


class _CalibrationSamples:
    """Decoded lazily on each pass (NNCF may iterate more than once): 300 Xception inputs
    held in memory would be 320 MB."""

    def __init__(self, calibration: Calibration, size: int) -> None:
        self.calibration, self.size = calibration, size

    def __iter__(self) -> Iterator[np.ndarray]:
        images = self.calibration.images
        rows = np.arange(len(images))
        for resized, reasons, _ in decoded_batches(images, rows, [self.size], 32,
                                            self.calibration.map_threads):
            batch = resized[0].numpy()
            for k, reason in enumerate(reasons.numpy()):
                if not reason:
                    yield batch[k:k + 1]


def calibration_set(train: ImageList, map_threads: int = 0) -> Calibration:
    """The int8 calibration images of a competition: CALIBRATION_IMAGES of its training
    images drawn with CALIBRATION_SEED (all when fewer), always from the whole training
    list, so every shard of a run quantises the same model."""
    if not len(train):
        raise HarnessError("precision int8 calibrates on the training images, and there "
                           "are none; add training images or use another --precision")
    count = min(CALIBRATION_IMAGES, len(train))
    rows = np.sort(np.random.default_rng(CALIBRATION_SEED).choice(len(train), count,
                                                                  replace=False))
    chosen = train.subset(rows)
    identity = json.dumps({"recipe": QUANTIZATION, "of": len(train),
                           "images": image_list_digest(chosen)}, sort_keys=True)
    return Calibration(chosen, identity, map_threads)
