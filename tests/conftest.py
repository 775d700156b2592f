"""Shared fixtures: seeded RNGs, generated images, and one tiny model trained on synthetic data for the session."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import segcore


@pytest.fixture(autouse=True, scope="session")
def _private_export_cache(tmp_path_factory):
    """ONNX exports are cached on disk (segcore.export.cache_dir): the suite keeps its own, fresh each run, and
    never writes to the user's ~/.cache. Servers the tests start inherit it through the environment."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEGCORE_CACHE_DIR", str(tmp_path_factory.mktemp("segcore-cache")))
        yield


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(autouse=True)
def _threads_restored():
    """A test that sets segcore's thread count (set_num_threads, or a recipe's `threads` in an in-process training)
    does not carry it into the tests after it."""
    from segcore import inference

    chosen, torch_threads = inference._threads, torch.get_num_threads()
    yield
    inference._threads = chosen
    torch.set_num_threads(torch_threads)


def make_square_scene(height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A bright-red rectangle (class 1) on a noisy dark background (class 0), and its mask."""
    image = rng.integers(0, 90, size=(height, width, 3), dtype=np.uint8)
    top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
    bottom, right = top + rng.integers(height // 4, height // 2), left + rng.integers(width // 4, width // 2)
    mask = np.zeros((height, width), dtype=np.int64)
    mask[top:bottom, left:right] = 1
    image[mask == 1] = (rng.integers(180, 255, size=(int(mask.sum()), 1)) * np.array([[1, 0.2, 0.2]])).astype(np.uint8)
    return image, mask


def train_tiny_unet(steps: int = 60, size: int = 64) -> torch.nn.Module:
    """A width-8 U-Net fitted to red-rectangle scenes with Adam; a few seconds on a CPU."""
    rng = np.random.default_rng(0)
    model = segcore.create_model("unet", num_classes=2, width=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    model.train()
    for _ in range(steps):
        scenes = [make_square_scene(size, size, rng) for _ in range(8)]
        images = torch.from_numpy(np.stack([scene[0] for scene in scenes])).permute(0, 3, 1, 2).float() / 255.0
        masks = torch.from_numpy(np.stack([scene[1] for scene in scenes]))
        loss = F.cross_entropy(model((images - mean) / std)["out"], masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory):
    """A saved folder of a tiny U-Net that really segments red rectangles (input size 64x64, fixed resize)."""
    torch.manual_seed(0)
    model = train_tiny_unet()
    directory = tmp_path_factory.mktemp("models") / "tiny-unet"
    segcore.save_pretrained(
        model, directory, class_names=["background", "square"], input_size=(64, 64), normalization="imagenet",
        training_data="generated red rectangles",
    )
    return directory


@pytest.fixture
def square_dataset(tmp_path):
    """A folder dataset of red-rectangle scenes (70x90): images 0-3 in split test, 4-5 in train."""
    rng = np.random.default_rng(11)
    for folder in ("images", "masks"):
        (tmp_path / "squares" / folder).mkdir(parents=True)
    lines = []
    for index in range(6):
        image, mask = make_square_scene(70, 90, rng)
        Image.fromarray(image).save(tmp_path / "squares" / "images" / f"{index}.png")
        Image.fromarray((mask * 255).astype(np.uint8)).save(tmp_path / "squares" / "masks" / f"{index}.png")
        lines.append(f"{index} {'test' if index < 4 else 'train'}")
    (tmp_path / "squares" / "split.txt").write_text("\n".join(lines) + "\n")
    return tmp_path / "squares"
