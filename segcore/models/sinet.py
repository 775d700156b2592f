"""SINet (Park et al., WACV 2020, arXiv:1911.09099): an 87K-parameter portrait segmenter built from Spatial Squeeze
(S2) modules and an Information Blocking Decoder that lets high-resolution detail through only where the encoder's
low-resolution prediction is unsure.

Deviations: S2-blocks upsample to the exact pre-pooling size, pool with ceil_mode (odd sizes keep every pixel) and
never pool a side below 2 pixels (tiny inputs still batch-normalise; inputs of 49+ pixels a side are unaffected);
the SE gate is the standard sigmoid one (torchvision's SqueezeExcitation, PReLU inside); the decoder upsamples once,
from 1/4 to the input size, instead of twice by 2 (the contract needs any input size).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.shufflenetv2 import channel_shuffle
from torchvision.ops import SqueezeExcitation

from segcore.errors import ModelError
from segcore.registry import register_model

# The paper's encoder table (portrait model): (kernel k, pooling p) of the two S2-blocks of each S2-module.
BOTTLENECK1_CONFIG = [[[3, 1], [5, 1]], [[3, 1], [3, 1]]]
BOTTLENECK2_CONFIG = [
    [[3, 1], [5, 1]], [[3, 1], [3, 1]], [[5, 1], [3, 2]], [[5, 2], [3, 4]],
    [[3, 1], [3, 1]], [[5, 1], [5, 1]], [[3, 2], [3, 4]], [[3, 1], [5, 2]],
]
STEM_CHANNELS, DOWN1_CHANNELS, BOTTLENECK1_CHANNELS, BOTTLENECK2_CHANNELS = 12, 16, 48, 96


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class BNPReLU(nn.Sequential):
    def __init__(self, channels: int):
        super().__init__(nn.BatchNorm2d(channels), nn.PReLU(channels))


class ConvBNPReLU(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
            BNPReLU(out_channels),
        )


class DSConvSE(nn.Sequential):
    """The paper's "DSConv+SE" down-sampling: stride-2 depthwise 3x3, squeeze-and-excitation, pointwise, BN, PReLU.

    The paper prefers it to a strided S2-module because it is faster on device.
    """

    def __init__(self, in_channels: int, out_channels: int, se_reduction: int = 2):
        super().__init__(
            nn.Conv2d(in_channels, in_channels, 3, stride=2, padding=1, groups=in_channels, bias=False),
            # PReLU rather than ReLU inside the gate: a dead squeeze unit would never get a gradient again.
            SqueezeExcitation(in_channels, max(1, in_channels // se_reduction), activation=nn.PReLU),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            BNPReLU(out_channels),
        )


class S2Block(nn.Module):
    """Average-pool by p (enlarges the receptive field cheaply; p=1: no pooling), depthwise k x k conv, BN, PReLU,
    pointwise conv, bilinear upsample back to the exact pre-pooling size, BN."""

    def __init__(self, channels: int, kernel_size: int, pool_size: int):
        super().__init__()
        self.pool_size = pool_size
        self.depthwise = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels,
                                   bias=False)
        self.depthwise_norm = BNPReLU(channels)
        self.pointwise = nn.Conv2d(channels, channels, 1, bias=False)
        self.norm = nn.BatchNorm2d(channels)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        # Never squeeze a side below 2 pixels: a 32x32 image is 4x4 at 1/8, and a 1x1 map cannot be batch-normalised
        # at batch size 1. Inputs of 49 pixels or more per side always get the paper's p.
        kernel = min(self.pool_size, (x.shape[-2] + 1) // 2, (x.shape[-1] + 1) // 2)
        if kernel <= 1:
            return x
        # ceil_mode: on sizes not divisible by the kernel the last partial window is still averaged, not dropped.
        return F.avg_pool2d(x, kernel, kernel, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pointwise(self.depthwise_norm(self.depthwise(self.pool(x))))
        if y.shape[-2:] != x.shape[-2:]:
            y = _resize(y, x.shape[-2:])
        return self.norm(y)


class S2Module(nn.Module):
    """Grouped 1x1 conv to half the output channels, channel shuffle, two S2-blocks on that same reduced map,
    concatenation, residual add when the shapes allow, BN + PReLU."""

    def __init__(self, in_channels: int, out_channels: int, block_config: list[list[int]]):
        super().__init__()
        groups = len(block_config)
        if out_channels % (2 * groups) or in_channels % groups:
            raise ValueError(f"S2Module channels must split into {groups} groups: {in_channels} -> {out_channels}")
        reduced = out_channels // groups
        self.groups = groups
        self.reduce = nn.Conv2d(in_channels, reduced, 1, groups=groups, bias=False)
        self.blocks = nn.ModuleList(S2Block(reduced, kernel, pool) for kernel, pool in block_config)
        self.residual = in_channels == out_channels
        self.norm = BNPReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Shuffle so each S2-block sees channels from both groups of the grouped 1x1 conv.
        reduced = channel_shuffle(self.reduce(x), self.groups)
        y = torch.cat([block(reduced) for block in self.blocks], dim=1)
        if self.residual:
            y = y + x
        return self.norm(y)


class SINetEncoder(nn.Module):
    """The paper's encoder table: CBR (1/2), DSConv+SE (1/4), bottleneck 1 (2 S2-modules), DSConv+SE (1/8),
    bottleneck 2 (8 S2-modules), each bottleneck's input concatenated to its output, 1x1 classifier at 1/8.

    Returns the low-resolution logits and bottleneck 1's output (the 1/4 features the decoder blocks).
    """

    def __init__(self, num_classes: int, in_channels: int = 3):
        super().__init__()
        self.stem = ConvBNPReLU(in_channels, STEM_CHANNELS, 3, stride=2)
        self.down1 = DSConvSE(STEM_CHANNELS, DOWN1_CHANNELS)
        self.bottleneck1 = nn.Sequential(*(
            S2Module(DOWN1_CHANNELS if i == 0 else BOTTLENECK1_CHANNELS, BOTTLENECK1_CHANNELS, config)
            for i, config in enumerate(BOTTLENECK1_CONFIG)
        ))
        self.bottleneck1_norm = BNPReLU(DOWN1_CHANNELS + BOTTLENECK1_CHANNELS)
        self.down2 = DSConvSE(DOWN1_CHANNELS + BOTTLENECK1_CHANNELS, BOTTLENECK1_CHANNELS)
        self.bottleneck2 = nn.Sequential(*(
            S2Module(BOTTLENECK1_CHANNELS if i == 0 else BOTTLENECK2_CHANNELS, BOTTLENECK2_CHANNELS, config)
            for i, config in enumerate(BOTTLENECK2_CONFIG)
        ))
        self.bottleneck2_norm = BNPReLU(BOTTLENECK1_CHANNELS + BOTTLENECK2_CHANNELS)
        self.classifier = nn.Conv2d(BOTTLENECK1_CHANNELS + BOTTLENECK2_CHANNELS, num_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        quarter = self.down1(self.stem(x))
        high_res_features = self.bottleneck1(quarter)
        eighth = self.down2(self.bottleneck1_norm(torch.cat([quarter, high_res_features], dim=1)))
        deep = self.bottleneck2_norm(torch.cat([eighth, self.bottleneck2(eighth)], dim=1))
        return self.classifier(deep), high_res_features


class InformationBlockingDecoder(nn.Module):
    """Upsample the encoder's 1/8 prediction to 1/4, project the 1/4 features to class maps, block them by
    (1 - confidence) so only uncertain pixels (mostly boundaries) take local detail, add, BN, upsample, 3x3 conv."""

    def __init__(self, num_classes: int, high_res_channels: int):
        super().__init__()
        self.num_classes = num_classes
        self.high_res_projection = ConvBNPReLU(high_res_channels, num_classes, 1)
        self.upsampled_prediction_norm = nn.BatchNorm2d(num_classes)
        self.fused_norm = nn.BatchNorm2d(num_classes)
        self.classifier = nn.Conv2d(num_classes, num_classes, 3, padding=1, bias=False)

    def information_blocking_map(self, low_res_logits: torch.Tensor, size) -> torch.Tensor:
        """1 - confidence of the low-resolution prediction upsampled to `size`, shape (N, 1, H, W).

        Confidence is the max softmax probability over classes; with one class (sigmoid output) it is
        max(p, 1 - p), the probability of whichever of foreground/background is predicted.
        """
        logits = _resize(low_res_logits, size)
        if self.num_classes == 1:
            probability = torch.sigmoid(logits)
            confidence = torch.maximum(probability, 1 - probability)
        else:
            confidence = logits.softmax(dim=1).amax(dim=1, keepdim=True)
        return 1 - confidence

    def forward(self, low_res_logits: torch.Tensor, high_res_features: torch.Tensor, size) -> torch.Tensor:
        high_res_size = high_res_features.shape[-2:]
        blocking = self.information_blocking_map(low_res_logits, high_res_size)
        upsampled_prediction = self.upsampled_prediction_norm(_resize(low_res_logits, high_res_size))
        fused = self.high_res_projection(high_res_features) * blocking + upsampled_prediction
        return self.classifier(_resize(self.fused_norm(fused), size))


class SINet(nn.Module):
    """Encoder + Information Blocking Decoder.

    Two-phase training (the paper trains the encoder alone, then the whole network): `encoder` holds every encoder
    parameter, its classifier included, and `encoder_logits(x)` is its prediction at the input size. In training
    mode forward also returns "aux": [that encoder prediction], so one loss call supervises both outputs.
    """

    def __init__(self, num_classes: int, in_channels: int = 3):
        super().__init__()
        self.encoder = SINetEncoder(num_classes, in_channels)
        self.decoder = InformationBlockingDecoder(num_classes, BOTTLENECK1_CHANNELS)

    def encoder_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's 1/8 prediction, upsampled to the input's H, W (phase-one training target)."""
        return _resize(self.encoder(x)[0], x.shape[-2:])

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        size = x.shape[-2:]
        low_res_logits, high_res_features = self.encoder(x)
        output = {"out": self.decoder(low_res_logits, high_res_features, size)}
        if self.training:
            output["aux"] = [_resize(low_res_logits, size)]
        return output


@register_model("sinet", task="portrait", paper="arXiv:1911.09099", default_size=(224, 224), realtime=True,
                onnx="dynamic", encoder_prediction=True, contrastive_features="encoder.classifier", light_fine_tune={})
def sinet(num_classes: int, in_channels: int = 3, pretrained_backbone: bool = False) -> SINet:
    """SINet: 87K-parameter real-time portrait segmenter (S2-modules, information blocking decoder)."""
    if pretrained_backbone:
        raise ModelError("sinet has no pretrained backbone in torchvision; it trains from scratch "
                         "(pretrained_backbone=False)")
    return SINet(num_classes, in_channels=in_channels)
