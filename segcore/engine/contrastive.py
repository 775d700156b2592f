"""Stage 1 of pixel-wise label-based contrastive learning (Zhao et al., arXiv:2012.06985).

The network's features (the input of the module its architecture declares as `contrastive_features`: the
classifier, for SINet the encoder's classifier) go through a projection head of three 1x1 convolutions with 256
channels, ReLU after the first two, and unit normalisation; the "contrastive" loss pulls together pixels of the
same class across an image I and its distorted view I^. Image and view pass through the network as one batch so
BatchNorm sees both. Stage 2 (an ordinary Trainer stage) drops the head and fine-tunes the whole model with a
fresh classifier.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from segcore.engine.trainer import Trainer
from segcore.errors import ConfigError
from segcore.registry import architectures_with, capabilities


def feature_source(model: nn.Module) -> nn.Module:
    """The module whose input is the feature map to project, as the model's architecture declares it."""
    architecture = model.segcore_config["architecture"]
    path = capabilities(architecture).contrastive_features
    if path is None:
        raise ConfigError(f"{architecture} has no single classifier whose input features could be projected; "
                          f"contrastive pre-training supports {', '.join(architectures_with('contrastive_features'))}")
    return model.get_submodule(path)


class ProjectionHead(nn.Sequential):
    """Three 1x1 convolutions (ReLU after the first two); the output is unit-normalised per pixel."""

    def __init__(self, in_channels: int, width: int = 256):
        super().__init__(
            nn.Conv2d(in_channels, width, 1), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 1), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(super().forward(features), dim=1)


class FeatureProjector(nn.Module):
    """The segmentation model plus the projection head: forward returns projected features of the classifier input."""

    def __init__(self, model: nn.Module, width: int):
        super().__init__()
        self.model = model
        self._source = feature_source(model)
        in_channels = self._source.in_channels
        self.head = ProjectionHead(in_channels, width)
        self._captured: list[torch.Tensor] = []
        self._source.register_forward_hook(self._capture)

    def _capture(self, module, inputs, output) -> None:
        if self.training or torch.is_grad_enabled():
            self._captured.append(inputs[0])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self._captured.clear()
        self.model(images)
        if not self._captured:
            # The architecture's contrastive_features declaration names a module its forward never calls: a bug.
            raise RuntimeError(f"{type(self._source).__name__} declared as contrastive_features was not called during "
                               "the forward pass; cannot capture its features")
        features = self._captured[0]
        self._captured.clear()
        return self.head(features)


class ContrastiveTrainer(Trainer):
    """Trains model + projection head on (image, distorted view) pairs with the contrastive loss; no validation."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.val_set = None  # the classifier is untrained in this stage: no segmentation metric means anything
        self.projector = FeatureProjector(self.model, self.config.projection_dim).to(self.device)
        self.best_metric = "loss"

    def trainable_module(self) -> nn.Module:
        return self.projector

    def compute_loss(self, network: nn.Module, batch, epoch: int) -> torch.Tensor:
        images, distorted, labels, distorted_labels = (self._to_device(tensor) for tensor in batch[:4])
        with self._autocast():
            projected = network(torch.cat([images, distorted])).float()
        features, distorted_features = projected.chunk(2)
        return self.loss_fn(features, distorted_features, labels, distorted_labels)
