"""Evaluation through the same path users run: Segmenter (resize policy, normalisation) on full-size images.

Validation inside training and `python -m segcore eval` both call `evaluate`, so the number a recipe selects
`best/` by is the number the CLI reports. Semantic/portrait models: confusion-matrix metrics (+ boundary F for
two classes); saliency models: CC, NSS, KLD, SIM, AUC-Judd averaged over images. Distributed: each rank takes
every world_size-th image and the sums are all-reduced. `evaluate_sources` scores a {source: dataset} mapping:
each source's metrics under "source/metric" and, under the plain names, their unweighted mean over sources, so a
small source (one DAVIS video) counts as much as a large one when `best/` is chosen. `false_positive_shares`
ranks a training split's images by how much of their background a model marks (hard example mining).
"""

from __future__ import annotations

import numpy as np
import torch

from segcore.engine.distributed import DistributedContext, all_reduce_sum
from segcore.errors import ConfigError
from segcore.inference import Prediction, Segmenter
from segcore.metrics import ConfusionMatrix, boundary_f1, saliency_metrics

SALIENCY_KEYS = ("CC", "NSS", "KLD", "SIM", "AUC_Judd")  # as saliency_metrics names them; reported lower-case


def evaluate(
    segmenter: Segmenter,
    dataset,
    *,
    boundary_tolerance: int = 3,
    context: DistributedContext | None = None,
    limit: int | None = None,
    progress=None,
) -> dict:
    """Metrics of `segmenter` on `dataset` (items: (image, mask) or (image, density, fixations), untransformed)."""
    context = context or DistributedContext()
    task = segmenter.config.get("task", "semantic")
    count = len(dataset) if limit is None else min(limit, len(dataset))
    indices = range(context.rank, count, context.world_size)
    if task == "saliency":
        return _evaluate_saliency(segmenter, dataset, indices, context, progress)
    ignore_index = getattr(dataset, "ignore_index", 255)
    matrix = ConfusionMatrix(segmenter.num_classes, ignore_index=ignore_index)
    boundary_sum = torch.zeros(2, dtype=torch.float64)  # (sum of per-image boundary F, images)
    binary = segmenter.num_classes == 2
    for position, index in enumerate(indices):
        image, mask = dataset[index][:2]
        mask = np.asarray(mask)
        prediction = segmenter.predict(image)
        matrix.update(prediction.labels, mask)
        if binary:
            score = boundary_f1(prediction.labels, mask, boundary_tolerance, ignore_index=ignore_index)
            boundary_sum += torch.tensor([score, 1.0], dtype=torch.float64)
        if progress is not None:
            progress(position + 1, len(indices))
    matrix.all_reduce()
    metrics = matrix.compute()
    if binary:
        all_reduce_sum(boundary_sum, context)
        metrics["boundary_f1"] = float(boundary_sum[0] / boundary_sum[1]) if boundary_sum[1] > 0 else float("nan")
    metrics["images"] = count
    return metrics


def false_positive_shares(segmenter: Segmenter, dataset, background: int = 0) -> list[tuple[str, float]]:
    """Hard example mining: for each image of `dataset`, the share of its background pixels (ignored pixels left
    out) that `segmenter` labels as anything else, as (name, share), worst first. The images a model gets most
    wrong this way can be sampled more often in its next training (FolderDataset(names_file=...))."""
    ignore_index = getattr(dataset, "ignore_index", 255)
    shares = []
    for index in range(len(dataset)):
        image, mask = dataset.load(index)
        mask = np.asarray(mask)
        labels = segmenter.predict(image).labels
        truly_background = mask == background
        wrong = (labels != background) & truly_background & (mask != ignore_index)
        shares.append((dataset.names[index], float(wrong.sum() / max(int(truly_background.sum()), 1))))
    return sorted(shares, key=lambda item: -item[1])


