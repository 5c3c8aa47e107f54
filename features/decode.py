"""Reading one image file into RGB uint8 pixels, robust to the files Kaggle ships.

TensorFlow decodes first (PNG, GIF's first frame, BMP, JPEG; grayscale and CMYK become
RGB); Pillow is the fallback for what TensorFlow refuses. A truncated JPEG is never
"recovered": libjpeg pads the missing part with grey (a photo cut to 10% of its bytes was
decoded without a word and predicted 0.60), so every JPEG is first checked by Pillow with
truncated loading off, which fails on a missing end of data whatever libjpeg would forgive.
A file that fails yields no pixels and a one-line reason; the caller keeps the id.
Very large JPEGs are decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling) when that
still leaves at least `min_side` pixels, which saves most of their decode time and memory.
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

# Pillow refuses images above ~179 M pixels as "decompression bombs"; a photo that large
# is not a competition image we can feed anyway, so the refusal becomes a failure reason.
DECODER_VERSION = "tf-jpeg+pillow-truncation-check+pillow-fallback+16-bit-scaled/3"


def _jpeg_ratio(data: bytes, min_side: int) -> int:
    import tensorflow as tf

    height, width = (int(v) for v in tf.io.extract_jpeg_shape(data)[:2].numpy())
    ratio = 1
    while ratio < 8 and min(height, width) // (ratio * 2) >= 2 * min_side:
        ratio *= 2
    return ratio


def jpeg_truncation(data: bytes, min_side: int = 0) -> str:
    """Why the JPEG `data` is damaged ("" when Pillow reads it to the end).

    Pillow's full load with `ImageFile.LOAD_TRUNCATED_IMAGES` off raises on a missing end of
    data; other Pillow complaints are left to the decoders. `draft` decodes large photos at
    a reduced DCT scale, which still reads every byte of the scan.
    """
    from PIL import Image, ImageFile

    ImageFile.LOAD_TRUNCATED_IMAGES = False  # someone may have turned it on: never here
    try:
        with Image.open(io.BytesIO(data)) as image:
            if min_side:
                image.draft("RGB", (2 * min_side, 2 * min_side))
            image.load()
    except OSError as exc:
        text = str(exc)
        if "truncated" in text or "premature" in text.lower():
            return f"truncated JPEG ({text[:120]})"
    except Exception:  # noqa: BLE001 - anything else: the decoders decide
        return ""
    return ""


def _decode_tf(data: bytes, min_side: int) -> np.ndarray:
    import tensorflow as tf

    if data[:2] == b"\xff\xd8":
        ratio = _jpeg_ratio(data, min_side) if min_side else 1
        image = tf.io.decode_jpeg(data, channels=3, ratio=ratio)
    else:
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
    return _to_uint8(image.numpy())


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    """8-bit pixels from 8- or 16-bit ones: a 16-bit image's full range maps onto 0-255
    (a plain cast would keep only the low byte, or clip everything above 255 to white)."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype.kind == "f":
        top = 1.0 if float(np.nanmax(pixels, initial=0.0)) <= 1.0 else 255.0
        return np.clip(np.rint(pixels * (255.0 / top)), 0, 255).astype(np.uint8)
    wide = pixels.astype(np.int64)
    if pixels.dtype.itemsize >= 2 and int(wide.max(initial=0)) > 255:
        wide = np.rint(wide / 257.0).astype(np.int64)  # 65535 -> 255
    return np.clip(wide, 0, 255).astype(np.uint8)


def _decode_pillow(data: bytes, min_side: int) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        if min_side and image.format == "JPEG":
            image.draft("RGB", (2 * min_side, 2 * min_side))
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            # 16-bit and float grayscale (TIFF, PNG): Pillow's convert("RGB") would clip
            # every value above 255 to white, so scale first, then repeat the channel.
            gray = _to_uint8(np.asarray(image))
            return np.repeat(gray[:, :, None], 3, axis=2)
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
    if data[:2] == b"\xff\xd8":
        damage = jpeg_truncation(data, min_side)
        if damage:
            return None, damage
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
        # Pillow names the in-memory buffer ("<_io.BytesIO object at 0x7f...>"): an address
        # that differs on every run would make the same bad file's reason differ too.
        message = re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>", "the file", str(exc))
        return None, f"cannot decode ({type(exc).__name__}: {message[:120]})"
