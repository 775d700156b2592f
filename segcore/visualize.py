"""Pictures of predictions for people: coloured masks, overlays, heatmaps with a colour bar, saliency overlays.

All inputs and outputs are numpy arrays (images RGB uint8 (H, W, 3)); OpenCV supplies the colour maps (JET for
saliency as in the saliency literature, VIRIDIS for probabilities because it reads correctly in grey and for
colour-blind viewers). Nothing here depends on a UI toolkit, so the Gradio and Streamlit apps draw the same pictures.
"""

from __future__ import annotations

import cv2
import numpy as np

from segcore.errors import SegcoreError

COLORMAPS = {"jet": cv2.COLORMAP_JET, "viridis": cv2.COLORMAP_VIRIDIS, "inferno": cv2.COLORMAP_INFERNO,
             "magma": cv2.COLORMAP_MAGMA}


def _check_same_size(image: np.ndarray, other: np.ndarray, what: str) -> None:
    if image.shape[:2] != other.shape[:2]:
        raise SegcoreError(f"the {what} is {other.shape[1]}x{other.shape[0]} but the image is "
                           f"{image.shape[1]}x{image.shape[0]}; they must have the same size")


def colorize(labels: np.ndarray, colors: list[list[int]]) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 in the class colours (indices without a colour are black)."""
    table = np.zeros((256, 3), dtype=np.uint8)
    table[: min(len(colors), 256)] = np.asarray(colors[:256], dtype=np.uint8).reshape(-1, 3)
    return table[np.clip(labels, 0, 255).astype(np.uint8)]


def overlay(image: np.ndarray, labels: np.ndarray, colors: list[list[int]], opacity: float = 0.5,
            skip_index: int | None = None) -> np.ndarray:
    """The image with the coloured mask blended on top; `skip_index` (e.g. background) stays uncoloured."""
    _check_same_size(image, labels, "mask")
    painted = colorize(labels, colors)
    blended = (image.astype(np.float32) * (1.0 - opacity) + painted.astype(np.float32) * opacity)
    result = np.rint(blended).astype(np.uint8)
    if skip_index is not None:
        keep = labels == skip_index
        result[keep] = image[keep]
    return result


def apply_colormap(values: np.ndarray, colormap: str = "viridis", low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """(H, W) values in [low, high] -> (H, W, 3) RGB uint8 through an OpenCV colour map."""
    if colormap not in COLORMAPS:
        raise SegcoreError(f"unknown colour map {colormap!r}; use one of {', '.join(COLORMAPS)}")
    scaled = np.clip((np.asarray(values, dtype=np.float32) - low) / max(high - low, 1e-12), 0.0, 1.0)
    bgr = cv2.applyColorMap(np.rint(scaled * 255.0).astype(np.uint8), COLORMAPS[colormap])
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# Colour-bar text: about this fraction of the picture's height, at least _MIN_TEXT_PX where the picture is tall
# enough (pages scale pictures to fit, so text sized to the picture stays readable at any resolution), at most
# _MAX_TEXT_PX; pictures too short for text this size get a bar without labels.
_TEXT_FRACTION, _MIN_TEXT_PX, _MAX_TEXT_PX, _NO_TEXT_BELOW_PX = 0.05, 12, 44, 7
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_FONT_PX_AT_SCALE_1 = cv2.getTextSize("0", _FONT, 1.0, 1)[0][1]  # the height of a digit at font scale 1


def _text_px(height: int) -> int:
    wanted = min(_MAX_TEXT_PX, max(_MIN_TEXT_PX, round(_TEXT_FRACTION * height)))
    return min(wanted, height // 5)  # three labels and the gaps between them must fit beside the bar


def _vertical_text(text: str, text_px: int, length: int, thickness: int) -> np.ndarray:
    """`text` written bottom-to-top, black on white, `text_px` high and at most `length` long (shrunk, then cut)."""
    scale = text_px / _FONT_PX_AT_SCALE_1
    width = cv2.getTextSize(text, _FONT, scale, thickness)[0][0]
    if width > length:
        scale = max(scale * 0.75, scale * length / width)
        while text and cv2.getTextSize(text, _FONT, scale, thickness)[0][0] > length:
            text = text[:-1]
    strip = np.full((text_px + thickness + 3, max(length, 1), 3), 255, dtype=np.uint8)
    cv2.putText(strip, text, (0, text_px + 1), _FONT, scale, (0, 0, 0), thickness, cv2.LINE_AA)
    return np.ascontiguousarray(np.rot90(strip))


def colorbar(height: int, colormap: str = "viridis", low: float = 0.0, high: float = 1.0, title: str = "",
             width: int | None = None) -> np.ndarray:
    """A vertical colour bar (high at the top) labelled at low, middle and high, its title written along its
    right side, on white; at least `width` wide. Text is sized to the height (_TEXT_FRACTION) so labels neither
    shrink to nothing on a big photo nor overlap on a small one; a picture shorter than a few text lines gets the
    bar alone (any height from 1 px works)."""
    height = int(height)
    if height < 1:
        raise SegcoreError(f"a colour bar needs a height of at least 1 px, got {height}")
    text_px = _text_px(height)
    with_text = text_px >= _NO_TEXT_BELOW_PX
    thickness = 1 if text_px < 24 else 2
    scale = text_px / _FONT_PX_AT_SCALE_1
    padding = max(2, text_px // 3)
    bar_width = max(6, text_px)
    # labels are centred on their ticks, so the bar stops half a label short of the top and bottom edges
    inset = (text_px // 2 + 1) if with_text else 0
    bar_height = max(1, height - 2 * inset)
    labels = [(fraction, f"{low + fraction * (high - low):.2g}") for fraction in (0.0, 0.5, 1.0)]
    label_width = max(cv2.getTextSize(text, _FONT, scale, thickness)[0][0] for _, text in labels) if with_text else 0
    title_strip = _vertical_text(title, text_px, height - 2 * padding, thickness) if with_text and title else None
    needed = padding + bar_width + (padding + label_width if with_text else 0) + padding
    if title_strip is not None:
        needed += title_strip.shape[1] + padding
    canvas = np.full((height, max(needed, width or 0), 3), 255, dtype=np.uint8)
    ramp = np.linspace(1.0, 0.0, bar_height)[:, None].repeat(bar_width, axis=1)
    canvas[inset: inset + bar_height, padding: padding + bar_width] = apply_colormap(ramp, colormap)
    if with_text:
        left = padding + bar_width
        for fraction, text in labels:
            y = inset + round((1.0 - fraction) * (bar_height - 1))
            cv2.line(canvas, (left, y), (left + padding // 2, y), (0, 0, 0), 1)
            cv2.putText(canvas, text, (left + padding, y + text_px // 2), _FONT, scale, (0, 0, 0), thickness,
                        cv2.LINE_AA)
        if title_strip is not None:
            column = left + padding + label_width + padding
            canvas[padding: padding + title_strip.shape[0], column: column + title_strip.shape[1]] = title_strip
    return canvas


def heatmap(values: np.ndarray, colormap: str = "viridis", low: float = 0.0, high: float = 1.0,
            title: str = "", with_colorbar: bool = True) -> np.ndarray:
    """A colour-mapped (H, W) map, with a labelled colour bar appended on the right."""
    picture = apply_colormap(values, colormap, low, high)
    if not with_colorbar:
        return picture
    return np.concatenate([picture, colorbar(picture.shape[0], colormap, low, high, title)], axis=1)


def saliency_overlay(image: np.ndarray, saliency: np.ndarray, opacity: float = 0.5,
                     with_colorbar: bool = True) -> np.ndarray:
    """JET-coloured saliency (normalised to its own maximum, as saliency maps are relative) over the image."""
    _check_same_size(image, saliency, "saliency map")
    saliency = np.asarray(saliency, dtype=np.float32)
    peak = float(saliency.max())
    normalised = saliency / peak if peak > 0 else saliency
    colored = apply_colormap(normalised, "jet")
    weight = (opacity * normalised)[..., None]  # unsalient pixels show the photo, salient ones the colour
    blended = np.rint(image.astype(np.float32) * (1.0 - weight) + colored.astype(np.float32) * weight).astype(np.uint8)
    if not with_colorbar:
        return blended
    return np.concatenate([blended, colorbar(blended.shape[0], "jet", 0.0, 1.0, "relative")], axis=1)


def hex_color(color: list[int] | tuple[int, ...]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*[int(channel) for channel in color[:3]])
