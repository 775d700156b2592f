"""DeepLab v1 (arXiv:1412.7062), v2 (arXiv:1606.00915), v3 (arXiv:1706.05587) and v3+ (arXiv:1802.02611).

ASPP (v2's summed ASPP-L and v3's concatenated ASPP) and the v3+ Decoder live here; the dilated ResNet is
backbones.dilated_resnet, ImagePooling and the auxiliary FCN head are in blocks (PSPNet shares them).
Deviations: no dense CRF post-processing (v1/v2; segcore.refine offers one) and no multi-scale input fusion (v2);
v3+ uses ResNet, not Aligned Xception; ImagePooling drops BatchNorm (see its docstring). The papers used ResNet-101
(and Xception); ResNet18/34 are offered too, for CPU budgets and small files (v3+ on ResNet18 is under 25 MB in
float16 with separable=True), dilated the same way, with multi-grid (1, 2) over ResNet18's two layer4 units.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.ops import Conv2dNormActivation

from segcore.models.backbones import (OUTPUT_STRIDES, build_torchvision, check_choice, dilated_resnet,
                                      resnet_channels, vgg16_features)
from segcore.models.blocks import AuxiliaryHead, ImagePooling, upsample_to
from segcore.registry import register_model

# v3's best multi-grid (Table 3), one rate per unit of layer4; ResNet18's layer4 has two units and takes the first two.
MULTI_GRID = (1, 2, 4)


def atrous_separable_conv(in_channels: int, out_channels: int, rate: int = 1) -> nn.Sequential:
    """v3+'s atrous separable convolution (Sec. 3.1): a depthwise 3x3 at `rate`, then a pointwise 1x1, each with
    BatchNorm and ReLU as in the authors' released code; about 1/9 of a 3x3 convolution's weights and FLOPs."""
    return nn.Sequential(
        Conv2dNormActivation(in_channels, in_channels, kernel_size=3, dilation=rate, groups=in_channels),
        Conv2dNormActivation(in_channels, out_channels, kernel_size=1),
    )


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling: parallel atrous convolutions over one feature map at several rates.

    fusion="sum" is v2's ASPP-L: each branch is a single 3x3 atrous conv straight to `out_channels` class scores,
    and the scores are summed. fusion="concat" is v3's: a 1x1 branch, 3x3 atrous branches and ImagePooling, each
    with BatchNorm and ReLU, concatenated and projected by a 1x1 conv + BN + ReLU and dropout; separable=True makes
    the concat branches' 3x3 convs atrous separable ones (v3+, Sec. 3.2).
    """

    def __init__(self, in_channels: int, out_channels: int, rates: Sequence[int], fusion: str = "concat",
                 dropout: float = 0.1, separable: bool = False):
        super().__init__()
        check_choice("fusion", fusion, ("sum", "concat"))
        self.rates = tuple(rates)
        if fusion == "sum":
            self.branches = nn.ModuleList(
                nn.Conv2d(in_channels, out_channels, 3, padding=rate, dilation=rate) for rate in self.rates
            )
            self.project = None
        else:
            self.branches = nn.ModuleList([
                Conv2dNormActivation(in_channels, out_channels, kernel_size=1),
                *(atrous_separable_conv(in_channels, out_channels, rate) if separable else
                  Conv2dNormActivation(in_channels, out_channels, kernel_size=3, dilation=rate) for rate in self.rates),
                ImagePooling(in_channels, out_channels),
            ])
            self.project = nn.Sequential(
                Conv2dNormActivation(len(self.branches) * out_channels, out_channels, kernel_size=1),
                nn.Dropout(dropout),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [branch(x) for branch in self.branches]
        if self.project is None:
            return torch.stack(outputs).sum(dim=0)
        return self.project(torch.cat(outputs, dim=1))


class Decoder(nn.Module):
    """v3+ decoder (Fig. 2): low-level features reduced to 48 channels, concatenated with the upsampled encoder
    output, refined by two 3x3 conv + BN + ReLU (atrous separable ones with separable=True)."""

    def __init__(self, low_level_channels: int, encoder_channels: int = 256, reduced_channels: int = 48,
                 out_channels: int = 256, separable: bool = False):
        super().__init__()
        # Few channels so the many low-level channels do not outweigh the rich encoder features (Sec. 3.1).
        self.reduce = Conv2dNormActivation(low_level_channels, reduced_channels, kernel_size=1)
        if separable:
            self.refine = nn.Sequential(atrous_separable_conv(encoder_channels + reduced_channels, out_channels),
                                        atrous_separable_conv(out_channels, out_channels))
        else:
            self.refine = nn.Sequential(
                Conv2dNormActivation(encoder_channels + reduced_channels, out_channels, kernel_size=3),
                Conv2dNormActivation(out_channels, out_channels, kernel_size=3),
            )

    def forward(self, encoder_features: torch.Tensor, low_level_features: torch.Tensor) -> torch.Tensor:
        low_level = self.reduce(low_level_features)
        return self.refine(torch.cat([upsample_to(encoder_features, low_level), low_level], dim=1))


class DeepLabLargeFOV(nn.Module):
    """DeepLab v1: VGG16 at output stride 8 (pool4/pool5 stride 1, conv5 at rate 2), fc6 3x3 at rate 12, fc7, fc8."""

    def __init__(self, num_classes: int, in_channels: int = 3, pretrained_backbone: bool = False):
        super().__init__()
        self.features = vgg16_features(pretrained_backbone, in_channels)
        # torchvision's indices: max-pools at 4, 9, 16, 23, 30; conv5_1..conv5_3 at 24, 26, 28.
        for index in (4, 9, 16):
            self.features[index] = nn.MaxPool2d(3, stride=2, padding=1)
        for index in (23, 30):
            self.features[index] = nn.MaxPool2d(3, stride=1, padding=1)
        for index in (24, 26, 28):
            self.features[index].dilation = (2, 2)
            self.features[index].padding = (2, 2)
        self.fc6 = nn.Conv2d(512, 1024, 3, padding=12, dilation=12)
        self.fc7 = nn.Conv2d(1024, 1024, 1)
        self.dropout = nn.Dropout(0.5)
        self.fc8 = nn.Conv2d(1024, num_classes, 1)
        if pretrained_backbone:
            self._decimate_vgg_classifier()

    def _decimate_vgg_classifier(self) -> None:
        # Sec. 3.1: fc6/fc7 start from VGG's fully connected layers, decimated in space (7x7 -> 3x3) and filters.
        classifier = build_torchvision(torchvision.models.vgg16, "VGG16_Weights", True).classifier
        with torch.no_grad():
            self.fc6.weight.copy_(classifier[0].weight.view(4096, 512, 7, 7)[::4, :, ::3, ::3])
            self.fc6.bias.copy_(classifier[0].bias[::4])
            self.fc7.weight.copy_(classifier[3].weight[::4, ::4, None, None])
            self.fc7.bias.copy_(classifier[3].bias[::4])

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.dropout(F.relu(self.fc6(self.features(x))))
        y = self.dropout(F.relu(self.fc7(y)))
        return {"out": upsample_to(self.fc8(y), x)}


class DeepLabV2(nn.Module):
    """DeepLab v2: ResNet at output stride 8 and ASPP-L (rates 6/12/18/24), whose four score maps are summed."""

    def __init__(self, num_classes: int, in_channels: int = 3, backbone: str = "resnet101",
                 pretrained_backbone: bool = False):
        super().__init__()
        self.backbone = dilated_resnet(backbone, 8, {"layer4": "out"}, pretrained=pretrained_backbone,
                                       in_channels=in_channels)
        self.aspp = ASPP(resnet_channels(backbone)["layer4"], num_classes, rates=(6, 12, 18, 24), fusion="sum")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": upsample_to(self.aspp(self.backbone(x)["out"]), x)}


class DeepLabV3(nn.Module):
    """DeepLab v3: dilated ResNet with multi-grid, ASPP with image pooling, 1x1 classifier; with decoder=True the
    v3+ Decoder refines the ASPP output with layer1's (1/4) features before the classifier; separable=True uses
    v3+'s atrous separable convolutions in ASPP and the decoder."""

    def __init__(self, num_classes: int, in_channels: int = 3, backbone: str = "resnet101", output_stride: int = 16,
                 multi_grid: Sequence[int] | None = None, aux_head: bool = False, decoder: bool = False,
                 pretrained_backbone: bool = False, separable: bool = False):
        super().__init__()
        check_choice("output_stride", output_stride, OUTPUT_STRIDES)
        if multi_grid is None:
            multi_grid = MULTI_GRID[:2] if backbone == "resnet18" else MULTI_GRID
        return_nodes = {"layer4": "out"}
        if aux_head:
            return_nodes["layer3"] = "aux"
        if decoder:
            return_nodes["layer1"] = "low_level"
        self.backbone = dilated_resnet(backbone, output_stride, return_nodes, pretrained=pretrained_backbone,
                                       in_channels=in_channels, multi_grid=multi_grid)
        channels = resnet_channels(backbone)
        # Rates are set for output stride 16 and doubled at 8 so they cover the same image area (v3, Sec. 3.3).
        rates = [rate * 16 // output_stride for rate in (6, 12, 18)]
        self.aspp = ASPP(channels["layer4"], 256, rates, fusion="concat", separable=separable)
        self.decoder = Decoder(channels["layer1"], separable=separable) if decoder else None
        self.classifier = nn.Conv2d(256, num_classes, 1)
        self.aux_head = AuxiliaryHead(channels["layer3"], num_classes) if aux_head else None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x)
        y = self.aspp(features["out"])
        if self.decoder is not None:
            y = self.decoder(y, features["low_level"])
        result = {"out": upsample_to(self.classifier(y), x)}
        if self.training and self.aux_head is not None:
            result["aux"] = [upsample_to(self.aux_head(features["aux"]), x)]
        return result


@register_model("deeplabv1", task="semantic", paper="arXiv:1412.7062", default_size=(321, 321), onnx="dynamic")
def deeplabv1(num_classes: int, in_channels: int = 3, pretrained_backbone: bool = False) -> DeepLabLargeFOV:
    """DeepLab-LargeFOV: atrous VGG16 at output stride 8, fc6 at rate 12, bilinear upsampling (no CRF)."""
    return DeepLabLargeFOV(num_classes, in_channels, pretrained_backbone)


@register_model("deeplabv2", task="semantic", paper="arXiv:1606.00915", default_size=(321, 321), onnx="dynamic")
def deeplabv2(num_classes: int, in_channels: int = 3, pretrained_backbone: bool = False,
              backbone: str = "resnet101") -> DeepLabV2:
    """DeepLab v2: atrous ResNet-101 at output stride 8 with ASPP-L (rates 6/12/18/24, summed scores)."""
    return DeepLabV2(num_classes, in_channels, backbone, pretrained_backbone)


@register_model("deeplabv3", task="semantic", paper="arXiv:1706.05587", default_size=(513, 513), onnx="dynamic",
                contrastive_features="classifier")
def deeplabv3(num_classes: int, in_channels: int = 3, pretrained_backbone: bool = False, backbone: str = "resnet101",
              output_stride: int = 16, multi_grid: Sequence[int] | None = None, aux_head: bool = False,
              separable: bool = False) -> DeepLabV3:
    """DeepLab v3: atrous ResNet (18/34/50/101; output stride 16 or 8, multi-grid default (1, 2, 4), (1, 2) on
    resnet18) with ASPP and image pooling; separable=True for atrous separable ASPP convolutions."""
    return DeepLabV3(num_classes, in_channels, backbone, output_stride, multi_grid, aux_head, decoder=False,
                     pretrained_backbone=pretrained_backbone, separable=separable)


@register_model("deeplabv3plus", task="semantic", paper="arXiv:1802.02611", default_size=(513, 513), onnx="dynamic",
                contrastive_features="classifier")
def deeplabv3plus(num_classes: int, in_channels: int = 3, pretrained_backbone: bool = False,
                  backbone: str = "resnet101", output_stride: int = 16, multi_grid: Sequence[int] | None = None,
                  aux_head: bool = False, separable: bool = False) -> DeepLabV3:
    """DeepLab v3+: the v3 encoder plus a decoder that refines boundaries with 1/4-resolution ResNet features;
    separable=True for the paper's atrous separable convolutions in ASPP and decoder (backbone="resnet18" with it
    is 12.3 M parameters, under 25 MB in float16)."""
    return DeepLabV3(num_classes, in_channels, backbone, output_stride, multi_grid, aux_head, decoder=True,
                     pretrained_backbone=pretrained_backbone, separable=separable)
