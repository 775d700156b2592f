"""Evaluation metrics: a streaming confusion matrix (pixel accuracy, mean accuracy, IoU, mIoU, frequency-weighted
IoU), the boundary F-score for edge quality, and the MIT saliency benchmark's CC, NSS, KLD, SIM and AUC-Judd
(Bylinskii et al., "What do different evaluation metrics tell us about saliency models?", arXiv:1604.03605).

Classes absent from both prediction and ground truth have an undefined IoU (NaN) and are left out of the means,
so evaluating a subset of images never drags mIoU down for classes it does not contain.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.distributed as dist

from segcore.errors import ConfigError, InputError


def _to_tensor(array) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array
    return torch.from_numpy(np.ascontiguousarray(array))


def _nanmean(values: torch.Tensor) -> float:
    defined = values[~torch.isnan(values)]
    return float(defined.mean()) if defined.numel() else math.nan


class ConfusionMatrix:
    """Streaming (num_classes x num_classes) confusion matrix: rows are ground truth, columns predictions.

    `update(pred, target)` takes label maps of any shape (or logits with the class axis at dim 1, which are
    argmax-ed) as torch tensors on any device or numpy arrays, and counts them with one bincount. Target pixels
    equal to ignore_index are skipped; any other label outside [0, num_classes) is an error. Matrices add up:
    `a.merge(b)`, `a + b`, and `all_reduce()` sums them over torch.distributed processes.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None):
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def reset(self) -> None:
        self.matrix = torch.zeros_like(self.matrix)

    def update(self, pred, target) -> "ConfusionMatrix":
        pred, target = _to_tensor(pred), _to_tensor(target)
        if pred.dim() == target.dim() + 1:
            pred = pred.argmax(dim=1)
        if pred.shape != target.shape:
            raise InputError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape; resize the "
                             "prediction to the mask (nearest neighbour) before scoring")
        if pred.device != target.device:
            pred = pred.to(target.device)
        pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            pred, target = pred[keep], target[keep]
        for name, labels in (("target", target), ("pred", pred)):
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
                raise InputError(
                    f"{name} has labels outside 0..{self.num_classes - 1} "
                    f"(min {int(labels.min())}, max {int(labels.max())}); set ignore_index for void pixels"
                )
        counts = torch.bincount(target * self.num_classes + pred, minlength=self.num_classes**2)
        self.matrix = self.matrix.to(counts.device) + counts.view(self.num_classes, self.num_classes)
        return self

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add another matrix's counts into this one (same number of classes)."""
        if other.num_classes != self.num_classes:
            raise InputError(f"cannot merge {other.num_classes} classes into {self.num_classes}; merge only matrices "
                             "of one dataset's classes")
        self.matrix = self.matrix + other.matrix.to(self.matrix.device)
        return self

    def __add__(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        result = ConfusionMatrix(self.num_classes, self.ignore_index)
        result.matrix = self.matrix.clone()
        return result.merge(other)

    def all_reduce(self) -> "ConfusionMatrix":
        """Sum the matrices of all torch.distributed processes in place (a no-op when not initialised). NCCL
        reduces only CUDA tensors, so with it a CPU matrix travels through the current GPU and back."""
        if dist.is_available() and dist.is_initialized():
            matrix = self.matrix
            if dist.get_backend() == "nccl" and matrix.device.type != "cuda":
                matrix = matrix.to(torch.device("cuda", torch.cuda.current_device()))
            dist.all_reduce(matrix, op=dist.ReduceOp.SUM)
            self.matrix = matrix.to(self.matrix.device)
        return self

    def compute(self) -> dict:
        """pixel_acc, mean_acc, iou (per class; NaN when the class is in neither prediction nor target), miou,
        fwiou, and fg_iou (the IoU of class 1) for two classes. Means skip NaNs; NaN when nothing was counted."""
        matrix = self.matrix.double().cpu()
        true_positive = matrix.diag()
        target_count = matrix.sum(dim=1)
        pred_count = matrix.sum(dim=0)
        total = matrix.sum()
        union = target_count + pred_count - true_positive
        nan = torch.tensor(math.nan, dtype=torch.float64)
        iou = torch.where(union > 0, true_positive / union.clamp_min(1), nan)
        class_accuracy = torch.where(target_count > 0, true_positive / target_count.clamp_min(1), nan)
        present = target_count > 0
        result = {
            "pixel_acc": float(true_positive.sum() / total) if total > 0 else math.nan,
            "mean_acc": _nanmean(class_accuracy),
            "iou": [float(value) for value in iou],
            "miou": _nanmean(iou),
            "fwiou": float((target_count[present] / total * iou[present]).sum()) if total > 0 else math.nan,
        }
        if self.num_classes == 2:
            result["fg_iou"] = float(iou[1])
        return result


def all_reduce_confusion(confusion: ConfusionMatrix) -> ConfusionMatrix:
    """Functional form of ConfusionMatrix.all_reduce."""
    return confusion.all_reduce()


# --------------------------------------------------------------------------------------------------------------
# Boundary F-score
# --------------------------------------------------------------------------------------------------------------


def _label_boundaries(labels: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Pixels with a 4-neighbour of another label (a two-pixel-wide line along each label change). With
    `valid`, only changes between two valid pixels count."""
    horizontal = labels[:, 1:] != labels[:, :-1]
    vertical = labels[1:, :] != labels[:-1, :]
    if valid is not None:
        horizontal &= valid[:, 1:] & valid[:, :-1]
        vertical &= valid[1:, :] & valid[:-1, :]
    boundary = np.zeros(labels.shape, dtype=bool)
    boundary[:, 1:] |= horizontal
    boundary[:, :-1] |= horizontal
    boundary[1:, :] |= vertical
    boundary[:-1, :] |= vertical
    return boundary


def _to_numpy(array) -> np.ndarray:
    return array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)


def boundary_f1(pred, target, tolerance_px: float = 2.0, ignore_index: int | None = None) -> float:
    """Boundary F-score of a predicted (H, W) label map (binary or multi-class) against the ground truth.

    Boundaries are the pixels next to a label change. Precision is the fraction of predicted boundary pixels
    within tolerance_px (Euclidean) of a true boundary pixel, recall the converse; F = 2PR / (P + R). Label
    changes next to a pixel the target marks ignore_index are not boundaries, in either map. Both boundary sets
    empty (no edges anywhere) scores 1, one empty 0.
    """
    pred, target = _to_numpy(pred), _to_numpy(target)
    if pred.shape != target.shape or pred.ndim != 2:
        raise InputError(f"pred and target must be (H, W) label maps of one size, got {pred.shape} and {target.shape}")
    valid = target != ignore_index if ignore_index is not None else None
    pred_boundary = _label_boundaries(pred, valid)
    target_boundary = _label_boundaries(target, valid)
    if not pred_boundary.any() and not target_boundary.any():
        return 1.0
    if not pred_boundary.any() or not target_boundary.any():
        return 0.0

    def distance_to(boundary: np.ndarray) -> np.ndarray:
        return cv2.distanceTransform((~boundary).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)

    precision = float((distance_to(target_boundary)[pred_boundary] <= tolerance_px).mean())
    recall = float((distance_to(pred_boundary)[target_boundary] <= tolerance_px).mean())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


# --------------------------------------------------------------------------------------------------------------
# Matte quality
# --------------------------------------------------------------------------------------------------------------

MATTE_SOFT_RANGE = (0.05, 0.95)  # alpha strictly between these is "partly transparent"


def matte_statistics(alpha, mask, band_px: float = 5.0) -> dict:
    """How clean a predicted (H, W) alpha in [0, 1] is against a binary (H, W) ground-truth mask:
    stray_soft: share of all pixels partly transparent (0.05 < alpha < 0.95) farther than band_px from the true
    boundary, where a matte should be opaque or clear (see-through hands, a veil over the background);
    soft: share of partly transparent pixels anywhere; sad: sum of |alpha - mask| in thousands (the matting
    benchmarks' SAD); mae: its mean per pixel; boundary_f1 of alpha > 0.5 against the mask (2 px)."""
    alpha = np.asarray(_to_numpy(alpha), dtype=np.float32)
    truth = _to_numpy(mask) > 0
    if alpha.shape != truth.shape or alpha.ndim != 2:
        raise InputError(f"alpha and mask must be (H, W) of one size, got {alpha.shape} and {truth.shape}")
    low, high = MATTE_SOFT_RANGE
    soft = (alpha > low) & (alpha < high)
    boundary = _label_boundaries(truth.astype(np.uint8))
    if boundary.any():
        distance = cv2.distanceTransform((~boundary).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        far = distance > band_px
    else:
        far = np.ones(truth.shape, dtype=bool)
    error = np.abs(alpha - truth.astype(np.float32))
    return {
        "stray_soft": float((soft & far).mean()),
        "soft": float(soft.mean()),
        "sad": float(error.sum() / 1000.0),
        "mae": float(error.mean()),
        "boundary_f1": boundary_f1((alpha > 0.5).astype(np.uint8), truth.astype(np.uint8)),
    }


# --------------------------------------------------------------------------------------------------------------
# Saliency metrics (definitions of the MIT saliency benchmark's reference code)
# --------------------------------------------------------------------------------------------------------------

_EPS = np.finfo(np.float64).eps  # MATLAB's eps, as in the benchmark code


def _standardise(values: np.ndarray) -> np.ndarray:
    deviation = values.std(ddof=1)  # MATLAB std() divides by n - 1
    return (values - values.mean()) / deviation if deviation > 0 else np.zeros_like(values)


def _min_max(values: np.ndarray) -> np.ndarray:
    span = values.max() - values.min()
    return (values - values.min()) / span if span > 0 else np.zeros_like(values)


def saliency_metrics(pred, density, fixations) -> dict:
    """CC, NSS, KLD, SIM and AUC_Judd of a predicted saliency map against a fixation density map and a binary
    fixation map (nonzero = fixated pixel), all (H, W). The prediction is resized (bilinear) to the density's size
    when they differ. Definitions follow the MIT benchmark code: CC is Pearson's correlation; NSS the mean of the
    standardised prediction (sample std) at fixations; KLD = sum g log(eps + g / (p + eps)) on sum-normalised
    maps; SIM the sum of minima of min-max then sum-normalised maps; AUC_Judd thresholds at the predicted values
    of the fixated pixels (no random jitter, so ties are counted as above the threshold, deterministically).
    A constant prediction scores CC = NSS = 0.
    """
    pred = _to_numpy(pred).astype(np.float64)
    density = _to_numpy(density).astype(np.float64)
    fixations = _to_numpy(fixations) != 0
    if density.shape != fixations.shape or density.ndim != 2:
        raise InputError(f"density {density.shape} and fixations {fixations.shape} must be (H, W) of one size")
    if pred.shape != density.shape:
        pred = cv2.resize(pred, (density.shape[1], density.shape[0]), interpolation=cv2.INTER_LINEAR)

    standard_pred, standard_density = _standardise(pred), _standardise(density)
    cc = float((standard_pred * standard_density).sum() / (pred.size - 1))
    nss = float(standard_pred[fixations].mean()) if fixations.any() else math.nan

    p = pred / pred.sum() if pred.sum() > 0 else pred
    g = density / density.sum() if density.sum() > 0 else density
    kld = float((g * np.log(_EPS + g / (p + _EPS))).sum())

    p_sim, g_sim = _min_max(pred), _min_max(density)
    p_sim = p_sim / p_sim.sum() if p_sim.sum() > 0 else p_sim
    g_sim = g_sim / g_sim.sum() if g_sim.sum() > 0 else g_sim
    sim = float(np.minimum(p_sim, g_sim).sum())

    return {"CC": cc, "NSS": nss, "KLD": kld, "SIM": sim, "AUC_Judd": _auc_judd(_min_max(pred), fixations)}


def _auc_judd(saliency: np.ndarray, fixations: np.ndarray) -> float:
    fixated_values = np.sort(saliency[fixations])[::-1]
    count = fixated_values.size
    if count == 0:
        return math.nan
    pixels = saliency.size
    ascending = np.sort(saliency.ravel())
    above = pixels - np.searchsorted(ascending, fixated_values, side="left")  # pixels >= each threshold
    hits = np.arange(1, count + 1)
    true_positive = np.concatenate([[0.0], hits / count, [1.0]])
    false_positive = np.concatenate([[0.0], (above - hits) / max(pixels - count, 1), [1.0]])
    # Trapezoid rule by hand: np.trapezoid needs numpy 2, np.trapz is gone from it.
    return float((np.diff(false_positive) * (true_positive[1:] + true_positive[:-1]) / 2).sum())
