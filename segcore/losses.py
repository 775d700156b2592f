"""Training losses, built by name with `build_loss(name, **kwargs)`: cross-entropy with auxiliary heads and optional
online hard example mining (BiSeNet, arXiv:1808.00897, and its training code), SINet's boundary-aware loss
(arXiv:1911.09099), the pixel-wise label-based contrastive loss of Zhao et al. (arXiv:2012.06985) and saliency
losses (MSE, KL divergence, correlation).

Supervised losses take the model's output dict {"out": logits, optionally "aux": [logits, ...]} (or bare logits)
and the target; the contrastive loss takes projection features of a batch and of its distorted views with labels.
Deviation: the contrastive loss samples at most `max_pixels` pixels per image so memory stays bounded.
"""

from __future__ import annotations

import inspect
import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from segcore.errors import ConfigError, InputError

_LOSSES: dict[str, Callable[..., nn.Module]] = {}


def _register(name: str):
    def decorator(cls):
        _LOSSES[name] = cls
        return cls

    return decorator


def build_loss(name: str, **kwargs) -> nn.Module:
    """The loss registered under `name` ("ce", "boundary", "contrastive", "mse", "kld", "cc", "saliency")."""
    if name not in _LOSSES:
        raise ConfigError(f"unknown loss {name!r}; choose one of {', '.join(sorted(_LOSSES))}")
    try:
        return _LOSSES[name](**kwargs)
    except TypeError as error:  # a misspelt loss_kwargs key is the recipe's problem, not a bug
        raise ConfigError(f"bad loss_kwargs for loss {name!r}: {error}; it takes "
                          f"{inspect.signature(_LOSSES[name])}") from None


def list_losses() -> list[str]:
    return sorted(_LOSSES)


