"""Background removal for the app: turn a segmentation into an alpha matte, refine its edges with He et al.'s guided
filter (segcore.refine), and cut out, blur or replace the background. numpy in, numpy out; no UI code here.

Deviation from a plain alpha blend: the blurred background is a normalised convolution of background pixels only
(Knutsson & Westin 1993), so the person's colours do not bleed into it as a halo. TemporalSmoother steadies webcam
mattes with an exponential moving average that lets large per-pixel changes through at once.
"""

from __future__ import annotations

import math
import numbers
import re

import cv2
import numpy as np

from segcore.errors import SegcoreError
from segcore.image import to_rgb_uint8
from segcore.refine import fast_guided_filter

# Probabilities a little outside [0, 1] are rounding error; further out they are logits or a 0..255 mask.
_RANGE_TOLERANCE = 1e-3
# Gaussian sigma at strength 100, as a fraction of the image's shorter side: 4% of 512 px is about 20 px, a
# clearly out-of-focus look that still keeps the background recognisable.
_MAX_BLUR_SIGMA_FRACTION = 0.04
# Below this blurred background weight a pixel has almost no background near it; its normalised colour would be a
# ratio of two tiny numbers, so the plain blur is used instead (the foreground covers such pixels anyway).
_MIN_BACKGROUND_WEIGHT = 1e-3
# Wider blurs are computed at a reduced resolution where sigma is this many pixels (see blur_background).
_BLUR_SIGMA_AT_LOW_RESOLUTION = 4.0

_HEX_COLOUR = re.compile(r"#?([0-9a-fA-F]{6})")
_CSS_RGB = re.compile(r"rgba?\(\s*([0-9.]+)\s*,\s*([0-9.]+)\s*,\s*([0-9.]+)\s*(?:,\s*[0-9.]+\s*)?\)")


# --------------------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------------------


