"""Datasets for a TrainConfig: the augmented training set and the untransformed validation set.

Validation images stay untransformed because `evaluate` feeds them through Segmenter at full size, as users see
them. When a dataset has no validation split (portrait-shen2016 has train/test only), `val_fraction` of the
training names is held out with a seeded permutation, so the test split is never used to choose a model.
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset

from pathlib import Path

from segcore.data import CamVidDataset, FolderDataset, SaliencyDataset, VOCDataset, build_transforms, validate
from segcore.data.transforms import resolve_normalization
from segcore.engine.config import TrainConfig
from segcore.errors import SegcoreError

DATASET_KINDS = ("folder", "camvid", "voc", "saliency")


class IndexedSubset(Dataset):
    """A subset that keeps the dataset's metadata (class names, ignore index, ...) reachable as attributes."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = [int(index) for index in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int):
        return self.dataset[self.indices[position]]

    def __getattr__(self, name):
        if name in ("dataset", "indices"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


def open_dataset(kind: str, root: str, split: str | None, transform=None, evaluation: bool = False, **kwargs):
    """One dataset of a kind; evaluation=True asks saliency sets for fixation maps too."""
    if kind == "folder":
        return FolderDataset(root, split=split, transform=transform, **kwargs)
    if kind == "camvid":
        return CamVidDataset(root, split=split or "train", transform=transform, **kwargs)
    if kind == "voc":
        return VOCDataset(root, split=split or "train", transform=transform, **kwargs)
    if kind == "saliency":
        return SaliencyDataset(root, split=split, transform=transform, with_fixations=evaluation, **kwargs)
    raise SegcoreError(f"unknown dataset kind {kind!r}; kinds are: {', '.join(DATASET_KINDS)}")


def _held_out_split(count: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(count)
    held_out = max(1, round(count * fraction))
    if held_out >= count:
        raise SegcoreError(f"val_fraction={fraction} leaves no training images out of {count}")
    return np.sort(order[held_out:]), np.sort(order[:held_out])


def check_dataset(config: TrainConfig):
    """segcore.data.validate on folder-layout data before any training: errors stop the run, naming each file."""
    if config.dataset not in ("folder", "saliency"):
        return None
    folders = {"images": config.dataset_kwargs.get("images", "images"),
               "masks": config.dataset_kwargs.get("masks" if config.dataset == "folder" else "maps", "masks")}
    report = validate(config.data, **folders)
    if not report.ok:
        raise SegcoreError(f"the data in {config.data} cannot be trained on:\n{report.summary(max_lines=20)}")
    return report


def build_datasets(config: TrainConfig):
    """(training set with augmentation, validation set or None, info dict with classes and normalisation)."""
    if not config.data:
        raise SegcoreError("no training data: set data (a dataset folder) in the recipe or pass --data ROOT")
    if not Path(config.data).is_dir():
        raise SegcoreError(f"{config.data}: no such dataset folder")
    report = check_dataset(config)
    kwargs = dict(config.dataset_kwargs)
    val_fraction = float(kwargs.pop("val_fraction", 0.0))
    normalization = resolve_normalization(config.normalization)
    probe = open_dataset(config.dataset, config.data, config.train_split, **kwargs)
    ignore_index = probe.ignore_index if probe.ignore_index is not None else 255
    # Contrastive pre-training draws (image, distorted view, labels, distorted labels) from each sample.
    transform = build_transforms(config.augmentation, config.input_size, normalization, train=True,
                                 ignore_index=ignore_index, contrastive=config.loss == "contrastive")
    train_set = open_dataset(config.dataset, config.data, config.train_split, transform=transform, **kwargs)
    train_indices = np.arange(len(train_set))
    val_set = None
    if config.val_split:
        val_set = open_dataset(config.dataset, config.data, config.val_split, evaluation=True, **kwargs)
    elif val_fraction > 0:
        train_indices, val_indices = _held_out_split(len(train_set), val_fraction, config.seed)
        evaluation_set = open_dataset(config.dataset, config.data, config.train_split, evaluation=True, **kwargs)
        val_set = IndexedSubset(evaluation_set, val_indices)
    if config.train_fraction < 1.0:
        keep = max(1, round(len(train_indices) * config.train_fraction))
        train_indices = np.sort(np.random.default_rng(config.seed + 1).permutation(train_indices)[:keep])
    if len(train_indices) != len(train_set):
        train_set = IndexedSubset(train_set, train_indices)
    num_classes = 1 if config.dataset == "saliency" else probe.num_classes
    info = {
        "num_classes": num_classes,
        "class_names": list(probe.class_names)[:num_classes],
        "class_colors": [list(color) for color in probe.class_colors][:num_classes],
        "normalization": normalization,
        "ignore_index": ignore_index,
        "description": (f"{config.dataset}:{config.data} split={config.train_split} "
                        f"({len(train_set)} training images, {len(val_set) if val_set is not None else 0} validation)"),
        "data_warnings": len(report.warnings) if report is not None else 0,
        "train_images": len(train_set),
        "val_images": len(val_set) if val_set is not None else 0,
    }
    return train_set, val_set, info
