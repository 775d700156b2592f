"""Losses: tiny hand-computed cases, the boundary band against OpenCV morphology, and the contrastive loss against
a slow pixel-by-pixel reference written straight from the paper's formulas."""

import math

import cv2
import numpy as np
import pytest
import torch

import segcore.losses as losses
from segcore.losses import boundary_band, build_loss


def test_build_loss_names_and_unknown():
    assert set(losses.list_losses()) >= {"ce", "boundary", "contrastive", "mse", "kld", "cc", "saliency"}
    with pytest.raises(ValueError, match="unknown loss 'dice'.*boundary"):
        build_loss("dice")


# ---------------------------------------------------------------- cross-entropy


def test_ce_hand_computed_with_ignore_weights_and_aux():
    # Two pixels: (logits [0, ln 3], target 1) -> -ln(3/4); (logits [0, 0], target 0) -> ln 2; one ignored pixel.
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0], [5.0, -5.0]]).t().reshape(1, 2, 1, 3)
    target = torch.tensor([[[1, 0, 255]]])
    plain = build_loss("ce")({"out": logits}, target)
    assert plain.item() == pytest.approx((-math.log(0.75) + math.log(2.0)) / 2, rel=1e-6)

    weighted = build_loss("ce", class_weights=[1.0, 3.0])(logits, target)
    assert weighted.item() == pytest.approx((3 * -math.log(0.75) + math.log(2.0)) / 4, rel=1e-6)

    aux = torch.zeros(1, 2, 1, 3)  # uniform: ln 2 on both valid pixels
    joint = build_loss("ce", aux_weight=0.5)({"out": logits, "aux": [aux, aux]}, target)
    assert joint.item() == pytest.approx(plain.item() + 0.5 * 2 * math.log(2.0), rel=1e-6)


def test_ce_all_ignored_is_zero_with_gradient():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = build_loss("ce")(logits, torch.full((1, 4, 4), 255))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None


def test_ce_size_mismatch_is_explained():
    with pytest.raises(ValueError, match="differ in size"):
        build_loss("ce")(torch.zeros(1, 2, 4, 4), torch.zeros(1, 5, 5, dtype=torch.long))


# ---------------------------------------------------------------- boundary band and boundary-aware loss


def _opencv_band(mask: np.ndarray, width: int) -> np.ndarray:
    kernel = np.ones((width, width), np.uint8)
    return (cv2.dilate(mask, kernel) - cv2.erode(mask, kernel)) > 0


def _opencv_one_hot_band(mask: np.ndarray, width: int, num_classes: int) -> np.ndarray:
    band = np.zeros(mask.shape, bool)
    for label in range(num_classes):
        band |= _opencv_band((mask == label).astype(np.uint8), width)
    return band


@pytest.mark.parametrize("num_classes", [2, 5])
def test_boundary_band_equals_opencv_morphology(num_classes):
    rng = np.random.default_rng(num_classes)
    masks = []
    for _ in range(3):
        mask = np.zeros((61, 83), np.uint8)
        for label in range(1, num_classes):
            centre = (int(rng.integers(0, 83)), int(rng.integers(0, 61)))
            cv2.circle(mask, centre, int(rng.integers(5, 25)), label, -1)
        mask[rng.random(mask.shape) < 0.002] = rng.integers(0, num_classes)  # isolated specks
        masks.append(mask)
    band = boundary_band(torch.from_numpy(np.stack(masks)), width=15, ignore_index=255).numpy()
    for index, mask in enumerate(masks):
        np.testing.assert_array_equal(band[index], _opencv_band(mask, 15))  # grey-level morphology of labels
        np.testing.assert_array_equal(band[index], _opencv_one_hot_band(mask, 15, num_classes))
    assert band.any() and not band.all()


def test_boundary_band_ignores_void_pixels():
    mask = np.zeros((40, 40), np.int64)
    mask[:, 20:] = 4
    mask[5:15, :] = 255  # a void strip across both classes
    band = boundary_band(torch.from_numpy(mask), width=15, ignore_index=255)[0].numpy()
    # Void pixels are never band and do not create band: only the class 0 / class 4 edge between columns 19 and
    # 20 does, over the columns whose 15-wide window reaches across it (13..26).
    expected = np.zeros_like(band)
    expected[:, 13:27] = True
    expected &= mask != 255
    np.testing.assert_array_equal(band, expected)
    # Treating void as a class would have put band pixels all around the strip instead.
    assert (_opencv_one_hot_band(np.where(mask == 255, 2, mask).astype(np.uint8), 15, 5) != expected).any()


