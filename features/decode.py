"""Reading one image file into RGB uint8 pixels, robust to the files Kaggle ships.

TensorFlow decodes first (JPEG with recovery of truncated files, PNG, GIF's first frame,
BMP; grayscale and CMYK become RGB); Pillow is the fallback for what TensorFlow refuses.
A file neither can read yields no pixels and a one-line reason; the caller keeps the id.
Very large JPEGs are decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling) when that
still leaves at least `min_side` pixels, which saves most of their decode time and memory.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

# Pillow refuses images above ~179 M pixels as "decompression bombs"; a photo that large
# is not a competition image we can feed anyway, so the refusal becomes a failure reason.
DECODER_VERSION = "tf-jpeg-recover+pillow-fallback/1"


def _jpeg_ratio(data: bytes, min_side: int) -> int:
    import tensorflow as tf

    height, width = (int(v) for v in tf.io.extract_jpeg_shape(data)[:2].numpy())
    ratio = 1
    while ratio < 8 and min(height, width) // (ratio * 2) >= 2 * min_side:
        ratio *= 2
    return ratio


def _decode_tf(data: bytes, min_side: int) -> np.ndarray:
    import tensorflow as tf

    if data[:2] == b"\xff\xd8":
        ratio = _jpeg_ratio(data, min_side) if min_side else 1
        image = tf.io.decode_jpeg(data, channels=3, ratio=ratio,
                                  try_recover_truncated=True, acceptable_fraction=0.25)
    else:
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
    return image.numpy()


def _decode_pillow(data: bytes, min_side: int) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        if min_side and image.format == "JPEG":
            image.draft("RGB", (2 * min_side, 2 * min_side))
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def decode_file(path: str | Path, min_side: int = 0) -> tuple[np.ndarray | None, str]:
    """Decode `path` to (H, W, 3) uint8 RGB.

    Args:
        path: The image file.
        min_side: Keep at least this many pixels on the short side when down-scaling
            large JPEGs during decode (0: always decode at full size).

    Returns:
        (pixels, "") on success, (None, reason) when the file cannot be read at all.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return None, f"cannot read file ({exc.strerror or exc})"
    if not data:
        return None, "empty file (0 bytes)"
    tf_error = ""
    try:
        pixels = _decode_tf(data, min_side)
        if pixels.ndim == 3 and pixels.shape[0] > 0 and pixels.shape[1] > 0:
            return pixels, ""
    except Exception as exc:  # noqa: BLE001 - any TF decode failure falls back to Pillow
        tf_error = str(exc).strip().splitlines()[-1][:120] if str(exc).strip() else type(exc).__name__
    try:
        pixels = _decode_pillow(data, min_side)
        if pixels.ndim == 3 and pixels.shape[0] > 0 and pixels.shape[1] > 0:
            logger.debug("%s: decoded by Pillow (TensorFlow: %s)", path, tf_error)
            return pixels, ""
        return None, "cannot decode (empty image)"
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad files
        return None, f"cannot decode ({type(exc).__name__}: {str(exc)[:120]})"
