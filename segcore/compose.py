"""Background removal for the app: turn a segmentation into an alpha matte (probabilities sharpened, edges snapped
to the photo by He et al.'s guided filter, foreground colours estimated by Forte & Pitie's blur fusion), and cut
out, blur or replace the background. numpy in, numpy out; no UI code here.

Deviation from a plain alpha blend: the blurred background is a normalised convolution of background pixels only
(Knutsson & Westin 1993), so the person's colours do not bleed into it as a halo. TemporalSmoother steadies webcam
mattes with a moving average weighted by the frame's confidence, letting large changes and cuts through at once.
"""

from __future__ import annotations

import math
import numbers
import re

import cv2
import numpy as np
from PIL import ImageColor

from segcore.errors import SegcoreError
from segcore.image import to_rgb_uint8
from segcore.refine import dense_crf, fast_guided_filter

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
# sharpen_alpha's default logit gain, chosen on the Shen 2016 validation portraits (docs/benchmarks.md, "Mattes")
DEFAULT_SHARPEN_GAIN = 4.0
_LOGIT_EPSILON = 1e-6
_FOREGROUND_EPSILON = 1e-5
# alpha within this of 0 or 1 counts as clear or opaque (no foreground colour to solve there)
_MATTE_EPSILON = 1.0 / 512.0

