"""Awkward files people upload, generated on the fly: each comes with what the app must do with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import make_square_scene

# name -> the message the app must show (a rejected file), or None (the app must accept and process it)
REJECTED = {"not-an-image.png": "not an image", "empty.png": "empty", "truncated.jpg": "damaged or truncated"}
ACCEPTED = ("sixteen-bit.png", "cmyk.jpg", "rgba.png", "exif-rotated.jpg")
HUGE_SIDE = (12_000, 8_400)  # 100.8 megapixels, under segcore.image.MAX_IMAGE_PIXELS


def scene(height: int = 120, width: int = 160, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    return make_square_scene(height, width, np.random.default_rng(seed))


def write_bad_inputs(folder: Path) -> dict[str, Path]:
    """Every rejected and accepted case above as files in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    image, _ = scene()
    paths = {name: folder / name for name in (*REJECTED, *ACCEPTED)}
    paths["not-an-image.png"].write_text("this is a text file with a .png name\n")
    paths["empty.png"].write_bytes(b"")
    Image.fromarray(image).save(folder / "whole.jpg", quality=90)
    data = (folder / "whole.jpg").read_bytes()
    paths["truncated.jpg"].write_bytes(data[: len(data) // 2])
    grey16 = (image.mean(axis=2).astype(np.uint16) * 257)
    Image.fromarray(grey16).save(paths["sixteen-bit.png"])
    Image.fromarray(image).convert("CMYK").save(paths["cmyk.jpg"], quality=95)
    rgba = np.concatenate([image, np.full(image.shape[:2] + (1,), 200, dtype=np.uint8)], axis=2)
    Image.fromarray(rgba, mode="RGBA").save(paths["rgba.png"])
    # stored sideways (width 120, height 160) with EXIF orientation 6: viewers rotate it to 160 wide, 120 high
    sideways = Image.fromarray(np.ascontiguousarray(np.rot90(image, k=1)))
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways.save(paths["exif-rotated.jpg"], exif=exif, quality=95)
    return paths


def write_huge_image(path: Path) -> Path:
    """A 100-megapixel PNG (a smooth gradient, so the file stays small)."""
    width, height = HUGE_SIDE
    row = np.linspace(0, 255, width, dtype=np.float32).astype(np.uint8)
    picture = np.empty((height, width, 3), dtype=np.uint8)
    picture[:] = row[None, :, None]
    Image.fromarray(picture).save(path, compress_level=1)
    return path
