"""Draw street-generated.png: a 480x360 road scene (sky, buildings, pavement, a road with lane markings, a car and
a tree) from flat OpenCV shapes, for trying the road-scene models without a licensed photograph.

Deterministic: no random numbers and no anti-aliasing, so `python assets/examples/make_generated.py` rewrites the
same pixels (tests/test_examples.py checks this). `--out PATH` writes elsewhere.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

WIDTH, HEIGHT = 480, 360
HORIZON = 200  # the row where the pavement meets the buildings and the road starts
VANISHING_POINT = (240, 150)  # where the road's edges and lane lines meet, above the horizon (buildings hide it)
ROAD_TOP = 222


def _toward_vanishing_point(x_bottom: float, y: float) -> int:
    """The x, at row y, of a straight road line that crosses the bottom of the image at x_bottom."""
    vanish_x, vanish_y = VANISHING_POINT
    return round(vanish_x + (x_bottom - vanish_x) * (y - vanish_y) / (HEIGHT - vanish_y))


def _draw_sky(canvas: np.ndarray) -> None:
    top, horizon = np.array([92, 148, 218], np.float64), np.array([196, 218, 240], np.float64)
    blend = np.linspace(0.0, 1.0, HORIZON)[:, None]
    canvas[:HORIZON] = np.rint(top * (1 - blend) + horizon * blend).astype(np.uint8)[:, None, :]
    cv2.circle(canvas, (405, 48), 22, (255, 241, 196), thickness=-1)


def _draw_buildings(canvas: np.ndarray) -> None:
    # (left, right, top) and a facade colour per building; windows lit in a fixed pattern.
    buildings = [
        (0, 92, 70, (150, 112, 96)),
        (92, 170, 112, (189, 176, 150)),
        (170, 232, 58, (120, 128, 140)),
        (232, 300, 128, (168, 96, 80)),
        (300, 388, 86, (200, 190, 170)),
        (388, 480, 104, (110, 118, 104)),
    ]
    for index, (left, right, top, colour) in enumerate(buildings):
        cv2.rectangle(canvas, (left, top), (right - 1, HORIZON - 1), colour, thickness=-1)
        cv2.rectangle(canvas, (left, top), (right - 1, top + 5), tuple(c // 2 for c in colour), thickness=-1)
        for row, y in enumerate(range(top + 14, HORIZON - 22, 22)):
            for column, x in enumerate(range(left + 9, right - 16, 18)):
                lit = (row * 7 + column * 3 + index) % 5 < 2
                glass = (250, 226, 140) if lit else (58, 70, 92)
                cv2.rectangle(canvas, (x, y), (x + 9, y + 12), glass, thickness=-1)
    # A shop door at street level on two buildings.
    cv2.rectangle(canvas, (120, HORIZON - 30), (140, HORIZON - 1), (80, 52, 40), thickness=-1)
    cv2.rectangle(canvas, (330, HORIZON - 30), (352, HORIZON - 1), (64, 64, 72), thickness=-1)


def _draw_street(canvas: np.ndarray) -> None:
    canvas[HORIZON:ROAD_TOP] = (172, 168, 160)  # pavement
    cv2.line(canvas, (0, ROAD_TOP - 1), (WIDTH - 1, ROAD_TOP - 1), (214, 210, 202), thickness=2)  # kerb
    canvas[ROAD_TOP:] = (64, 66, 70)  # asphalt
    for x_bottom in (-160, WIDTH + 160):  # solid edge lines, leaving the frame at the bottom corners' outside
        near_x = _toward_vanishing_point(x_bottom, HEIGHT)
        far_x = _toward_vanishing_point(x_bottom, ROAD_TOP + 6)
        sign = 1 if x_bottom > VANISHING_POINT[0] else -1
        cv2.fillPoly(
            canvas,
            [np.array([(far_x, ROAD_TOP + 6), (far_x + sign * 2, ROAD_TOP + 6), (near_x + sign * 12, HEIGHT),
                       (near_x, HEIGHT)], np.int32)],
            (236, 236, 230),
        )
    # Dashed centre line: dashes shrink toward the vanishing point.
    dash_rows = [(ROAD_TOP + 8, ROAD_TOP + 14), (ROAD_TOP + 24, ROAD_TOP + 34), (ROAD_TOP + 50, ROAD_TOP + 68),
                 (ROAD_TOP + 94, ROAD_TOP + 124)]
    for near, far in [(bottom, top) for top, bottom in dash_rows]:
        half_near = max(1, round(6 * (near - VANISHING_POINT[1]) / (HEIGHT - VANISHING_POINT[1])))
        half_far = max(1, round(6 * (far - VANISHING_POINT[1]) / (HEIGHT - VANISHING_POINT[1])))
        centre = VANISHING_POINT[0]
        cv2.fillPoly(
            canvas,
            [np.array([(centre - half_far, far), (centre + half_far, far), (centre + half_near, near),
                       (centre - half_near, near)], np.int32)],
            (240, 214, 80),
        )


def _draw_car(canvas: np.ndarray, shift: int = 26) -> None:
    """A red hatchback in the right-hand lane; `shift` moves it right from x = 250 so it clears the centre line."""
    body, dark, glass, tyre = (196, 38, 44), (120, 20, 26), (150, 190, 214), (24, 24, 26)

    def at(*points: tuple[int, int]) -> np.ndarray:
        return np.array([(x + shift, y) for x, y in points], np.int32)

    cv2.ellipse(canvas, (318 + shift, 318), (78, 10), 0, 0, 360, (40, 42, 46), thickness=-1)  # shadow on the road
    cv2.rectangle(canvas, (250 + shift, 268), (386 + shift, 308), body, thickness=-1)  # lower body
    cv2.fillPoly(canvas, [at((274, 268), (292, 240), (350, 240), (368, 268))], body)  # cabin
    cv2.fillPoly(canvas, [at((280, 266), (295, 245), (318, 245), (318, 266))], glass)
    cv2.fillPoly(canvas, [at((324, 266), (324, 245), (347, 245), (362, 266))], glass)
    cv2.rectangle(canvas, (250 + shift, 290), (386 + shift, 294), dark, thickness=-1)  # trim line
    cv2.rectangle(canvas, (250 + shift, 276), (258 + shift, 284), (255, 236, 150), thickness=-1)  # headlight
    cv2.rectangle(canvas, (379 + shift, 276), (386 + shift, 284), (230, 60, 50), thickness=-1)  # rear light
    for centre_x in (280, 356):
        cv2.circle(canvas, (centre_x + shift, 308), 16, tyre, thickness=-1)
        cv2.circle(canvas, (centre_x + shift, 308), 7, (150, 150, 156), thickness=-1)


def _draw_tree(canvas: np.ndarray) -> None:
    cv2.rectangle(canvas, (54, 150), (66, ROAD_TOP - 6), (96, 66, 40), thickness=-1)  # trunk
    for (x, y, radius), colour in [
        ((60, 116, 40), (52, 112, 48)),
        ((34, 134, 28), (44, 98, 42)),
        ((88, 132, 30), (60, 124, 54)),
        ((60, 88, 28), (70, 138, 60)),
    ]:
        cv2.circle(canvas, (x, y), radius, colour, thickness=-1)


def make_street_scene() -> np.ndarray:
    """The scene as an RGB uint8 array of shape (360, 480, 3)."""
    canvas = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    _draw_sky(canvas)
    _draw_buildings(canvas)
    _draw_street(canvas)
    _draw_tree(canvas)
    _draw_car(canvas)
    return canvas


def write_png_atomic(image: np.ndarray, path: Path) -> None:
    """Write via a temporary file in the same folder and a rename, so a crash never leaves half a PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            Image.fromarray(image).save(stream, format="PNG")
        os.chmod(temporary, 0o644)  # mkstemp makes files private (0600); this one is for everybody to read
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("street-generated.png"),
                        help="where to write the PNG (default: street-generated.png beside this script)")
    out = parser.parse_args(argv).out
    write_png_atomic(make_street_scene(), out)
    return out


if __name__ == "__main__":
    print(main())