_HEX_COLOUR = re.compile(r"#?([0-9a-fA-F]{6})")
_CSS_RGB = re.compile(r"rgba?\(\s*([0-9.]+)\s*,\s*([0-9.]+)\s*,\s*([0-9.]+)\s*(?:,\s*[0-9.]+\s*)?\)")
_PLAIN_RGB = re.compile(r"([0-9]{1,3})\s*,\s*([0-9]{1,3})\s*,\s*([0-9]{1,3})")


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
    if not alpha.size:
        return np.ascontiguousarray(alpha, dtype=np.float32)
    # min and max propagate NaN and show infinities, so two reductions check everything; an alpha already in
    # [0, 1] is passed on as it is (no copy: every caller writes to new arrays only). Each full-frame temporary
    # costs page faults on this VM, and the webcam path validates the same matte seven times per frame.
    low, high = float(alpha.min()), float(alpha.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        raise SegcoreError("alpha contains NaN or infinite values; check the model's output")
    if low < -_RANGE_TOLERANCE or high > 1.0 + _RANGE_TOLERANCE:
        raise SegcoreError(
            f"alpha must lie in [0, 1], got {low:.3g}..{high:.3g}; pass probabilities "
            "(softmax or sigmoid), not logits or a 0..255 mask"
        )
    if low < 0.0 or high > 1.0:
        return np.clip(alpha, 0.0, 1.0).astype(np.float32, copy=False)
    return np.ascontiguousarray(alpha, dtype=np.float32)


def _check_image_and_alpha(image, alpha) -> tuple[np.ndarray, np.ndarray]:
    image = _check_image(image)
    return image, _check_alpha(alpha, image.shape[:2])


def parse_colour(colour, *, names: bool = False) -> tuple[int, int, int]:
    """An RGB colour from "#rrggbb", "rgb(r, g, b)" / "rgba(r, g, b, a)" (what browser colour pickers give),
    "r,g,b", a sequence of three integers in 0..255, or with `names` a CSS colour name ("white", "teal"; the
    command line takes them, the app's picker never sends one)."""
    if isinstance(colour, str):
        text = colour.strip()
        hex_match = _HEX_COLOUR.fullmatch(text)
        if hex_match:
            digits = hex_match.group(1)
            return tuple(int(digits[i : i + 2], 16) for i in (0, 2, 4))
        css_match = _CSS_RGB.fullmatch(text) or _PLAIN_RGB.fullmatch(text)
        if css_match and all(float(value) <= 255 for value in css_match.groups()):
            return tuple(round(float(value)) for value in css_match.groups())
        if names and text.isalpha():
            try:
                return ImageColor.getrgb(text.lower())[:3]
            except ValueError:
                pass
        examples = '"#rrggbb" (six hex digits, e.g. "#00ff00")' + (', "0,255,0" or a CSS name such as "green"'
                                                                     if names else "")
        raise SegcoreError(f"{colour!r} is not a colour; write it as {examples}")
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
# Mattes: sharpened probabilities, edge refinement, foreground colours
# --------------------------------------------------------------------------------------------------------------


def sharpen_alpha(alpha: np.ndarray, gain: float = DEFAULT_SHARPEN_GAIN) -> np.ndarray:
    """sigmoid(gain * logit(alpha)): the model's probabilities with their logits scaled, i.e. a softmax at
    temperature 1 / gain. A segmentation network trained with cross-entropy is unsure over a wide band (20-27 % of
    a portrait's pixels partly transparent); scaling keeps its 0.5 boundary and makes the inside opaque and the
    outside transparent. gain 1 returns the alpha unchanged."""
    alpha = _check_alpha(alpha)
    if isinstance(gain, bool) or not isinstance(gain, numbers.Real) or not gain > 0:
        raise SegcoreError(f"gain must be a positive number, got {gain!r}; 1 keeps the alpha, 4 is the default")
    if gain == 1:
        return alpha.copy()
    # sigmoid(g * logit(a)) = a^g / (a^g + (1 - a)^g): two powers and a division, no log/exp round trip; computed
    # in two new planes (the same operations in the same order as with a temporary each, so the same values)
    inside = np.clip(alpha, _LOGIT_EPSILON, 1.0 - _LOGIT_EPSILON)
    outside = np.subtract(1.0, inside, dtype=np.float32)
    cv2.pow(inside, float(gain), dst=inside)
    cv2.pow(outside, float(gain), dst=outside)
    np.add(inside, outside, out=outside)
    return cv2.divide(inside, outside, dst=outside)


def matte(image: np.ndarray, alpha: np.ndarray, *, refine: bool = True, gain: float = DEFAULT_SHARPEN_GAIN,
          radius: int | None = None) -> np.ndarray:
    """The alpha the app composites with: the model's foreground probability sharpened (sharpen_alpha); with
    `refine`, then snapped to the image's edges at full resolution by the guided filter (refine_alpha; radius
    follows the image size) and sharpened once more, because the filter's linear fit leaves a faint veil up to
    its radius from every edge. Shen 2016 validation portraits, portrait-sinet (docs/benchmarks.md, "Mattes"):
    partly transparent pixels farther than 5 px from the true boundary 11.5 % raw, 1.7 % sharpened, 0.67 %
    refined; boundary F 0.475 raw and sharpened, 0.559 refined."""
    image, alpha = _check_image_and_alpha(image, alpha)
    sharp = sharpen_alpha(alpha, gain)
    if not refine:
        return sharp
    return sharpen_alpha(refine_alpha(image, sharp, radius=radius), gain)


def _sample_bilinear(values: np.ndarray, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """values (h, w, C) at fractional pixel positions -> (N, C), bilinear, edges replicated. The positions are laid
    out as a 2-D map because OpenCV's remap takes at most 32767 rows."""
    count, line = len(rows), 1024
    padded = -(-count // line) * line
    map_y = np.zeros(padded, np.float32)
    map_x = np.zeros(padded, np.float32)
    map_y[:count], map_x[:count] = rows, columns
    sampled = cv2.remap(values, map_x.reshape(-1, line), map_y.reshape(-1, line), cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE)
    return sampled.reshape(padded, -1)[:count]


def estimate_foreground(image: np.ndarray, alpha: np.ndarray, radii: tuple[int, ...] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 foreground colours F such that image ~ alpha F + (1 - alpha) B, by Forte & Pitie's blur
    fusion (ICIP 2021, "Approximate fast foreground colour estimation"): at each radius, F and B are local
    alpha-weighted averages of the current estimates, then F is corrected by alpha times what the pair fails to
    explain. Compositing F instead of the photo removes the old background's colour from soft edges (a halo of
    the original wall around hair on a new background). radii default to about 9 % and 0.6 % of the shorter side
    (the paper's 90 and 6 px at 1000 px).
    Deviations, for speed at any size: F is solved only where the matte is partly transparent (where alpha is 1,
    F is the photo, as the paper's update gives; where it is 0, F is never seen); pixels outside that band keep
    the photo's colour as their F or B estimate; a wide pass averages where its radius is about 8 px and its
    averages are interpolated back (they vary slowly at that radius)."""
    image, alpha = _check_image_and_alpha(image, alpha)
    height, width = alpha.shape
    foreground = image.copy()
    band = (alpha > _MATTE_EPSILON) & (alpha < 1.0 - _MATTE_EPSILON)
    if not band.any():
        return foreground
    if radii is None:
        short = min(height, width)
        radii = (max(3, round(0.09 * short)), max(1, round(0.006 * short)))
    flat = np.flatnonzero(band)  # the band's pixels, as indices into the flattened image
    rows, columns = np.divmod(flat, width)
    colours = np.multiply(image, np.float32(1.0 / 255.0), dtype=np.float32)  # one pass, no uint8->float copy
    weighted_foreground = cv2.multiply(colours, cv2.merge([alpha] * 3))  # F * alpha, with F = the photo at first
    weighted_background = colours - weighted_foreground  # B * (1 - alpha), with B = the photo
    band_colour = colours.reshape(-1, 3)[flat]
    band_alpha = alpha.reshape(-1)[flat][:, None]
    band_foreground = band_colour
    for radius in radii:
        factor = max(1, int(radius) // 8)
        small = (max(1, round(width / factor)), max(1, round(height / factor)))
        size = (2 * max(1, round(radius / factor)) + 1,) * 2
        sums = []  # box averages of alpha, F alpha and B (1 - alpha), where the pass works
        for values in (alpha, weighted_foreground, weighted_background):
            if factor > 1:
                values = cv2.resize(values, small, interpolation=cv2.INTER_AREA)
            average = cv2.blur(values, size, borderType=cv2.BORDER_REFLECT)
            if factor == 1:
                sums.append(average.reshape(len(alpha.reshape(-1)), -1)[flat])
            else:  # bilinear samples of the small maps at the band's pixel centres
                sums.append(_sample_bilinear(average, (rows + 0.5) * (small[1] / height) - 0.5,
                                             (columns + 0.5) * (small[0] / width) - 0.5))
        blurred_alpha, foreground_sum, background_sum = sums
        local_foreground = foreground_sum / (blurred_alpha + _FOREGROUND_EPSILON)
        local_background = background_sum / (1.0 - blurred_alpha + _FOREGROUND_EPSILON)
        residual = band_colour - band_alpha * local_foreground - (1.0 - band_alpha) * local_background
        band_foreground = np.clip(local_foreground + band_alpha * residual, 0.0, 1.0)
        weighted_foreground.reshape(-1, 3)[flat] = band_foreground * band_alpha
        weighted_background.reshape(-1, 3)[flat] = local_background * (1.0 - band_alpha)
    foreground.reshape(-1, 3)[flat] = np.rint(band_foreground * 255.0).astype(np.uint8)
    return foreground


# --------------------------------------------------------------------------------------------------------------
# Compositing
# --------------------------------------------------------------------------------------------------------------


def _composite(image: np.ndarray, alpha: np.ndarray, background: np.ndarray) -> np.ndarray:
    """alpha * image + (1 - alpha) * background, rounded to uint8 (image and background uint8 (H, W, 3)). Where
    alpha is exactly 1 the image is kept bit-exactly (1 * x + 0 * y is exact in floating point)."""
    # OpenCV's blend is one pass over the frame on the uint8 planes themselves, rounding and saturating as it
    # writes (float32 copies of both took twice as long; numpy's version three temporaries, 14 ms at 640x480)
    return cv2.blendLinear(np.ascontiguousarray(image), np.ascontiguousarray(background), alpha, 1.0 - alpha)


def _colours(image: np.ndarray, foreground: np.ndarray | None) -> np.ndarray:
    """The colours to lay over a new background: estimated foreground colours where given, else the photo's."""
    if foreground is None:
        return image
    foreground = _check_image(foreground)
    if foreground.shape != image.shape:
        raise SegcoreError(f"foreground colours must match the image, got {foreground.shape} and {image.shape}; "
                           "compute them with estimate_foreground(image, alpha)")
    return foreground


def cutout(image: np.ndarray, alpha: np.ndarray, foreground: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 4) uint8 RGBA: the image's colours (or estimated `foreground` colours, estimate_foreground) with
    alpha = round(alpha * 255) (straight, not premultiplied)."""
    image, alpha = _check_image_and_alpha(image, alpha)
    # round(alpha * 255), saturated to uint8, as the fourth channel (OpenCV's merge: one pass, no strided copies)
    rgba = cv2.merge([*cv2.split(_colours(image, foreground)), cv2.convertScaleAbs(alpha, alpha=255.0)])
    return rgba


def blur_sigma(height: int, width: int, strength: float) -> float:
    """Gaussian sigma in pixels for a strength in 0..100, proportional to the shorter side so that the same
    strength looks the same on a thumbnail and on a full-size photo."""
    if strength <= 0:
        return 0.0
    return max(0.5, strength / 100.0 * _MAX_BLUR_SIGMA_FRACTION * min(height, width))


def blur_background(image: np.ndarray, alpha: np.ndarray, strength: float = 50,
                    foreground: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) uint8: the foreground (the photo's or estimated `foreground` colours) kept sharp over a
    Gaussian-blurred background; strength 0..100 (0 = image)."""
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
    # The weighted colours and the weight travel together as four channels, so one resize and one blur serve
    # both: the weight in four planes times the frame with its constant fourth channel (RGB -> RGBA: 255), in
    # place, gives R w, G w, B w (the same float32 products as a three-channel multiply) and 255 w; the 255 is
    # divided out on the small grid. Fewer full-frame temporaries: each costs page faults on this VM.
    weighted = cv2.merge([np.subtract(1.0, alpha, dtype=np.float32)] * 4)
    cv2.multiply(cv2.cvtColor(image, cv2.COLOR_RGB2RGBA), weighted, dst=weighted, dtype=cv2.CV_32F)
    factor = max(1.0, sigma / _BLUR_SIGMA_AT_LOW_RESOLUTION)
    small = (max(1, round(width / factor)), max(1, round(height / factor)))
    if small != (width, height):
        weighted = cv2.resize(weighted, small, interpolation=cv2.INTER_AREA)
        sigma = sigma * small[0] / width
    *colour_sums, weight_sum = cv2.split(
        cv2.GaussianBlur(weighted, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT))
    weight_sum /= 255.0
    divisor = np.maximum(weight_sum, _MIN_BACKGROUND_WEIGHT)
    background = cv2.merge([colour_sum / divisor for colour_sum in colour_sums])
    sparse = weight_sum < _MIN_BACKGROUND_WEIGHT
    if sparse.any():  # the plain blur, needed only where a pixel has (almost) no background near it
        plain = image if small == (width, height) else cv2.resize(image, small, interpolation=cv2.INTER_AREA)
        background[sparse] = cv2.GaussianBlur(plain.astype(np.float32), (0, 0), sigmaX=sigma, sigmaY=sigma,
                                              borderType=cv2.BORDER_REFLECT)[sparse]
    background = cv2.convertScaleAbs(background)  # rounded to uint8 where it is small, then enlarged as uint8
    if small != (width, height):
        background = cv2.resize(background, (width, height), interpolation=cv2.INTER_LINEAR)
    return _composite(_colours(image, foreground), alpha, background)


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


def _solid(height: int, width: int, colour: tuple[int, int, int]) -> np.ndarray:
    """(height, width, 3) uint8 filled with one colour, written a row at a time: np.full with an RGB triple
    broadcasts three values per pixel (1.4 ms at 640x480, this 0.03 ms)."""
    solid = np.empty((height, width * 3), np.uint8)
    solid[...] = np.tile(np.asarray(colour, np.uint8), width)
    return solid.reshape(height, width, 3)


def replace_background(image: np.ndarray, alpha: np.ndarray, background,
                       foreground: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) uint8: the foreground (the photo's or estimated `foreground` colours) over a new background,
    either a colour ("#rrggbb" or (r, g, b)) or an image of any size (grey, RGB or RGBA array, or PIL image) scaled
    to cover the frame and centre-cropped."""
    image, alpha = _check_image_and_alpha(image, alpha)
    image = _colours(image, foreground)
    height, width = alpha.shape
    is_colour = isinstance(background, (str, tuple, list)) or (
        isinstance(background, np.ndarray) and background.ndim == 1
    )
    if is_colour:
        return _composite(image, alpha, _solid(height, width, parse_colour(background)))
    return _composite(image, alpha, cover(to_rgb_uint8(background), height, width))


# --------------------------------------------------------------------------------------------------------------
# Video
# --------------------------------------------------------------------------------------------------------------


class TemporalSmoother:
    """Per-pixel, confidence-weighted moving average of alpha mattes for webcam streams.

    smoothed = keep * previous + (1 - keep) * new, with keep = momentum * (1 - confidence^2) * stillness:
    - confidence = |2 new - 1| is how sure this frame is of the pixel: a pixel the frame calls clearly foreground
      or background (near 1 or 0) is taken as it is, only the uncertain edge band (near 0.5, where flicker lives)
      leans on the history, so a moving person leaves no ghost behind;
    - stillness is 1 where the change |new - previous| is at most motion_threshold / 2, falling linearly to 0 at
      motion_threshold (a real movement, taken at once).
    A cut (more than scene_change of the pixels change by motion_threshold or more) or a frame of another size
    starts over from the new frame.
    """

    def __init__(self, momentum: float = 0.6, motion_threshold: float = 0.5, scene_change: float = 0.25):
        if not 0.0 <= momentum < 1.0:
            raise SegcoreError(f"momentum must be in [0, 1), got {momentum!r}; 0 turns smoothing off, 0.6 is usual")
        if not 0.0 < motion_threshold <= 1.0:
            raise SegcoreError(f"motion_threshold must be in (0, 1], got {motion_threshold!r}; 0.5 is usual")
        if not 0.0 < scene_change <= 1.0:
            raise SegcoreError(f"scene_change must be in (0, 1], got {scene_change!r}; 0.25 is usual")
        self.momentum = float(momentum)
        self.motion_threshold = float(motion_threshold)
        self.scene_change = float(scene_change)
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
        # The formulas below, evaluated in place in two scratch planes and the history itself (float32, the same
        # operations in the same order as with a temporary each, so the same values)
        change = cv2.absdiff(alpha, self._previous)
        if np.count_nonzero(change >= self.motion_threshold) / change.size > self.scene_change:
            self._previous = alpha.copy()
            return alpha.copy()
        half = 0.5 * self.motion_threshold
        # stillness = clip((motion_threshold - change) / half, 0, 1)
        stillness = np.subtract(self.motion_threshold, change, out=change)
        np.divide(stillness, half, out=stillness)
        np.clip(stillness, 0.0, 1.0, out=stillness)
        # keep = momentum * (1 - confidence^2) * stillness, confidence = 2 alpha - 1
        keep = np.multiply(alpha, 2.0, dtype=np.float32)
        keep -= 1.0
        np.multiply(keep, keep, out=keep)
        np.subtract(1.0, keep, out=keep)
        keep *= self.momentum
        keep *= stillness
        # smoothed = keep * previous + (1 - keep) * alpha, written over the history (which it replaces)
        smoothed = np.multiply(keep, self._previous, out=self._previous)
        np.subtract(1.0, keep, out=keep)
        keep *= alpha
        smoothed += keep
        return smoothed.copy()


BACKGROUND_MODES = ("cutout", "blur", "replace")


def apply_background(image: np.ndarray, alpha: np.ndarray, mode: str = "cutout", *, blur_strength: float = 50.0,
                     background="#ffffff", foreground: np.ndarray | None = None) -> np.ndarray:
    """One background-removal result: "cutout" (RGBA), "blur" (strength 0..100) or "replace" (a colour or an
    RGB image) — what the app shows for an upload or a webcam frame; `foreground`: estimated foreground colours
    (estimate_foreground) to use instead of the photo's."""
    if mode == "cutout":
        return cutout(image, alpha, foreground)
    if mode == "blur":
        return blur_background(image, alpha, blur_strength, foreground)
    if mode == "replace":
        return replace_background(image, alpha, background, foreground)
    raise SegcoreError(f"unknown mode {mode!r}; use one of {', '.join(BACKGROUND_MODES)}")


def remove_background(image: np.ndarray, alpha: np.ndarray, mode: str = "cutout", *, refine: bool = True,
                      blur_strength: float = 50.0, background="#ffffff", foreground_colours: bool = True,
                      smoother: TemporalSmoother | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The whole background-removal step after the model, as the app, the webcam and `segcore cutout` run it:
    the model's foreground probability `alpha` -> matte (sharpened; edges refined with `refine`) -> smoothed
    across frames by `smoother` -> foreground colours estimated (`foreground_colours`) -> apply_background.
    Returns (result, matte): RGBA for "cutout", RGB otherwise, and the (H, W) float32 alpha used."""
    image, alpha = _check_image_and_alpha(image, alpha)
    if mode not in BACKGROUND_MODES:
        raise SegcoreError(f"unknown mode {mode!r}; use one of {', '.join(BACKGROUND_MODES)}")
    final = matte(image, alpha, refine=refine)
    if smoother is not None:
        final = smoother.update(final)
    foreground = estimate_foreground(image, final) if foreground_colours else None
    result = apply_background(image, final, mode, blur_strength=blur_strength, background=background,
                              foreground=foreground)
    return result, final


def predict_and_remove_background(segmenter, image: np.ndarray, mode: str = "cutout", *, refine: bool = True,
                                  crf: bool = False, crf_max_pixels: int = 1_000_000, blur_strength: float = 50.0,
                                  background="#ffffff", foreground_colours: bool = True,
                                  smoother: TemporalSmoother | None = None, tta: str | None = None):
    """From an RGB uint8 photo to the result, as the app and `segcore cutout` run it: `segmenter.predict(image)`
    (a segcore.Segmenter; `tta` overrides its test-time augmentation for this photo, e.g. "none"), alpha = the
    foreground (person) probability, or with `crf` the foreground of the dense-CRF-refined probabilities
    (refine.dense_crf on a copy of at most `crf_max_pixels`), then remove_background. Returns (result, matte,
    prediction); prediction.latency_ms is the model's own time."""
    image = _check_image(image)
    if mode not in BACKGROUND_MODES:  # before the model runs, not after
        raise SegcoreError(f"unknown mode {mode!r}; use one of {', '.join(BACKGROUND_MODES)}")
    prediction = segmenter.predict(image) if tta is None else segmenter.predict(image, tta=tta)
    if crf:
        alpha = foreground_alpha(dense_crf(image, prediction.probabilities, max_pixels=crf_max_pixels))
    else:
        alpha = prediction.alpha  # the foreground probability, without a full softmax
    result, final = remove_background(image, alpha, mode, refine=refine, blur_strength=blur_strength,
                                      background=background, foreground_colours=foreground_colours,
                                      smoother=smoother)
    return result, final, prediction
