"""App fixtures: a weights folder of tiny models trained here in seconds, and services pointed at temporary folders.

No test of the app needs ../shared or the real shipped weights, except those that check the shipped portrait
model itself (tests/app/test_shipped_app.py).
"""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

import segcore
from app import gradio_ui, services
from tests.conftest import make_square_scene, train_tiny_unet


def _save(model, folder, **kwargs):
    segcore.save_pretrained(model, folder, input_size=(64, 64), normalization="imagenet",
                            training_data="generated red rectangles (tests)", **kwargs)


@pytest.fixture(scope="session")
def app_weights_dir(tmp_path_factory):
    """squares-a and squares-b (2 classes, background/square; b is trained less), and a one-channel saliency net."""
    weights = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    _save(train_tiny_unet(steps=60), weights / "squares-a", class_names=["background", "square"])
    torch.manual_seed(1)
    _save(train_tiny_unet(steps=15), weights / "squares-b", class_names=["background", "square"])
    torch.manual_seed(2)
    saliency = segcore.create_model("unet", num_classes=1, width=8).eval()
    saliency.segcore_config["task"] = "saliency"
    _save(saliency, weights / "saliency-tiny", class_names=["saliency"])
    return weights


@pytest.fixture
def app_dirs(app_weights_dir, tmp_path, monkeypatch):
    """services use the tiny models and a fresh runs/ folder; the job manager is rebuilt for each test."""
    monkeypatch.setattr(services, "WEIGHTS_DIR", app_weights_dir)
    monkeypatch.setattr(services, "RUNS_DIR", tmp_path / "runs")
    services.reset_job_manager()
    services._segmenters.clear()
    yield app_weights_dir, tmp_path / "runs"
    services.reset_job_manager()
    services._segmenters.clear()


@pytest.fixture
def square_photo(tmp_path):
    """A 160x200 red-rectangle scene as a PNG file, with its true mask."""
    image, mask = make_square_scene(160, 200, np.random.default_rng(7))
    path = tmp_path / "square.png"
    from PIL import Image

    Image.fromarray(image).save(path)
    return path, image, mask


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def served_app(app_weights_dir, tmp_path_factory):
    """The Gradio app on a free loopback port with the tiny models and a fresh runs/; yields its URL."""
    yield from _serve(app_weights_dir, tmp_path_factory)


@pytest.fixture(scope="module")
def served_shipped_app(tmp_path_factory):
    """The Gradio app with the models really shipped in assets/weights (and a fresh runs/); yields its URL."""
    yield from _serve(services.ROOT / "assets" / "weights", tmp_path_factory)


def _serve(weights_dir, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(services, "WEIGHTS_DIR", weights_dir)
        patch.setattr(services, "RUNS_DIR", runs)
        services.reset_job_manager()
        services._segmenters.clear()
        port = free_port()
        demo = gradio_ui.launch("127.0.0.1", port, block=False)
        try:
            yield f"http://127.0.0.1:{port}/"
        finally:
            demo.close()
            services.reset_job_manager()
            services._segmenters.clear()
