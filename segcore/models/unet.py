"""U-Net (Ronneberger et al., MICCAI 2015, arXiv:1505.04597): four down steps, four up steps, concatenated skips.

Deviations, each for the forward contract (logits at the input's H, W for any size): 3x3 convolutions are padded
("same") instead of valid with cropping, BatchNorm follows each convolution (`norm="group"` swaps in GroupNorm,
whose result does not depend on the batch: small-batch fine-tuning and multi-process CPU training), and when an
odd size makes an up-sampled map one pixel short of its skip, it is zero-padded to the skip's size.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import Conv2dNormActivation

from segcore.errors import ModelError
from segcore.registry import register_model

NORMS = ("batch", "group")


def _conv_norm_relu(in_channels: int, out_channels: int, norm: str) -> Conv2dNormActivation:
    norm_layer = nn.BatchNorm2d if norm == "batch" else partial(nn.GroupNorm, min(8, out_channels))
    return Conv2dNormActivation(in_channels, out_channels, kernel_size=3, norm_layer=norm_layer)


class DoubleConv(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, norm: str = "batch"):
        super().__init__(_conv_norm_relu(in_channels, out_channels, norm),
                         _conv_norm_relu(out_channels, out_channels, norm))


class Down(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, norm: str = "batch"):
        super().__init__(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels, norm))


class Up(nn.Module):
    """2x2 up-convolution halving the channels, concatenation with the encoder skip, two 3x3 convolutions."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "batch"):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
        self.conv = DoubleConv(in_channels // 2 + out_channels, out_channels, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        missing_h, missing_w = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
        if missing_h or missing_w:
            x = F.pad(x, [missing_w // 2, missing_w - missing_w // 2, missing_h // 2, missing_h - missing_h // 2])
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 64, norm: str = "batch"):
        super().__init__()
        widths = [width, width * 2, width * 4, width * 8, width * 16]
        self.stem = DoubleConv(in_channels, widths[0], norm)
        self.downs = nn.ModuleList(Down(widths[i], widths[i + 1], norm) for i in range(4))
        self.ups = nn.ModuleList(Up(widths[i + 1], widths[i], norm) for i in reversed(range(4)))
        self.classifier = nn.Conv2d(widths[0], num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        skips = [self.stem(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for up in self.ups:
            y = up(y, skips.pop())
        return {"out": self.classifier(y)}


@register_model("unet", task="semantic", paper="arXiv:1505.04597", default_size=(256, 256), onnx="fixed",
                contrastive_features="classifier", light_fine_tune={"width": 16})
def unet(num_classes: int, in_channels: int = 3, width: int = 64, norm: str = "batch",
         pretrained_backbone: bool = False) -> UNet:
    """Classic U-Net: four down, four up, concatenated skips; `width` sets the first stage's channels."""
    if norm not in NORMS:
        raise ModelError(f"norm must be one of {NORMS}, got {norm!r}")
    if pretrained_backbone:
        raise ModelError("unet has no pretrained backbone; it always trains from scratch (pretrained_backbone=False)")
    if width < 1:
        raise ModelError(f"width must be positive, got {width}")
    return UNet(num_classes, in_channels=in_channels, width=width, norm=norm)