def _check_image(image) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise SegcoreError(
            f"image must be a numpy array, got {type(image).__name__}; convert it with segcore.image.to_rgb_uint8"
        )
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise SegcoreError(
            f"image must be RGB uint8 of shape (H, W, 3), got {image.dtype} {image.shape}; "
            "convert it with segcore.image.to_rgb_uint8"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise SegcoreError(f"image is empty: shape {image.shape}; pass a real image")
    return image


def _check_alpha(alpha, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Validate an (H, W) float matte in [0, 1] (of `shape` if given) and return it as float32 clipped to [0, 1]."""
    if not isinstance(alpha, np.ndarray):
        raise SegcoreError(f"alpha must be a numpy array, got {type(alpha).__name__}; pass an (H, W) float array")
    if alpha.ndim != 2:
        raise SegcoreError(
            f"alpha must be (H, W), got shape {alpha.shape}; for (C, H, W) probabilities use foreground_alpha first"
        )
    if not np.issubdtype(alpha.dtype, np.floating):
        fix = "divide by 255" if alpha.dtype == np.uint8 else "convert with .astype(np.float32)"
        raise SegcoreError(f"alpha must be float in [0, 1], got dtype {alpha.dtype}; {fix}")
    if shape is not None and tuple(alpha.shape) != tuple(shape):
        raise SegcoreError(
            f"alpha {alpha.shape} and image {tuple(shape)} differ in size; predict on the same image, or resize the "
            "alpha to the image's (H, W) first"
        )
    if alpha.size and not np.isfinite(alpha).all():
        raise SegcoreError("alpha contains NaN or infinite values; check the model's output")
    if alpha.size and (alpha.min() < -_RANGE_TOLERANCE or alpha.max() > 1.0 + _RANGE_TOLERANCE):
        raise SegcoreError(
            f"alpha must lie in [0, 1], got {float(alpha.min()):.3g}..{float(alpha.max()):.3g}; pass probabilities "
            "(softmax or sigmoid), not logits or a 0..255 mask"
        )
    return np.clip(alpha, 0.0, 1.0).astype(np.float32, copy=False)


def _check_image_and_alpha(image, alpha) -> tuple[np.ndarray, np.ndarray]:
    image = _check_image(image)
    return image, _check_alpha(alpha, image.shape[:2])


def parse_colour(colour) -> tuple[int, int, int]:
    """An RGB colour from "#rrggbb", "rgb(r, g, b)" / "rgba(r, g, b, a)" (what browser colour pickers give) or a
    sequence of three integers in 0..255."""
    if isinstance(colour, str):
        text = colour.strip()
        hex_match = _HEX_COLOUR.fullmatch(text)
        if hex_match:
            digits = hex_match.group(1)
            return tuple(int(digits[i : i + 2], 16) for i in (0, 2, 4))
        css_match = _CSS_RGB.fullmatch(text)
        if css_match and all(float(value) <= 255 for value in css_match.groups()):
            return tuple(round(float(value)) for value in css_match.groups())
        raise SegcoreError(f"{colour!r} is not a colour; write it as \"#rrggbb\" (six hex digits, e.g. \"#00ff00\")")
    values = list(colour) if isinstance(colour, (tuple, list, np.ndarray)) else None
    if values is None or len(values) != 3:
        raise SegcoreError(f"{colour!r} is not an RGB colour; pass three integers in 0..255 such as (0, 255, 0)")
    for value in values:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or not 0 <= value <= 255:
            raise SegcoreError(
                f"{tuple(values)!r} is not an RGB colour: each channel must be an integer in 0..255, e.g. (0, 255, 0)"
            )
    return tuple(int(value) for value in values)


# --------------------------------------------------------------------------------------------------------------
# Alpha
# --------------------------------------------------------------------------------------------------------------


def foreground_alpha(probabilities: np.ndarray, background_index: int = 0) -> np.ndarray:
    """(C, H, W) softmax probabilities -> (H, W) float32 alpha = 1 - p(background); a (1, H, W) sigmoid map is
    the foreground probability itself."""
    if not isinstance(probabilities, np.ndarray):
        raise SegcoreError(
            f"probabilities must be a numpy array, got {type(probabilities).__name__}; use Prediction.probabilities"
        )
    if probabilities.ndim != 3 or probabilities.shape[0] < 1:
        raise SegcoreError(
            f"probabilities must be (C, H, W), got shape {probabilities.shape}; for an (H, W) map add an axis: "
            "probabilities[None]"
        )
    if not np.issubdtype(probabilities.dtype, np.floating):
        raise SegcoreError(
            f"probabilities must be float, got dtype {probabilities.dtype}; pass softmax/sigmoid outputs, not labels"
        )
    channels = probabilities.shape[0]
    if channels == 1:
        alpha = probabilities[0]
    else:
        if isinstance(background_index, bool) or not isinstance(background_index, numbers.Integral):
            raise SegcoreError(f"background_index must be an integer, got {background_index!r}")
        if not -channels <= background_index < channels:
            raise SegcoreError(
                f"background_index {background_index} is out of range for {channels} classes; pick 0..{channels - 1}"
            )
        alpha = 1.0 - probabilities[background_index]
    return _check_alpha(np.asarray(alpha, dtype=np.float32)).copy()


def default_refine_radius(height: int, width: int) -> int:
    """About 1% of the shorter side, at least 2 px: wide enough to reach a model's blurry edge at any resolution."""
    return max(2, round(0.01 * min(height, width)))


def refine_alpha(
    image: np.ndarray, alpha: np.ndarray, *, edges: bool = True, radius: int | None = None, eps: float = 1e-4
) -> np.ndarray:
    """Snap the matte's edges to the image's edges with the guided filter (colour guide, `eps` in [0, 1]^2 units).

    With edges=False the alpha is only validated and returned as float32. `radius` defaults to
    default_refine_radius(H, W).
    """
    image, alpha = _check_image_and_alpha(image, alpha)
    if not edges:
        return alpha.copy()
    if radius is None:
        radius = default_refine_radius(*alpha.shape)
    if isinstance(radius, bool) or not isinstance(radius, numbers.Integral) or radius < 1:
        raise SegcoreError(f"radius must be a positive integer, got {radius!r}; leave it out for a size-aware default")
    if not eps > 0:
        raise SegcoreError(f"eps must be > 0, got {eps!r}; 1e-4 follows edges closely, 1e-2 is smoother")
    # He & Sun's fast variant: coefficients solved where the shorter side is 120-240 px, a power-of-two step that
    # OpenCV's area resize takes fast (640x480 webcam frames: 1/4, radius 5 -> 1; 5.6 ms instead of 69 ms for the
    # exact float64 filter, mean |difference| 0.0024, docs/benchmarks.md); small images keep the full resolution.
    subsample = 2 ** max(0, int(math.log2(max(1, min(alpha.shape) // 120))))
    return fast_guided_filter(image, alpha, radius=int(radius), eps=float(eps), subsample=subsample)


# --------------------------------------------------------------------------------------------------------------
# Compositing
# --------------------------------------------------------------------------------------------------------------


def _composite(image: np.ndarray, alpha: np.ndarray, background: np.ndarray) -> np.ndarray:
    """alpha * image + (1 - alpha) * background, rounded to uint8 (image and background uint8 (H, W, 3)). Where
    alpha is exactly 1 the image is kept bit-exactly (1 * x + 0 * y is exact in floating point)."""
    # OpenCV's blend is one pass over the frame on the uint8 planes themselves, rounding and saturating as it
    # writes (float32 copies of both took twice as long; numpy's version three temporaries, 14 ms at 640x480)
    return cv2.blendLinear(np.ascontiguousarray(image), np.ascontiguousarray(background), alpha, 1.0 - alpha)


def cutout(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 RGBA: the image's colours with alpha = round(alpha * 255) (straight, not premultiplied)."""
    image, alpha = _check_image_and_alpha(image, alpha)
    # round(alpha * 255), saturated to uint8, as the fourth channel (OpenCV's merge: one pass, no strided copies)
    rgba = cv2.merge([*cv2.split(image), cv2.convertScaleAbs(alpha, alpha=255.0)])
    return rgba


def blur_sigma(height: int, width: int, strength: float) -> float:
    """Gaussian sigma in pixels for a strength in 0..100, proportional to the shorter side so that the same
    strength looks the same on a thumbnail and on a full-size photo."""
    if strength <= 0:
        return 0.0
    return max(0.5, strength / 100.0 * _MAX_BLUR_SIGMA_FRACTION * min(height, width))


def blur_background(image: np.ndarray, alpha: np.ndarray, strength: float = 50) -> np.ndarray:
    """(H, W, 3) uint8: the foreground kept sharp over a Gaussian-blurred background; strength 0..100 (0 = image)."""
    image, alpha = _check_image_and_alpha(image, alpha)
    if isinstance(strength, bool) or not isinstance(strength, numbers.Real) or not 0 <= strength <= 100:
        raise SegcoreError(f"strength must be a number in 0..100, got {strength!r}")
    sigma = blur_sigma(*alpha.shape, float(strength))
    if sigma == 0.0:
        return image.copy()
    # Blurring the whole frame would smear the person's colours into the background next to them, a visible halo
    # once the sharp person is laid back on top. Instead blur only the background pixels (foreground weighted out)
    # and divide by the blurred weight: each pixel becomes a Gaussian average of nearby background colours alone.
    # A wide blur runs on a copy shrunk so that sigma is about _BLUR_SIGMA_AT_LOW_RESOLUTION px, divided there,
    # and only the background colour is enlarged again (640x480 at strength 50: a few ms).
    height, width = alpha.shape
    background_weight = 1.0 - alpha
    # OpenCV's multiply of the uint8 frame by the weight in three planes: numpy's broadcast over the channel
    # axis took 7.7 ms at 640x480, this 1.2 ms, same float32 values
    weighted = cv2.multiply(image, cv2.merge([background_weight] * 3), dtype=cv2.CV_32F)
    factor = max(1.0, sigma / _BLUR_SIGMA_AT_LOW_RESOLUTION)
    small = (max(1, round(width / factor)), max(1, round(height / factor)))
    if small != (width, height):
        weighted = cv2.resize(weighted, small, interpolation=cv2.INTER_AREA)
        background_weight = cv2.resize(background_weight, small, interpolation=cv2.INTER_AREA)
        plain = cv2.resize(image, small, interpolation=cv2.INTER_AREA).astype(np.float32)
        sigma = sigma * small[0] / width
    else:
        plain = image.astype(np.float32)
    colour_sum = cv2.GaussianBlur(weighted, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    weight_sum = cv2.GaussianBlur(background_weight, (0, 0), sigmaX=sigma, sigmaY=sigma,
                                  borderType=cv2.BORDER_REFLECT)[..., None]
    background = colour_sum / np.maximum(weight_sum, _MIN_BACKGROUND_WEIGHT)
    sparse = weight_sum[..., 0] < _MIN_BACKGROUND_WEIGHT
    if sparse.any():
        background[sparse] = cv2.GaussianBlur(plain, (0, 0), sigmaX=sigma, sigmaY=sigma,
                                              borderType=cv2.BORDER_REFLECT)[sparse]
    background = cv2.convertScaleAbs(background)  # rounded to uint8 where it is small, then enlarged as uint8
    if small != (width, height):
        background = cv2.resize(background, (width, height), interpolation=cv2.INTER_LINEAR)
    return _composite(image, alpha, background)


def cover(background: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale (aspect kept) so the background covers height x width, then crop the centre."""
    source_height, source_width = background.shape[:2]
    scale = max(height / source_height, width / source_width)
    new_height = max(height, math.ceil(source_height * scale - 1e-6))
    new_width = max(width, math.ceil(source_width * scale - 1e-6))
    if (new_height, new_width) != (source_height, source_width):
        shrinking = new_height * new_width < source_height * source_width
        background = cv2.resize(background, (new_width, new_height),
                                interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    top, left = (new_height - height) // 2, (new_width - width) // 2
    return background[top : top + height, left : left + width]


def replace_background(image: np.ndarray, alpha: np.ndarray, background) -> np.ndarray:
    """(H, W, 3) uint8: the foreground over a new background, either a colour ("#rrggbb" or (r, g, b)) or an
    image of any size (grey, RGB or RGBA array, or PIL image) scaled to cover the frame and centre-cropped."""
    image, alpha = _check_image_and_alpha(image, alpha)
    height, width = alpha.shape
    is_colour = isinstance(background, (str, tuple, list)) or (
        isinstance(background, np.ndarray) and background.ndim == 1
    )
    if is_colour:
        return _composite(image, alpha, np.full((height, width, 3), parse_colour(background), dtype=np.uint8))
    return _composite(image, alpha, cover(to_rgb_uint8(background), height, width))


# --------------------------------------------------------------------------------------------------------------
# Video
# --------------------------------------------------------------------------------------------------------------


class TemporalSmoother:
    """Per-pixel exponential moving average of alpha mattes for webcam streams.

    smoothed = keep * previous + (1 - keep) * new, with keep = momentum where the change |new - previous| is at
    most motion_threshold / 2 (frame-to-frame flicker at the edges), falling linearly to 0 at motion_threshold and
    above (a real movement, taken at once so a moving person leaves no ghost). A frame of another size starts over.
    """

    def __init__(self, momentum: float = 0.6, motion_threshold: float = 0.5):
        if not 0.0 <= momentum < 1.0:
            raise SegcoreError(f"momentum must be in [0, 1), got {momentum!r}; 0 turns smoothing off, 0.6 is usual")
        if not 0.0 < motion_threshold <= 1.0:
            raise SegcoreError(f"motion_threshold must be in (0, 1], got {motion_threshold!r}; 0.5 is usual")
        self.momentum = float(momentum)
        self.motion_threshold = float(motion_threshold)
        self._previous: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the history (a new stream, a new camera, a cut)."""
        self._previous = None

    def update(self, alpha: np.ndarray) -> np.ndarray:
        """Blend this frame's (H, W) float alpha with the history; returns the smoothed float32 alpha."""
        alpha = _check_alpha(alpha)
        if self._previous is None or self._previous.shape != alpha.shape:
            self._previous = alpha.copy()
            return alpha.copy()
        change = np.abs(alpha - self._previous)
        half = 0.5 * self.motion_threshold
        keep = self.momentum * np.clip((self.motion_threshold - change) / half, 0.0, 1.0)
        smoothed = (keep * self._previous + (1.0 - keep) * alpha).astype(np.float32)
        self._previous = smoothed
        return smoothed.copy()


BACKGROUND_MODES = ("cutout", "blur", "replace")


def apply_background(image: np.ndarray, alpha: np.ndarray, mode: str = "cutout", *, blur_strength: float = 50.0,
                     background="#ffffff") -> np.ndarray:
    """One background-removal result: "cutout" (RGBA), "blur" (strength 0..100) or "replace" (a colour or an
    RGB image) — what the app shows for an upload or a webcam frame."""
    if mode == "cutout":
        return cutout(image, alpha)
    if mode == "blur":
        return blur_background(image, alpha, blur_strength)
    if mode == "replace":
        return replace_background(image, alpha, background)
    raise SegcoreError(f"unknown mode {mode!r}; use one of {', '.join(BACKGROUND_MODES)}")
