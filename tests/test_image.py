"""Image reading and conversion: the odd files people upload become RGB uint8 or a clear ImageError."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from segcore.errors import ImageError
from segcore.image import mask_to_image, read_image, to_rgb_uint8, write_image_atomic


def _save(image: Image.Image, path, **kwargs):
    image.save(path, **kwargs)
    return path


def test_rgb_png_round_trip(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (13, 17, 3), dtype=np.uint8)
    path = _save(Image.fromarray(array), tmp_path / "a.png")
    assert np.array_equal(read_image(path), array)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    ramp = (np.linspace(0, 65535, 64).reshape(8, 8)).astype(np.uint16)
    path = _save(Image.fromarray(ramp), tmp_path / "deep.png")
    image = read_image(path)
    assert image.shape == (8, 8, 3) and image.dtype == np.uint8
    assert image[0, 0, 0] == 0 and image[-1, -1, 0] == 255 and 100 < image[4, 0, 0] < 160


def test_cmyk_jpeg_and_rgba_png_become_rgb(tmp_path):
    cmyk = Image.new("CMYK", (10, 6), (0, 255, 255, 0))  # pure red in CMYK
    image = read_image(_save(cmyk, tmp_path / "cmyk.jpg", quality=95))
    assert image.shape == (6, 10, 3) and image[3, 5, 0] > 200 and image[3, 5, 1] < 60
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 2] = 255
    rgba[:2, :, 3] = 255  # top half opaque blue, bottom half transparent
    image = read_image(_save(Image.fromarray(rgba, "RGBA"), tmp_path / "rgba.png"))
    assert tuple(image[0, 0]) == (0, 0, 255) and tuple(image[3, 0]) == (255, 255, 255)


def test_exif_orientation_is_applied(tmp_path):
    wide = Image.new("RGB", (40, 20), (0, 0, 0))
    wide.paste((255, 255, 255), (0, 0, 10, 20))  # white stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rotated.jpg"
    wide.save(path, exif=exif, quality=95)
    image = read_image(path)
    assert image.shape == (40, 20, 3), "portrait after applying EXIF rotation"
    assert image[:10].mean() > 200 and image[-10:].mean() < 50, "the stripe moves to the top"


@pytest.mark.parametrize(
    "content, message",
    [(b"", "empty"), (b"hello, not an image", "not an image")],
)
def test_non_images_and_empty_files(tmp_path, content, message):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=message) as error:
        read_image(path)
    assert str(path) in str(error.value)


def test_truncated_jpeg(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageError, match="damaged or truncated"):
        read_image(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="is a folder"):
        read_image(tmp_path)


def test_array_conversions():
    grey = np.full((5, 6), 7, dtype=np.uint8)
    assert to_rgb_uint8(grey).shape == (5, 6, 3)
    assert to_rgb_uint8(np.ones((5, 6, 3), dtype=np.float32))[0, 0, 0] == 255
    assert to_rgb_uint8(np.full((2, 2, 3), 65535, dtype=np.uint16))[0, 0, 0] == 255
    assert to_rgb_uint8(Image.new("L", (3, 2), 9)).shape == (2, 3, 3)
    with pytest.raises(ImageError, match="shape"):
        to_rgb_uint8(np.zeros((4, 4, 2), dtype=np.uint8))
    with pytest.raises(ImageError, match="NaN"):
        to_rgb_uint8(np.full((2, 2), np.nan))
    with pytest.raises(ImageError, match="numpy array or a PIL image"):
        to_rgb_uint8("image.png")


def test_mask_png_keeps_indices_and_colours(tmp_path):
    labels = np.array([[0, 1], [2, 1]])
    path = write_image_atomic(mask_to_image(labels, [[0, 0, 0], [255, 0, 0], [0, 255, 0]]), tmp_path / "m.png")
    with Image.open(path) as image:
        assert image.mode == "P"
        assert np.array_equal(np.asarray(image), labels)
        assert tuple(np.asarray(image.convert("RGB"))[0, 1]) == (255, 0, 0)
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]
