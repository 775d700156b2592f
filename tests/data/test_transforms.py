"""Augmentation keeps image and label aligned (pattern tests), presets normalise as documented, distorted views."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segcore.data import NORMALIZATION_PRESETS, build_transforms, distort_pair, resolve_normalization
from segcore.data.transforms import PortraitTexture, resize_fixations
from tests.data.synthetic import PATTERN_COLORS, block_pattern

IGNORE = 255


def _decode_classes(image: torch.Tensor) -> torch.Tensor:
    """Class index of each pixel from its colour: the nearest pattern colour. image (3, H, W) in [0, 1]."""
    colors = torch.tensor(PATTERN_COLORS, dtype=torch.float32) / 255.0
    distances = ((image.permute(1, 2, 0)[:, :, None, :] - colors) ** 2).sum(-1)
    return distances.argmin(-1)


def _interior(mask: torch.Tensor) -> torch.Tensor:
    """Pixels whose 3x3 neighbourhood holds one labelled class: away from class edges and from fill."""
    padded = F.pad(mask[None, None].float(), (1, 1, 1, 1), mode="replicate")
    high = F.max_pool2d(padded, 3, stride=1)[0, 0]
    low = -F.max_pool2d(-padded, 3, stride=1)[0, 0]
    return (high == low) & (mask != IGNORE)


def _agreement(image: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    inside = _interior(mask)
    # Bilinear fill blends colours with black near the fill border: leave pixels next to fill out as well.
    near_fill = F.max_pool2d((mask == IGNORE).float()[None, None], 5, stride=1, padding=2)[0, 0] > 0
    inside &= ~near_fill
    decoded = _decode_classes(image)
    return float((decoded[inside] == mask[inside]).float().mean()), float(inside.float().mean())


@pytest.mark.parametrize("kind, size", [("portrait", (48, 56)), ("scene", (56, 56))])
def test_geometric_augmentation_keeps_image_and_mask_aligned(kind, size):
    rng = np.random.default_rng(0)
    image, mask = block_pattern(64, 72, 8, rng)
    transform = build_transforms(kind, size, normalization="none", photometric_probability=0.0)
    torch.manual_seed(0)
    masks = []
    for _ in range(12):
        out_image, out_mask = transform(image, mask)
        assert out_image.shape == (3, *size) and out_mask.shape == size and out_mask.dtype == torch.int64
        assert set(out_mask.unique().tolist()) <= {0, 1, 2, 3, IGNORE}
        agreement, coverage = _agreement(out_image, out_mask)
        assert agreement > 0.99, f"{kind}: only {agreement:.3f} of interior pixels agree"
        if coverage > 0.2:  # a negative control: a mask flipped against its image must fail the same check
            assert _agreement(out_image, out_mask.flip(-1))[0] < 0.9
        masks.append(out_mask)
    distinct = {tuple(out_mask.flatten().tolist()) for out_mask in masks}
    assert len(distinct) == len(masks)  # every draw moved the pair differently
    assert sum(bool((out_mask == IGNORE).any()) for out_mask in masks) >= 2  # shrinking/shifting pads with ignore


def test_saliency_maps_move_bilinearly_with_the_image():
    rows, columns = np.meshgrid(np.linspace(0, 1, 48), np.linspace(0, 1, 64), indexing="ij")
    density = (0.5 + 0.5 * np.sin(6 * rows) * np.cos(5 * columns)).astype(np.float32)
    image = np.repeat((density * 255).round().astype(np.uint8)[..., None], 3, axis=2)
    transform = build_transforms("saliency", (32, 40), normalization="none", photometric_probability=0.0,
                                 rotation=20.0, translate=0.2)
    torch.manual_seed(1)
    for _ in range(6):
        out_image, out_density = transform(image, density)
        assert out_density.dtype == torch.float32 and out_density.shape == (32, 40)
        assert 0.0 <= float(out_density.min()) and float(out_density.max()) <= 1.0
        assert (out_image[0] - out_density).abs().max() < 0.01  # same geometry, fill 0 on both


def test_photometric_changes_only_the_image():
    rng = np.random.default_rng(2)
    image, mask = block_pattern(32, 32, 8, rng)
    torch.manual_seed(3)
    always = build_transforms("portrait", (32, 32), normalization="none", photometric_probability=1.0,
                              flip_probability=0.0, rotation=0.0, translate=0.0, scale_range=(1.0, 1.0))
    plain = build_transforms("none", (32, 32), normalization="none")
    out_image, out_mask = always(image, mask)
    reference_image, reference_mask = plain(image, mask)
    assert torch.equal(out_mask, reference_mask)
    assert (out_image - reference_image).abs().mean() > 0.01
    assert 0.0 <= float(out_image.min()) and float(out_image.max()) <= 1.0
    texture = PortraitTexture(probability=0.0)
    assert torch.equal(texture(reference_image), reference_image)


def test_normalisation_presets_values():
    image = np.empty((2, 3, 3), dtype=np.uint8)
    image[...] = (10, 100, 200)
    mask = np.zeros((2, 3), dtype=np.int64)
    out = build_transforms("none", None, "portraitnet", train=False)(image, mask)[0]
    # PortraitNet: (pixel - BGR mean 103.94/116.78/123.68) * 0.017, with channels in RGB order here.
    expected = [(10 - 123.68) * 0.017, (100 - 116.78) * 0.017, (200 - 103.94) * 0.017]
    assert out[:, 0, 0].tolist() == pytest.approx(expected, abs=1e-5)
    out = build_transforms("none", None, "imagenet", train=False)(image, mask)[0]
    expected = [(10 / 255 - 0.485) / 0.229, (100 / 255 - 0.456) / 0.224, (200 / 255 - 0.406) / 0.225]
    assert out[:, 1, 2].tolist() == pytest.approx(expected, abs=1e-5)
    custom = build_transforms("none", None, {"mean": [0.5] * 3, "std": [0.5] * 3}, train=False)(image, mask)[0]
    assert custom[0, 0, 0] == pytest.approx(10 / 255 * 2 - 1, abs=1e-6)
    assert resolve_normalization("portraitnet") == NORMALIZATION_PRESETS["portraitnet"]
    with pytest.raises(ValueError, match="presets are"):
        build_transforms("none", None, "nope")
    with pytest.raises(ValueError, match="unknown augmentation preset"):
        build_transforms("medical", 32)


def test_evaluation_transform_is_deterministic_resize():
    rng = np.random.default_rng(4)
    image, mask = block_pattern(40, 50, 10, rng)
    for kind in ("portrait", "scene", "saliency", "none"):
        transform = build_transforms(kind, (20, 25), train=False)
        first, second = transform(image, mask), transform(image, mask)
        assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
        assert first[1].tolist() == torch.as_tensor(mask)[::2, ::2].tolist()  # nearest: exact class blocks


def test_scene_crop_pads_with_ignore():
    image, mask = block_pattern(16, 16, 4, np.random.default_rng(5))
    transform = build_transforms("scene", (40, 40), normalization="none", scale_range=(1.0, 1.0),
                                 photometric_probability=0.0)
    out_image, out_mask = transform(image, mask)
    assert out_mask.shape == (40, 40) and int((out_mask != IGNORE).sum()) == 16 * 16
    assert float(out_image[:, out_mask == IGNORE].abs().max()) == 0.0


def test_distort_pair_aligns_labels_and_differs_per_sample():
    rng = np.random.default_rng(6)
    pairs = [block_pattern(40, 48, 8, rng) for _ in range(4)]
    images = torch.stack([torch.from_numpy(image).permute(2, 0, 1).float() / 255 for image, _ in pairs])
    labels = torch.stack([torch.from_numpy(mask) for _, mask in pairs])
    generator = torch.Generator().manual_seed(0)
    distorted, distorted_labels = distort_pair(images, labels, color=0.0, noise_sigma=0.0, generator=generator)
    assert distorted.shape == images.shape and distorted_labels.shape == labels.shape
    for index in range(4):
        agreement, _ = _agreement(distorted[index], distorted_labels[index])
        assert agreement > 0.99
        assert _agreement(distorted[index], distorted_labels[(index + 1) % 4])[0] < 0.9
    assert (distorted_labels == IGNORE).any() and not torch.equal(distorted_labels[0], distorted_labels[1])


def test_distort_pair_identity_settings_and_normalised_space():
    images = torch.rand(2, 3, 17, 23)
    labels = torch.randint(0, 3, (2, 17, 23))
    stats = NORMALIZATION_PRESETS["imagenet"]
    normalised = (images - torch.tensor(stats["mean"]).view(1, 3, 1, 1)) / torch.tensor(stats["std"]).view(1, 3, 1, 1)
    same, same_labels = distort_pair(normalised, labels, normalization="imagenet", rotation=0.0,
                                     scale_range=(1.0, 1.0), translate=0.0, flip_probability=0.0, color=0.0,
                                     noise_sigma=0.0)
    assert torch.allclose(same, normalised, atol=1e-4) and torch.equal(same_labels, labels)
    flipped, flipped_labels = distort_pair(images[0], labels[0], rotation=0.0, scale_range=(1.0, 1.0),
                                           translate=0.0, flip_probability=1.0, color=0.0, noise_sigma=0.0)
    assert torch.allclose(flipped, images[0].flip(-1), atol=1e-5) and torch.equal(flipped_labels, labels[0].flip(-1))


def test_contrastive_transform_returns_two_views():
    image, mask = block_pattern(32, 32, 8, np.random.default_rng(7))
    torch.manual_seed(0)
    outputs = build_transforms("portrait", (24, 24), contrastive=True)(image, mask)
    assert len(outputs) == 4
    view, distorted, labels, distorted_labels = outputs
    assert view.shape == distorted.shape == (3, 24, 24) and labels.shape == distorted_labels.shape == (24, 24)
    assert labels.dtype == distorted_labels.dtype == torch.int64 and not torch.equal(view, distorted)


def test_fixation_resize_keeps_every_point():
    fixations = torch.zeros(60, 80, dtype=torch.uint8)
    fixations[5, 7] = fixations[30, 41] = fixations[59, 79] = 1
    small = resize_fixations(fixations, (15, 20))
    assert int(small.sum()) == 3 and small[1, 1] == 1 and small[7, 10] == 1 and small[14, 19] == 1


@pytest.mark.parametrize("height, width", [(20, 50), (51, 13), (32, 32)])
def test_letterbox_training_resize_keeps_the_aspect_ratio_and_pads_with_ignore(height, width):
    from segcore.data.transforms import fit_within

    rng = np.random.default_rng(1)
    image, mask = block_pattern(height, width, 4, rng)
    out_image, out_mask = build_transforms("none", (32, 32), normalization="none", resize="letterbox")(image, mask)
    assert out_image.shape == (3, 32, 32) and out_mask.shape == (32, 32)
    content_height, content_width = fit_within(height, width, (32, 32))
    assert (out_mask[content_height:] == IGNORE).all() and (out_mask[:, content_width:] == IGNORE).all()
    assert (out_mask[:content_height, :content_width] != IGNORE).all()
    assert (out_image[:, content_height:] == 0).all() and (out_image[:, :, content_width:] == 0).all()
    agreement, _ = _agreement(out_image, out_mask)
    assert agreement > 0.99
    with pytest.raises(ValueError, match="letterbox"):
        build_transforms("none", (32, 32), resize="max_side")
