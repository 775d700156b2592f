"""SegNet (Badrinarayanan et al., TPAMI 2017, arXiv:1511.00561): the 13 convolutions of VGG16 with BatchNorm as the
encoder, a mirrored decoder that upsamples by max-unpooling with the encoder's stored pooling indices (no skip
concatenation, no learned upsampling), and a 3x3 convolution classifier.
Deviation, for logits at any input size: each unpooling is given the encoder map's size before pooling, so odd sizes
(where pooling dropped the last row or column) come back exactly.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torchvision.ops import Conv2dNormActivation

from segcore.models.backbones import vgg16_features
from segcore.registry import register_model

# Output channels of the encoder's five stages (VGG16); the decoder mirrors them.
ENCODER_CHANNELS = (64, 128, 256, 512, 512)


def split_at_max_pools(features: nn.Sequential) -> nn.ModuleList:
    """The convolution stages of a VGG `features` Sequential, without its max-pools (SegNet pools with indices)."""
    stages, current = [], []
    for layer in features:
        if isinstance(layer, nn.MaxPool2d):
            stages.append(nn.Sequential(*current))
            current = []
        else:
            current.append(layer)
    return nn.ModuleList(stages)


class DecoderStage(nn.Module):
    """Max-unpooling with the encoder's indices, then 3x3 conv-BN-ReLUs, the last one changing the width."""

    def __init__(self, in_channels: int, out_channels: int, num_convs: int):
        super().__init__()
        self.unpool = nn.MaxUnpool2d(kernel_size=2, stride=2)
        widths = [in_channels] * num_convs + [out_channels]
        self.convs = nn.Sequential(*(Conv2dNormActivation(widths[i], widths[i + 1]) for i in range(num_convs)))

    def forward(self, x: torch.Tensor, indices: torch.Tensor, size: torch.Size) -> torch.Tensor:
        return self.convs(self.unpool(x, indices, size))


class SegNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, pretrained_backbone: bool = False):
        super().__init__()
        self.encoder = split_at_max_pools(vgg16_features(pretrained_backbone, in_channels, batch_norm=True))
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2, return_indices=True)
        # Deepest first, each with as many convolutions as its encoder stage; in the first stage's mirror the
        # classifier is the last of them, as in the paper's Caffe model.
        convs_per_stage = [sum(isinstance(layer, nn.Conv2d) for layer in stage) for stage in self.encoder]
        convs_per_stage[0] -= 1
        self.decoder = nn.ModuleList(
            DecoderStage(ENCODER_CHANNELS[i], ENCODER_CHANNELS[max(i - 1, 0)], convs_per_stage[i])
            for i in reversed(range(len(ENCODER_CHANNELS)))
        )
        self.classifier = nn.Conv2d(ENCODER_CHANNELS[0], num_classes, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        indices, sizes = [], []
        for stage in self.encoder:
            x = stage(x)
            sizes.append(x.shape[-2:])
            x, stage_indices = self.pool(x)
            indices.append(stage_indices)
        for stage in self.decoder:
            x = stage(x, indices.pop(), sizes.pop())
        return {"out": self.classifier(x)}


@register_model("segnet", task="semantic", paper="arXiv:1511.00561", default_size=(360, 480), onnx="fixed",
                contrastive_features="classifier")
def segnet(num_classes: int, in_channels: int = 3, pretrained_backbone: bool = False) -> SegNet:
    """SegNet: VGG16-BN encoder, decoder upsampling by max-unpooling with the encoder's pooling indices."""
    return SegNet(num_classes, in_channels=in_channels, pretrained_backbone=pretrained_backbone)
