"""Shared backbones: the offline error for ImageNet weights, and first convolutions for other channel counts."""

from __future__ import annotations

import urllib.error

import pytest
import torch

import segcore
from segcore.models.backbones import PretrainedWeightsUnavailable, adapt_input_channels


def test_pretrained_backbone_offline_raises_an_error_that_says_how_to_fix_it(monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with pytest.raises(PretrainedWeightsUnavailable, match="ImageNet weights.*pretrained_backbone=False"):
        segcore.create_model("deeplabv3", num_classes=2, backbone="resnet50", pretrained_backbone=True)


def test_grey_inputs_reuse_the_mean_rgb_filter():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    grey = adapt_input_channels(conv, 1)
    x = torch.rand(1, 1, 9, 9)
    # A grey image fed as 3 equal channels gives what the adapted 1-channel convolution gives.
    torch.testing.assert_close(grey(x), conv(x.repeat(1, 3, 1, 1)), atol=1e-5, rtol=1e-5)
    model = segcore.create_model("bisenet", num_classes=2, in_channels=1).eval()
    with torch.inference_mode():
        assert model(torch.rand(1, 1, 64, 64))["out"].shape == (1, 2, 64, 64)
