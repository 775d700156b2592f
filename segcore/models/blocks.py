"""Building blocks shared by several architectures: upsampling to a reference size, DeepLab v3's image pooling
(also one level of PSPNet's pyramid pooling) and the FCN-style auxiliary head of PSPNet and DeepLab v3.

Conv-BN-activation layers are torchvision's `Conv2dNormActivation` (a Sequential of conv, norm, activation, so
its state-dict keys are 0.weight, 1.running_mean, ...: those of the hand-written helper it replaced).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import Conv2dNormActivation


def upsample_to(logits: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Bilinear resize of `logits` to the spatial size of `reference`."""
    return F.interpolate(logits, size=reference.shape[-2:], mode="bilinear", align_corners=False)


class ImagePooling(nn.Module):
    """Image-level features (DeepLab v3, Sec. 3.3): average-pool to `bins` x `bins`, 1x1 conv, ReLU, bilinear
    upsample back.

    With bins=1 (DeepLabv3's branch) there is no BatchNorm: it would normalise one value per channel per image,
    which fails at batch 1 and is noisy at small batches, and at inference BN is an affine map the conv's bias
    already provides. With bins > 1 (one level of PSPNet's pyramid pooling module) the BatchNorm stays.
    """

    def __init__(self, in_channels: int, out_channels: int, bins: int = 1):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(bins)
        # Without a norm layer Conv2dNormActivation gives the conv a bias, which stands in for the BatchNorm.
        self.conv = Conv2dNormActivation(in_channels, out_channels, kernel_size=1,
                                         norm_layer=None if bins == 1 else nn.BatchNorm2d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample_to(self.conv(self.pool(x)), x)


class AuxiliaryHead(nn.Sequential):
    """FCN-style head on layer3 for the auxiliary loss (PSPNet, Sec. 3.4): 3x3 conv + BN + ReLU, dropout, 1x1."""

    def __init__(self, in_channels: int, num_classes: int, hidden_channels: int = 256):
        super().__init__(
            Conv2dNormActivation(in_channels, hidden_channels, kernel_size=3),
            nn.Dropout(0.1),
            nn.Conv2d(hidden_channels, num_classes, 1),
        )
