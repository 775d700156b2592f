"""Several datasets as one training set, sampled by weight; CamVid's pedestrians as a person dataset.

A MultiSourceDataset draws each epoch's samples from its sources in proportion to their weights (each source is
walked through a seeded permutation, so a small source repeats only once it is used up) and hands every raw
sample, with a way to draw another one, to an optional PersonComposite before the augmentation pipeline.
`set_epoch(epoch)` redraws the table; the trainer calls it before every epoch, as it does for its sampler.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from segcore.data.datasets import IGNORE_INDEX, CamVidDataset, DatasetError, SegmentationDataset
from segcore.errors import ConfigError

CAMVID_PEDESTRIAN, CAMVID_BICYCLIST = 9, 10


@dataclass
class Source:
    name: str
    dataset: Dataset  # yields raw (image uint8 (H, W, 3), mask (H, W)) pairs
    weight: float = 1.0


def sample_counts(weights, total: int) -> list[int]:
    """Split `total` samples by weight, whole numbers that add up to total (largest remainders get the rest)."""
    weights = np.asarray(weights, dtype=np.float64)
    if len(weights) == 0 or (weights < 0).any() or weights.sum() <= 0:
        raise ConfigError(f"source weights must be non-negative with a positive sum, got {weights.tolist()}")
    exact = weights / weights.sum() * total
    counts = np.floor(exact).astype(int)
    for index in np.argsort(-(exact - counts), kind="stable")[: total - counts.sum()]:
        counts[index] += 1
    return counts.tolist()


class MultiSourceDataset(Dataset):
    """Weighted sampling over sources; items are the transform's output of (optionally composited) raw samples."""

    def __init__(self, sources: list[Source], transform: Callable | None = None, composite=None,
                 epoch_size: int | None = None, seed: int = 0):
        if not sources:
            raise DatasetError("a multi-source dataset needs at least one source")
        classes = {getattr(source.dataset, "num_classes", None) for source in sources}
        if len(classes) != 1:
            names = ", ".join(f"{source.name}: {getattr(source.dataset, 'num_classes', '?')}" for source in sources)
            raise DatasetError(f"the sources disagree on their number of classes ({names}); label them alike")
        self.sources, self.transform, self.composite, self.seed = sources, transform, composite, seed
        self.epoch_size = int(epoch_size) if epoch_size else sum(len(source.dataset) for source in sources)
        first = sources[0].dataset
        self.class_names, self.class_colors = list(first.class_names), list(first.class_colors)
        self.ignore_index = getattr(first, "ignore_index", IGNORE_INDEX)
        self.num_classes = len(self.class_names)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        rng = np.random.default_rng([self.seed, epoch])
        counts = sample_counts([source.weight for source in self.sources], self.epoch_size)
        table = []
        for source_index, (source, count) in enumerate(zip(self.sources, counts)):
            size = len(source.dataset)
            repeats = -(-count // size) if count else 0
            items = np.concatenate([rng.permutation(size) for _ in range(repeats)])[:count] if count else []
            table.extend((source_index, int(item)) for item in items)
        order = rng.permutation(len(table))
        self.table = [table[position] for position in order]

    def __len__(self) -> int:
        return len(self.table)

    def source_of(self, position: int) -> str:
        return self.sources[self.table[position][0]].name

    def raw(self, position: int):
        source_index, item = self.table[position]
        return self.sources[source_index].dataset[item]

    def _draw(self):
        """Another raw sample, drawn by the same weights (torch's generator keeps DataLoader workers seeded)."""
        return self.raw(int(torch.randint(0, len(self.table), ())))

    def __getitem__(self, position: int):
        image, mask = self.raw(position)
        if self.composite is not None:
            image, mask = self.composite(image, mask, self._draw)
        return self.transform(image, mask) if self.transform is not None else (image, mask)


class CamVidPersonDataset(SegmentationDataset):
    """CamVid street frames as person masks: Pedestrian (class 9) is a person, every other labelled class is
    background, CamVid's unlabelled pixels stay ignored. Bicyclist (class 10) labels rider and bicycle together,
    so it gives no clean person mask: bicyclist="ignore" (default) ignores those pixels, "skip" leaves out every
    frame that holds one (every frame of CamVid's val split does, so "skip" suits training splits only)."""

    def __init__(self, root, split: str = "train", transform: Callable | None = None, bicyclist: str = "ignore"):
        if bicyclist not in ("ignore", "skip"):
            raise ConfigError(f"bicyclist must be 'ignore' or 'skip', not {bicyclist!r}")
        camvid = CamVidDataset(root, split=split)
        samples = camvid.samples
        if bicyclist == "skip":
            samples = [sample for sample in samples
                       if not (camvid.load_target(Path(sample[2])) == CAMVID_BICYCLIST).any()]
            if not samples:
                raise DatasetError(f"{root}: every {split} frame holds a Bicyclist; use bicyclist='ignore'")
        self._camvid, self.bicyclist = camvid, bicyclist
        super().__init__(samples, ["background", "person"], [[0, 0, 0], [128, 0, 0]], IGNORE_INDEX, transform)
        self.frames_left_out = len(camvid.samples) - len(samples)

    def load_target(self, path: Path) -> np.ndarray:
        label = self._camvid.load_target(path)
        person = np.where(label == CAMVID_PEDESTRIAN, 1, 0)
        return np.where((label == IGNORE_INDEX) | (label == CAMVID_BICYCLIST), IGNORE_INDEX, person).astype(np.int64)
