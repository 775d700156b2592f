"""Image input/output at the public API's edge: everything becomes an RGB uint8 (H, W, 3) numpy array.

Reading goes through Pillow rather than OpenCV because Pillow applies EXIF orientation and understands the odd
modes people upload (16-bit, CMYK, palette, RGBA); every failure becomes an ImageError naming the file and the fix.
Writes are atomic (temporary file in the same folder, then rename) so a crash never leaves half a PNG behind.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from segcore.errors import ImageError
from segcore.fileio import atomic_path

# Larger uploads are refused rather than risking memory exhaustion; callers downscale big images after reading.
MAX_IMAGE_PIXELS = 120_000_000


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale the used range to 8 bits instead of clipping everything above 255 to white.
        array = np.asarray(image, dtype=np.float64)
        high = array.max()
        array = np.zeros_like(array) if high <= 0 else array * (255.0 / (65535.0 if high > 255 else 255.0))
        grey = np.clip(np.rint(array), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
        return np.repeat(np.rint(scaled).astype(np.uint8)[..., None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Composite on white: a transparent background carries no colour, and white is what viewers show.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3), EXIF orientation applied."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise ImageError(f"{path}: is a folder, not an image file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: the file is empty (0 bytes); upload the image again")
    try:
        with warnings.catch_warnings():
            # Pillow warns above ~89 megapixels and refuses above ~179; our own limit (checked below) decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise ImageError(
                        f"{path}: {image.width}x{image.height} is over the limit of {MAX_IMAGE_PIXELS:,} pixels; "
                        "downscale it first"
                    )
                image.load()
                image = ImageOps.exif_transpose(image)
                return _pil_to_rgb(image)
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(f"{path}: the image has more than {MAX_IMAGE_PIXELS:,} pixels; downscale it first") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image Pillow can read (use PNG, JPEG, BMP, TIFF or WebP)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"{path}: the image is damaged or truncated ({error}); re-export or re-upload it") from None


def to_rgb_uint8(image) -> np.ndarray:
    """Convert a numpy array (grey, RGB, RGBA; uint8, uint16, bool or float in [0, 1]) or a PIL image to RGB uint8."""
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image)
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected a numpy array or a PIL image, got {type(image).__name__}")
    array = image
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageError(f"expected an image of shape (H, W), (H, W, 3) or (H, W, 4), got {array.shape}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ImageError(f"the image is empty: shape {array.shape}")
    if array.dtype == np.uint8:
        pass
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype == np.uint16:
        array = (array.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageError("the image contains NaN or infinite values")
        high = 255.0 if array.max() > 1.0 else 1.0
        array = np.clip(np.rint(array / high * 255.0), 0, 255).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.integer):
        array = np.clip(array, 0, 255).astype(np.uint8)
    else:
        raise ImageError(f"unsupported image dtype {array.dtype}; use uint8")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    elif array.shape[2] == 4:
        alpha = array[..., 3:4].astype(np.float32) / 255.0
        array = np.rint(array[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(array)


def write_image_atomic(image: Image.Image, path: str | os.PathLike) -> Path:
    """Save a PIL image, format from the suffix, via a temporary file in the same folder and a rename."""
    path = Path(path)
    file_format = Image.registered_extensions().get(path.suffix.lower())
    if file_format is None:
        raise ImageError(f"{path}: unknown image file extension {path.suffix!r}; use .png")
    with atomic_path(path) as temporary:
        image.save(temporary, format=file_format)
    return path


def mask_to_image(labels: np.ndarray, colors: list[list[int]]) -> Image.Image:
    """A palette ("P" mode) PNG image: pixel values are the class indices, shown in the class colours."""
    if labels.ndim != 2:
        raise ImageError(f"a mask must be (H, W), got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ImageError(f"class indices must lie in 0..255 to fit a PNG mask, got {labels.min()}..{labels.max()}")
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    flat = [channel for color in colors[:256] for channel in color]
    image.putpalette(flat + [0] * (768 - len(flat)))
    return image
