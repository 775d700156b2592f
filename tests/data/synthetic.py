"""Generated data for the data tests: small images and masks written to tmp_path, never the real data sets."""

from __future__ import annotations

import numpy as np
from PIL import Image

# Class colours far apart, so a pixel's class can be read back from its colour after interpolation.
PATTERN_COLORS = np.array([[230, 30, 30], [30, 230, 30], [30, 30, 230], [230, 230, 30]], dtype=np.uint8)


def block_pattern(height: int, width: int, block: int, rng: np.random.Generator, classes: int = 4):
    """A mask of random block-sized class squares and an image whose colour encodes each pixel's class."""
    rows, columns = -(-height // block), -(-width // block)
    labels = rng.integers(0, classes, size=(rows, columns))
    mask = np.kron(labels, np.ones((block, block), dtype=np.int64))[:height, :width]
    return PATTERN_COLORS[mask], mask


def write_pair(root, name: str, image: np.ndarray, mask: np.ndarray, mask_mode: str = "L", palette=None,
               image_suffix: str = ".jpg", images: str = "images", masks: str = "masks"):
    (root / images).mkdir(parents=True, exist_ok=True)
    (root / masks).mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / images / f"{name}{image_suffix}", quality=95)
    mask_image = Image.fromarray(mask.astype(np.uint8), mode="L")
    if mask_mode == "P":
        mask_image = mask_image.convert("P")
        mask_image.putpalette(palette or [value for index in range(256) for value in (index, index, index)])
    mask_image.save(root / masks / f"{name}.png")


def scene(height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A noisy image with a bright rectangle (mask 1) on background (mask 0)."""
    image = rng.integers(0, 90, size=(height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[height // 4 : 3 * height // 4, width // 3 : 2 * width // 3] = 1
    image[mask == 1] = (220, 60, 60)
    return image, mask

