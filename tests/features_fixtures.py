"""Helpers for the features tests: tiny real image files, including broken ones."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from competition.images import list_test_images, list_train_images
from competition.spec import get_spec

DEMO = get_spec("demo")


def picture(seed: int, size: tuple[int, int] = (48, 40)) -> Image.Image:
    """A small deterministic RGB picture (a coloured square on noise)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    pixels[size[1] // 4: size[1] // 2, size[0] // 4: size[0] // 2] = rng.integers(0, 255, 3)
    return Image.fromarray(pixels)


def jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **{"quality": 90, **kwargs})
    return buffer.getvalue()


def make_dataset(root: Path, n_train: int = 6, n_test: int = 5) -> Path:
    """A demo-layout data folder: train/circle.N.jpg, train/square.N.jpg, test/N.jpg."""
    (root / "train").mkdir(parents=True, exist_ok=True)
    (root / "test").mkdir(parents=True, exist_ok=True)
    for k in range(1, n_train + 1):
        cls = "circle" if k % 2 else "square"
        (root / "train" / f"{cls}.{k}.jpg").write_bytes(jpeg_bytes(picture(k)))
    for k in range(1, n_test + 1):
        (root / "test" / f"{k}.jpg").write_bytes(jpeg_bytes(picture(100 + k)))
    return root


def image_lists(root: Path):
    return list_train_images(DEMO, root), list_test_images(DEMO, root)


def bad_image_bytes(kind: str, seed: int = 7) -> bytes:
    """Bytes of one problematic file; every one is saved under a `.jpg` name."""
    image = picture(seed)
    if kind == "zero_byte":
        return b""
    if kind == "truncated_header":  # nothing after the header: unreadable by anyone
        return jpeg_bytes(image)[:150]
    if kind == "truncated_half":  # 60% of the bytes: libjpeg would pad it with grey
        data = jpeg_bytes(picture(seed, (160, 120)))
        return data[: int(len(data) * 0.6)]
    if kind == "png":
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        return buffer.getvalue()
    if kind == "gif":
        buffer = io.BytesIO()
        image.convert("P").save(buffer, "GIF")
        return buffer.getvalue()
    if kind == "cmyk":
        return jpeg_bytes(image.convert("CMYK"))
    if kind == "grayscale":
        return jpeg_bytes(image.convert("L"))
    if kind == "large":
        return jpeg_bytes(picture(seed, (2400, 1800)), quality=70)
    if kind == "not_an_image":
        return b"this is a text file, not an image\n" * 10
    raise ValueError(kind)


BAD_KINDS = ("zero_byte", "truncated_header", "truncated_half", "png", "gif", "cmyk",
             "grayscale", "large", "not_an_image")
UNREADABLE = {"zero_byte", "truncated_header", "truncated_half", "not_an_image"}
