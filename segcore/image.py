"""Image input/output at the public API's edge: everything becomes an RGB uint8 (H, W, 3) numpy array.

Reading goes through Pillow rather than OpenCV because Pillow applies EXIF orientation and understands the odd
modes people upload (16-bit, CMYK, palette, RGBA); every failure becomes an ImageError naming the file and the fix.
Writes are atomic (temporary file in the same folder, then rename) so a crash never leaves half a PNG behind.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from segcore.errors import ImageError
from segcore.fileio import atomic_path

# Larger uploads are refused rather than risking memory exhaustion; callers downscale big images after reading.
MAX_IMAGE_PIXELS = 120_000_000
# What one decode may hold at once: Pillow's pixel buffer plus the numpy arrays made from it, estimated from the
# header before any pixel is decoded. Readers given `max_side` shrink the image inside the decode (JPEG's own
# reduced decode, else Pillow's box reduce on the smallest representation), so they stay far below it.
DECODE_BUDGET_BYTES = 1 << 30
# EXIF orientation tag values -> the transpose that undoes them (as ImageOps.exif_transpose applies them).
_ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
                5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                8: Image.Transpose.ROTATE_90}
_REDUCIBLE_MODES = ("L", "LA", "RGB", "RGBA", "CMYK", "I", "F")


def _pillow_bytes_per_pixel(mode: str) -> int:
    """Bytes Pillow's decoder keeps per pixel in `mode` (three-band modes are stored in four bytes)."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def _sixteen_bit_to_grey(image: Image.Image) -> np.ndarray:
    """(H, W) uint8 of a 16- or 32-bit greyscale image, the used range scaled to 8 bits instead of clipped."""
    array = np.asarray(image)
    high = int(array.max()) if array.size else 0
    if high <= 0:
        return np.zeros(array.shape, np.uint8)
    if array.dtype == np.uint16 or array.dtype.newbyteorder("=") == np.dtype(np.uint16):
        array = array.astype(np.uint16, copy=False)
        # one saturating multiply straight to uint8: no float copy of a possibly huge image
        return cv2.convertScaleAbs(array, alpha=255.0 / (65535.0 if high > 255 else 255.0))
    scale = np.float32(255.0 / (65535.0 if high > 255 else 255.0))
    return np.clip(np.rint(array.astype(np.float32) * scale), 0, 255).astype(np.uint8)


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        return np.repeat(_sixteen_bit_to_grey(image)[..., None], 3, axis=2)
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float32)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) * np.float32(255.0 / (high - low)) if high > low else np.zeros_like(array)
        return np.repeat(np.rint(scaled).astype(np.uint8)[..., None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Composite on white: a transparent background carries no colour, and white is what viewers show.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    if image.mode in ("1", "L"):
        return np.repeat(np.asarray(image.convert("L"))[..., None], 3, axis=2)
    return np.asarray(image.convert("RGB"))


@contextlib.contextmanager
def open_checked(path: str | os.PathLike, what: str = "image"):
    """Open an image file lazily (header only), check it exists, is not empty and is under the pixel limit, and
    turn every Pillow failure inside the block into an ImageError naming the file and the fix."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such {'file' if what == 'image' else what + ' file'}; check the path")
    if path.is_dir():
        raise ImageError(f"{path}: is a folder, not an {what} file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: the {what} file is empty (0 bytes); upload or export it again")
    try:
        with warnings.catch_warnings():
            # Pillow warns above ~89 megapixels and refuses above ~179; our own limit (checked here) decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise ImageError(
                        f"{path}: {image.width}x{image.height} is over the limit of {MAX_IMAGE_PIXELS:,} pixels; "
                        "downscale it first"
                    )
                yield image
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(f"{path}: the {what} has more than {MAX_IMAGE_PIXELS:,} pixels; downscale it first") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image Pillow can read (use PNG, JPEG, BMP, TIFF or WebP)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"{path}: the {what} is damaged or truncated ({error}); re-export or re-upload it") from None


def check_decode_budget(path, width: int, height: int, bytes_per_pixel: int, what: str = "image") -> None:
    """Refuse a decode whose buffers (`bytes_per_pixel` over the whole image) would exceed DECODE_BUDGET_BYTES."""
    need = width * height * bytes_per_pixel
    if need > DECODE_BUDGET_BYTES:
        raise ImageError(
            f"{path}: decoding this {width}x{height} {what} would take about {need / 2**20:,.0f} MB, over the "
            f"{DECODE_BUDGET_BYTES / 2**20:,.0f} MB a read may use; downscale it first"
        )


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(0x0112, 1))
    except Exception:  # a malformed EXIF block only loses the rotation, never the image
        return 1


def _apply_orientation(image: Image.Image, orientation: int) -> Image.Image:
    method = _ORIENTATION.get(orientation)
    return image.transpose(method) if method is not None else image


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image file as read_image shows it (EXIF rotation applied), from its header only."""
    with open_checked(path) as image:
        width, height = image.size
        return (height, width) if _orientation(image) in (5, 6, 7, 8) else (width, height)


def read_image(path: str | os.PathLike, max_side: int | None = None) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3), EXIF orientation applied.

    `max_side`: downscale (area interpolation) so the longer side is at most this many pixels, inside the decode:
    JPEGs decode at 1/2, 1/4 or 1/8 scale, other formats are box-reduced before any RGB copy is made. Every read
    is first checked against DECODE_BUDGET_BYTES from the file's header."""
    with open_checked(path) as image:
        if max_side is not None and max(image.size) > max_side:
            scale = max_side / max(image.size)
            image.draft("RGB", (max(1, round(image.width * scale)), max(1, round(image.height * scale))))
        orientation = _orientation(image)
        reducing = max_side is not None and max(image.size) > max_side
        # Pillow's buffer, plus the full-size copies the conversion makes: a 32-bit plane for 16-bit images or an
        # RGB(A) one for palette images when reducing, else the whole RGB array (and a 16-bit copy for deep images).
        extra = (4 if image.mode.startswith("I;16") or image.mode in ("P", "PA") else 0) if reducing \
            else 3 + (2 if image.mode.startswith("I") else 0)
        check_decode_budget(path, image.width, image.height, _pillow_bytes_per_pixel(image.mode) + extra)
        image.load()
        if reducing:
            image = _reduce(image, max_side)
        image = _apply_orientation(image, orientation)
        array = _pil_to_rgb(image)
    if max_side is not None and max(array.shape[:2]) > max_side:
        array = fit_longer_side(array, max_side)
    return np.ascontiguousarray(array)


def _reduce(image: Image.Image, max_side: int) -> Image.Image:
    """Box-reduce by the largest whole factor that keeps the longer side >= max_side, on the smallest form."""
    factor = max(image.size) // max_side
    if factor < 2:
        return image
    if image.mode.startswith("I;16"):
        image = image.convert("I")  # Pillow reduces 32-bit planes; the 8-bit scaling then runs on the small image
    elif image.mode == "1":
        image = image.convert("L")
    elif image.mode in ("P", "PA"):
        image = image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB")
    elif image.mode not in _REDUCIBLE_MODES:
        image = image.convert("RGB")
    return image.reduce(factor)


def fit_longer_side(array: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale an (H, W[, C]) uint8 array with area interpolation so its longer side is max_side (never up)."""
    height, width = array.shape[:2]
    if max(height, width) <= max_side:
        return array
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(array, size, interpolation=cv2.INTER_AREA)


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


def write_image_atomic(image: Image.Image, path: str | os.PathLike, **save_options) -> Path:
    """Save a PIL image, format from the suffix, via a temporary file in the same folder and a rename;
    `save_options` go to Pillow's save (e.g. quality=95 for JPEG)."""
    path = Path(path)
    file_format = Image.registered_extensions().get(path.suffix.lower())
    if file_format is None:
        raise ImageError(f"{path}: unknown image file extension {path.suffix!r}; use .png")
    with atomic_path(path) as temporary:
        image.save(temporary, format=file_format, **save_options)
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
