"""Datasets for a TrainConfig: the augmented training set and the untransformed validation set.

Validation images stay untransformed because `evaluate` feeds them through Segmenter at full size, as users see
them. When a dataset has no validation split (portrait-shen2016 has train/test only), `val_fraction` of the
training names is held out with a seeded permutation, so the test split is never used to choose a model. That
permutation's seed is the dataset's (`val_seed`, default 0), never the run's: runs that start from one another
(the person-fast stages) must all hold out the same images, or a later stage validates on what an earlier one
trained on.
A recipe with `sources` trains on a MultiSourceDataset and validates on a {source name: dataset} mapping.
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset

from pathlib import Path

from segcore.data import CamVidDataset, FolderDataset, SaliencyDataset, VOCDataset, build_transforms, validate
from segcore.data.multisource import CamVidPersonDataset, MultiSourceDataset, Source
from segcore.data.transforms import PersonComposite, resolve_normalization
from segcore.engine.config import TrainConfig
from segcore.errors import ConfigError, DatasetError

DATASET_KINDS = ("folder", "camvid", "camvid-person", "voc", "saliency")


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
    """One dataset of a kind; evaluation=True asks saliency sets for fixation maps too. Splits joined by "+"
    ("train+val": the papers' protocol of training the final model on both once settings are fixed on val) are
    opened one by one and read as one dataset, in the order given."""
    if isinstance(split, str) and "+" in split:
        return _joined_splits(kind, root, split, transform, evaluation, kwargs)
    if kind == "folder":
        return FolderDataset(root, split=split, transform=transform, **kwargs)
    if kind == "camvid":
        return CamVidDataset(root, split=split or "train", transform=transform, **kwargs)
    if kind == "camvid-person":
        return CamVidPersonDataset(root, split=split or "train", transform=transform, **kwargs)
    if kind == "voc":
        return VOCDataset(root, split=split or "train", transform=transform, **kwargs)
    if kind == "saliency":
        return SaliencyDataset(root, split=split, transform=transform, with_fixations=evaluation, **kwargs)
    raise ConfigError(f"unknown dataset kind {kind!r}; kinds are: {', '.join(DATASET_KINDS)}")


def _held_out_split(count: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(count)
    held_out = max(1, round(count * fraction))
    if held_out >= count:
        raise ConfigError(f"val_fraction={fraction} leaves no training images out of {count}; use a smaller "
                          "val_fraction")
    return np.sort(order[held_out:]), np.sort(order[:held_out])


def check_dataset(config: TrainConfig):
    """segcore.data.validate on folder-layout data before any training: errors stop the run, naming each file."""
    return _check_folder(config.dataset, config.data, config.dataset_kwargs)


def _check_folder(kind: str, root: str, dataset_kwargs: dict):
    if kind not in ("folder", "saliency"):
        return None
    folders = {"images": dataset_kwargs.get("images", "images"),
               "masks": dataset_kwargs.get("masks" if kind == "folder" else "maps", "masks")}
    report = validate(root, **folders)
    if not report.ok:
        raise DatasetError(f"the data in {root} cannot be trained on:\n{report.summary(max_lines=20)}")
    return report


HELD_OUT_SEED = 0  # the held-out split of a dataset without a val split, the same for every run (see above)


def held_out_indices(count: int, fraction: float, seed: int = HELD_OUT_SEED) -> np.ndarray:
    """The indices of the `fraction` of `count` training images that every run holds out for validation."""
    return _held_out_split(count, fraction, seed)[1]


def _split_sets(kind: str, root: str, train_split, val_split, kwargs: dict, transform=None):
    """(training set, validation set or None) of one dataset, holding out val_fraction when it has no val split
    (seeded by dataset_kwargs' val_seed, default HELD_OUT_SEED)."""
    kwargs = dict(kwargs)
    val_fraction = float(kwargs.pop("val_fraction", 0.0))
    seed = int(kwargs.pop("val_seed", HELD_OUT_SEED))
    train_set = open_dataset(kind, root, train_split, transform=transform, **kwargs)
    if val_split:
        return train_set, open_dataset(kind, root, val_split, evaluation=True, **kwargs)
    if val_fraction > 0:
        train_indices, val_indices = _held_out_split(len(train_set), val_fraction, seed)
        evaluation_set = open_dataset(kind, root, train_split, evaluation=True, **kwargs)
        return IndexedSubset(train_set, train_indices), IndexedSubset(evaluation_set, val_indices)
    return train_set, None


def _training_transform(config: TrainConfig, normalization: dict, ignore_index: int):
    # Contrastive pre-training draws (image, distorted view, labels, distorted labels) from each sample.
    return build_transforms(config.augmentation, config.input_size, normalization, train=True,
                            ignore_index=ignore_index, contrastive=config.loss == "contrastive",
                            resize="letterbox" if config.resize == "letterbox" else "fixed")


def build_multisource_datasets(config: TrainConfig):
    """(MultiSourceDataset, {source name: validation set}, info) for a recipe with `sources`."""
    normalization = resolve_normalization(config.normalization)
    sources, val_sets, descriptions, warnings = [], {}, [], 0
    for entry in config.sources:
        name, root, kind = str(entry["name"]), str(entry["data"]), entry.get("dataset", "folder")
        if not Path(root).is_dir():
            raise DatasetError(f"source {name!r}: {root}: no such dataset folder; fix its data path")
        kwargs = dict(entry.get("dataset_kwargs") or {})
        report = _check_folder(kind, root, kwargs)
        warnings += len(report.warnings) if report is not None else 0
        train_set, val_set = _split_sets(kind, root, entry.get("train_split", "train"), entry.get("val_split", "val"),
                                         kwargs)
        sources.append(Source(name, train_set, float(entry.get("weight", 1.0))))
        if val_set is not None:
            val_sets[name] = val_set
        descriptions.append(f"{name}={kind}:{root} ({len(train_set)} train, "
                            f"{len(val_set) if val_set is not None else 0} val, weight {entry.get('weight', 1.0)})")
    first = sources[0].dataset
    ignore_index = first.ignore_index if first.ignore_index is not None else 255
    composite = None
    if config.composite is not None:
        try:
            composite = PersonComposite(**config.composite)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"composite: {error}; see segcore.data.transforms.PersonComposite for its "
                              "settings") from None
    train_set = MultiSourceDataset(sources, _training_transform(config, normalization, ignore_index),
                                   composite=composite, epoch_size=config.epoch_size, seed=config.seed)
    info = {
        "num_classes": train_set.num_classes,
        "class_names": list(train_set.class_names),
        "class_colors": [list(color) for color in train_set.class_colors],
        "normalization": normalization,
        "ignore_index": ignore_index,
        "description": "; ".join(descriptions) + f"; {len(train_set)} samples per epoch",
        "data_warnings": warnings,
        "train_images": sum(len(source.dataset) for source in sources),
        "val_images": sum(len(val_set) for val_set in val_sets.values()),
    }
    return train_set, (val_sets or None), info


def _joined_splits(kind: str, root: str, split: str, transform, evaluation: bool, kwargs: dict):
    parts = [part.strip() for part in split.split("+")]
    if any(not part for part in parts) or len(set(parts)) != len(parts):
        raise ConfigError(f"split {split!r}: join distinct split names with '+', e.g. train+val")
    first, *others = (open_dataset(kind, root, part, transform, evaluation, **kwargs) for part in parts)
    # Every dataset kind keeps its pairs in `samples` and reads each by its paths alone, so the splits' lists
    # joined are the joined dataset (class names, palette and loaders are the kind's, the same for every split).
    first.samples = [sample for dataset in (first, *others) for sample in dataset.samples]
    return first


def build_datasets(config: TrainConfig):
    """(training set with augmentation, validation set or None, info dict with classes and normalisation)."""
    if config.sources:
        return build_multisource_datasets(config)
    if not config.data:
        raise ConfigError("no training data: set data (a dataset folder) in the recipe or pass --data ROOT")
    if not Path(config.data).is_dir():
        raise DatasetError(f"{config.data}: no such dataset folder; fix data in the recipe or --data")
    report = check_dataset(config)
    kwargs = dict(config.dataset_kwargs)
    kwargs.pop("val_fraction", None)
    normalization = resolve_normalization(config.normalization)
    probe = open_dataset(config.dataset, config.data, config.train_split, **kwargs)
    ignore_index = probe.ignore_index if probe.ignore_index is not None else 255
    transform = _training_transform(config, normalization, ignore_index)
    train_set, val_set = _split_sets(config.dataset, config.data, config.train_split, config.val_split,
                                     config.dataset_kwargs, transform)
    if config.train_fraction < 1.0:
        base, train_indices = ((train_set.dataset, train_set.indices) if isinstance(train_set, IndexedSubset)
                               else (train_set, np.arange(len(train_set))))
        keep = max(1, round(len(train_indices) * config.train_fraction))
        train_set = IndexedSubset(base, np.sort(np.random.default_rng(config.seed + 1).permutation(train_indices)[:keep]))
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
