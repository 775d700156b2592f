"""Class colours: the PASCAL VOC palette (bit-interleaved index -> RGB), used when a dataset names no colours.

It gives every index up to 255 a distinct colour and matches the colours of VOC palette PNGs, so masks written by
segcore open in any viewer with the colours people expect.
"""

from __future__ import annotations


def default_palette(num_colors: int) -> list[list[int]]:
    """RGB colours for class indices 0..num_colors-1 (index 0 is black, 1 dark red, 2 dark green, ...)."""
    colors = []
    for index in range(num_colors):
        red = green = blue = 0
        value = index
        for bit in range(8):
            red |= ((value >> 0) & 1) << (7 - bit)
            green |= ((value >> 1) & 1) << (7 - bit)
            blue |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        colors.append([red, green, blue])
    return colors
