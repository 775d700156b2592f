"""Image reading and conversion: the odd files people upload become RGB uint8 or a clear ImageError."""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from segcore.errors import ImageError
import segcore.image
from segcore.data.datasets import read_mask
from segcore.image import fit_longer_side, image_size, mask_to_image, read_image, to_rgb_uint8, write_image_atomic


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


def _gradient(height, width):
    rows, columns = np.mgrid[0:height, 0:width]
    return np.stack([rows * 255 // height, columns * 255 // width, (rows + columns) % 256], axis=2).astype(np.uint8)


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_max_side_reads_reduced_and_matches_a_full_read_downscaled(tmp_path, suffix):
    path = _save(Image.fromarray(_gradient(1500, 2000)), tmp_path / f"big{suffix}", **({"quality": 95} if suffix == ".jpg" else {}))
    small = read_image(path, max_side=400)
    assert small.shape == (300, 400, 3)
    reference = fit_longer_side(read_image(path), 400)
    assert np.abs(small.astype(int) - reference.astype(int)).mean() < 2.0
    assert read_image(path, max_side=4000).shape == (1500, 2000, 3), "never upscales"


def test_a_big_sixteen_bit_png_is_reduced_without_full_size_copies(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 3000).astype(np.uint16), (3000, 1))  # 9 megapixels, 16 bits
    path = _save(Image.fromarray(ramp), tmp_path / "deep.png")
    tracemalloc.start()
    try:
        image = read_image(path, max_side=500)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert image.shape == (500, 500, 3) and image[:, 0].max() < 5 and image[:, -1].min() > 250
    # numpy's copies only (Pillow's own buffers are not traced): none at full size, where the old path made a
    # float64 plane (72 MB) and a full-size RGB array (27 MB)
    assert peak < 3000 * 3000, f"{peak / 2**20:.0f} MB of numpy arrays for a 9 MP image"


def test_max_side_keeps_the_exif_rotation(tmp_path):
    wide = Image.new("RGB", (800, 400), (0, 0, 0))
    wide.paste((255, 255, 255), (0, 0, 200, 400))  # white stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    wide.save(path, exif=exif, quality=95)
    assert image_size(path) == (400, 800)
    image = read_image(path, max_side=200)
    assert image.shape == (200, 100, 3) and image[:45].mean() > 200 and image[-45:].mean() < 50


def test_reads_over_the_decode_budget_are_refused_from_the_header(tmp_path, monkeypatch):
    path = _save(Image.fromarray(_gradient(600, 800)), tmp_path / "photo.png")
    mask = _save(Image.fromarray(np.zeros((600, 800), np.uint8)), tmp_path / "mask.png")
    monkeypatch.setattr(segcore.image, "DECODE_BUDGET_BYTES", 1_000_000)
    with pytest.raises(ImageError, match=r"photo.png: decoding this 800x600 image would take about 3 MB.*downscale"):
        read_image(path)
    with pytest.raises(ImageError, match=r"mask.png: decoding this 800x600 mask"):
        read_mask(mask)
    assert read_image(_save(Image.fromarray(_gradient(600, 800)), tmp_path / "photo.jpg"), max_side=100).shape == (75, 100, 3), \
        "a JPEG decoded at 1/8 scale fits the same budget"


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