def test_boundary_loss_hand_computed():
    # 1 x 4 image, labels [0, 0, 1, 1], band width 3 -> band = pixels 1 and 2.
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 1.0], [1.0, 0.0]]).t().reshape(1, 2, 1, 4)
    target = torch.tensor([[[0, 0, 1, 1]]])
    per_pixel = [-math.log(math.exp(2) / (math.exp(2) + 1)), math.log(2), -math.log(math.e / (math.e + 1)),
                 -math.log(1 / (math.e + 1))]
    expected = sum(per_pixel) / 4 + 0.9 * (per_pixel[1] + per_pixel[2]) / 2
    loss = build_loss("boundary", band_width=3)({"out": logits}, target)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    with_aux = build_loss("boundary", band_width=3, aux_weight=2.0)({"out": logits, "aux": [logits]}, target)
    assert with_aux.item() == pytest.approx(3 * expected, rel=1e-6)


def test_hard_pixel_term_adds_the_mean_over_pixels_below_the_threshold():
    # Three pixels with true-class probabilities 0.9 (easy), 0.5 and 0.2 (hard at threshold 0.7); one ignored.
    probabilities = [0.9, 0.5, 0.2]
    logits = torch.tensor([[0.0, math.log(p / (1 - p))] for p in probabilities] + [[0.0, 9.0]]).t().reshape(1, 2, 1, 4)
    target = torch.tensor([[[1, 1, 1, 255]]])
    ce = [-math.log(p) for p in probabilities]
    plain = sum(ce) / 3
    mined = build_loss("ce", hard_weight=2.0)(logits, target)
    assert mined.item() == pytest.approx(plain + 2.0 * (ce[1] + ce[2]) / 2, rel=1e-5)
    # A looser threshold (0.95) takes the easy pixel in too; a strict one (0.1) finds none and adds nothing.
    assert build_loss("ce", hard_weight=1.0, hard_threshold=0.95)(logits, target).item() == pytest.approx(
        2 * plain, rel=1e-5)
    assert build_loss("ce", hard_weight=1.0, hard_threshold=0.1)(logits, target).item() == pytest.approx(plain, rel=1e-5)
    # Class weights scale each pixel's CE and its share of the mean; hardness still means probability < threshold.
    weighted = build_loss("ce", class_weights=[1.0, 3.0], hard_weight=1.0)(logits, target)
    assert weighted.item() == pytest.approx(plain + (ce[1] + ce[2]) / 2, rel=1e-5)
    # The boundary-aware loss gains the same term.
    band_only = build_loss("boundary", band_width=3)(logits, target).item()
    assert build_loss("boundary", band_width=3, hard_weight=2.0)(logits, target).item() == pytest.approx(
        band_only + 2.0 * (ce[1] + ce[2]) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="hard_threshold"):
        build_loss("ce", hard_threshold=1.5)


def test_boundary_loss_ignore_pixels_do_not_count():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 32, 32)
    target = torch.randint(0, 3, (2, 32, 32))
    void = target.clone()
    void[:, :, :8] = 255
    loss = build_loss("boundary")
    # Changing the logits on void pixels changes nothing.
    other_logits = logits.clone()
    other_logits[:, :, :, :8] = torch.randn(2, 3, 32, 8) * 10
    assert loss(logits, void).item() == pytest.approx(loss(other_logits, void).item(), rel=1e-6)
    assert loss(logits, void).item() != pytest.approx(loss(logits, target).item(), rel=1e-3)


# ---------------------------------------------------------------- contrastive loss


def _reference_contrastive(features, distorted, labels, labels_distorted, mode, temperature, ignore_index=255):
    """Pixel-by-pixel Python loops over the paper's formulas (no sampling)."""
    batch = features.shape[0]
    size = features.shape[-2:]
    labels, labels_distorted = labels[:, ::2, ::2], labels_distorted[:, ::2, ::2]  # nearest at exactly half size

    def pixels(feature_map, label_map):
        out = []
        for row in range(size[0]):
            for col in range(size[1]):
                label = int(label_map[row, col])
                if label != ignore_index:
                    vector = feature_map[:, row, col]
                    out.append((vector / vector.norm(), label))
        return out

    def anchor_loss(anchor, label, bag, extra):
        similarities = [math.exp(float(anchor @ f) / temperature) for f, _ in bag]
        extra_positives = [(f, y) for f, y in extra if y == label]
        denominator = sum(similarities) + sum(math.exp(float(anchor @ f) / temperature) for f, _ in extra_positives)
        positives = [f for f, y in bag if y == label] + [f for f, _ in extra_positives]
        if not positives:
            return None
        terms = [math.log(math.exp(float(anchor @ f) / temperature) / denominator) for f in positives]
        return -sum(terms) / len(positives)

    if mode == "batch":
        anchors = [p for i in range(batch) for p in pixels(features[i], labels[i])]
        bag = [p for i in range(batch) for p in pixels(distorted[i], labels_distorted[i])]
        values = [v for v in (anchor_loss(f, y, bag, []) for f, y in anchors) if v is not None]
        return sum(values) / len(values)
    image_losses = []
    for i in range(batch):
        bag = pixels(distorted[i], labels_distorted[i])
        extra = pixels(distorted[(i + 1) % batch], labels_distorted[(i + 1) % batch]) if mode == "cross" else []
        values = [anchor_loss(f, y, bag, extra) for f, y in pixels(features[i], labels[i])]
        values = [v for v in values if v is not None]
        if values:
            image_losses.append(sum(values) / len(values))
    return sum(image_losses) / len(image_losses)


