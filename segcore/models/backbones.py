"""Backbones shared by several architectures: torchvision ResNets (optionally dilated, with DeepLab's and PSPNet's
atrous rates, BasicBlock ResNet18/34 included) and VGG16, built offline; intermediate features through
torchvision.models.feature_extraction.

`pretrained_backbone=True` asks torchvision for ImageNet weights; that needs the network (or torch's hub cache),
and when it fails the error says so instead of a bare URLError. `in_channels != 3` swaps the first convolution
(pretrained RGB filters are averaged over channels and repeated, so grey or RGB-D inputs still start sensibly).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torchvision
from torchvision.models.feature_extraction import create_feature_extractor

from segcore.errors import ModelError

RESNETS = {
    "resnet18": (torchvision.models.resnet18, "ResNet18_Weights", 512),
    "resnet34": (torchvision.models.resnet34, "ResNet34_Weights", 512),
    "resnet50": (torchvision.models.resnet50, "ResNet50_Weights", 2048),
    "resnet101": (torchvision.models.resnet101, "ResNet101_Weights", 2048),
}
DILATED_BACKBONES = tuple(RESNETS)
# The output strides a dilated ResNet offers: 16 dilates layer4, 8 also layer3.
OUTPUT_STRIDES = (8, 16)


def check_choice(name: str, value, choices) -> None:
    """A ModelError naming the choices when a builder argument is not one of them."""
    if value not in choices:
        raise ModelError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


class PretrainedWeightsUnavailable(ModelError):
    """ImageNet weights were asked for but could not be obtained (usually: no network)."""


def _imagenet_weights(enum_name: str):
    return getattr(torchvision.models, enum_name).IMAGENET1K_V1


def build_torchvision(builder, weights_enum: str, pretrained: bool, **kwargs) -> nn.Module:
    """Call a torchvision model builder, with a clear error when ImageNet weights cannot be downloaded."""
    if not pretrained:
        return builder(weights=None, **kwargs)
    weights = _imagenet_weights(weights_enum)
    try:
        return builder(weights=weights, **kwargs)
    except Exception as error:  # urllib, ssl, socket and hash errors all mean the same thing to the user
        raise PretrainedWeightsUnavailable(
            f"pretrained_backbone=True needs torchvision's ImageNet weights ({weights.url}), and getting them "
            f"failed ({type(error).__name__}: {error}); connect to the internet once (they are cached under "
            f"{torch.hub.get_dir()}) or pass pretrained_backbone=False to train from scratch"
        ) from None


def adapt_input_channels(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A copy of `conv` taking `in_channels` inputs; RGB filters are averaged and repeated when present."""
    if in_channels == conv.in_channels:
        return conv
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.groups, conv.bias is not None)
    with torch.no_grad():
        mean_filter = conv.weight.mean(dim=1, keepdim=True)
        new.weight.copy_(mean_filter.repeat(1, in_channels, 1, 1) * (conv.in_channels / in_channels))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def resnet(name: str, pretrained: bool = False, in_channels: int = 3) -> nn.Module:
    """A torchvision ResNet (output stride 32; `dilated_resnet` trades strides for atrous rates)."""
    if name not in RESNETS:
        raise ModelError(f"unknown ResNet {name!r}; choose one of {', '.join(RESNETS)}")
    builder, weights_enum, _ = RESNETS[name]
    model = build_torchvision(builder, weights_enum, pretrained)
    model.conv1 = adapt_input_channels(model.conv1, in_channels)
    return model


def resnet_channels(name: str) -> dict[str, int]:
    """Output channels of conv1 (stem), layer1..layer4 for a ResNet name."""
    last = RESNETS[name][2]
    expansion = last // 512
    return {"stem": 64, "layer1": 64 * expansion, "layer2": 128 * expansion, "layer3": 256 * expansion, "layer4": last}