class SupervisedLoss(nn.Module):
    """Applies `single(logits, target)` to the principal output and adds aux_weight * sum over "aux" outputs."""

    def __init__(self, aux_weight: float = 1.0):
        super().__init__()
        self.aux_weight = float(aux_weight)

    def single(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, output: dict | torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if isinstance(output, torch.Tensor):
            output = {"out": output}
        loss = self.single(output["out"], target)
        for aux_logits in output.get("aux", []) or []:
            loss = loss + self.aux_weight * self.single(aux_logits, target)
        return loss


def _check_sizes(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.shape[-2:] != target.shape[-2:]:
        raise InputError(
            f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in size; models return logits "
            "at the input size, so resize the target with the image"
        )


# --------------------------------------------------------------------------------------------------------------
# Cross-entropy and boundary-aware cross-entropy
# --------------------------------------------------------------------------------------------------------------


class _WeightedCrossEntropy(SupervisedLoss):
    """Shared by "ce" and "boundary". `hard_weight` > 0 adds online hard example mining as BiSeNet's training code
    does (its OhemCELoss): hard_weight * the (weighted) mean CE over the hard pixels, those whose probability of
    their true class is below `hard_threshold` (0.7 there). The term is added to the full loss rather than
    replacing it, so a batch without hard pixels still trains (BiSeNet instead keeps at least 1/16 of the pixels)."""

    def __init__(self, ignore_index: int = 255, class_weights: list[float] | None = None, aux_weight: float = 1.0,
                 hard_weight: float = 0.0, hard_threshold: float = 0.7):
        super().__init__(aux_weight)
        self.ignore_index = int(ignore_index)
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weights", weights, persistent=False)
        if hard_weight < 0 or not 0.0 < hard_threshold <= 1.0:
            raise ConfigError(f"hard_weight must be >= 0 and hard_threshold in (0, 1], got {hard_weight} and "
                              f"{hard_threshold}")
        self.hard_weight = float(hard_weight)
        # CE above -log(threshold) <=> probability of the true class below threshold.
        self.hard_loss = -math.log(float(hard_threshold))

    def _hard_term(self, losses: torch.Tensor, weights: torch.Tensor) -> torch.Tensor | float:
        """hard_weight * mean CE over the pixels the model still gets wrong with confidence < hard_threshold.
        `losses` carry their class weight, so the comparison scales the threshold by the same weight."""
        if self.hard_weight == 0.0:
            return 0.0
        hard = (losses > weights * self.hard_loss).to(losses.dtype)
        return self.hard_weight * self._weighted_mean(losses, weights, hard)

    def _pixel_losses(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel weighted CE and per-pixel weight (the class weight of the target; 0 at ignored pixels)."""
        _check_sizes(logits, target)
        target = target.long()
        valid = target != self.ignore_index
        losses = F.cross_entropy(
            logits.float(), target, weight=self.class_weights, ignore_index=self.ignore_index, reduction="none"
        )
        if self.class_weights is None:
            weights = valid.to(losses.dtype)
        else:
            weights = torch.where(valid, self.class_weights[target.clamp(0, len(self.class_weights) - 1)], 0.0)
        return losses, weights

    @staticmethod
    def _weighted_mean(losses: torch.Tensor, weights: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
        """Sum of losses over the region divided by the sum of weights there (F.cross_entropy's "mean");
        zero, still attached to the graph, when the region has no weight (losses are zero wherever weights are,
        so clamping the denominator needs no branch, hence no device synchronisation)."""
        if region is not None:
            losses, weights = losses * region, weights * region
        return losses.sum() / weights.sum().clamp_min(1e-12)


@_register("ce")
class CrossEntropyLoss(_WeightedCrossEntropy):
    """Cross-entropy over pixels not equal to ignore_index, optionally class-weighted; auxiliary outputs are
    added as principal + aux_weight * sum(aux) (BiSeNet's joint loss, aux_weight = alpha = 1)."""

    def single(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        losses, weights = self._pixel_losses(logits, target)
        return self._weighted_mean(losses, weights) + self._hard_term(losses, weights)


def _window_max(values: torch.Tensor, width: int) -> torch.Tensor:
    """Max over a width x width window as a row pass then a column pass: a square window's max is separable, and
    two 1-D passes cost 2w instead of w^2 comparisons per pixel (15x15 on 32x224x224: 0.095 s instead of 0.42 s)."""
    pad = width // 2
    rows = F.max_pool2d(values, (width, 1), stride=1, padding=(pad, 0))
    return F.max_pool2d(rows, (1, width), stride=1, padding=(0, pad))


def boundary_band(target: torch.Tensor, width: int = 15, ignore_index: int | None = 255) -> torch.Tensor:
    """Boolean (N, H, W) band around label boundaries: dilation minus erosion of the one-hot ground truth with a
    width x width window, as max-pooling on the device.

    A pixel is in the band when its window holds two different labels, which is the union over classes of each
    class mask's dilation minus erosion. Ignored pixels take part in neither the dilation nor the erosion (they
    create no band) and are never in the band themselves. Outside the image nothing is assumed (as OpenCV's
    default border for morphology)."""
    if width < 1 or width % 2 == 0:
        raise ConfigError(f"band width must be an odd positive number, got {width}")
    target = target.long()
    if target.dim() == 2:
        target = target.unsqueeze(0)
    labels = target.unsqueeze(1).to(torch.float32)
    if ignore_index is not None:
        valid = target != ignore_index
        low = labels.masked_fill(~valid.unsqueeze(1), float("-inf"))
        high = labels.masked_fill(~valid.unsqueeze(1), float("inf"))
    else:
        valid = torch.ones_like(target, dtype=torch.bool)
        low = high = labels
    largest = _window_max(low, width)
    smallest = -_window_max(-high, width)
    return (largest != smallest).squeeze(1) & valid


@_register("boundary")
class BoundaryAwareLoss(_WeightedCrossEntropy):
    """SINet's boundary-aware loss: CE over all pixels + lambda_boundary * CE over the boundary band (dilation
    minus erosion of the ground truth with a band_width window). Each term is a (weighted) mean over its pixels;
    the band term is zero when the target has no boundary."""

    def __init__(
        self,
        lambda_boundary: float = 0.9,
        band_width: int = 15,
        ignore_index: int = 255,
        class_weights: list[float] | None = None,
        aux_weight: float = 1.0,
        hard_weight: float = 0.0,
        hard_threshold: float = 0.7,
    ):
        super().__init__(ignore_index, class_weights, aux_weight, hard_weight, hard_threshold)
        self.lambda_boundary = float(lambda_boundary)
        self.band_width = int(band_width)

    def single(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        losses, weights = self._pixel_losses(logits, target)
        band = boundary_band(target, self.band_width, self.ignore_index).to(losses.dtype)
        return (self._weighted_mean(losses, weights) + self.lambda_boundary * self._weighted_mean(losses, weights, band)
                + self._hard_term(losses, weights))


# --------------------------------------------------------------------------------------------------------------
# Pixel-wise label-based contrastive loss (Zhao et al., "Contrastive Learning for Label Efficient Semantic
# Segmentation", ICCV 2021)
# --------------------------------------------------------------------------------------------------------------


def _pair_logits(anchors: torch.Tensor, others: torch.Tensor, temperature: float) -> torch.Tensor:
    """(n, m) similarities / temperature: the only quadratic-size tensor the loss builds."""
    return anchors @ others.t() / temperature


def _sample_pixels(
    features: torch.Tensor, labels: torch.Tensor, ignore_index: int, max_pixels: int | None, generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-normalised features (n, D) and labels (n,) of one image's valid pixels, at most max_pixels of them
    drawn uniformly without replacement."""
    flat_features = features.flatten(1).t()
    flat_labels = labels.flatten()
    valid = torch.nonzero(flat_labels != ignore_index).squeeze(1)
    if max_pixels is not None and valid.numel() > max_pixels:
        choice = torch.randperm(valid.numel(), generator=generator, device="cpu")[:max_pixels].to(valid.device)
        valid = valid[choice]
    return F.normalize(flat_features[valid], dim=1), flat_labels[valid]


def _anchor_losses(
    anchors: torch.Tensor,
    anchor_labels: torch.Tensor,
    bag: torch.Tensor,
    bag_labels: torch.Tensor,
    temperature: float,
    extra_positives: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Per-anchor loss -1/|P| sum_{q in P} log(exp(s_pq) / Z_p), Z_p = sum over the whole bag (+ extra positives).

    The bag supplies positives (same label) and negatives; `extra_positives` (features, labels) from another image
    add their same-label pixels to the positives and to Z_p, and contribute no negatives. Anchors without any
    positive are dropped."""
    logits = _pair_logits(anchors, bag, temperature)
    positive = anchor_labels[:, None] == bag_labels[None, :]
    positive_logit_sum = (logits * positive).sum(dim=1)
    positive_count = positive.sum(dim=1)
    if extra_positives is None:
        log_partition = torch.logsumexp(logits, dim=1)
    else:
        extra_logits = _pair_logits(anchors, extra_positives[0], temperature)
        extra_positive = anchor_labels[:, None] == extra_positives[1][None, :]
        masked_extra = extra_logits.masked_fill(~extra_positive, float("-inf"))
        log_partition = torch.logsumexp(torch.cat([logits, masked_extra], dim=1), dim=1)
        positive_logit_sum = positive_logit_sum + (extra_logits * extra_positive).sum(dim=1)
        positive_count = positive_count + extra_positive.sum(dim=1)
    has_positive = positive_count > 0
    return (log_partition - positive_logit_sum / positive_count.clamp_min(1))[has_positive]


@_register("contrastive")
class PixelContrastiveLoss(nn.Module):
    """Pixel-wise label-based contrastive loss on unit-normalised projection features, temperature tau.

    forward(features, features_distorted, labels, labels_distorted=None):
      features, features_distorted: (B, D, h, w) projection-head outputs for the images I and their distorted
        views I^ (same batch order); labels, labels_distorted: (B, H, W) integer maps at any resolution, resized
        to (h, w) by nearest neighbour (labels_distorted defaults to labels, for photometric distortions).
    mode="within": for each image, anchors p in I, positives/negatives in I^:
        l(p) = -1/|P(p)| sum_{q in P(p)} log(exp(f_p.f^_q / tau) / sum_{k in I^} exp(f_p.f^_k / tau)),
        averaged over anchors, then over images.
    mode="cross": as within, plus the same-label pixels of another image's view J^ (J = next image in the batch,
        cyclically) as extra positives in the numerator and denominator (no negatives from J^).
    mode="batch": all anchors of the batch against all pixels of all views, one bag.
    Pixels labelled ignore_index are neither anchors nor in any bag. At most max_pixels pixels per image and view
    are sampled (None: all), so the similarity matrices are at most max_pixels^2 ((B max_pixels)^2 in batch mode).
    """

    def __init__(
        self,
        mode: str = "within",
        temperature: float = 0.1,
        max_pixels: int | None = 1024,
        ignore_index: int = 255,
        seed: int | None = None,
    ):
        super().__init__()
        if mode not in ("within", "cross", "batch"):
            raise ConfigError(f"mode must be within, cross or batch, got {mode!r}")
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        self.mode = mode
        self.temperature = float(temperature)
        self.max_pixels = None if max_pixels is None else int(max_pixels)
        self.ignore_index = int(ignore_index)
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def forward(
        self,
        features: torch.Tensor,
        features_distorted: torch.Tensor,
        labels: torch.Tensor,
        labels_distorted: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if features.shape != features_distorted.shape or features.dim() != 4:
            raise InputError(
                f"features and features_distorted must both be (B, D, h, w), got {tuple(features.shape)} and "
                f"{tuple(features_distorted.shape)}"
            )
        labels_distorted = labels if labels_distorted is None else labels_distorted
        size = features.shape[-2:]
        labels = self._resize(labels, size)
        labels_distorted = self._resize(labels_distorted, size)
        samples = [
            _sample_pixels(f, y, self.ignore_index, self.max_pixels, self.generator) for f, y in zip(features, labels)
        ]
        views = [
            _sample_pixels(f, y, self.ignore_index, self.max_pixels, self.generator)
            for f, y in zip(features_distorted, labels_distorted)
        ]
        if self.mode == "batch":
            anchor_losses = _anchor_losses(
                torch.cat([s[0] for s in samples]),
                torch.cat([s[1] for s in samples]),
                torch.cat([v[0] for v in views]),
                torch.cat([v[1] for v in views]),
                self.temperature,
            )
            return anchor_losses.mean() if anchor_losses.numel() else features.sum() * 0.0
        per_image = []
        batch = len(samples)
        for index, ((anchors, anchor_labels), (bag, bag_labels)) in enumerate(zip(samples, views)):
            extra = views[(index + 1) % batch] if self.mode == "cross" and batch > 1 else None
            losses = _anchor_losses(anchors, anchor_labels, bag, bag_labels, self.temperature, extra)
            if losses.numel():
                per_image.append(losses.mean())
        return torch.stack(per_image).mean() if per_image else features.sum() * 0.0

    @staticmethod
    def _resize(labels: torch.Tensor, size) -> torch.Tensor:
        if labels.dim() == 2:
            labels = labels.unsqueeze(0)
        if tuple(labels.shape[-2:]) == tuple(size):
            return labels.long()
        return F.interpolate(labels.unsqueeze(1).float(), size=tuple(size), mode="nearest").squeeze(1).long()


# --------------------------------------------------------------------------------------------------------------
# Saliency losses: a one-channel logit map against a fixation density map
# --------------------------------------------------------------------------------------------------------------


def _saliency_inputs(logits: torch.Tensor, density: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sigmoid maps and densities, both (N, H*W) float."""
    if logits.dim() != 4 or logits.shape[1] != 1:
        raise InputError(f"saliency losses need one-channel logits (N, 1, H, W), got {tuple(logits.shape)}; build "
                         "the model with num_classes=1")
    if density.dim() == 3:
        density = density.unsqueeze(1)
    _check_sizes(logits, density)
    return torch.sigmoid(logits.float()).flatten(1), density.float().flatten(1)


def kl_divergence(prediction: torch.Tensor, density: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Per-row KL(density || prediction) after normalising both rows to sum one (the MIT benchmark's KLD)."""
    prediction = prediction / prediction.sum(dim=1, keepdim=True).clamp_min(eps)
    density = density / density.sum(dim=1, keepdim=True).clamp_min(eps)
    return (density * torch.log(eps + density / (prediction + eps))).sum(dim=1)


def correlation(prediction: torch.Tensor, density: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Per-row Pearson correlation coefficient."""
    prediction = prediction - prediction.mean(dim=1, keepdim=True)
    density = density - density.mean(dim=1, keepdim=True)
    return (prediction * density).sum(dim=1) / (prediction.norm(dim=1) * density.norm(dim=1)).clamp_min(eps)


@_register("mse")
class SaliencyMSELoss(SupervisedLoss):
    """Mean squared error between sigmoid(logits) and the density map (values in [0, 1])."""

    def single(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        prediction, density = _saliency_inputs(logits, target)
        return F.mse_loss(prediction, density)


@_register("kld")
class SaliencyKLDLoss(SupervisedLoss):
    """KL divergence of the sum-normalised sigmoid map from the sum-normalised density, averaged over images."""

    def single(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return kl_divergence(*_saliency_inputs(logits, target)).mean()


@_register("cc")
class SaliencyCCLoss(SupervisedLoss):
    """1 - Pearson correlation between the sigmoid map and the density, averaged over images (0 is perfect)."""

    def single(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (1.0 - correlation(*_saliency_inputs(logits, target))).mean()


@_register("saliency")
class SaliencyLoss(SupervisedLoss):
    """mse_weight * MSE + kld_weight * KLD + cc_weight * (1 - CC)."""

    def __init__(
        self, mse_weight: float = 1.0, kld_weight: float = 1.0, cc_weight: float = 1.0, aux_weight: float = 1.0
    ):
        super().__init__(aux_weight)
        self.mse_weight, self.kld_weight, self.cc_weight = float(mse_weight), float(kld_weight), float(cc_weight)

    def single(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        prediction, density = _saliency_inputs(logits, target)
        return (
            self.mse_weight * F.mse_loss(prediction, density)
            + self.kld_weight * kl_divergence(prediction, density).mean()
            + self.cc_weight * (1.0 - correlation(prediction, density)).mean()
        )
