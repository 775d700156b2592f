"""DeepLab v1/v2/v3/v3+ specifics: output strides, atrous rates, multi-grid, ASPP fusion, the v3+ decoder."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision

import segcore
from segcore.models import backbones, deeplab


def _capture(module: torch.nn.Module, what: str = "input") -> dict:
    """Record the first input (or the output) of `module` on each forward."""
    seen = {}

    def hook(_module, inputs, output):
        seen[what] = inputs[0] if what == "input" else output

    module.register_forward_hook(hook)
    return seen


def _conv2_dilations(layer: torch.nn.Sequential) -> list[int]:
    rates = []
    for unit in layer:
        assert unit.conv2.padding == unit.conv2.dilation, "padding must equal the rate to keep the map size"
        rates.append(unit.conv2.dilation[0])
    return rates


@pytest.mark.parametrize("output_stride", [8, 16])
def test_deeplabv3_output_stride_sets_feature_size_rates_and_multi_grid(output_stride):
    model = segcore.create_model("deeplabv3", num_classes=3, backbone="resnet50", output_stride=output_stride).eval()
    aspp_input = _capture(model.aspp)
    with torch.inference_mode():
        model(torch.randn(1, 3, 64, 96))
    assert aspp_input["input"].shape == (1, 2048, 64 // output_stride, 96 // output_stride)

    atrous_rates = [branch[0].dilation[0] for branch in model.aspp.branches[1:4]]
    assert atrous_rates == ([12, 24, 36] if output_stride == 8 else [6, 12, 18])
    assert model.aspp.branches[0][0].kernel_size == (1, 1)
    assert isinstance(model.aspp.branches[4], deeplab.ImagePooling)

    layer4_rate = 32 // output_stride
    assert _conv2_dilations(model.backbone.layer4) == [layer4_rate * unit for unit in (1, 2, 4)]
    assert _conv2_dilations(model.backbone.layer3) == [2 if output_stride == 8 else 1] * 6


def test_multi_grid_accepts_a_json_list_and_rejects_bad_values():
    model = segcore.create_model("deeplabv3plus", num_classes=2, backbone="resnet50", output_stride=8,
                                 multi_grid=[1, 1, 1])
    assert _conv2_dilations(model.backbone.layer4) == [4, 4, 4]
    with pytest.raises(ValueError, match="multi_grid must be 3 positive integers"):
        segcore.create_model("deeplabv3", num_classes=2, backbone="resnet50", multi_grid=[1, 2])
    with pytest.raises(ValueError, match="multi_grid must be 2 positive integers .*resnet18"):
        segcore.create_model("deeplabv3", num_classes=2, backbone="resnet18", multi_grid=[1, 2, 4])


@pytest.mark.parametrize("name", ["deeplabv3", "deeplabv3plus"])
def test_bad_output_stride_and_backbone_name_the_choices(name):
    with pytest.raises(ValueError, match=r"output_stride must be one of 8, 16; got 32"):
        segcore.create_model(name, num_classes=2, output_stride=32)
    with pytest.raises(ValueError, match=r"backbone must be one of 'resnet18', 'resnet34', 'resnet50', 'resnet101'; "
                                         r"got 'vgg16'"):
        segcore.create_model(name, num_classes=2, backbone="vgg16")


def _three_by_three_dilations(layer: torch.nn.Sequential) -> list[tuple[int, ...]]:
    """Per unit, the rates of its 3x3 convs; each must pad by its rate so the map keeps its size."""
    rates = []
    for unit in layer:
        convs = [module for module in unit.modules()
                 if isinstance(module, torch.nn.Conv2d) and module.kernel_size == (3, 3)]
        assert all(conv.padding == conv.dilation for conv in convs)
        rates.append(tuple(conv.dilation[0] for conv in convs))
    return rates


@pytest.mark.parametrize("backbone", ["resnet18", "resnet34"])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_basic_block_resnets_dilate_to_the_output_stride(backbone, output_stride):
    model = segcore.create_model("deeplabv3plus", num_classes=3, backbone=backbone, output_stride=output_stride).eval()
    aspp_input, low_level = _capture(model.aspp), _capture(model.decoder.reduce)
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 97, 131))["out"]
    assert out.shape == (1, 3, 97, 131)
    # Strided 3x3 convs (padding 1) give ceil(size / stride) at odd sizes.
    assert aspp_input["input"].shape == (1, 512, math.ceil(97 / output_stride), math.ceil(131 / output_stride))
    assert low_level["input"].shape == (1, 64, math.ceil(97 / 4), math.ceil(131 / 4))

    layer3_rate, layer4_rate = (2, 4) if output_stride == 8 else (1, 2)
    grid = (1, 2) if backbone == "resnet18" else (1, 2, 4)
    assert _three_by_three_dilations(model.backbone.layer4) == [(layer4_rate * unit,) * 2 for unit in grid]
    assert set(_three_by_three_dilations(model.backbone.layer3)) == {(layer3_rate, layer3_rate)}
    assert set(_three_by_three_dilations(model.backbone.layer2)) == {(1, 1)}
    assert model.backbone.layer2[0].conv1.stride == (2, 2), "layer2 keeps its stride at both output strides"
    first = model.backbone.layer4[0]
    assert first.conv1.stride == first.downsample[0].stride == (1, 1)


def test_resnet18_deeplab_has_resnet18s_parameters_plus_heads_and_fits_25_mb():
    backbone_parameters = sum(p.numel() for name, p in torchvision.models.resnet18().named_parameters()
                              if not name.startswith("fc."))
    for separable, head_parameters in ((False, 5_428_843), (True, 1_159_291)):
        model = segcore.create_model("deeplabv3plus", num_classes=11, backbone="resnet18", separable=separable)
        assert sum(p.numel() for p in model.backbone.parameters()) == backbone_parameters == 11_176_512
        heads = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("backbone."))
        assert heads == head_parameters
    assert (backbone_parameters + head_parameters) * 2 < 25e6, "float16 weights of the separable variant"


def test_separable_deeplabv3plus_uses_atrous_separable_convs_in_aspp_and_decoder():
    model = segcore.create_model("deeplabv3plus", num_classes=2, backbone="resnet18", separable=True)
    atrous = [branch[0][0] for branch in model.aspp.branches[1:4]]
    assert [conv.dilation[0] for conv in atrous] == [6, 12, 18]
    assert all(conv.groups == conv.in_channels == 512 for conv in atrous)
    assert [stage[0][0].groups for stage in model.decoder.refine] == [256 + 48, 256]


def test_bottleneck_dilation_matches_torchvisions_plus_every_unit_rates():
    # The hand-written dilation must give Bottlenecks what torchvision's replace_stride_with_dilation plus DeepLab's
    # rate on every unit gave, so ResNet-50/101 DeepLabs and PSPNets trained before keep their geometry.
    reference = torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True])
    for layer, rate in ((reference.layer3, 2), (reference.layer4, 4)):
        for unit in layer:
            unit.conv2.dilation = unit.conv2.padding = (rate, rate)
    built = backbones.dilated_resnet("resnet50", 8, {"layer4": "out"})

    def geometry(network):
        return {name: (m.stride, m.dilation, m.padding) for name, m in network.named_modules()
                if isinstance(m, torch.nn.Conv2d)}

    assert geometry(built) == geometry(reference)


def test_deeplabv3_aux_head_is_optional_and_training_only():
    plain = segcore.create_model("deeplabv3", num_classes=2, backbone="resnet50")
    assert "aux" not in plain.train()(torch.randn(2, 3, 64, 64))
    model = segcore.create_model("deeplabv3", num_classes=2, backbone="resnet50", aux_head=True)
    output = model.train()(torch.randn(2, 3, 64, 72))
    assert [aux.shape for aux in output["aux"]] == [(2, 2, 64, 72)]
    with torch.inference_mode():
        assert set(model.eval()(torch.randn(1, 3, 64, 72))) == {"out"}


def test_deeplabv1_large_fov_output_stride_8_and_fc6_rate_12():
    model = segcore.create_model("deeplabv1", num_classes=21).eval()
    assert model.fc6.dilation == (12, 12) and model.fc6.padding == (12, 12) and model.fc6.out_channels == 1024
    assert model.fc7.out_channels == 1024 and model.fc8.out_channels == 21
    conv5 = [model.features[index] for index in (24, 26, 28)]
    assert all(conv.dilation == (2, 2) for conv in conv5)
    fc6_input = _capture(model.fc6)
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 97, 131))["out"]
    assert fc6_input["input"].shape == (1, 512, math.ceil(97 / 8), math.ceil(131 / 8))
    assert out.shape == (1, 21, 97, 131)


def test_deeplabv1_pretrained_fc_layers_are_decimated_vgg_classifier(monkeypatch):
    built = []

    def offline_build(builder, weights_enum, pretrained, **kwargs):
        network = builder(weights=None, **kwargs)
        built.append(network)
        return network

    monkeypatch.setattr(backbones, "build_torchvision", offline_build)
    monkeypatch.setattr(deeplab, "build_torchvision", offline_build)
    model = deeplab.deeplabv1(num_classes=2, pretrained_backbone=True)
    vgg = [network for network in built if isinstance(network, torchvision.models.VGG)][-1]
    fc6 = vgg.classifier[0].weight.view(4096, 512, 7, 7)
    assert torch.equal(model.fc6.weight, fc6[::4, :, ::3, ::3])
    assert torch.equal(model.fc7.weight[:, :, 0, 0], vgg.classifier[3].weight[::4, ::4])


def test_deeplabv2_aspp_sums_four_class_score_branches():
    model = segcore.create_model("deeplabv2", num_classes=5, backbone="resnet50").eval()
    branches = model.aspp.branches
    assert [branch.dilation[0] for branch in branches] == [6, 12, 18, 24]
    assert all(branch.out_channels == 5 and branch.kernel_size == (3, 3) for branch in branches)
    aspp_input, aspp_output = _capture(model.aspp), _capture(model.aspp, "output")
    x = torch.randn(1, 3, 64, 80)
    with torch.inference_mode():
        model(x)
        features, summed = aspp_input["input"], aspp_output["output"]
        assert features.shape[-2:] == (8, 10)  # output stride 8
        terms = [branch(features) for branch in branches]
        torch.testing.assert_close(summed, sum(terms))
        for branch in branches[1:]:
            branch.weight.zero_()
            branch.bias.zero_()
        model(x)
    torch.testing.assert_close(summed - aspp_output["output"], sum(terms[1:]))
    torch.testing.assert_close(aspp_output["output"], terms[0])


def test_deeplabv3plus_decoder_uses_48_channel_features_at_one_quarter():
    model = segcore.create_model("deeplabv3plus", num_classes=4, backbone="resnet50").eval()
    reduced, decoded = _capture(model.decoder.reduce, "output"), _capture(model.decoder, "output")
    aspp_output = _capture(model.aspp, "output")
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 64, 96))["out"]
    assert reduced["output"].shape == (1, 48, 16, 24)
    assert model.decoder.reduce[0].in_channels == 256  # layer1 of a bottleneck ResNet
    assert aspp_output["output"].shape == (1, 256, 4, 6)  # output stride 16
    assert decoded["output"].shape == (1, 256, 16, 24)
    assert model.decoder.refine[0][0].in_channels == 256 + 48
    assert out.shape == (1, 4, 64, 96)


def test_deeplabv3plus_output_depends_on_low_level_features():
    model = segcore.create_model("deeplabv3plus", num_classes=2, backbone="resnet50").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        before = model(x)["out"]
        model.decoder.reduce[0].weight.zero_()
        after = model(x)["out"]
    assert not torch.allclose(before, after)
