"""Normalisation presets shared by training and inference (augmentation pipelines join them in issue 4).

Mean and std are stored on the 0-1 scale of RGB inputs. "portraitnet" is PortraitNet/SINet's preprocessing
(subtract BGR mean 103.94/116.78/123.68, multiply by 0.017) rewritten for RGB channel order: the mean is reversed
and std = 1 / (0.017 * 255), so the network sees the same numbers as in the paper's code.
"""

from __future__ import annotations

NORMALIZATION_PRESETS: dict[str, dict[str, list[float]]] = {
    "imagenet": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    "portraitnet": {
        "mean": [123.68 / 255.0, 116.78 / 255.0, 103.94 / 255.0],
        "std": [1.0 / (0.017 * 255.0)] * 3,
    },
    "none": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
}


def resolve_normalization(preset: str | None = None, mean=None, std=None) -> dict[str, list[float]]:
    """Mean/std from a preset name or explicit values (explicit values win); default "imagenet"."""
    if preset is not None and preset not in NORMALIZATION_PRESETS:
        raise ValueError(f"unknown normalisation preset {preset!r}; presets are: {', '.join(NORMALIZATION_PRESETS)}")
    base = NORMALIZATION_PRESETS[preset or "imagenet"]
    mean = list(map(float, mean)) if mean is not None else list(base["mean"])
    std = list(map(float, std)) if std is not None else list(base["std"])
    if len(mean) != len(std) or any(value <= 0 for value in std):
        raise ValueError(f"normalisation needs one mean and one positive std per channel, got mean={mean} std={std}")
    return {"mean": mean, "std": std}
