"""validate() names every planted defect with its file, severity and a fix; clean folders pass."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from segcore.data import FolderDataset, validate
from tests.data.synthetic import scene, write_pair


def _good_folder(root, count=6):
    rng = np.random.default_rng(0)
    for index in range(count):
        image, mask = scene(24, 32, rng)
        write_pair(root, f"good{index}", image, mask * 255)
    return root


def _exif_jpeg(path, size, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.new("RGB", size, (90, 120, 30)).save(path, exif=exif.tobytes())


def _mask(path, size, value=0):
    Image.fromarray(np.full((size[1], size[0]), value, dtype=np.uint8)).save(path)


@pytest.fixture
def defective(tmp_path):
    root = _good_folder(tmp_path)
    images, masks = root / "images", root / "masks"
    Image.new("RGB", (32, 24)).save(images / "lonely.jpg")  # missing mask
    _mask(masks / "orphan.png", (32, 24))  # orphan mask
    Image.new("RGB", (32, 24)).save(images / "mismatch.jpg")
    _mask(masks / "mismatch.png", (30, 24))  # size mismatch
    Image.new("RGB", (32, 24)).save(images / "soft.jpg")
    soft = np.zeros((24, 32), dtype=np.uint8)
    soft[:, 16:], soft[:, 15] = 255, 128
    Image.fromarray(soft).save(masks / "soft.png")  # unexpected values in a 0/255 dataset
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(buffer, "JPEG")
    (images / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])  # truncated JPEG
    _mask(masks / "cut.png", (32, 24))
    (images / "empty.jpg").write_bytes(b"")  # zero bytes
    _mask(masks / "empty.png", (32, 24))
    (images / "notanimage.jpg").write_bytes(b"this is text, not a JPEG")  # unreadable
    _mask(masks / "notanimage.png", (32, 24))
    Image.fromarray(np.full((24, 32), 40000, dtype=np.uint16)).save(images / "deep.png")  # 16-bit
    _mask(masks / "deep.png", (32, 24))
    Image.new("CMYK", (32, 24), (0, 255, 255, 0)).save(images / "cmyk.jpg")  # CMYK
    _mask(masks / "cmyk.png", (32, 24))
    Image.new("RGBA", (32, 24), (9, 9, 9, 128)).save(images / "alpha.png")  # RGBA
    _mask(masks / "alpha.png", (32, 24))
    Image.new("RGB", (32, 24)).convert("P").save(images / "indexed.png")  # palette photo
    _mask(masks / "indexed.png", (32, 24))
    _exif_jpeg(images / "turned.jpg", (32, 24), orientation=6)  # read as 24x32, mask drawn on the stored 32x24
    _mask(masks / "turned.png", (32, 24))
    _exif_jpeg(images / "upside.jpg", (32, 24), orientation=3)  # 180 degrees: same size, cannot be checked
    _mask(masks / "upside.png", (32, 24))
    Image.new("RGB", (32, 24)).save(masks / "lossy.jpg")  # a JPEG mask beside its image
    Image.new("RGB", (32, 24)).save(images / "lossy.jpg")
    return root


EXPECTED = [  # (file, kind, severity)
    ("images/lonely.jpg", "missing_mask", "warning"),
    ("masks/orphan.png", "orphan_mask", "warning"),
    ("masks/mismatch.png", "size_mismatch", "error"),
    ("masks/soft.png", "unexpected_values", "warning"),
    ("images/cut.jpg", "truncated", "error"),
    ("images/empty.jpg", "empty_file", "error"),
    ("images/notanimage.jpg", "unreadable", "error"),
    ("images/deep.png", "16bit", "warning"),
    ("images/cmyk.jpg", "cmyk", "warning"),
    ("images/alpha.png", "rgba", "warning"),
    ("images/indexed.png", "palette_image", "warning"),
    ("images/turned.jpg", "exif_rotation", "error"),
    ("images/upside.jpg", "exif_rotation", "warning"),
    ("masks/lossy.jpg", "non_png_mask", "error"),
]


def test_each_planted_defect_is_named(defective):
    report = validate(defective)
    assert not report.ok
    found = {(problem.file, problem.kind, problem.severity) for problem in report.problems}
    for expected in EXPECTED:
        assert expected in found, f"{expected} not reported; got {sorted(found)}"
    assert len(report.problems) == len(EXPECTED)  # the good pairs raise nothing
    for problem in report.problems:
        assert problem.fix and problem.message
    summary = report.summary()
    for file, _, _ in EXPECTED:
        assert file in summary
    assert "Fix the errors above" in summary and f"{len(report.errors)} error(s)" in summary
    assert "good0" in report.pairs and "lonely" in report.images_without_masks
    assert report.masks_without_images == ["orphan"]
    assert report.mask_format == "binary"


def test_clean_folder_and_flat_layout_pass(tmp_path):
    report = validate(_good_folder(tmp_path / "folders"))
    assert report.ok and report.problems == [] and len(report.pairs) == 6
    assert "Ready to train." in report.summary()
    flat = tmp_path / "flat"
    flat.mkdir()
    image, mask = scene(16, 16, np.random.default_rng(2))
    Image.fromarray(image).save(flat / "a.jpg")
    Image.fromarray(mask * 255).save(flat / "a_mask.png")
    report = validate(flat)
    assert report.ok and report.layout == "flat" and report.pairs == ["a"]


def test_indices_beyond_classes_json_are_errors(tmp_path):
    root = tmp_path
    (root / "classes.json").write_text(json.dumps({"names": ["bg", "a", "b"]}))
    labels = np.zeros((8, 8), dtype=np.uint8)
    labels[:, 2:4], labels[:, 4:6], labels[:, 6:] = 1, 2, 255
    write_pair(root, "fine", np.zeros((8, 8, 3), dtype=np.uint8), labels)
    labels[0, 0] = 7
    write_pair(root, "bad", np.zeros((8, 8, 3), dtype=np.uint8), labels)
    report = validate(root)
    assert [(problem.file, problem.kind, problem.severity) for problem in report.problems] == [
        ("masks/bad.png", "unexpected_values", "error")]
    assert "[7]" in report.problems[0].message and report.mask_format == "indexed"


def test_split_file_problems(tmp_path):
    root = _good_folder(tmp_path, count=3)
    (root / "split.txt").write_text("good0 train\ngood1 test\nghost train\n")
    report = validate(root)
    kinds = [(problem.kind, problem.severity) for problem in report.problems]
    assert kinds == [("split", "error"), ("split", "warning")]
    assert "ghost" in report.errors[0].message and "good2" in report.warnings[0].message


def test_validated_folder_loads(tmp_path):
    root = _good_folder(tmp_path)
    assert validate(root).ok
    assert len(FolderDataset(root)) == 6


def test_missing_folder_is_reported_not_raised(tmp_path):
    report = validate(tmp_path / "nowhere")
    assert not report.ok and report.errors[0].kind == "no_pairs"
