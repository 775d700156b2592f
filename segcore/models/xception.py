"""Xception39, the lightweight Xception that BiSeNet (Yu et al., ECCV 2018, arXiv:1808.00897) uses as a context path.

The paper names it without a table; the widths follow the authors' released code: a 3x3 stride-2 stem (8 channels)
and a max-pool, then three stages of 4, 8 and 4 residual blocks of depthwise-separable convolutions, each stage
halving the resolution, with 64, 128 and 256 output channels (1/8, 1/16, 1/32). No ImageNet weights exist for it.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
from torchvision.ops import Conv2dNormActivation


class SeparableConvBN(nn.Sequential):
    """Depthwise 3x3 convolution, then pointwise 1x1 convolution, BatchNorm and (optionally) ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, relu: bool = True):
        layers = [
            nn.Conv2d(in_channels, in_channels, 3, stride, padding=1, groups=in_channels, bias=False),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class XceptionBlock(nn.Module):
    """Three separable convolutions (widths mid, mid, 4 * mid) added to a shortcut, then ReLU.

    The first block of a stage strides by 2 and projects its shortcut with a separable convolution; the others keep
    an identity shortcut.
    """

    expansion = 4

    def __init__(self, in_channels: int, mid_channels: int, stride: int = 1):
        super().__init__()
        out_channels = mid_channels * self.expansion
        self.residual = nn.Sequential(
            SeparableConvBN(in_channels, mid_channels, stride),
            SeparableConvBN(mid_channels, mid_channels),
            SeparableConvBN(mid_channels, out_channels, relu=False),
        )
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = SeparableConvBN(in_channels, out_channels, stride, relu=False) if needs_projection else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return self.relu(self.residual(x) + shortcut)


class Xception39(nn.Module):
    """Backbone returning {"stride8", "stride16", "stride32"} features; `channels` gives their widths."""

    def __init__(self, in_channels: int = 3, repeats: tuple[int, ...] = (4, 8, 4),
                 mid_channels: tuple[int, ...] = (16, 32, 64), stem_channels: int = 8):
        super().__init__()
        self.stem = nn.Sequential(
            Conv2dNormActivation(in_channels, stem_channels, kernel_size=3, stride=2),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        self.stages = nn.ModuleList()
        self.channels: dict[str, int] = {}
        width = stem_channels
        for index, (repeat, mid) in enumerate(zip(repeats, mid_channels)):
            blocks = [XceptionBlock(width, mid, stride=2)]
            width = mid * XceptionBlock.expansion
            blocks += [XceptionBlock(width, mid) for _ in range(repeat - 1)]
            self.stages.append(nn.Sequential(*blocks))
            self.channels[f"stride{8 * 2 ** index}"] = width

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        features = OrderedDict()
        x = self.stem(x)
        for name, stage in zip(self.channels, self.stages):
            x = stage(x)
            features[name] = x
        return features
