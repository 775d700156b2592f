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


def colorbar(height: int, colormap: str = "viridis", low: float = 0.0, high: float = 1.0, title: str = "",
             width: int | None = None) -> np.ndarray:
    """A vertical colour bar (high at the top) with tick labels at low, middle and high, on white."""
    width = width or max(56, height // 8)
    bar_width = max(10, width // 4)
    margin = max(8, height // 40)
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    ramp = np.linspace(1.0, 0.0, max(height - 2 * margin, 2))[:, None].repeat(bar_width, axis=1)
    canvas[margin: margin + ramp.shape[0], 4: 4 + bar_width] = apply_colormap(ramp, colormap)
    font_scale = max(0.3, height / 900)
    thickness = 1 if height < 900 else 2
    for fraction in (0.0, 0.5, 1.0):
        y = margin + round((1.0 - fraction) * (ramp.shape[0] - 1))
        value = low + fraction * (high - low)
        cv2.line(canvas, (4 + bar_width, y), (8 + bar_width, y), (0, 0, 0), 1)
        cv2.putText(canvas, f"{value:.2g}", (10 + bar_width, min(height - 2, y + int(10 * font_scale))),
                    cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), thickness, cv2.LINE_AA)
    if title:
        cv2.putText(canvas, title[:10], (2, height - 2), cv2.FONT_HERSHEY_SIMPLEX, font_scale * 0.8, (0, 0, 0),
                    thickness, cv2.LINE_AA)
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
