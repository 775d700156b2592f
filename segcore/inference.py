"""Segmenter: run a saved model on images — convert, resize by the model's policy, normalise, predict, restore size.

Resize policies (config "resize"): "fixed" resizes to the trained input size (as SINet's 224x224), "letterbox"
keeps the aspect ratio, fits the image inside the input size and pads bottom/right with black (the padded logits
are cropped off again), "max_side" downscales so the longer side is at most max(input_size) and never upscales,
"none" feeds the image as it is. Logits are resized back to the input image bilinearly before the softmax/sigmoid, so labels and probabilities
always come back at the caller's H, W.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from segcore.checkpoint import load_pretrained
from segcore.data.transforms import fit_within
from segcore.image import read_image, to_rgb_uint8


@dataclass
class Prediction:
    labels: np.ndarray  # (H, W) int64 class indices; for one-channel (saliency) models, probability > 0.5
    probabilities: np.ndarray  # (C, H, W) float32: softmax over classes, or sigmoid for one-channel models
    latency_ms: float  # model time (preprocess + forward + postprocess), excluding image decoding

    @property
    def confidence(self) -> np.ndarray:
        """(H, W) probability of the predicted class: low values mark uncertain pixels."""
        if self.probabilities.shape[0] == 1:
            return np.maximum(self.probabilities[0], 1.0 - self.probabilities[0])
        return self.probabilities.max(axis=0)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def network_input_size(height: int, width: int, input_size: tuple[int, int], policy: str) -> tuple[int, int]:
    """The (height, width) the network sees for an image of height x width under a resize policy."""
    if policy in ("fixed", "letterbox"):
        return int(input_size[0]), int(input_size[1])
    if policy == "max_side":
        scale = min(1.0, max(input_size) / max(height, width))
        return max(1, round(height * scale)), max(1, round(width * scale))
    if policy == "none":
        return height, width
    raise ValueError(f"unknown resize policy {policy!r}; use fixed, letterbox, max_side or none")


def content_size(height: int, width: int, input_size: tuple[int, int], policy: str) -> tuple[int, int]:
    """The part of the network input that holds the image (all of it, except under letterbox)."""
    if policy == "letterbox":
        return fit_within(height, width, input_size)
    return network_input_size(height, width, input_size, policy)


class ConfigClasses:
    """Class names, colours and count read from `self.config`: Segmenter and the peers that stand in for it."""

    config: dict

    @property
    def class_names(self) -> list[str]:
        return list(self.config["class_names"])

    @property
    def class_colors(self) -> list[list[int]]:
        return [list(color) for color in self.config["class_colors"]]

    @property
    def num_classes(self) -> int:
        return int(self.config["num_classes"])


class Segmenter(ConfigClasses):
    """A loaded model plus its config; `predict(image)` returns labels and probabilities at the image's size."""

    def __init__(self, model: nn.Module, config: dict | None = None, device: str | torch.device | None = None):
        config = config if config is not None else getattr(model, "segcore_config", None)
        if not config or "normalization" not in config:
            raise ValueError(
                "Segmenter needs the model's config (normalisation, input size); load the model with "
                "segcore.load_pretrained or pass config="
            )
        self.config = config
        self.device = torch.device(device) if device is not None else default_device()
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was asked for, but no CUDA GPU is available here; use device='cpu'")
        self.model = model.to(self.device).eval()
        norm = config["normalization"]
        self._mean = torch.tensor(norm["mean"], dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self._std = torch.tensor(norm["std"], dtype=torch.float32, device=self.device).view(1, -1, 1, 1)

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | os.PathLike, device: str | torch.device | None = None) -> "Segmenter":
        model = load_pretrained(path_or_repo_id)
        return cls(model, device=device)


    def _prepare(self, image) -> np.ndarray:
        if isinstance(image, (str, os.PathLike)):
            return read_image(image)
        return to_rgb_uint8(image)

    def predict(self, image) -> Prediction:
        """`image`: RGB uint8 (H, W, 3) array, or grey/RGBA/float array, PIL image, or a file path."""
        return self.predict_batch([image])[0]

    def predict_batch(self, images) -> list[Prediction]:
        """Predict several images; those sharing a network input size run as one batch."""
        arrays = [self._prepare(image) for image in images]
        results: list[Prediction | None] = [None] * len(arrays)
        groups: dict[tuple[int, int], list[int]] = {}
        for index, array in enumerate(arrays):
            size = network_input_size(
                array.shape[0], array.shape[1], tuple(self.config["input_size"]), self.config["resize"]
            )
            groups.setdefault(size, []).append(index)
        for size, indices in groups.items():
            start = time.perf_counter()
            contents = [content_size(*arrays[index].shape[:2], tuple(self.config["input_size"]), self.config["resize"])
                        for index in indices]
            batch = torch.stack([self._to_tensor(arrays[index], size, content)
                                 for index, content in zip(indices, contents)])
            with torch.inference_mode():
                logits = self.model(batch)["out"].float()
                for position, index in enumerate(indices):
                    height, width = arrays[index].shape[:2]
                    content = contents[position]
                    one = logits[position : position + 1, :, : content[0], : content[1]]
                    one = F.interpolate(one, size=(height, width), mode="bilinear", align_corners=False)[0]
                    if one.shape[0] == 1:
                        probabilities = torch.sigmoid(one)
                        labels = (probabilities[0] > 0.5).long()
                    else:
                        probabilities = torch.softmax(one, dim=0)
                        labels = probabilities.argmax(dim=0)
                    results[index] = Prediction(
                        labels=labels.cpu().numpy(),
                        probabilities=probabilities.cpu().numpy().astype(np.float32, copy=False),
                        latency_ms=0.0,
                    )
            elapsed = (time.perf_counter() - start) * 1000.0 / len(indices)
            for index in indices:
                results[index].latency_ms = elapsed
        return results  # type: ignore[return-value]

    def _to_tensor(self, array: np.ndarray, size: tuple[int, int], content: tuple[int, int]) -> torch.Tensor:
        if not array.flags.writeable:  # arrays viewing a PIL image are read-only; torch wants to own writable memory
            array = array.copy()
        tensor = torch.from_numpy(array).to(self.device).permute(2, 0, 1).float().div_(255.0)
        if tuple(tensor.shape[-2:]) != tuple(content):
            # antialias: downscaling a photo to 224 px without it aliases fine structures such as hair.
            tensor = F.interpolate(tensor[None], size=content, mode="bilinear", align_corners=False, antialias=True)[0]
        if tuple(content) != tuple(size):  # letterbox: black below and to the right, as in training
            tensor = F.pad(tensor, (0, size[1] - content[1], 0, size[0] - content[0]))
        return ((tensor[None] - self._mean) / self._std)[0]
