"""FCN-specific checks: the skip score layers really feed the logits (pool4 for 16s, pool3 too for 8s), the learned
2x upsampling starts as bilinear interpolation, and fc6/fc7 are VGG16's fully connected layers convolutionalised."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import segcore
from segcore.models.fcn import BilinearUpsample2x, convolutionalise

SKIPS = {"fcn32s": [], "fcn16s": ["score_pool4"], "fcn8s": ["score_pool4", "score_pool3"]}
UPSCORES = {"fcn32s": [], "fcn16s": ["upscore2"], "fcn8s": ["upscore2", "upscore_pool4"]}
ALL_SKIP_MODULES = ["score_pool4", "score_pool3", "upscore2", "upscore_pool4"]


def _small_fcn(name: str) -> nn.Module:
    torch.manual_seed(0)
    # Narrow fc6/fc7 keep the test fast; the skip wiring does not depend on their width.
    return segcore.create_model(name, num_classes=3, fc_channels=32).eval()


@pytest.mark.parametrize("name", list(SKIPS))
def test_each_variant_has_exactly_its_skip_layers(name):
    model = _small_fcn(name)
    present = [module for module in ALL_SKIP_MODULES if getattr(model, module) is not None]
    assert sorted(present) == sorted(SKIPS[name] + UPSCORES[name])


@pytest.mark.parametrize("name", ["fcn16s", "fcn8s"])
def test_skip_scores_start_at_zero_as_in_the_paper(name):
    model = _small_fcn(name)
    for layer in SKIPS[name]:
        assert not getattr(model, layer).weight.any() and not getattr(model, layer).bias.any()


@pytest.mark.parametrize("name", ["fcn16s", "fcn8s"])
def test_skip_scores_are_added_into_the_logits(name):
    model = _small_fcn(name)
    x = torch.randn(1, 3, 67, 75)
    for layer in SKIPS[name]:
        nn.init.normal_(getattr(model, layer).weight, std=0.1)

    for layer in SKIPS[name]:
        outputs = []
        for scale in (0.0, 1.0, 2.0):
            handle = getattr(model, layer).register_forward_hook(lambda module, args, out, s=scale: out * s)
            with torch.no_grad():
                outputs.append(model(x)["out"])
            handle.remove()
        without_skip, with_skip, doubled_skip = outputs
        assert not torch.allclose(with_skip, without_skip), f"{layer} does not reach the output"
        # The fusion is a sum followed by linear upsampling, so the skip's contribution scales linearly.
        torch.testing.assert_close(doubled_skip - with_skip, with_skip - without_skip, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["fcn16s", "fcn8s"])
def test_learned_upsampling_starts_bilinear(name):
    model = _small_fcn(name)
    taps = torch.tensor([0.25, 0.75, 0.75, 0.25])
    for layer in UPSCORES[name]:
        upscore = getattr(model, layer)
        assert isinstance(upscore, nn.ConvTranspose2d) and upscore.stride == (2, 2)
        weight = upscore.weight.detach()
        for i in range(weight.shape[0]):
            for j in range(weight.shape[1]):
                expected = torch.outer(taps, taps) if i == j else torch.zeros(4, 4)
                torch.testing.assert_close(weight[i, j], expected)


def test_bilinear_upsampling_matches_interpolation_inside_the_border():
    torch.manual_seed(0)
    x = torch.randn(1, 4, 5, 6)
    with torch.no_grad():
        learned = BilinearUpsample2x(4)(x)
    reference = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(learned[..., 1:-1, 1:-1], reference[..., 1:-1, 1:-1])
    assert BilinearUpsample2x(4)(x, output_size=(11, 13)).shape[-2:] == (11, 13)


def test_convolutionalised_fc6_fc7_compute_the_fully_connected_layers():
    torch.manual_seed(0)
    width = 8
    classifier = nn.Sequential(nn.Linear(512 * 7 * 7, width), nn.ReLU(), nn.Dropout(), nn.Linear(width, width))
    fc6 = nn.Conv2d(512, width, 7, padding=3)
    fc7 = nn.Conv2d(width, width, 1)
    convolutionalise(classifier, fc6, fc7)
    pool5 = torch.randn(1, 512, 7, 7)
    with torch.no_grad():
        dense = classifier[3](torch.relu(classifier[0](pool5.flatten(1))))
        # With padding 3, the centre of a 7x7 map is where the kernel sees the whole map, as a 224 input's pool5 did.
        convolutional = fc7(torch.relu(fc6(pool5)))[:, :, 3, 3]
    torch.testing.assert_close(convolutional, dense, atol=1e-4, rtol=1e-4)
