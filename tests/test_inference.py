"""Segmenter: input conversion, resize policies, output shapes, and a real model segmenting what it learnt."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import segcore
from segcore.inference import network_input_size
from tests.conftest import make_square_scene


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1))


def test_trained_model_segments_at_any_input_size(trained_model_dir):
    segmenter = segcore.Segmenter.from_pretrained(trained_model_dir, device="cpu")
    assert segmenter.class_names == ["background", "square"]
    rng = np.random.default_rng(123)  # scenes the model never saw
    for height, width in [(64, 64), (97, 131), (150, 90)]:
        image, mask = make_square_scene(height, width, rng)
        prediction = segmenter.predict(image)
        assert prediction.labels.shape == (height, width)
        assert prediction.probabilities.shape == (2, height, width)
        np.testing.assert_allclose(prediction.probabilities.sum(axis=0), 1.0, atol=1e-5)
        assert _iou(prediction.labels == 1, mask == 1) > 0.8
        assert prediction.latency_ms > 0
        assert prediction.confidence.shape == (height, width) and prediction.confidence.min() >= 0.5 - 1e-6


def test_grey_rgba_pil_and_path_inputs_match_rgb(trained_model_dir, tmp_path):
    segmenter = segcore.Segmenter.from_pretrained(trained_model_dir, device="cpu")
    image, _ = make_square_scene(64, 64, np.random.default_rng(5))
    reference = segmenter.predict(image)
    rgba = np.concatenate([image, np.full((64, 64, 1), 255, dtype=np.uint8)], axis=2)
    assert np.array_equal(segmenter.predict(rgba).labels, reference.labels)
    assert np.array_equal(segmenter.predict(Image.fromarray(image)).labels, reference.labels)
    Image.fromarray(image).save(tmp_path / "scene.png")
    assert np.array_equal(segmenter.predict(tmp_path / "scene.png").labels, reference.labels)
    grey = segmenter.predict(image.mean(axis=2).astype(np.uint8))
    assert grey.labels.shape == (64, 64)


def test_batch_matches_single_predictions(trained_model_dir):
    segmenter = segcore.Segmenter.from_pretrained(trained_model_dir, device="cpu")
    rng = np.random.default_rng(9)
    images = [make_square_scene(h, w, rng)[0] for h, w in [(64, 64), (80, 50), (64, 64)]]
    batch = segmenter.predict_batch(images)
    for image, result in zip(images, batch):
        np.testing.assert_allclose(result.probabilities, segmenter.predict(image).probabilities, atol=1e-5)


def test_one_channel_models_give_sigmoid_probabilities(tmp_path):
    model = segcore.create_model("unet", num_classes=1, width=4)
    segcore.save_pretrained(model, tmp_path / "sal", input_size=(32, 32), resize="max_side")
    segmenter = segcore.Segmenter.from_pretrained(tmp_path / "sal", device="cpu")
    prediction = segmenter.predict(np.zeros((45, 70, 3), dtype=np.uint8))
    assert prediction.probabilities.shape == (1, 45, 70)
    assert ((prediction.probabilities >= 0) & (prediction.probabilities <= 1)).all()
    assert np.array_equal(prediction.labels, (prediction.probabilities[0] > 0.5).astype(np.int64))


def test_resize_policies():
    assert network_input_size(600, 800, (224, 224), "fixed") == (224, 224)
    assert network_input_size(600, 800, (512, 512), "max_side") == (384, 512)
    assert network_input_size(100, 80, (512, 512), "max_side") == (100, 80), "never upscales"
    assert network_input_size(33, 44, (512, 512), "none") == (33, 44)
    with pytest.raises(ValueError, match="resize policy"):
        network_input_size(1, 1, (1, 1), "stretch")


def test_segmenter_needs_a_config_and_a_real_device():
    with pytest.raises(ValueError, match="needs the model's config"):
        segcore.Segmenter(torch.nn.Conv2d(3, 2, 1))
    if not torch.cuda.is_available():
        model = segcore.create_model("unet", num_classes=2, width=4)
        model.segcore_config["normalization"] = {"mean": [0, 0, 0], "std": [1, 1, 1]}
        with pytest.raises(ValueError, match="no CUDA GPU"):
            segcore.Segmenter(model, device="cuda")


class _RedDetector(torch.nn.Module):
    """Logits (0, red - 0.5): a pixel is class 1 where the network input is red. Remembers what it was fed."""

    def forward(self, x):
        self.seen = x.clone()
        return {"out": torch.stack([torch.zeros_like(x[:, 0]), x[:, 0] - 0.5], dim=1) * 20}


def _red_detector(policy: str, input_size=(64, 64)):
    config = {"architecture": "probe", "num_classes": 2, "class_names": ["background", "red"],
              "class_colors": [[0, 0, 0], [255, 0, 0]], "normalization": {"mean": [0, 0, 0], "std": [1, 1, 1]},
              "input_size": list(input_size), "resize": policy, "task": "semantic"}
    return segcore.Segmenter(_RedDetector(), config, device="cpu")


@pytest.mark.parametrize("height, width", [(37, 91), (91, 37), (64, 64), (5, 201), (333, 17)])
def test_letterbox_keeps_the_aspect_ratio_and_round_trips_odd_sizes(height, width):
    from segcore.data.transforms import fit_within
    from segcore.inference import content_size

    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[:, : width // 3, 0] = 255  # a red band on the left third
    segmenter = _red_detector("letterbox")
    prediction = segmenter.predict(image)
    assert prediction.labels.shape == (height, width) and prediction.probabilities.shape == (2, height, width)
    content = content_size(height, width, (64, 64), "letterbox")
    assert content == fit_within(height, width, (64, 64)) and max(content) == 64
    scale = min(64 / height, 64 / width)  # each side is the exactly scaled side, rounded
    assert abs(content[0] - height * scale) <= 0.5 and abs(content[1] - width * scale) <= 0.5
    seen = segmenter.model.seen[0]
    assert seen.shape == (3, 64, 64)
    assert (seen[:, content[0]:, :] == 0).all() and (seen[:, :, content[1]:] == 0).all(), "pads are black"
    # The band comes back where it was: padding is cropped off before resizing to the image.
    expected = np.zeros((height, width), dtype=np.int64)
    expected[:, : width // 3] = 1
    edge = max(2, round(width / content[1]) + 1)  # pixels within one network pixel of the band's edge may differ
    columns = np.r_[: max(0, width // 3 - edge), width // 3 + edge : width]
    assert np.array_equal(prediction.labels[:, columns], expected[:, columns])


def test_letterbox_and_fixed_differ_only_in_geometry():
    image = np.zeros((30, 90, 3), dtype=np.uint8)
    image[:, 30:60, 0] = 255
    fixed, letterbox = _red_detector("fixed"), _red_detector("letterbox")
    assert np.array_equal(fixed.predict(image).labels, letterbox.predict(image).labels)
    assert fixed.model.seen.shape == letterbox.model.seen.shape == (1, 3, 64, 64)
    assert (fixed.model.seen[0, 0, 60:] > 0.5).any(), "fixed squashes the image over the whole input"
    assert (letterbox.model.seen[0, :, 21:] == 0).all(), "letterbox leaves the bottom two thirds black"
    # A batch of letterboxed images of different shapes shares one network size and still round-trips each.
    images = [image, image[:, :45], np.ascontiguousarray(image.transpose(1, 0, 2))]
    for single, batched in zip(images, letterbox.predict_batch(images)):
        assert np.array_equal(batched.labels, letterbox.predict(single).labels)
