"""segcore: semantic segmentation architectures, losses, metrics, training and refinement.

The public API is re-exported here: build models with `create_model`, save and load them with
`save_pretrained` / `load_pretrained`, and run them on images with `Segmenter`. Installed models are found by
name through `saved_models` / `find_saved_model` (segcore.zoo): `load_pretrained("portrait-sinet")`.
"""

from segcore.checkpoint import load_pretrained, save_pretrained
from segcore.errors import CheckpointError, ImageError, SegcoreError
from segcore.image import read_image
from segcore.inference import Prediction, Segmenter, TestTimeAugmentation, set_num_threads
from segcore.registry import create_model, list_models, model_info, register_model
from segcore.zoo import ModelNotFoundError, SavedModel, saved_models
from segcore.zoo import find as find_saved_model

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ImageError",
    "ModelNotFoundError",
    "Prediction",
    "SavedModel",
    "SegcoreError",
    "Segmenter",
    "TestTimeAugmentation",
    "create_model",
    "find_saved_model",
    "list_models",
    "load_pretrained",
    "model_info",
    "read_image",
    "register_model",
    "save_pretrained",
    "saved_models",
    "set_num_threads",
]
