"""`python -m segcore cutout` and `bench matte` through segcore.cli.main, with the shipped portrait-sinet.

The astronaut photo's hand-marked person and background boxes come from tests/test_shipped_models.py; the other
images are generated here (seeded). Nothing needs ../shared or the network.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segcore import compose, zoo
from segcore.cli import main
from segcore.image import read_image
from segcore.inference import Segmenter
from tests.test_shipped_models import EXAMPLES, WEIGHTS_DIR, assert_covers_the_astronaut

SINET = str(WEIGHTS_DIR / "portrait-sinet")
ASTRONAUT = EXAMPLES / "astronaut.jpg"
# (left, top, right, bottom): the wall in the astronaut photo's top-right corner, clear of the person
CORNER = (452, 0, 512, 60)


def corner(array: np.ndarray) -> np.ndarray:
    left, top, right, bottom = CORNER
    return array[top:bottom, left:right]


def noise_image(path: Path, height: int = 64, width: int = 80, seed: int = 0) -> Path:
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def photos(tmp_path) -> Path:
    """The astronaut, a generated picture and junk a folder of photos collects (.DS_Store, a text file)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(ASTRONAUT, folder / "astronaut.jpg")
    noise_image(folder / "noise.png")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_a_folder_becomes_rgba_cutouts_made_by_the_apps_compositing(photos, tmp_path, capsys):
    out = tmp_path / "cutouts"
    assert main(["cutout", str(photos), "--out", str(out), "--model", SINET]) == 0
    captured = capsys.readouterr()
    assert f"{photos}: 2 image(s) found, 1 other file(s) skipped" in captured.err
    assert "2/2" in captured.err  # the progress bar
    assert f"{out}: 2 of 2 image(s) written" in captured.out
    assert sorted(path.name for path in out.iterdir()) == ["astronaut-cutout.png", "noise-cutout.png"]
    with Image.open(out / "astronaut-cutout.png") as written:
        assert written.mode == "RGBA" and written.size == (512, 512)
        cutout = np.asarray(written)
    alpha = cutout[..., 3].astype(np.float32) / 255.0
    assert_covers_the_astronaut(alpha, "the CLI cutout")
    assert (corner(cutout)[..., 3] == 0).all(), "the wall in the corner is transparent"
    # exactly what the library's background removal gives, foreground colours included
    image = read_image(ASTRONAUT)
    expected, matte = compose.remove_background(image, Segmenter.from_pretrained(SINET).predict(image).alpha,
                                                "cutout", foreground_colours=True)
    np.testing.assert_array_equal(cutout, expected)
    soft = (matte > 0.05) & (matte < 0.95)
    assert (cutout[..., :3][soft] != image[soft]).any(), "soft edges carry estimated foreground colours"
    with Image.open(out / "noise-cutout.png") as written:
        assert written.mode == "RGBA" and written.size == (80, 64)


def test_blur_and_replace_give_rgb_at_the_photos_size(tmp_path, capsys):
    replaced = tmp_path / "replaced.png"
    assert main(["cutout", str(ASTRONAUT), "--out", str(replaced), "--mode", "replace",
                 "--background", "0, 128, 255", "--model", SINET]) == 0
    assert f"{replaced}: 512x512 replace with {SINET}" in capsys.readouterr().out
    with Image.open(replaced) as written:
        assert written.mode == "RGB" and written.size == (512, 512)
        assert (corner(np.asarray(written)) == (0, 128, 255)).all()

    red = tmp_path / "red.png"
    Image.fromarray(np.full((30, 40, 3), (200, 0, 0), np.uint8)).save(red)  # scaled to cover the photo
    on_red = tmp_path / "on-red.jpg"
    assert main(["cutout", str(ASTRONAUT), "--out", str(on_red), "--mode", "replace", "--background", str(red),
                 "--model", SINET]) == 0
    with Image.open(on_red) as written:
        assert written.format == "JPEG" and written.size == (512, 512)
        assert np.abs(corner(np.asarray(written)).astype(int) - (200, 0, 0)).max() <= 8  # JPEG's rounding

    assert main(["cutout", str(ASTRONAUT), "--out", str(tmp_path / "blurred"), "--mode", "blur",
                 "--blur-strength", "80", "--no-refine", "--model", SINET]) == 0
    with Image.open(tmp_path / "blurred" / "astronaut-blur.png") as written:
        assert written.mode == "RGB" and written.size == (512, 512)
        blurred = np.asarray(written).astype(int)
    photo = read_image(ASTRONAUT).astype(int)
    face = (slice(60, 130), slice(200, 250))
    assert np.abs(blurred[face] - photo[face]).mean() < 3  # the person stays sharp
    assert np.abs(blurred[:, :60] - photo[:, :60]).mean() > 5  # the flag and wall are blurred


def test_the_default_model_is_the_apps_background_model(tmp_path, monkeypatch, capsys):
    weights = tmp_path / "weights"
    monkeypatch.setenv("SEGCORE_WEIGHTS_DIR", str(weights))
    monkeypatch.setenv("SEGCORE_RUNS_DIR", str(tmp_path / "runs"))  # no fine-tuned models either
    assert zoo.default_background_model() is None
    assert main(["cutout", str(ASTRONAUT), "--out", str(tmp_path / "a.png")]) == 1
    assert "no model that removes backgrounds is installed" in one_error_line(capsys.readouterr().err)
    shutil.copytree(WEIGHTS_DIR / "saliency-unet", weights / "saliency-unet")  # cannot remove backgrounds
    shutil.copytree(SINET, weights / "portrait-sinet")
    assert zoo.default_background_model() == "portrait-sinet"
    assert main(["cutout", str(ASTRONAUT), "--out", str(tmp_path / "a.png")]) == 0
    assert "with portrait-sinet" in capsys.readouterr().out
    with Image.open(tmp_path / "a.png") as written:
        assert written.mode == "RGBA"
    # person-fast, trained for people in any photo, comes first wherever it is installed (as it ships)
    assert zoo.default_background_model(weights_dir=WEIGHTS_DIR) == "person-fast"
    shutil.copytree(WEIGHTS_DIR / "person-fast", weights / "person-fast")
    assert zoo.default_background_model() == "person-fast"
    assert main(["cutout", str(ASTRONAUT), "--out", str(tmp_path / "b.png")]) == 0
    assert "with person-fast" in capsys.readouterr().out
    with Image.open(tmp_path / "b.png") as written:
        alpha = np.asarray(written)[:, :, 3] / 255.0
    assert alpha[40:150, 180:270].mean() > 0.9 and alpha[0:120, 300:370].mean() < 0.1  # face kept, wall cut away


