"""Pictures of predictions: heatmaps keep the map's own height whatever it is (a 1 px strip included), with the
colour bar running from the map's high value at the top to its low value at the bottom."""

from __future__ import annotations

import numpy as np
import pytest

from segcore import visualize
from segcore.errors import SegcoreError


@pytest.mark.parametrize("height", [*range(1, 13), 40, 400])
@pytest.mark.parametrize("width", [1, 9])
def test_heatmap_of_any_height_keeps_the_map_and_appends_a_bar(height, width):
    values = np.random.default_rng(height).random((height, width), dtype=np.float32)
    picture = visualize.heatmap(values, "viridis", 0.0, 1.0, "confidence")
    assert picture.shape[0] == height and picture.shape[1] > width and picture.dtype == np.uint8
    assert np.array_equal(picture[:, :width], visualize.apply_colormap(values, "viridis"))
    bar = picture[:, width:]
    top, bottom = visualize.apply_colormap(np.array([[1.0, 0.0]]), "viridis")[0]
    rows_with_top = np.flatnonzero((bar == top).all(axis=2).any(axis=1))
    assert rows_with_top.size  # a 1 px map still gets its bar
    if height > 1:  # high at the top, low at the bottom
        rows_with_bottom = np.flatnonzero((bar == bottom).all(axis=2).any(axis=1))
        assert rows_with_bottom.size and rows_with_top.min() < rows_with_bottom.max()

def test_saliency_overlay_of_a_single_pixel():
    image = np.full((1, 1, 3), 100, dtype=np.uint8)
    shown = visualize.saliency_overlay(image, np.ones((1, 1), dtype=np.float32))
    assert shown.shape[0] == 1 and shown.shape[1] > 1


def test_a_colour_bar_needs_one_pixel():
    with pytest.raises(SegcoreError, match="at least 1 px"):
        visualize.colorbar(0)
