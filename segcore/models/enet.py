"""ENet (Paszke et al., arXiv:1606.02147): real-time encoder-decoder of bottlenecks (regular, dilated, asymmetric
5x1/1x5, downsampling with max-pool indices, upsampling by max-unpooling), PReLU and spatial dropout, per Table 1.
Deviations, so logits land at any input size: the InitialBlock pools in ceil mode to match its padded conv; unpooling
gets the pre-pooling size and transposed convs are edge-padded to it; the final full conv is 3x3 stride 2 (kernel
unstated in the paper), which reaches both even and odd sizes.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from segcore.errors import ModelError
from segcore.registry import register_model

# The bottleneck's 1x1 projection narrows its input by this factor (the paper's "internal" width).
PROJECTION_RATIO = 4


def conv_bn_prelu(in_channels: int, out_channels: int, kernel_size, stride: int = 1, padding=0,
                  dilation: int = 1) -> nn.Sequential:
    # No convolution bias: the BatchNorm after it has one (the paper drops biases from the projections).
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.PReLU(out_channels),
    )


class InitialBlock(nn.Module):
    """Fig. 2a: a 3x3 stride-2 convolution with 13 filters, concatenated with a 2x2 max-pool of the input: 16 maps."""

    def __init__(self, in_channels: int = 3, out_channels: int = 16):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels - in_channels, 3, stride=2, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.batch_norm = nn.BatchNorm2d(out_channels)
        self.activation = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.batch_norm(torch.cat([self.conv(x), self.pool(x)], dim=1)))


class Bottleneck(nn.Module):
    """Fig. 2b, non-downsampling: 1x1 projection, a main convolution, 1x1 expansion, spatial dropout, residual sum.

    The main convolution is "regular" (3x3), "dilated" (3x3 with `dilation`) or "asymmetric" (5x1 then 1x5).
    """

    def __init__(self, channels: int, kind: str = "regular", dilation: int = 1, dropout: float = 0.1):
        super().__init__()
        internal = channels // PROJECTION_RATIO
        if kind == "asymmetric":
            main = nn.Sequential(
                nn.Conv2d(internal, internal, (5, 1), padding=(2, 0), bias=False),
                conv_bn_prelu(internal, internal, (1, 5), padding=(0, 2)),
            )
        elif kind in ("regular", "dilated"):
            main = conv_bn_prelu(internal, internal, 3, padding=dilation, dilation=dilation)
        else:
            raise ValueError(f"bottleneck kind must be regular, dilated or asymmetric, got {kind!r}")
        self.extension = nn.Sequential(
            conv_bn_prelu(channels, internal, 1),
            main,
            nn.Conv2d(internal, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.Dropout2d(dropout),
        )
        self.activation = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(x + self.extension(x))


class DownsamplingBottleneck(nn.Module):
    """Fig. 2b, downsampling: the main branch max-pools (keeping indices for the decoder) and zero-pads channels;
    the extension's first projection is a 2x2 stride-2 convolution."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.1):
        super().__init__()
        internal = in_channels // PROJECTION_RATIO
        self.pool = nn.MaxPool2d(2, stride=2, return_indices=True)
        self.extension = nn.Sequential(
            conv_bn_prelu(in_channels, internal, 2, stride=2),
            conv_bn_prelu(internal, internal, 3, padding=1),
            nn.Conv2d(internal, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.Dropout2d(dropout),
        )
        self.activation = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        main, indices = self.pool(x)
        extension = self.extension(x)
        main = F.pad(main, [0, 0, 0, 0, 0, extension.shape[1] - main.shape[1]])
        return self.activation(main + extension), indices


class UpsamplingBottleneck(nn.Module):
    """Decoder bottleneck: the main branch is a 1x1 convolution and max-unpooling with the encoder's indices;
    the extension's main convolution is a 3x3 stride-2 transposed convolution."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.1):
        super().__init__()
        internal = in_channels // PROJECTION_RATIO
        self.main_conv = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                       nn.BatchNorm2d(out_channels))
        self.unpool = nn.MaxUnpool2d(2, stride=2)
        self.projection = conv_bn_prelu(in_channels, internal, 1)
        self.upsample = nn.ConvTranspose2d(internal, internal, 3, stride=2, padding=1, bias=False)
        self.upsample_activation = nn.Sequential(nn.BatchNorm2d(internal), nn.PReLU(internal))
        self.expansion = nn.Sequential(
            nn.Conv2d(internal, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.Dropout2d(dropout),
        )
        self.activation = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor, indices: torch.Tensor, size: torch.Size) -> torch.Tensor:
        main = self.unpool(self.main_conv(x), indices, size)
        extension = self.upsample(self.projection(x), output_size=[2 * x.shape[-2], 2 * x.shape[-1]])
        # An odd pre-pooling size is one row/column beyond what a stride-2 transposed convolution can reach.
        extension = F.pad(extension, [0, size[1] - extension.shape[-1], 0, size[0] - extension.shape[-2]],
                          mode="replicate")
        extension = self.expansion(self.upsample_activation(extension))
        return self.activation(main + extension)


def encoder_section(channels: int, dropout: float) -> nn.Sequential:
    """Bottlenecks x.1 to x.8 of stages 2 and 3 (Table 1)."""
    return nn.Sequential(
        Bottleneck(channels, dropout=dropout),
        Bottleneck(channels, "dilated", dilation=2, dropout=dropout),
        Bottleneck(channels, "asymmetric", dropout=dropout),
        Bottleneck(channels, "dilated", dilation=4, dropout=dropout),
        Bottleneck(channels, dropout=dropout),
        Bottleneck(channels, "dilated", dilation=8, dropout=dropout),
        Bottleneck(channels, "asymmetric", dropout=dropout),
        Bottleneck(channels, "dilated", dilation=16, dropout=dropout),
    )


class ENet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3):
        super().__init__()
        self.initial = InitialBlock(in_channels, 16)
        # Spatial dropout is 0.01 before bottleneck2.0 and 0.1 from there on, as in the paper.
        self.bottleneck1_0 = DownsamplingBottleneck(16, 64, dropout=0.01)
        self.stage1 = nn.Sequential(*(Bottleneck(64, dropout=0.01) for _ in range(4)))
        self.bottleneck2_0 = DownsamplingBottleneck(64, 128)
        self.stage2 = encoder_section(128, dropout=0.1)
        self.stage3 = encoder_section(128, dropout=0.1)
        self.bottleneck4_0 = UpsamplingBottleneck(128, 64)
        self.stage4 = nn.Sequential(Bottleneck(64), Bottleneck(64))
        self.bottleneck5_0 = UpsamplingBottleneck(64, 16)
        self.stage5 = Bottleneck(16)
        self.fullconv = nn.ConvTranspose2d(16, num_classes, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        input_size = x.shape[-2:]
        x = self.initial(x)
        size1 = x.shape[-2:]
        x, indices1 = self.bottleneck1_0(x)
        x = self.stage1(x)
        size2 = x.shape[-2:]
        x, indices2 = self.bottleneck2_0(x)
        x = self.stage3(self.stage2(x))
        x = self.stage4(self.bottleneck4_0(x, indices2, size2))
        x = self.stage5(self.bottleneck5_0(x, indices1, size1))
        return {"out": self.fullconv(x, output_size=input_size)}


@register_model("enet", task="semantic", paper="arXiv:1606.02147", default_size=(360, 480), realtime=True, onnx="fixed",
                light_fine_tune={})
def enet(num_classes: int, in_channels: int = 3, pretrained_backbone: bool = False) -> ENet:
    """ENet: real-time bottleneck encoder-decoder, 0.37M parameters, trained from scratch."""
    if pretrained_backbone:
        raise ModelError(
            "enet has no pretrained backbone (torchvision has no ImageNet ENet); use pretrained_backbone=False"
        )
    return ENet(num_classes, in_channels=in_channels)
