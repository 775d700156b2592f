"""Building blocks shared by several architectures (conv-BN-activation and friends)."""

from __future__ import annotations

import torch.nn as nn


class ConvBNReLU(nn.Sequential):
    """Conv2d (no bias: BatchNorm has one) -> BatchNorm2d -> ReLU, with "same" padding for odd kernels."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, dilation: int = 1,
                 groups: int = 1):
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation=dilation, groups=groups,
                      bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )
