"""A generated dataset of coloured shapes on noisy backgrounds: the app's bundled fine-tuning sample and the test data.

It is not a paper's data set: a width-8 U-Net learns it in seconds, which is what a demo or a test needs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = {"names": ["background", "disc", "square"], "colors": [[0, 0, 0], [220, 40, 40], [40, 200, 40]]}


def shapes_scene(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A red disc (class 1) and a green square (class 2) with jittered colours on a noisy grey background."""
    image = rng.normal(100, 30, size=(size, size, 3)).clip(0, 255)
    mask = np.zeros((size, size), dtype=np.uint8)
    rows, columns = np.mgrid[:size, :size]
    radius = rng.integers(size // 8, size // 4)
    cy, cx = rng.integers(radius, size - radius, size=2)
    mask[(rows - cy) ** 2 + (columns - cx) ** 2 <= radius**2] = 1
    side = rng.integers(size // 6, size // 3)
    top, left = rng.integers(0, size - side, size=2)
    mask[top : top + side, left : left + side] = 2
    for label, color in ((1, (220, 40, 40)), (2, (40, 200, 40))):
        region = mask == label
        image[region] = np.array(color) + rng.normal(0, 20, size=(int(region.sum()), 3))
    return image.clip(0, 255).astype(np.uint8), mask


def write_shapes_dataset(root: Path, count: int = 64, size: int = 64, val_fraction: float = 0.25, seed: int = 0) -> Path:
    """root/images/*.png, root/masks/*.png (class indices), classes.json and split.txt (train/val)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    lines = []
    for index in range(count):
        image, mask = shapes_scene(size, rng)
        name = f"{index:04d}"
        Image.fromarray(image).save(root / "images" / f"{name}.png")
        Image.fromarray(mask, mode="L").save(root / "masks" / f"{name}.png")
        lines.append(f"{name} {'val' if index < count * val_fraction else 'train'}")
    (root / "classes.json").write_text(json.dumps(CLASSES))
    (root / "split.txt").write_text("\n".join(lines) + "\n")
    return root
