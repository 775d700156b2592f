"""BiSeNet-specific checks (the shared suite in test_models.py covers the output contract): path resolutions,
ARM and FFM behaviour, every backbone, auxiliary heads, backbone errors and the Xception39 size."""

from __future__ import annotations

import math

import pytest
import torch

import segcore
from segcore.models.bisenet import (
    AttentionRefinementModule,
    BiSeNet,
    ContextPath,
    FeatureFusionModule,
    SpatialPath,
)
from segcore.models.xception import Xception39


@pytest.mark.parametrize("height, width", [(64, 96), (97, 131)])
def test_spatial_path_output_is_one_eighth_of_input(height, width):
    features = SpatialPath(3, (64, 64, 128))(torch.randn(1, 3, height, width))
    assert features.shape == (1, 128, math.ceil(height / 8), math.ceil(width / 8))


def test_context_path_matches_spatial_path_size_on_odd_input():
    x = torch.randn(1, 3, 97, 131)
    context_path = ContextPath("xception39").eval()
    spatial_size = SpatialPath()(x).shape[-2:]
    with torch.no_grad():
        context, (refined16, refined32) = context_path(x, spatial_size)
    assert context.shape == (1, 128, *spatial_size)
    assert refined16.shape == (1, 128, 7, 9)  # 97x131 halved five times with ceil: 49x66, 25x33, 13x17, 7x9, 4x5
    assert refined32.shape == (1, 128, 4, 5)


@pytest.mark.parametrize("backbone", ["resnet18", "resnet101", "xception39"])
def test_each_backbone_trains_and_every_parameter_gets_a_gradient(backbone):
    model = segcore.create_model("bisenet", num_classes=3, backbone=backbone).train()
    output = model(torch.randn(2, 3, 64, 64))
    assert output["out"].shape == (2, 3, 64, 64)
    loss = output["out"].square().mean() + sum(aux.square().mean() for aux in output["aux"])
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    assert not any(name.split(".")[-2] == "fc" for name, _ in model.named_parameters()), "ResNet's fc must be dropped"


def test_attention_refinement_multiplies_by_per_channel_sigmoid_weights():
    arm = AttentionRefinementModule(16)
    features = torch.rand(2, 16, 5, 7) + 0.1
    with torch.no_grad():
        weights = arm(features) / features
    # One weight per (image, channel), constant over positions, strictly between 0 and 1.
    assert torch.allclose(weights, weights[..., :1, :1].expand_as(weights), atol=1e-6)
    assert (weights > 0).all() and (weights < 1).all()
    # The weights come from a sigmoid: saturating its input opens or closes the gate.
    with torch.no_grad():
        arm.attention[1].weight.zero_()
        arm.attention[1].bias.fill_(20.0)
        assert torch.allclose(arm(features), features, atol=1e-6)
        arm.attention[1].bias.fill_(-20.0)
        assert arm(features).abs().max() < 1e-6


@pytest.mark.parametrize("fusion_width", [256, 96])
def test_feature_fusion_keeps_its_width_and_adds_reweighted_features(fusion_width):
    fusion = FeatureFusionModule(2 * 128, fusion_width).eval()
    spatial, context = torch.randn(2, 128, 6, 10), torch.randn(2, 128, 6, 10)
    with torch.no_grad():
        fused = fusion(spatial, context)
        features = fusion.fuse(torch.cat([spatial, context], dim=1))
    assert fused.shape == (2, fusion_width, 6, 10)
    # fused = features * (1 + attention) with attention in (0, 1).
    positive = features > 1e-3
    ratio = fused[positive] / features[positive]
    assert (ratio > 1).all() and (ratio < 2).all()


def test_aux_heads_only_in_training_mode():
    model = segcore.create_model("bisenet", num_classes=4, backbone="xception39")
    x = torch.randn(2, 3, 65, 79)
    output = model.train()(x)
    assert len(output["aux"]) == 2
    assert all(aux.shape == (2, 4, 65, 79) for aux in output["aux"])
    assert not torch.equal(output["aux"][0], output["aux"][1])
    with torch.no_grad():
        assert set(model.eval()(x)) == {"out"}


def test_without_aux_heads_the_model_trains_on_its_main_output_alone():
    full = segcore.create_model("bisenet", num_classes=4, backbone="xception39")
    slim = segcore.create_model("bisenet", num_classes=4, backbone="xception39", aux_heads=False)
    assert set(slim.train()(torch.randn(2, 3, 65, 79))) == {"out"}
    removed = {key for key in full.state_dict() if key not in slim.state_dict()}
    assert removed and all(key.startswith("aux_heads.") for key in removed)


def test_unknown_backbone_raises_naming_the_choices():
    with pytest.raises(ValueError, match="vgg16.*resnet18, resnet101, xception39"):
        segcore.create_model("bisenet", num_classes=2, backbone="vgg16")


def test_xception39_has_no_pretrained_weights():
    with pytest.raises(ValueError, match="xception39 has no pretrained"):
        segcore.create_model("bisenet", num_classes=2, backbone="xception39", pretrained_backbone=True)


def _separable_parameters(in_channels: int, out_channels: int) -> int:
    return in_channels * 9 + in_channels * out_channels + 2 * out_channels  # depthwise, pointwise, BatchNorm


def test_xception39_parameter_count_matches_the_documented_widths(record_property):
    expected, width = 3 * 8 * 9 + 2 * 8, 8  # stem conv + BatchNorm
    for repeats, mid in zip((4, 8, 4), (16, 32, 64)):
        for block in range(repeats):
            expected += (_separable_parameters(width, mid) + _separable_parameters(mid, mid)
                         + _separable_parameters(mid, 4 * mid))
            if block == 0:
                expected += _separable_parameters(width, 4 * mid)
            width = 4 * mid
    backbone = Xception39()
    count = sum(p.numel() for p in backbone.parameters())
    record_property("xception39_backbone_parameters", count)
    assert count == expected
    assert backbone.channels == {"stride8": 64, "stride16": 128, "stride32": 256}
    lightweight = sum(p.numel() for p in BiSeNet(2, backbone="xception39").parameters())
    heavier = sum(p.numel() for p in BiSeNet(2, backbone="resnet18").parameters())
    record_property("bisenet_xception39_parameters", lightweight)
    assert lightweight * 4 < heavier
