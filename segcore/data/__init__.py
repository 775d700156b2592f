"""Data: datasets, transforms, normalisation presets, class palettes, dataset validation and upload ingestion."""

from segcore.data.datasets import (
    CAMVID_CLASSES, CAMVID_COLORS, OSIE_SPLITS, VOC_CLASSES, CamVidDataset, DatasetError, FolderDataset,
    SaliencyDataset, SegmentationDataset, VOCDataset, colors_to_indices, find_pairs, read_mask,
)
from segcore.data.ingest import UploadError, UploadLimits, unpack_upload
from segcore.data.palette import default_palette
from segcore.data.transforms import (
    AUGMENTATION_PRESETS, NORMALIZATION_PRESETS, SegmentationTransform, build_transforms, distort_pair,
    resolve_normalization,
)
from segcore.data.validate import Problem, ValidationReport, validate

__all__ = [
    "AUGMENTATION_PRESETS", "CAMVID_CLASSES", "CAMVID_COLORS", "CamVidDataset", "DatasetError", "FolderDataset",
    "NORMALIZATION_PRESETS", "OSIE_SPLITS", "Problem", "SaliencyDataset", "SegmentationDataset",
    "SegmentationTransform", "UploadError", "UploadLimits", "VOCDataset", "VOC_CLASSES", "ValidationReport",
    "build_transforms", "colors_to_indices", "default_palette", "distort_pair", "find_pairs", "read_mask",
    "resolve_normalization", "unpack_upload", "validate",
]