def layer_features(network: nn.Module, return_nodes: dict[str, str]) -> nn.Module:
    """`network` cut after its last returned node, whose forward returns {new name: output} for `return_nodes`
    ({node name: new name}).

    Every nn.Sequential stays a leaf of the trace, so the result keeps the network's own submodules (conv1, layer1 as
    a Sequential of blocks, ...) under their names: the state-dict keys are the network's, and nothing after the
    last returned node (a ResNet's avgpool and fc) is kept.
    """
    return create_feature_extractor(network, return_nodes=return_nodes,
                                    tracer_kwargs={"leaf_modules": [nn.Sequential]})


def resnet_features(name: str, return_nodes: dict[str, str], pretrained: bool = False,
                    in_channels: int = 3) -> nn.Module:
    """ResNet body returning a dict of the named intermediate layers ({"layer3": "aux", ...})."""
    return layer_features(resnet(name, pretrained, in_channels), return_nodes)


def _dilate_layer(layer: nn.Sequential, rates: Sequence[int]) -> None:
    """Give unit i of a ResNet layer atrous rate rates[i] in its 3x3 convs (padding = rate keeps the map size); a
    rate > 1 also removes the layer's stride, which sits in the first unit's 3x3 conv (conv2 of a Bottleneck, conv1
    of a BasicBlock) and its 1x1 shortcut. Written here because torchvision's replace_stride_with_dilation refuses
    BasicBlocks; for Bottlenecks it gives what torchvision plus DeepLab's every-unit rates gave."""
    if any(rate > 1 for rate in rates):
        for module in layer[0].modules():
            if isinstance(module, nn.Conv2d):
                module.stride = (1, 1)
    for unit, rate in zip(layer, rates, strict=True):
        for module in unit.modules():
            if isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3):
                module.dilation = (rate, rate)
                module.padding = (rate, rate)


def dilated_resnet(
    backbone: str,
    output_stride: int,
    return_nodes: dict[str, str],
    *,
    pretrained: bool = False,
    in_channels: int = 3,
    multi_grid: Sequence[int] | None = None,
) -> nn.Module:
    """ResNet body whose last strides become atrous rates: output stride 8 (layer3 rate 2, layer4 rate 4) or 16
    (layer4 rate 2). Every unit of a dilated block gets the block's rate, the last block's units times `multi_grid`
    (one integer per unit of layer4: three, or two for resnet18; default all 1).

    torchvision keeps the first unit of a dilated block at the previous rate; DeepLab's and PSPNet's Caffe
    models dilate every unit, as done here, for Bottleneck and BasicBlock ResNets alike.
    """
    check_choice("backbone", backbone, DILATED_BACKBONES)
    check_choice("output_stride", output_stride, OUTPUT_STRIDES)
    network = resnet(backbone, pretrained, in_channels)
    units = len(network.layer4)
    multi_grid = (1,) * units if multi_grid is None else tuple(multi_grid)
    if len(multi_grid) != units or not all(isinstance(rate, int) and rate >= 1 for rate in multi_grid):
        raise ModelError(f"multi_grid must be {units} positive integers (one per unit of {backbone}'s layer4), "
                         f"got {multi_grid!r}")
    layer3_rate = 2 if output_stride == 8 else 1
    _dilate_layer(network.layer3, [layer3_rate] * len(network.layer3))
    _dilate_layer(network.layer4, [2 * layer3_rate * unit_rate for unit_rate in multi_grid])
    return layer_features(network, return_nodes)


def vgg16_features(pretrained: bool = False, in_channels: int = 3, batch_norm: bool = False) -> nn.Sequential:
    """The 13 convolutions and 5 max-pools of VGG16 (torchvision's `features`), as a Sequential."""
    if not pretrained:
        # Only the convolutional part: building the full VGG16 would allocate its unused 120 M-parameter classifier.
        from torchvision.models.vgg import cfgs, make_layers

        features = make_layers(cfgs["D"], batch_norm=batch_norm)
    elif batch_norm:
        features = build_torchvision(torchvision.models.vgg16_bn, "VGG16_BN_Weights", pretrained).features
    else:
        features = build_torchvision(torchvision.models.vgg16, "VGG16_Weights", pretrained).features
    features[0] = adapt_input_channels(features[0], in_channels)
    return features
