"""BiSeNet (Yu et al., ECCV 2018, arXiv:1808.00897): a three-layer Spatial Path at 1/8 and a fast-downsampling
Context Path with Attention Refinement Modules, merged by a Feature Fusion Module; aux heads on the 16x/32x features.
Where the paper is silent we follow the authors' released code: a 7x7 first spatial conv, 3x3 projections of the
backbone features to 128 channels, a 3x3 smoothing conv after each upsampling, FFM width 256 before the classifier.
Deviation: 1x1 convs after global pooling use a bias, not BatchNorm (undefined on a 1x1 map at batch 1 in training)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from torchvision.ops import Conv2dNormActivation

from segcore.errors import ModelError
from segcore.models.backbones import resnet_channels, resnet_features
from segcore.models.xception import Xception39
from segcore.registry import register_model

BACKBONES = ("resnet18", "resnet101", "xception39")


def _upsample(x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class SpatialPath(nn.Module):
    """Three stride-2 conv-BN-ReLU layers: 1/8 resolution, wide enough to keep spatial detail."""

    def __init__(self, in_channels: int = 3, widths: tuple[int, int, int] = (64, 64, 128)):
        super().__init__()
        self.layers = nn.Sequential(
            Conv2dNormActivation(in_channels, widths[0], kernel_size=7, stride=2),
            Conv2dNormActivation(widths[0], widths[1], kernel_size=3, stride=2),
            Conv2dNormActivation(widths[1], widths[2], kernel_size=3, stride=2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class AttentionRefinementModule(nn.Module):
    """Channel attention from global context (Fig. 2(b)): pool, 1x1 conv (bias, not BN), sigmoid, multiply."""

    def __init__(self, channels: int):
        super().__init__()
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, channels, kernel_size=1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class ContextPath(nn.Module):
    """Backbone features at 1/16 and 1/32, each refined by an ARM, summed top-down with the global context.

    `forward(x, output_size)` returns the context feature upsampled to `output_size` (the Spatial Path's size)
    and the refined 1/16 and 1/32 features that the auxiliary heads supervise.
    """

    def __init__(self, backbone: str = "resnet18", pretrained_backbone: bool = False, in_channels: int = 3,
                 width: int = 128):
        super().__init__()
        if backbone == "xception39":
            if pretrained_backbone:
                raise ModelError("xception39 has no pretrained ImageNet weights (torchvision has none); "
                                 "pass pretrained_backbone=False or choose a resnet backbone")
            self.backbone = Xception39(in_channels)
            channels16, channels32 = self.backbone.channels["stride16"], self.backbone.channels["stride32"]
        else:
            # The features stop at layer4, so ResNet's avgpool and fc are not part of the model.
            self.backbone = resnet_features(backbone, {"layer3": "stride16", "layer4": "stride32"},
                                            pretrained=pretrained_backbone, in_channels=in_channels)
            channels16, channels32 = resnet_channels(backbone)["layer3"], resnet_channels(backbone)["layer4"]
        self.project16 = Conv2dNormActivation(channels16, width)
        self.project32 = Conv2dNormActivation(channels32, width)
        self.arm16 = AttentionRefinementModule(width)
        self.arm32 = AttentionRefinementModule(width)
        self.global_context = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels32, width, kernel_size=1),
            nn.ReLU(inplace=True),
        )
        self.smooth32 = Conv2dNormActivation(width, width)
        self.smooth16 = Conv2dNormActivation(width, width)

    def forward(self, x: torch.Tensor, output_size: torch.Size | tuple[int, int]
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        features = self.backbone(x)
        features16, features32 = features["stride16"], features["stride32"]
        # The 1x1 global context broadcasts over the 1/32 map: every position sees the whole image.
        refined32 = self.arm32(self.project32(features32)) + self.global_context(features32)
        refined16 = self.arm16(self.project16(features16)) + self.smooth32(
            _upsample(refined32, features16.shape[-2:]))
        context = self.smooth16(_upsample(refined16, output_size))
        return context, [refined16, refined32]


class FeatureFusionModule(nn.Module):
    """Concatenate spatial and context features, conv-BN-ReLU, then re-weight channels and add (Fig. 2(c))."""

    def __init__(self, in_channels: int, out_channels: int = 256, reduction: int = 1):
        super().__init__()
        self.fuse = Conv2dNormActivation(in_channels, out_channels, kernel_size=1)
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(out_channels, out_channels // reduction, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels // reduction, out_channels, kernel_size=1),
            nn.Sigmoid(),
        )

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        features = self.fuse(torch.cat([spatial, context], dim=1))
        return features + features * self.attention(features)


class BiSeNetHead(nn.Sequential):
    """3x3 conv-BN-ReLU then a 1x1 classifier; used for the main output and the auxiliary outputs."""

    def __init__(self, in_channels: int, mid_channels: int, num_classes: int):
        super().__init__(Conv2dNormActivation(in_channels, mid_channels),
                         nn.Conv2d(mid_channels, num_classes, kernel_size=1))


class BiSeNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, backbone: str = "resnet18",
                 pretrained_backbone: bool = False, context_width: int = 128, fusion_width: int = 256,
                 aux_heads: bool = True):
        super().__init__()
        if backbone not in BACKBONES:
            raise ModelError(f"unknown BiSeNet backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
        self.spatial_path = SpatialPath(in_channels, (64, 64, context_width))
        self.context_path = ContextPath(backbone, pretrained_backbone, in_channels, context_width)
        self.feature_fusion = FeatureFusionModule(2 * context_width, fusion_width)
        self.head = BiSeNetHead(fusion_width, 64, num_classes)
        # The two auxiliary heads only add training losses; aux_heads=False builds the model without them (shipping).
        self.aux_heads = nn.ModuleList(BiSeNetHead(context_width, context_width, num_classes)
                                       for _ in range(2 if aux_heads else 0))

    @property
    def classifier(self) -> nn.Conv2d:
        """The final 1x1 classifier; its input is the feature map contrastive pre-training projects."""
        return self.head[-1]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        size = x.shape[-2:]
        spatial = self.spatial_path(x)
        context, context_features = self.context_path(x, spatial.shape[-2:])
        output = {"out": _upsample(self.head(self.feature_fusion(spatial, context)), size)}
        if self.training and len(self.aux_heads):
            output["aux"] = [_upsample(head(features), size)
                             for head, features in zip(self.aux_heads, context_features)]
        return output


# Quick fine-tunes use the lightest backbone, xception39: it trains from scratch in minutes on a CPU.
@register_model("bisenet", task="semantic", paper="arXiv:1808.00897", default_size=(360, 640), realtime=True,
                onnx="dynamic", contrastive_features="classifier", light_fine_tune={"backbone": "xception39"})
def bisenet(num_classes: int, in_channels: int = 3, pretrained_backbone: bool = False,
            backbone: str = "resnet18", aux_heads: bool = True) -> BiSeNet:
    """Bilateral network: 1/8 spatial path + attention-refined context path; backbone resnet18|resnet101|xception39.

    aux_heads=False leaves out the two training-only auxiliary heads (what `segcore ship` stores)."""
    return BiSeNet(num_classes, in_channels=in_channels, backbone=backbone, pretrained_backbone=pretrained_backbone,
                   aux_heads=aux_heads)