def evaluate_recipe_sources(segmenter, recipe, **options) -> dict:
    """Metrics on the validation set of every source of a multi-source recipe (the sets its training validates on):
    the mean over sources under the plain names, each source's under "sources" (what `eval --recipe` reports and
    `ship --recipe` writes on the card)."""
    from segcore.engine.config import load_recipe
    from segcore.engine.data import build_datasets

    config = load_recipe(recipe)
    if not config.sources:
        raise ConfigError(f"{recipe} has no sources; only a multi-source recipe names validation sets to measure on "
                          "(give --data ROOT --split NAME for one dataset)")
    _, val_sets, _ = build_datasets(config)
    if not val_sets:
        raise ConfigError(f"{recipe}: no source has a validation set (val_split or val_fraction)")
    flat = evaluate_sources(segmenter, val_sets, **options)
    metrics = {key: value for key, value in flat.items() if "/" not in key}
    metrics["sources"] = {name: {key.split("/", 1)[1]: value for key, value in flat.items()
                                 if key.startswith(f"{name}/")} for name in val_sets}
    return metrics


def evaluate_sources(segmenter: Segmenter, datasets: dict, **options) -> dict:
    """Metrics per source ("name/fg_iou", ...) and their mean over sources under the plain names."""
    if not datasets:
        raise ConfigError("evaluate_sources needs at least one validation set; give each source a val_split or "
                          "val_fraction")
    per_source = {name: evaluate(segmenter, dataset, **options) for name, dataset in datasets.items()}
    metrics: dict = {}
    for name, scores in per_source.items():
        metrics.update({f"{name}/{key}": value for key, value in scores.items() if isinstance(value, (int, float))})
    shared = set.intersection(*(set(scores) for scores in per_source.values()))
    for key in sorted(shared - {"images"}):
        values = [scores[key] for scores in per_source.values()]
        if all(isinstance(value, float) for value in values):
            metrics[key] = float(np.mean(values))
    metrics["images"] = sum(int(scores["images"]) for scores in per_source.values())
    return metrics


def _evaluate_saliency(segmenter, dataset, indices, context, progress) -> dict:
    sums = torch.zeros(len(SALIENCY_KEYS) + 1, dtype=torch.float64)
    for position, index in enumerate(indices):
        image, density, fixations = dataset[index][:3]
        prediction = segmenter.predict(image)
        scores = saliency_metrics(prediction.probabilities[0], np.asarray(density), np.asarray(fixations))
        sums += torch.tensor([scores[key] for key in SALIENCY_KEYS] + [1.0], dtype=torch.float64)
        if progress is not None:
            progress(position + 1, len(indices))
    all_reduce_sum(sums, context)
    images = float(sums[-1])
    metrics = {key.lower(): float(sums[i] / images) if images else float("nan") for i, key in enumerate(SALIENCY_KEYS)}
    metrics["images"] = int(images)
    return metrics


class CenterBias:
    """The centre-bias baseline of saliency benchmarks: a centred Gaussian, sigma a fraction of each side.

    It stands in for a Segmenter in `evaluate` (`predict(image)` and a saliency config), so a trained saliency
    model and the baseline are measured by the same code on the same images.
    """

    def __init__(self, sigma_fraction: float = 0.25):
        if sigma_fraction <= 0:
            raise ConfigError(f"sigma_fraction must be positive, got {sigma_fraction}")
        self.sigma_fraction = sigma_fraction
        self.config = {"task": "saliency", "num_classes": 1}
        self.num_classes = 1

    def predict(self, image) -> Prediction:
        height, width = np.asarray(image).shape[:2]
        rows = (np.arange(height) - (height - 1) / 2) / (self.sigma_fraction * height)
        columns = (np.arange(width) - (width - 1) / 2) / (self.sigma_fraction * width)
        gaussian = np.exp(-0.5 * (rows[:, None] ** 2 + columns[None, :] ** 2)).astype(np.float32)
        return Prediction(labels=(gaussian > 0.5).astype(np.int64), probabilities=gaussian[None], latency_ms=0.0)