def test_one_broken_image_is_reported_and_the_others_still_written(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for seed, name in enumerate(("a", "b")):
        noise_image(folder / f"{name}.png", seed=seed)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    code = main(["cutout", str(folder), "--out", str(out), "--mode", "replace", "--model", SINET])
    captured = capsys.readouterr()
    assert code == 1
    assert "broken.jpg" in captured.err and "error: 1 of 3 image(s) failed" in captured.err
    assert sorted(path.name for path in out.iterdir()) == ["a-replace.png", "b-replace.png"]  # no temporary left


@pytest.mark.parametrize("case, expected", [
    ("bad colour", "'#12': neither a colour"),
    ("missing input", "nowhere.jpg: no such file or folder"),
    ("unknown model", "no-such-model: no such file or folder, installed model"),
    ("saliency model", "saliency-unet cannot remove backgrounds"),
    ("unknown mode", "unknown --mode 'erase'; use one of cutout, blur, replace"),
    ("jpeg cutout", ".jpg has no transparency"),
    ("unreadable image", "not an image Pillow can read"),
    ("two inputs, one file", "names one image file but 2 image(s) were given"),
])
def test_bad_arguments_give_one_line_and_exit_1_before_any_model_loads(case, expected, tmp_path, capsys,
                                                                      monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(Segmenter, "from_pretrained", no_loading)
    monkeypatch.setenv("SEGCORE_WEIGHTS_DIR", str(WEIGHTS_DIR))
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    out = str(tmp_path / "result.png")
    argv = {
        "bad colour": [str(ASTRONAUT), "--out", out, "--mode", "replace", "--background", "#12"],
        "missing input": [str(tmp_path / "nowhere.jpg"), "--out", out],
        "unknown model": [str(ASTRONAUT), "--out", out, "--model", "no-such-model"],
        "saliency model": [str(ASTRONAUT), "--out", out, "--model", "saliency-unet"],
        "unknown mode": [str(ASTRONAUT), "--out", out, "--mode", "erase"],
        "jpeg cutout": [str(ASTRONAUT), "--out", str(tmp_path / "result.jpg")],
        "unreadable image": [str(text), "--out", out],
        "two inputs, one file": [str(ASTRONAUT), str(ASTRONAUT), "--out", out],
    }[case]
    assert main(["cutout", *argv]) == 1
    assert expected in one_error_line(capsys.readouterr().err)
    assert not list(tmp_path.glob("result*")), "nothing is written"


def test_bench_matte_prints_every_variant(tmp_path, capsys):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    for index in range(2):  # a bright figure on a dark ground, its mask 0/255
        mask = np.zeros((96, 72), np.uint8)
        mask[20 + 4 * index : 96, 16:56] = 255
        image = rng.integers(0, 60, (96, 72, 3), dtype=np.uint8)
        image[mask == 255] += np.uint8(150)
        Image.fromarray(image).save(images / f"p{index}.jpg", quality=95)
        Image.fromarray(mask).save(masks / f"p{index}.png")
    record = tmp_path / "matte.json"
    assert main(["bench", "matte", "--model", SINET, "--images", str(images), "--masks", str(masks),
                 "--json", str(record)]) == 0
    table = capsys.readouterr().out
    assert table.startswith("2 images;") and "| model | matte | images | stray soft % |" in table
    for variant in ("probability", "sharpened", "refined"):
        assert f"| portrait-sinet | {variant} | 2 |" in table
    assert "| portrait-sinet | + foreground colours | 2 |" in table
    rows = json.loads(record.read_text())
    assert [row["variant"] for row in rows] == ["probability", "sharpened", "refined", "foreground colours"]
    assert all(0.0 <= row["stray_soft"] <= 1.0 for row in rows[:3])
    assert main(["bench", "matte", "--model", SINET, "--images", str(images)]) == 1
    assert "give --masks DIR" in one_error_line(capsys.readouterr().err)


def test_colours_and_models_the_command_line_accepts():
    assert compose.parse_colour("0, 128,255") == (0, 128, 255)
    assert compose.parse_colour("Teal", names=True) == (0, 128, 128)
    with pytest.raises(compose.SegcoreError, match="not a colour"):
        compose.parse_colour("teal")  # the app's picker sends hex: names only where asked for
    with pytest.raises(compose.SegcoreError, match="CSS name"):
        compose.parse_colour("notacolour", names=True)
    by_path = zoo.describe(SINET)
    assert by_path.source == "folder" and by_path.removes_background and by_path.task == "portrait"
    by_name = zoo.describe("portrait-sinet", weights_dir=WEIGHTS_DIR)
    assert by_name.source == "shipped" and by_name.path == WEIGHTS_DIR / "portrait-sinet"
    assert not zoo.describe("saliency-unet", weights_dir=WEIGHTS_DIR).removes_background
    assert zoo.describe("owner/some-hub-model") is None  # not downloaded to find out
