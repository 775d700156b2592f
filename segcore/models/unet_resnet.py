"""U-Net (Ronneberger et al., arXiv:1505.04597) on a torchvision ResNet encoder (He et al., arXiv:1512.03385) for
saliency: 1x1-narrowed skips from the stem (1/2) and layer1-3 are concatenated into a decoder of 4x4 stride-2
transposed convs with BatchNorm + LeakyReLU; a 3x3 conv gives the logits (sigmoid left to the loss / Segmenter).
Deviation, for any input size: an upsampled map one row/column off its skip (or the input) is cropped or zero-padded.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import Conv2dNormActivation

from segcore.errors import ModelError
from segcore.models.backbones import resnet_channels, resnet_features
from segcore.registry import register_model

ENCODERS = ("resnet50", "resnet18", "resnet34")
SKIP_LAYERS = ("layer3", "layer2", "layer1", "stem")  # deepest first, the order the decoder meets them
DECODER_CHANNELS = (256, 128, 64, 32, 16)  # at 1/16, 1/8, 1/4, 1/2 and 1/1
LEAKY_SLOPE = 0.1


def fit_to(x: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """Crop or zero-pad `x` at the bottom/right to `size` (negative padding crops)."""
    return F.pad(x, [0, size[-1] - x.shape[-1], 0, size[-2] - x.shape[-2]])


def conv_bn_leaky_relu(in_channels: int, out_channels: int, kernel_size: int = 1) -> Conv2dNormActivation:
    return Conv2dNormActivation(in_channels, out_channels, kernel_size,
                                activation_layer=partial(nn.LeakyReLU, LEAKY_SLOPE))


class UpBlock(nn.Sequential):
    """4x4 stride-2 transposed convolution doubling the resolution, BatchNorm, LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.ConvTranspose2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
        )


class UNetResNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, encoder: str = "resnet50",
                 pretrained_backbone: bool = False, decoder_scale: float = 1.0):
        super().__init__()
        channels = resnet_channels(encoder)
        widths = [max(8, round(width * decoder_scale)) for width in DECODER_CHANNELS]
        self.encoder = resnet_features(
            encoder, {"relu": "stem", "layer1": "layer1", "layer2": "layer2", "layer3": "layer3", "layer4": "layer4"},
            pretrained_backbone, in_channels,
        )
        self.skip_reductions = nn.ModuleDict({
            name: conv_bn_leaky_relu(channels[name], width) for name, width in zip(SKIP_LAYERS, widths)
        })
        # Each up block after the first also takes the concatenated skip of the scale it starts from.
        up_inputs = [channels["layer4"]] + [2 * width for width in widths[:-1]]
        self.up_blocks = nn.ModuleList(UpBlock(i, o) for i, o in zip(up_inputs, widths))
        self.classifier = nn.Conv2d(widths[-1], num_classes, kernel_size=3, padding=1)
        self.encoder_frozen = False

    def freeze_encoder(self) -> None:
        """Stop training the encoder: no gradients, and its BatchNorm layers keep their running statistics.

        Freezing only requires_grad would still let train mode overwrite the BatchNorm running statistics with those
        of (small) fine-tuning batches, silently changing the "frozen" features; so the encoder stays in eval mode.
        """
        self.encoder_frozen = True
        self.encoder.requires_grad_(False)
        self.encoder.eval()

    def unfreeze_encoder(self) -> None:
        self.encoder_frozen = False
        self.encoder.requires_grad_(True)
        self.encoder.train(self.training)

    def train(self, mode: bool = True) -> "UNetResNet":
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.encoder(x)
        y = features["layer4"]
        for name, up_block in zip(SKIP_LAYERS, self.up_blocks):
            skip = self.skip_reductions[name](features[name])
            y = torch.cat([fit_to(up_block(y), skip.shape), skip], dim=1)
        y = fit_to(self.up_blocks[-1](y), x.shape)
        return {"out": self.classifier(y)}


# 288x384 keeps OSIE's 4:3 aspect (800x600 images) at a size divisible by the encoder's stride of 32.
# freeze_encoder() keeps an ImageNet encoder's features while the decoder learns from little data; the resnet18
# encoder keeps quick fine-tunes quick.
@register_model("unet_resnet50", task="saliency", paper="arXiv:1505.04597", default_size=(288, 384), onnx="dynamic",
                freezable_encoder=True, contrastive_features="classifier", light_fine_tune={"encoder": "resnet18"})
def unet_resnet50(num_classes: int, in_channels: int = 3, pretrained_backbone: bool = False,
                  encoder: str = "resnet50", decoder_scale: float = 1.0) -> UNetResNet:
    """U-Net with a ResNet50 encoder (resnet18/34 lighter) for saliency maps; freeze_encoder() for fine-tuning.

    decoder_scale multiplies the decoder's widths (256, 128, 64, 32, 16); 0.5 keeps a ResNet18 model's float16
    weights under 25 MB.
    """
    if encoder not in ENCODERS:
        raise ModelError(f"unknown encoder {encoder!r}; choose one of {', '.join(ENCODERS)}")
    if not decoder_scale > 0:
        raise ModelError(f"decoder_scale must be positive, got {decoder_scale}")
    return UNetResNet(num_classes, in_channels, encoder, pretrained_backbone, decoder_scale)
