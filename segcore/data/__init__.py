"""Data: datasets, transforms, normalisation presets, class palettes and upload ingestion."""

from segcore.data.palette import default_palette
from segcore.data.transforms import NORMALIZATION_PRESETS, resolve_normalization

__all__ = ["NORMALIZATION_PRESETS", "default_palette", "resolve_normalization"]
