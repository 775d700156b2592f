"""PSPNet specifics: output stride 8, the pyramid pooling module's bins and channels, the training-only aux head."""

from __future__ import annotations

import math

import pytest
import torch

import segcore


def test_pyramid_pooling_module_bins_channels_and_output_stride():
    model = segcore.create_model("pspnet", num_classes=21).eval()
    module = model.pyramid_pooling
    pooled, seen = [], {}
    for level in module.levels:
        level.pool.register_forward_hook(lambda _m, _i, output: pooled.append(output.shape))
    module.register_forward_hook(lambda _m, inputs, output: seen.update(input=inputs[0].shape, output=output.shape))
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 97, 131))["out"]
    height, width = math.ceil(97 / 8), math.ceil(131 / 8)
    assert pooled == [(1, 2048, bins, bins) for bins in (1, 2, 3, 6)]
    assert seen["input"] == (1, 2048, height, width)
    assert seen["output"] == (1, 2048 + 4 * 512, height, width)
    assert out.shape == (1, 21, 97, 131)


def test_aux_head_only_in_training_mode():
    model = segcore.create_model("pspnet", num_classes=3)
    x = torch.randn(2, 3, 64, 64)
    output = model.train()(x)
    assert [aux.shape for aux in output["aux"]] == [(2, 3, 64, 64)]
    assert not torch.equal(output["aux"][0], output["out"])
    with torch.inference_mode():
        assert set(model.eval()(x)) == {"out"}


def test_backbone_choice():
    assert len(segcore.create_model("pspnet", num_classes=2, backbone="resnet101").backbone.layer3) == 23
    with pytest.raises(ValueError, match=r"backbone must be one of 'resnet18', 'resnet34', 'resnet50', 'resnet101'; got 'vgg16'"):
        segcore.create_model("pspnet", num_classes=2, backbone="vgg16")
