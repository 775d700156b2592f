"""FCN-32s/16s/8s (Long et al., arXiv:1411.4038): convolutionalised VGG16 whose stride-32 class scores are fused with
1x1 scores of pool4 (16s) and pool3 (8s) through learned, bilinear-initialised 2x deconvolutions.
Deviations: no 100-pixel input padding; fc6 is padded by 3 (a 64-pixel input's pool5 is 2x2) and each deconvolution
is sized to its skip, the final fixed-bilinear upsampling is interpolation to the input size, so any size works;
score_fr keeps default init (the paper zeroes it when fine-tuning, which from scratch starves the backbone at step 1).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from segcore.errors import ModelError
from segcore.models.backbones import build_torchvision, vgg16_features
from segcore.registry import register_model

# Indices into torchvision's VGG16 `features` just after the 3rd, 4th and 5th max-pool.
POOL3_END, POOL4_END, POOL5_END = 17, 24, 31


def bilinear_upsampling_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """ConvTranspose2d weight (channels, channels, k, k) that upsamples each channel bilinearly, as in the paper."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    taps = 1 - (torch.arange(kernel_size, dtype=torch.float32) - center).abs() / factor
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = taps[:, None] * taps[None, :]
    return weight


class BilinearUpsample2x(nn.ConvTranspose2d):
    """Learned 2x upsampling, initialised to bilinear interpolation; `output_size` absorbs odd skip sizes."""

    def __init__(self, channels: int):
        super().__init__(channels, channels, kernel_size=4, stride=2, padding=1, bias=False)
        with torch.no_grad():
            self.weight.copy_(bilinear_upsampling_kernel(channels, 4))


class FCN(nn.Module):
    """VGG16 -> fc6 (7x7) -> fc7 (1x1) -> score_fr; `skips` ("pool4", then "pool3") are fused coarse to fine.

    `fc_channels` narrows fc6/fc7 (the paper's 4096) for lighter experiments; ImageNet fc6/fc7 weights are only
    convolutionalised into them at the paper's width.
    """

    def __init__(self, num_classes: int, in_channels: int = 3, skips: tuple[str, ...] = (),
                 fc_channels: int = 4096, pretrained_backbone: bool = False):
        super().__init__()
        if tuple(skips) not in ((), ("pool4",), ("pool4", "pool3")):
            raise ValueError(f"skips must be (), ('pool4',) or ('pool4', 'pool3'), got {skips!r}")
        self.skips = tuple(skips)
        features = vgg16_features(pretrained_backbone, in_channels)
        self.to_pool3 = features[:POOL3_END]
        self.to_pool4 = features[POOL3_END:POOL4_END]
        self.to_pool5 = features[POOL4_END:POOL5_END]
        self.fc6 = nn.Sequential(nn.Conv2d(512, fc_channels, 7, padding=3), nn.ReLU(inplace=True), nn.Dropout())
        self.fc7 = nn.Sequential(nn.Conv2d(fc_channels, fc_channels, 1), nn.ReLU(inplace=True), nn.Dropout())
        self.score_fr = nn.Conv2d(fc_channels, num_classes, 1)
        # Absent skips are None. Skip scores are zero-initialised as in the paper, so the fused net starts with the
        # coarser net's predictions; upscore2 brings score_fr to pool4's stride, upscore_pool4 the fusion to pool3's.
        self.score_pool4 = _zero_conv1x1(512, num_classes) if "pool4" in self.skips else None
        self.upscore2 = BilinearUpsample2x(num_classes) if "pool4" in self.skips else None
        self.score_pool3 = _zero_conv1x1(256, num_classes) if "pool3" in self.skips else None
        self.upscore_pool4 = BilinearUpsample2x(num_classes) if "pool3" in self.skips else None
        if pretrained_backbone and fc_channels == 4096:
            vgg = build_torchvision(torchvision.models.vgg16, "VGG16_Weights", True)
            convolutionalise(vgg.classifier, self.fc6[0], self.fc7[0])

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        pool3 = self.to_pool3(x)
        pool4 = self.to_pool4(pool3)
        score = self.score_fr(self.fc7(self.fc6(self.to_pool5(pool4))))
        if self.score_pool4 is not None:
            skip_score = self.score_pool4(pool4)
            score = self.upscore2(score, output_size=skip_score.shape[-2:]) + skip_score
        if self.score_pool3 is not None:
            skip_score = self.score_pool3(pool3)
            score = self.upscore_pool4(score, output_size=skip_score.shape[-2:]) + skip_score
        return {"out": F.interpolate(score, size=x.shape[-2:], mode="bilinear", align_corners=False)}


def _zero_conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def convolutionalise(classifier: nn.Sequential, fc6: nn.Conv2d, fc7: nn.Conv2d) -> None:
    """Copy torchvision VGG16's fully connected fc6/fc7 into their convolutional equivalents (the paper's Fig. 2)."""
    with torch.no_grad():
        fc6.weight.copy_(classifier[0].weight.view_as(fc6.weight))
        fc6.bias.copy_(classifier[0].bias)
        fc7.weight.copy_(classifier[3].weight.view_as(fc7.weight))
        fc7.bias.copy_(classifier[3].bias)


def _build(num_classes: int, in_channels: int, pretrained_backbone: bool, fc_channels: int,
           skips: tuple[str, ...]) -> FCN:
    if fc_channels < 1:
        raise ModelError(f"fc_channels must be positive, got {fc_channels}")
    return FCN(num_classes, in_channels, skips, fc_channels, pretrained_backbone)


@register_model("fcn32s", task="semantic", paper="arXiv:1411.4038", default_size=(512, 512), onnx="fixed")
def fcn32s(num_classes: int, in_channels: int = 3, pretrained_backbone: bool = False, fc_channels: int = 4096) -> FCN:
    """FCN-32s: convolutionalised VGG16, class scores at stride 32 upsampled to the input."""
    return _build(num_classes, in_channels, pretrained_backbone, fc_channels, skips=())


@register_model("fcn16s", task="semantic", paper="arXiv:1411.4038", default_size=(512, 512), onnx="fixed")
def fcn16s(num_classes: int, in_channels: int = 3, pretrained_backbone: bool = False, fc_channels: int = 4096) -> FCN:
    """FCN-16s: FCN-32s fused with pool4 scores through a learned 2x upsampling."""
    return _build(num_classes, in_channels, pretrained_backbone, fc_channels, skips=("pool4",))


@register_model("fcn8s", task="semantic", paper="arXiv:1411.4038", default_size=(512, 512), onnx="fixed")
def fcn8s(num_classes: int, in_channels: int = 3, pretrained_backbone: bool = False, fc_channels: int = 4096) -> FCN:
    """FCN-8s: FCN-16s further fused with pool3 scores, predicting at stride 8."""
    return _build(num_classes, in_channels, pretrained_backbone, fc_channels, skips=("pool4", "pool3"))