def test_contrastive_hand_computed():
    # Anchors a1 = (1, 0) label 0, a2 = (0, 1) label 1; the distorted view is identical; tau = 1.
    # Each anchor: -log(e / (e + 1)) = log(1 + 1/e).
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).t().reshape(1, 2, 1, 2)
    labels = torch.tensor([[[0, 1]]])
    loss = build_loss("contrastive", mode="within", temperature=1.0, max_pixels=None)(features, features, labels)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)


@pytest.mark.parametrize("mode", ["within", "cross", "batch"])
def test_contrastive_matches_naive_reference(mode):
    torch.manual_seed(1)
    features = torch.randn(3, 4, 5, 6)
    distorted = features + 0.3 * torch.randn_like(features)
    labels = torch.randint(0, 3, (3, 10, 12))  # twice the feature size: resized by nearest
    labels[0, :4, :4] = 255
    labels_distorted = labels.clone()
    labels_distorted[1, 6:, :] = 255
    loss = build_loss("contrastive", mode=mode, temperature=0.5, max_pixels=None)
    value = loss(features, distorted, labels, labels_distorted)
    expected = _reference_contrastive(features, distorted, labels, labels_distorted, mode, 0.5)
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_contrastive_modes_differ_and_gradients_are_finite():
    torch.manual_seed(2)
    features = torch.randn(2, 8, 6, 6, requires_grad=True)
    distorted = (features.detach() + 0.1 * torch.randn(2, 8, 6, 6)).requires_grad_(True)
    labels = torch.randint(0, 4, (2, 6, 6))
    values = {}
    for mode in ("within", "cross", "batch"):
        value = build_loss("contrastive", mode=mode, max_pixels=20, seed=0)(features, distorted, labels)
        features.grad = distorted.grad = None
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(features.grad).all() and torch.isfinite(distorted.grad).all()
        assert features.grad.abs().sum() > 0 and distorted.grad.abs().sum() > 0
        values[mode] = value.item()
    assert len({round(v, 6) for v in values.values()}) == 3


def test_contrastive_memory_is_bounded_at_512(monkeypatch):
    shapes = []
    original = losses._pair_logits

    def recording(anchors, others, temperature):
        shapes.append((anchors.shape[0], others.shape[0]))
        return original(anchors, others, temperature)

    monkeypatch.setattr(losses, "_pair_logits", recording)
    torch.manual_seed(3)
    features = torch.randn(2, 8, 512, 512, requires_grad=True)  # a full similarity matrix would be 2.7e11 floats
    labels = torch.randint(0, 5, (2, 512, 512))
    for mode, bound in (("within", 256 * 256), ("cross", 256 * 256), ("batch", (2 * 256) ** 2)):
        shapes.clear()
        value = build_loss("contrastive", mode=mode, max_pixels=256, seed=0)(features, features, labels)
        value.backward()
        assert shapes and max(n * m for n, m in shapes) <= bound
        assert torch.isfinite(value)


def test_contrastive_rejects_bad_input():
    with pytest.raises(ValueError, match="mode must be"):
        build_loss("contrastive", mode="global")
    with pytest.raises(ValueError, match=r"\(B, D, h, w\)"):
        build_loss("contrastive")(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 4), torch.zeros(1, 3, 3))


# ---------------------------------------------------------------- saliency losses


def test_saliency_losses_hand_computed():
    logits = torch.zeros(1, 1, 2, 2)  # sigmoid 0.5 everywhere
    density = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    assert build_loss("mse")(logits, density).item() == pytest.approx((0.25 + 3 * 0.25) / 4)
    # KL(density || uniform) = 1 * log(1 / 0.25) = log 4 (eps-level difference).
    assert build_loss("kld")(logits, density).item() == pytest.approx(math.log(4.0), rel=1e-5)

    ramp = torch.tensor([[[[-1.0, 0.0], [1.0, 2.0]]]])
    increasing = torch.sigmoid(ramp)[:, 0]
    assert build_loss("cc")(ramp, increasing).item() == pytest.approx(0.0, abs=1e-6)
    assert build_loss("cc")(ramp, 1 - increasing).item() == pytest.approx(2.0, abs=1e-6)
    assert build_loss("kld")(ramp, increasing).item() == pytest.approx(0.0, abs=1e-6)

    # A constant map has no correlation with anything: CC = 0, loss term 1.
    weights = {"mse_weight": 2.0, "kld_weight": 0.5, "cc_weight": 3.0}
    combined = build_loss("saliency", **weights)({"out": logits}, density[:, None])
    assert combined.item() == pytest.approx(2.0 * 0.25 + 0.5 * math.log(4.0) + 3.0 * 1.0, rel=1e-5)


def test_saliency_losses_need_one_channel():
    with pytest.raises(ValueError, match="one-channel"):
        build_loss("mse")(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4))
