"""The generated shapes dataset used by training tests (it lives in segcore.data.synthetic, which the app shares)."""

from segcore.data.synthetic import CLASSES, shapes_scene, write_shapes_dataset

__all__ = ["CLASSES", "shapes_scene", "write_shapes_dataset"]
