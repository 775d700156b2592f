"""Multi-source person data: weighted sampling, compositing that keeps image and mask aligned, CamVid pedestrians."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from segcore.data.datasets import DatasetError
from segcore.data.multisource import CamVidPersonDataset, MultiSourceDataset, Source, sample_counts
from segcore.data.transforms import PersonComposite, edge_crop, paste_people, person_box, zoom_out


class RawPairs(torch.utils.data.Dataset):
    """In-memory raw samples (image uint8 (H, W, 3), mask (H, W)) standing in for a dataset folder."""

    def __init__(self, pairs, class_names=("background", "person")):
        self.pairs, self.class_names = pairs, list(class_names)
        self.class_colors, self.ignore_index, self.num_classes = [[0, 0, 0], [128, 0, 0]], 255, len(class_names)

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, index):
        return self.pairs[index]


def _tagged(tag: int, count: int, size=(20, 30)):
    """Samples whose every image pixel holds its source tag and its index, so a drawn sample says where it is from."""
    return RawPairs([(np.full((*size, 3), (tag, index, 0), dtype=np.uint8), np.zeros(size, dtype=np.int64))
                     for index in range(count)])


def test_sample_counts_split_by_weight_and_add_up():
    assert sample_counts([0.5, 0.25, 0.25], 8) == [4, 2, 2]
    assert sum(sample_counts([0.4, 0.15, 0.3, 0.15], 1201)) == 1201
    assert sample_counts([1, 0], 5) == [5, 0]
    with pytest.raises(ValueError):
        sample_counts([0, 0], 5)


def test_an_epoch_samples_its_sources_by_weight():
    sources = [Source("big", _tagged(1, 50), 0.2), Source("small", _tagged(2, 4), 0.6), Source("mid", _tagged(3, 10), 0.2)]
    dataset = MultiSourceDataset(sources, epoch_size=400, seed=0)
    assert len(dataset) == 400
    drawn = Counter(int(dataset[position][0][0, 0, 0]) for position in range(len(dataset)))
    assert drawn == {1: 80, 2: 240, 3: 80}
    # A source is used up before any of its samples repeats: the small one's 4 samples appear 60 times each.
    small = Counter(int(dataset[p][0][0, 0, 1]) for p in range(len(dataset)) if dataset.source_of(p) == "small")
    assert set(small.values()) == {60}
    big = Counter(int(dataset[p][0][0, 0, 1]) for p in range(len(dataset)) if dataset.source_of(p) == "big")
    assert len(big) == 50 and max(big.values()) - min(big.values()) <= 1
    # Each epoch draws a new, seeded order.
    first = list(dataset.table)
    dataset.set_epoch(1)
    assert dataset.table != first and Counter(s for s, _ in dataset.table) == Counter(s for s, _ in first)
    dataset.set_epoch(0)
    assert dataset.table == first


def test_sources_must_agree_on_classes():
    with pytest.raises(DatasetError, match="number of classes"):
        MultiSourceDataset([Source("a", _tagged(1, 2)), Source("b", RawPairs([], class_names=("x", "y", "z")))])


def _square_donor(size=(40, 40), box=(10, 15, 30, 25), color=(250, 20, 20)):
    image = np.full((*size, 3), 40, dtype=np.uint8)
    mask = np.zeros(size, dtype=np.int64)
    top, left, bottom, right = box
    image[top:bottom, left:right] = color
    mask[top:bottom, left:right] = 1
    return image, mask


def test_a_pasted_person_lands_where_its_mask_says():
    donor_image, donor_mask = _square_donor()  # a 20-high, 10-wide person box
    scene_image = np.full((60, 80, 3), (0, 0, 200), dtype=np.uint8)
    scene_mask = np.zeros((60, 80), dtype=np.int64)
    scene_mask[50:, :5] = 1  # a person already in the scene stays one
    scene_mask[0, 0] = 255
    image, mask = paste_people(scene_image, scene_mask, donor_image, donor_mask, height=40, top=12, left=30)
    assert image.shape == (3, 60, 80) and mask.shape == (60, 80)
    # Scaled by 2: the 20x10 box becomes 40x20 at rows 12..51, columns 30..49.
    assert person_box(np.where(np.arange(80)[None, :] >= 10, mask.numpy(), 0)) == (12, 30, 52, 50)
    inside = image[:, 14:50, 32:48].permute(1, 2, 0).reshape(-1, 3)
    assert (inside == torch.tensor([250, 20, 20], dtype=torch.uint8)).all()
    assert (mask.numpy()[image.permute(1, 2, 0).numpy()[..., 0] > 200] == 1).all()  # red pixels are person
    outside = np.ones((60, 80), dtype=bool)
    outside[12:52, 30:50] = False
    assert (image.permute(1, 2, 0).numpy()[outside] == (0, 0, 200)).all()  # the scene is untouched elsewhere
    assert (mask.numpy()[50:, :5] == 1).all() and mask[0, 0] == 255
    # Partly outside the frame: only the part inside is pasted, nothing wraps around.
    image, mask = paste_people(scene_image, np.zeros((60, 80), dtype=np.int64), donor_image, donor_mask,
                               height=40, top=40, left=-10)
    assert person_box(mask) == (40, 0, 60, 10)
    # A donor without a person leaves the scene as it was.
    image, mask = paste_people(scene_image, scene_mask, donor_image, np.zeros_like(donor_mask), height=40, top=0,
                               left=0)
    assert (image.permute(1, 2, 0).numpy() == scene_image).all() and (mask.numpy() == scene_mask).all()


def test_zoom_out_shrinks_the_sample_into_real_scene_content():
    image, mask = _square_donor(size=(40, 60), box=(0, 0, 40, 30))
    canvas = np.zeros((80, 120, 3), dtype=np.uint8)  # a striped scene, twice the size
    canvas[(np.arange(80) // 8) % 2 == 1] = 255
    canvas_mask = np.zeros((80, 120), dtype=np.int64)
    canvas_mask[:, 110:] = 1  # a person at the canvas's right edge
    out_image, out_mask = zoom_out(image, mask, canvas, canvas_mask, factor=0.5, top=10, left=20)
    assert out_image.shape == (3, 40, 60) and out_mask.shape == (40, 60)
    assert person_box(out_mask[:, :50]) == (10, 20, 30, 35)  # the left half of the 20x30 placed sample
    assert (out_mask[:, 55:] == 1).all()  # the canvas's own person, scaled by 0.5, at the right edge
    surroundings = out_image[:, 32:, :].float()
    assert surroundings.std() > 40, "the frame around the sample must be scene content, not a flat colour"
    with pytest.raises(ValueError, match="leaves"):
        zoom_out(image, mask, canvas, canvas_mask, factor=0.5, top=30, left=0)


def test_edge_crops_cut_people_at_the_frame_edge():
    image, mask = _square_donor(size=(64, 64), box=(16, 16, 48, 48))
    composite = PersonComposite(paste_probability=0.0, zoom_probability=0.0, edge_crop_probability=1.0,
                                edge_crop_fraction=(0.5, 0.7))
    torch.manual_seed(0)
    for _ in range(20):
        out_image, out_mask = composite(image, mask, draw=lambda: pytest.fail("no other sample is needed"))
        assert out_mask.shape[0] < 64 and out_image.shape[1:] == out_mask.shape
        border = torch.cat([out_mask[0], out_mask[-1], out_mask[:, 0], out_mask[:, -1]])
        assert (border == 1).any(), "the crop's border must run through the person"
        red = out_image[0] > 200
        assert torch.equal(red, out_mask == 1)
    cropped_image, cropped_mask = edge_crop(image, mask, top=20, left=0, height=10, width=30)
    assert cropped_mask.shape == (10, 30) and (cropped_mask[:, 16:] == 1).all() and (cropped_mask[:, :16] == 0).all()


def test_person_composite_keeps_every_pixel_labelled_like_its_colour():
    """Persons are red, scenes blue: after random zoom-outs, pastes and crops, red pixels are person, blue are not."""
    donors = [_square_donor(size=(48, 48), box=(8 + i, 10, 40, 30 + i)) for i in range(3)]
    scenes = [(np.full((48, 64, 3), (0, 0, 200), dtype=np.uint8), np.zeros((48, 64), dtype=np.int64))]
    pool = donors + scenes
    composite = PersonComposite(paste_probability=1.0, zoom_probability=0.5, edge_crop_probability=0.5)
    torch.manual_seed(1)
    persons = 0
    for step in range(24):
        base_image, base_mask = pool[step % len(pool)]
        image, mask = composite(base_image, base_mask, draw=lambda: pool[int(torch.randint(0, len(pool), ()))])
        pixels = image.permute(1, 2, 0).numpy().astype(int)
        red = (pixels[..., 0] > 200) & (pixels[..., 2] < 60)
        blue = (pixels[..., 2] > 150) & (pixels[..., 0] < 60)
        assert (mask.numpy()[red] == 1).all() and (mask.numpy()[blue] == 0).all()
        persons += int(red.any())
    assert persons >= 18


def _camvid_folder(root, labels_by_split):
    for split, labels in labels_by_split.items():
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for index, label in enumerate(labels):
            Image.fromarray(np.zeros((*label.shape, 3), dtype=np.uint8)).save(root / split / f"f{index}.png")
            Image.fromarray(label.astype(np.uint8), mode="L").save(root / f"{split}annot" / f"f{index}.png")


def test_camvid_pedestrians_become_person_masks(tmp_path):
    walker = np.full((8, 8), 3, dtype=np.uint8)  # road
    walker[2:6, 2:4] = 9  # pedestrian
    walker[0, 0] = 11  # unlabelled
    rider = walker.copy()
    rider[6:, 6:] = 10  # bicyclist
    _camvid_folder(tmp_path, {"train": [walker, rider]})
    dataset = CamVidPersonDataset(tmp_path, "train")
    assert dataset.class_names == ["background", "person"] and len(dataset) == 2
    _, target = dataset[0]
    assert (target[2:6, 2:4] == 1).all() and target[0, 0] == 255 and target.sum() == 8 + 255
    _, target = dataset[1]
    assert (target[6:, 6:] == 255).all(), "rider and bicycle are neither person nor background"
    skipping = CamVidPersonDataset(tmp_path, "train", bicyclist="skip")
    assert len(skipping) == 1 and skipping.frames_left_out == 1
    _camvid_folder(tmp_path / "riders", {"val": [rider]})
    with pytest.raises(DatasetError, match="bicyclist='ignore'"):
        CamVidPersonDataset(tmp_path / "riders", "val", bicyclist="skip")
