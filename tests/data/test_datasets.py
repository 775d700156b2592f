"""Datasets on generated folders: mask decoding, classes.json, split.txt, CamVid layouts, VOC palettes, saliency."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from segcore.data import (
    CAMVID_CLASSES, CamVidDataset, DatasetError, FolderDataset, SaliencyDataset, VOCDataset, build_transforms,
    colors_to_indices, default_palette,
)
from segcore.data.datasets import CAMVID_32_CLASSES
from tests.data.synthetic import scene, write_pair


def _binary_folder(root, count=4, foreground=255, size=(24, 32)):
    rng = np.random.default_rng(1)
    for index in range(count):
        image, mask = scene(*size, rng)
        write_pair(root, f"{index:03d}", image, mask * foreground)
    return root


@pytest.mark.parametrize("foreground", [255, 1])
def test_binary_masks_become_zero_one(tmp_path, foreground):
    dataset = FolderDataset(_binary_folder(tmp_path, foreground=foreground))
    image, mask = dataset[0]
    assert image.shape == (24, 32, 3) and image.dtype == np.uint8
    assert mask.dtype == np.int64 and set(np.unique(mask)) == {0, 1}
    assert mask[12, 16] == 1 and mask[0, 0] == 0
    assert dataset.class_names == ["background", "foreground"] and dataset.num_classes == 2
    assert dataset.ignore_index == 255 and len(dataset.class_colors) == 2 and dataset.mask_format == "binary"


def test_negatives_only_keeps_the_person_free_pairs(tmp_path):
    _binary_folder(tmp_path, count=3)
    write_pair(tmp_path, "empty", np.zeros((24, 32, 3), np.uint8) + 90, np.zeros((24, 32), np.uint8))
    negatives = FolderDataset(tmp_path, classes=["background", "person"], negatives_only=True)
    assert [name for name, _, _ in negatives.samples] == ["empty"]
    assert not negatives[0][1].any()
    assert len(FolderDataset(tmp_path, classes=["background", "person"])) == 4
    with pytest.raises(DatasetError, match="every mask holds foreground"):
        FolderDataset(_binary_folder(tmp_path / "people"), negatives_only=True)


def test_names_file_keeps_the_listed_pairs_of_the_split(tmp_path):
    root = _binary_folder(tmp_path / "data", count=4)
    (root / "split.txt").write_text("000 train\n001 train\n002 train\n003 val\n")
    listed = tmp_path / "hard.txt"
    listed.write_text("# mined by a model\n002\n\n000  # two of the train images\n")
    hard = FolderDataset(root, split="train", names_file=listed)
    assert [name for name, _, _ in hard.samples] == ["000", "002"]
    listed.write_text("000\n003\n")  # 003 is a val image
    with pytest.raises(DatasetError, match=r"hard.txt: 1 listed name\(s\) are not in split 'train', e\.g\. '003'"):
        FolderDataset(root, split="train", names_file=listed)
    listed.write_text("# nothing\n")
    with pytest.raises(DatasetError, match="lists no image names"):
        FolderDataset(root, names_file=listed)
    with pytest.raises(DatasetError, match="cannot read the names file"):
        FolderDataset(root, names_file=tmp_path / "absent.txt")


def test_anti_aliased_binary_mask_is_thresholded(tmp_path):
    _binary_folder(tmp_path)
    soft = np.zeros((24, 32), dtype=np.uint8)
    soft[:, 10:] = 100
    soft[:, 20:] = 200
    Image.fromarray(soft).save(tmp_path / "masks" / "000.png")
    dataset = FolderDataset(tmp_path)
    assert dataset.mask_format == "binary"
    mask = dataset[0][1]
    assert (mask[:, :20] == 0).all() and (mask[:, 20:] == 1).all()


def test_palette_masks_keep_indices_and_classes_json(tmp_path):
    rng = np.random.default_rng(2)
    for index in range(3):
        image = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
        mask = np.zeros((20, 20), dtype=np.uint8)
        mask[:, 5:10], mask[:, 10:15], mask[:, 15:] = 1, 3, 255
        write_pair(tmp_path, f"p{index}", image, mask, mask_mode="P", palette=sum(default_palette(256), []))
    inferred = FolderDataset(tmp_path)
    assert inferred.mask_format == "indexed" and inferred.num_classes == 4  # largest index 3, 255 is ignore
    assert set(np.unique(inferred[1][1])) == {0, 1, 3, 255}
    classes = {"names": ["sky", "road", "car", "person", "tree"], "colors": [[1, 2, 3]] * 5}
    (tmp_path / "classes.json").write_text(json.dumps(classes))
    named = FolderDataset(tmp_path)
    assert named.class_names == classes["names"] and named.num_classes == 5
    assert named.class_colors == classes["colors"]
    assert np.array_equal(named[2][1], inferred[2][1])


def test_colour_masks_are_mapped_through_class_colours(tmp_path):
    colors = [[0, 0, 0], [200, 10, 10], [10, 200, 10]]
    (tmp_path / "classes.json").write_text(json.dumps({"names": ["bg", "a", "b"], "colors": colors}))
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    labels = np.array([[0, 1, 2, 1], [2, 2, 0, 1]])
    rgb = np.asarray(colors, dtype=np.uint8)[labels]
    rgb[1, 3] = (5, 5, 5)  # a colour not in classes.json
    Image.fromarray(np.zeros((2, 4, 3), dtype=np.uint8)).save(tmp_path / "images" / "x.png")
    Image.fromarray(rgb).save(tmp_path / "masks" / "x.png")
    expected = labels.copy()
    expected[1, 3] = 255
    assert np.array_equal(FolderDataset(tmp_path)[0][1], expected)


def test_split_file_selects_and_explains(tmp_path):
    _binary_folder(tmp_path, count=5)
    with pytest.raises(DatasetError, match="no split.txt"):
        FolderDataset(tmp_path, split="train")
    (tmp_path / "split.txt").write_text("000 train\n001 test\n002 train\n003 none\n004 train\n")
    assert FolderDataset(tmp_path, split="train").names == ["000", "002", "004"]
    assert FolderDataset(tmp_path, split="test").names == ["001"]
    assert len(FolderDataset(tmp_path)) == 5
    with pytest.raises(DatasetError, match="no split 'val'.*none, test, train"):
        FolderDataset(tmp_path, split="val")
    (tmp_path / "split.txt").write_text("000 train\n001 test\n999 test\n")
    with pytest.raises(DatasetError, match="999"):
        FolderDataset(tmp_path, split="test")


def test_flat_layout_and_size_mismatch(tmp_path):
    rng = np.random.default_rng(3)
    image, mask = scene(16, 16, rng)
    Image.fromarray(image).save(tmp_path / "cat.jpg")
    Image.fromarray(mask * 255).save(tmp_path / "cat_mask.png")
    Image.fromarray(image).save(tmp_path / "dog.jpg")
    Image.fromarray(np.zeros((10, 16), dtype=np.uint8)).save(tmp_path / "dog_mask.png")
    dataset = FolderDataset(tmp_path)
    assert dataset.layout == "flat" and dataset.names == ["cat", "dog"]
    assert dataset[0][1].sum() == mask.sum()
    with pytest.raises(DatasetError, match="dog.jpg is 16x16 but its label .*dog_mask.png is 16x10"):
        dataset[1]


def test_no_pairs_is_a_clear_error(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "images" / "a.jpg")
    Image.new("L", (4, 4)).save(tmp_path / "masks" / "b.png")
    with pytest.raises(DatasetError, match="no image/mask pairs"):
        FolderDataset(tmp_path)
    with pytest.raises(DatasetError, match="no dataset layout"):
        FolderDataset(tmp_path / "images")


def test_transform_gives_normalised_tensor_and_long_mask(tmp_path):
    transform = build_transforms("portrait", (16, 20), "imagenet", train=True)
    dataset = FolderDataset(_binary_folder(tmp_path), transform=transform)
    image, mask = dataset[1]
    assert image.shape == (3, 16, 20) and image.dtype == torch.float32
    assert mask.shape == (16, 20) and mask.dtype == torch.int64
    assert set(mask.unique().tolist()) <= {0, 1, 255}
    batch = torch.utils.data.default_collate([dataset[0], dataset[1]])
    assert batch[0].shape == (2, 3, 16, 20) and batch[1].shape == (2, 16, 20)


def test_colour_conversion_matches_per_pixel_reference():
    rng = np.random.default_rng(4)
    palette = [color for _, color in CAMVID_32_CLASSES]
    void = [(0, 0, 0)]
    choices = np.array(palette + [(1, 2, 3), (255, 255, 255)], dtype=np.uint8)  # two colours outside the palette
    rgb = choices[rng.integers(0, len(choices), size=(9, 13))]
    fast = colors_to_indices(rgb, palette, 255, ignore_colors=void)
    reference = np.full((9, 13), 255, dtype=np.int64)
    for row in range(9):
        for column in range(13):
            pixel = tuple(int(value) for value in rgb[row, column])
            if pixel in palette and pixel not in void:
                reference[row, column] = palette.index(pixel)
    assert np.array_equal(fast, reference)
    assert (reference == 255).sum() > 0 and len(np.unique(reference)) > 20


def _camvid_color_folder(root, labels_rgb, class_dict=None):
    (root / "train").mkdir(parents=True)
    (root / "train_labels").mkdir()
    Image.fromarray(np.zeros(labels_rgb.shape, dtype=np.uint8)).save(root / "train" / "f001.png")
    Image.fromarray(labels_rgb).save(root / "train_labels" / "f001_L.png")
    if class_dict:
        rows = "".join(f"{name},{r},{g},{b}\n" for name, (r, g, b) in class_dict)
        (root / "class_dict.csv").write_text("name,r,g,b\n" + rows)


def test_camvid_colour_layout_with_and_without_class_dict(tmp_path):
    sky, road, void = (128, 128, 128), (128, 64, 128), (0, 0, 0)
    rgb = np.array([[sky, road], [void, (9, 9, 9)]], dtype=np.uint8)
    _camvid_color_folder(tmp_path / "standard", rgb)
    dataset = CamVidDataset(tmp_path / "standard", "train", layout="color")
    names = dataset.class_names
    assert dataset.num_classes == 31 and "Void" not in names
    assert dataset[0][1].tolist() == [[names.index("Sky"), names.index("Road")], [255, 255]]
    _camvid_color_folder(tmp_path / "custom", rgb, class_dict=[("Road", road), ("Sky", sky), ("Void", void)])
    custom = CamVidDataset(tmp_path / "custom", "train", layout="color")
    assert custom.class_names == ["Road", "Sky"] and custom.class_colors == [list(road), list(sky)]
    assert custom[0][1].tolist() == [[1, 0], [255, 255]]


def test_camvid_segnet_layout_maps_unlabelled_to_ignore(tmp_path):
    (tmp_path / "val").mkdir()
    (tmp_path / "valannot").mkdir()
    labels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    Image.fromarray(np.zeros((3, 4, 3), dtype=np.uint8)).save(tmp_path / "val" / "a.png")
    Image.fromarray(labels).save(tmp_path / "valannot" / "a.png")
    dataset = CamVidDataset(tmp_path, "val")
    mask = dataset[0][1]
    assert mask.dtype == np.int64 and mask.flat[:11].tolist() == list(range(11)) and mask.flat[11] == 255
    assert dataset.class_names == CAMVID_CLASSES and dataset.num_classes == 11 and dataset.ignore_index == 255
    with pytest.raises(DatasetError, match="layout='color'"):
        CamVidDataset(tmp_path, "train")


def test_voc_palette_masks(tmp_path):
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True)
    labels = np.zeros((6, 8), dtype=np.uint8)
    labels[1:5, 1:4], labels[1:5, 5:7], labels[0, :] = 15, 12, 255  # person, dog, border
    mask = Image.fromarray(labels, mode="L").convert("P")
    mask.putpalette(sum(default_palette(256), []))
    mask.save(voc / "SegmentationClass" / "2007_000001.png")
    Image.new("RGB", (8, 6)).save(voc / "JPEGImages" / "2007_000001.jpg")
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000001\n")
    dataset = VOCDataset(tmp_path, "train")
    assert dataset.num_classes == 21 and dataset.class_names[15] == "person"
    assert dataset.class_colors[15] == [192, 128, 128]
    assert np.array_equal(dataset[0][1], labels.astype(np.int64))
    Image.fromarray(np.asarray(mask.convert("RGB"))).save(voc / "SegmentationClass" / "2007_000001.png")
    # The same mask re-saved as RGB colours maps back, the border colour to 255.
    assert np.array_equal(dataset[0][1], labels.astype(np.int64))
    with pytest.raises(DatasetError, match="splits available: train"):
        VOCDataset(tmp_path, "val")


def test_saliency_dataset_ranges_and_fixations(tmp_path):
    rng = np.random.default_rng(5)
    for folder in ("images", "masks", "fixations"):
        (tmp_path / folder).mkdir()
    for number in (1001, 1002, 1500, 1501, 1601):
        Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{number}.jpg")
        density = (np.arange(12 * 16).reshape(12, 16) % 256).astype(np.uint8)
        Image.fromarray(density).save(tmp_path / "masks" / f"{number}.png")
        points = np.zeros((12, 16), dtype=np.uint8)
        points[3, 4] = points[8, 10] = 255
        Image.fromarray(points).save(tmp_path / "fixations" / f"{number}.png")
    assert SaliencyDataset(tmp_path, split="train").names == ["1001", "1002", "1500"]
    assert SaliencyDataset(tmp_path, split="val").names == ["1501"]
    assert SaliencyDataset(tmp_path, names=range(1500, 1700)).names == ["1500", "1501", "1601"]
    assert SaliencyDataset(tmp_path, names=["1002"]).names == ["1002"]
    with pytest.raises(DatasetError, match="unknown split 'holdout'"):
        SaliencyDataset(tmp_path, split="holdout")
    dataset = SaliencyDataset(tmp_path, split="test", with_fixations=True)
    image, density, fixations = dataset[0]
    assert density.dtype == np.float32 and density.max() <= 1.0 and density[0, 1] == pytest.approx(1 / 255)
    assert fixations.sum() == 2 and fixations[3, 4] == 1
    transform = build_transforms("saliency", (6, 8), train=False)
    image, density, fixations = SaliencyDataset(tmp_path, split="test", with_fixations=True, transform=transform)[0]
    assert image.shape == (3, 6, 8) and density.shape == (6, 8) and density.dtype == torch.float32
    assert int(fixations.sum()) == 2  # both fixated pixels survive downscaling
