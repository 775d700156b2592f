"""PSPNet (Zhao et al., CVPR 2017, arXiv:1612.01105): dilated ResNet at output stride 8, a Pyramid Pooling Module
(bins 1/2/3/6) concatenated with the features, a 3x3 conv and a classifier; an auxiliary head on layer3 in training.

Deviations: torchvision's ResNet stem (one 7x7 conv) instead of the paper's three 3x3 convs, and the bin-1 level
has no BatchNorm (one value per channel per image; see blocks.ImagePooling), the other levels keep it.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from torchvision.ops import Conv2dNormActivation

from segcore.models.backbones import dilated_resnet, resnet_channels
from segcore.models.blocks import AuxiliaryHead, ImagePooling, upsample_to
from segcore.registry import register_model


class PyramidPoolingModule(nn.Module):
    """Fig. 3(c): each level pools to bins x bins, reduces to in/len(bins) channels by 1x1 conv + BN + ReLU and is
    upsampled back; the levels are concatenated with the input, doubling its channels."""

    def __init__(self, in_channels: int, bins: Sequence[int] = (1, 2, 3, 6)):
        super().__init__()
        self.bins = tuple(bins)
        self.levels = nn.ModuleList(ImagePooling(in_channels, in_channels // len(self.bins), bins=b) for b in self.bins)
        self.out_channels = in_channels + len(self.bins) * (in_channels // len(self.bins))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, *(level(x) for level in self.levels)], dim=1)


class PSPNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, backbone: str = "resnet50",
                 pretrained_backbone: bool = False):
        super().__init__()
        self.backbone = dilated_resnet(backbone, 8, {"layer3": "aux", "layer4": "out"},
                                       pretrained=pretrained_backbone, in_channels=in_channels)
        channels = resnet_channels(backbone)
        self.pyramid_pooling = PyramidPoolingModule(channels["layer4"])
        self.head = nn.Sequential(Conv2dNormActivation(self.pyramid_pooling.out_channels, 512, kernel_size=3),
                                  nn.Dropout(0.1))
        self.classifier = nn.Conv2d(512, num_classes, 1)
        # Sec. 3.4: deep supervision on res4b22 (layer3), weight 0.4 in the loss; dropped at test time.
        self.aux_head = AuxiliaryHead(channels["layer3"], num_classes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x)
        y = self.head(self.pyramid_pooling(features["out"]))
        result = {"out": upsample_to(self.classifier(y), x)}
        if self.training:
            result["aux"] = [upsample_to(self.aux_head(features["aux"]), x)]
        return result


@register_model("pspnet", task="semantic", paper="arXiv:1612.01105", default_size=(473, 473), onnx="fixed",
                contrastive_features="classifier")
def pspnet(num_classes: int, in_channels: int = 3, pretrained_backbone: bool = False,
           backbone: str = "resnet50") -> PSPNet:
    """PSPNet: a dilated ResNet (resnet50 as in the paper; resnet18/34/101 also build) with the pyramid pooling
    module (bins 1/2/3/6) and an auxiliary head."""
    return PSPNet(num_classes, in_channels, backbone, pretrained_backbone)
