"""Segmentation datasets: image folders, CamVid (SegNet and colour layouts), PASCAL VOC and saliency maps.

Every dataset yields (image, target): the image as RGB uint8 (H, W, 3) from segcore.image.read_image (EXIF applied),
the target as int64 (H, W) class indices, or float32 (H, W) densities in [0, 1] for saliency; a transform from
segcore.data.transforms turns that pair into (normalised float tensor (3, H, W), target tensor). Pixels that carry
no label hold `ignore_index`: 255 in every dataset here, CamVid's "Unlabelled" 11 included, one loss setting fits all.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from segcore.data.palette import default_palette
from segcore.errors import ConfigError, DatasetError, ImageError
from segcore.image import check_decode_budget, open_checked, read_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MASK_EXTENSIONS = (".png",)
IGNORE_INDEX = 255
# Files that operating systems and archivers drop next to data; never reported as stray files.
JUNK_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini", "__MACOSX"}

CAMVID_CLASSES = [
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
]
# The colours of SegNet's CamVid tutorial, in the order of the label indices 0..10.
CAMVID_COLORS = [
    [128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [60, 40, 222], [128, 128, 0],
    [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0], [0, 128, 192],
]
# The 32-class palette of the original CamVid colour labels (as in its class_dict.csv); "Void" becomes ignore.
CAMVID_32_CLASSES: list[tuple[str, tuple[int, int, int]]] = [
    ("Animal", (64, 128, 64)), ("Archway", (192, 0, 128)), ("Bicyclist", (0, 128, 192)), ("Bridge", (0, 128, 64)),
    ("Building", (128, 0, 0)), ("Car", (64, 0, 128)), ("CartLuggagePram", (64, 0, 192)), ("Child", (192, 128, 64)),
    ("Column_Pole", (192, 192, 128)), ("Fence", (64, 64, 128)), ("LaneMkgsDriv", (128, 0, 192)),
    ("LaneMkgsNonDriv", (192, 0, 64)), ("Misc_Text", (128, 128, 64)), ("MotorcycleScooter", (192, 0, 192)),
    ("OtherMoving", (128, 64, 64)), ("ParkingBlock", (64, 192, 128)), ("Pedestrian", (64, 64, 0)),
    ("Road", (128, 64, 128)), ("RoadShoulder", (128, 128, 192)), ("Sidewalk", (0, 0, 192)),
    ("SignSymbol", (192, 128, 128)), ("Sky", (128, 128, 128)), ("SUVPickupTruck", (64, 128, 192)),
    ("TrafficCone", (0, 0, 64)), ("TrafficLight", (0, 64, 64)), ("Train", (192, 64, 128)), ("Tree", (128, 128, 0)),
    ("Truck_Bus", (192, 128, 192)), ("Tunnel", (64, 0, 64)), ("VegetationMisc", (192, 192, 0)), ("Void", (0, 0, 0)),
    ("Wall", (64, 192, 0)),
]
VOID_CLASS_NAMES = {"void", "unlabelled", "unlabeled", "ignore"}

VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]
VOC_BORDER_COLOR = (224, 224, 192)  # the object outlines VOC marks as "difficult": ignored

# OSIE has no official split; its README (and the saliency literature using it) takes these image numbers.
OSIE_SPLITS = {"train": range(1001, 1501), "val": range(1501, 1601), "test": range(1601, 1701)}


# ----------------------------------------------------------------------------------------------------------------
# Pairing images with masks


@dataclass
class PairListing:
    """What a folder holds: matched (name, image, mask) pairs and everything that did not pair up."""

    root: Path
    layout: str  # "folders" (images/ + masks/) or "flat" (name.jpg + name_mask.png side by side)
    image_dir: Path
    mask_dir: Path
    pairs: list[tuple[str, Path, Path]] = field(default_factory=list)
    images_without_masks: list[Path] = field(default_factory=list)
    masks_without_images: list[Path] = field(default_factory=list)
    duplicate_names: list[list[Path]] = field(default_factory=list)  # several images (or masks) for one name
    non_png_masks: list[Path] = field(default_factory=list)
    stray_files: list[Path] = field(default_factory=list)  # neither image nor mask


def _is_junk(path: Path) -> bool:
    return path.name in JUNK_NAMES or path.name.startswith(".")


def _list_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.is_file() and not _is_junk(path))


def find_pairs(root: str | os.PathLike, images: str = "images", masks: str = "masks") -> PairListing:
    """Pair images and PNG masks by base name, in root/images + root/masks or the flat name.jpg + name_mask.png layout.

    In the folder layout a mask may also be called name_mask.png. Raises DatasetError when root holds neither layout.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder; give the dataset's root folder")
    image_dir, mask_dir = root / images, root / masks
    if image_dir.is_dir() and mask_dir.is_dir():
        listing = PairListing(root, "folders", image_dir, mask_dir)
        image_files, mask_files = _list_files(image_dir), _list_files(mask_dir)
        mask_key = lambda stem: stem[: -len("_mask")] if stem.endswith("_mask") else stem  # noqa: E731
    elif any(path.stem.endswith("_mask") for path in _list_files(root)):
        listing = PairListing(root, "flat", root, root)
        files = _list_files(root)
        mask_files = [path for path in files if path.stem.endswith("_mask")]
        image_files = [path for path in files if not path.stem.endswith("_mask")]
        mask_key = lambda stem: stem[: -len("_mask")]  # noqa: E731
    else:
        found = ", ".join(sorted(path.name for path in root.iterdir() if not _is_junk(path))[:10]) or "nothing"
        raise DatasetError(
            f"{root}: no dataset layout found (it holds: {found}); put images in {images}/ and masks with the same "
            f"base names in {masks}/, or put name.jpg next to name_mask.png"
        )

    images_by_name: dict[str, list[Path]] = {}
    for path in image_files:
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            images_by_name.setdefault(path.stem, []).append(path)
        elif listing.layout == "folders" or path.suffix.lower() not in (".json", ".txt", ".csv", ".md"):
            listing.stray_files.append(path)
    masks_by_name: dict[str, list[Path]] = {}
    for path in mask_files:
        if path.suffix.lower() in MASK_EXTENSIONS:
            masks_by_name.setdefault(mask_key(path.stem), []).append(path)
        elif path.suffix.lower() in IMAGE_EXTENSIONS:
            listing.non_png_masks.append(path)
        else:
            listing.stray_files.append(path)

    for name in sorted(images_by_name):
        image_paths = images_by_name[name]
        mask_paths = masks_by_name.get(name, [])
        if len(image_paths) > 1:
            listing.duplicate_names.append(image_paths)
        if len(mask_paths) > 1:
            listing.duplicate_names.append(mask_paths)
        if mask_paths:
            listing.pairs.append((name, image_paths[0], mask_paths[0]))
        else:
            listing.images_without_masks.extend(image_paths)
    listing.masks_without_images = [
        path for name in sorted(masks_by_name) if name not in images_by_name for path in masks_by_name[name]
    ]
    return listing


# ----------------------------------------------------------------------------------------------------------------
# Reading label files


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """A label file's raw values: (H, W) integers, or (H, W, 3) uint8 for colour-coded masks. Alpha is dropped.

    Palette PNGs give their indices (not their colours); EXIF orientation is applied as for images. The same
    checks as for images come first (pixel limit, decode budget from the header), so a mask can be no bomb.
    """
    with open_checked(path, what="mask") as image:
        mode = image.mode
        # Pillow's buffer + the array made from it (int64 for 32-bit masks, three bytes for colour ones)
        out_bytes = 8 if mode.startswith("I") else 3 if mode in ("RGB", "RGBA") else 1
        check_decode_budget(path, image.width, image.height, 4 + out_bytes, what="mask")
        image.load()
        image = ImageOps.exif_transpose(image)
        if mode in ("LA", "PA"):
            array = np.asarray(image)[..., 0]
        elif mode in ("1", "L", "P"):
            array = np.asarray(image).astype(np.uint8)
        elif mode.startswith("I"):
            array = np.asarray(image).astype(np.int64)
        elif mode in ("RGB", "RGBA"):
            array = np.asarray(image)[..., :3]
            if (array[..., 0] == array[..., 1]).all() and (array[..., 0] == array[..., 2]).all():
                array = array[..., 0]  # greyscale saved as RGB
        else:
            raise ImageError(
                f"{path}: a mask in mode {mode} cannot hold class indices; save it as an 8-bit greyscale "
                "or palette PNG"
            )
    return np.ascontiguousarray(array)


def colors_to_indices(
    rgb: np.ndarray, colors: Sequence[Sequence[int]], ignore_index: int = IGNORE_INDEX,
    ignore_colors: Iterable[Sequence[int]] = (),
) -> np.ndarray:
    """Convert a colour-coded label image (H, W, 3) to class indices (H, W) int64; unknown colours -> ignore_index.

    Vectorised: each colour is packed into one 24-bit integer and looked up with a binary search over the palette.
    """
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ImageError(f"expected a colour label image (H, W, 3), got shape {rgb.shape}; save colour-coded masks as "
                         "RGB PNGs, or class indices as greyscale PNGs")
    pixels = rgb[..., :3].astype(np.int64)
    keys = (pixels[..., 0] << 16) | (pixels[..., 1] << 8) | pixels[..., 2]
    palette = np.asarray(colors, dtype=np.int64).reshape(-1, 3)
    palette_keys = (palette[:, 0] << 16) | (palette[:, 1] << 8) | palette[:, 2]
    indices = np.arange(len(palette_keys), dtype=np.int64)
    ignored = np.asarray(list(ignore_colors), dtype=np.int64).reshape(-1, 3)
    if len(ignored):
        ignored_keys = (ignored[:, 0] << 16) | (ignored[:, 1] << 8) | ignored[:, 2]
        indices[np.isin(palette_keys, ignored_keys)] = ignore_index
    order = np.argsort(palette_keys, kind="stable")
    sorted_keys, sorted_indices = palette_keys[order], indices[order]
    if len(sorted_keys) == 0:
        return np.full(keys.shape, ignore_index, dtype=np.int64)
    position = np.clip(np.searchsorted(sorted_keys, keys), 0, len(sorted_keys) - 1)
    return np.where(sorted_keys[position] == keys, sorted_indices[position], ignore_index).astype(np.int64)


def is_binary_encoded(values: np.ndarray) -> bool:
    """True for the values of a two-class mask written as 0/255 or 0/1 (a subset of either)."""
    values = set(np.unique(values).tolist())
    return values <= {0, 255} or values <= {0, 1}


def decode_binary_mask(mask: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """0/255 or 0/1 masks -> {0, 1}; 0/1 masks with ignore_index keep it; anything else is thresholded at 128."""
    values = set(np.unique(mask).tolist())
    if values <= {0, 255}:
        return (mask == 255).astype(np.int64)
    if values <= {0, 1, ignore_index}:
        return mask.astype(np.int64)
    return (mask >= 128).astype(np.int64)


def _load_classes_file(path: Path) -> dict:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"{path}: not valid JSON ({error}); fix the file or remove it") from None
    return parse_classes(content, str(path))


def parse_classes(content, source: str = "classes") -> dict:
    """Class names (+ colours, ignore index) from a list of names, a {"names", "colors", "ignore_index"} dict,
    or a list of {"name", "color"} objects."""
    if isinstance(content, list) and content and all(isinstance(item, dict) for item in content):
        content = {"names": [item.get("name") for item in content], "colors": [item.get("color") for item in content]}
        if any(color is None for color in content["colors"]):
            content.pop("colors")
    if isinstance(content, list):
        content = {"names": content}
    if not isinstance(content, dict) or not isinstance(content.get("names"), list) or not content["names"]:
        raise DatasetError(
            f'{source}: expected {{"names": ["background", ...], "colors": [[0, 0, 0], ...]}} or a list of names'
        )
    names = [str(name) for name in content["names"]]
    colors = content.get("colors")
    if colors is not None:
        if len(colors) != len(names) or not all(
            isinstance(color, (list, tuple)) and len(color) == 3 and all(0 <= int(c) <= 255 for c in color)
            for color in colors
        ):
            raise DatasetError(f"{source}: 'colors' needs one [r, g, b] (0..255) per class name ({len(names)})")
        colors = [[int(c) for c in color] for color in colors]
    parsed = {"names": names, "colors": colors}
    if content.get("ignore_index") is not None:
        parsed["ignore_index"] = int(content["ignore_index"])
    return parsed


def read_split_file(path: Path) -> dict[str, str]:
    """name -> split from a "name split" per line file (blank lines and # comments skipped)."""
    splits: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise DatasetError(f"{path}, line {number}: expected 'name split', got {line!r}")
        splits[Path(parts[0]).stem] = parts[1]
    return splits


def _select_split(names: list[str], root: Path, split: str) -> set[str]:
    split_file = root / "split.txt"
    if not split_file.is_file():
        raise DatasetError(
            f"{root}: split {split!r} was asked for but there is no split.txt; write one ('name split' per line) "
            "or pass split=None to use every pair"
        )
    membership = read_split_file(split_file)
    known = sorted(set(membership.values()))
    if split not in known:
        raise DatasetError(f"{split_file}: no split {split!r}; the file names the splits: {', '.join(known)}")
    wanted = {name for name, member in membership.items() if member == split}
    missing = sorted(wanted - set(names))
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DatasetError(
            f"{split_file}: {len(missing)} name(s) of split {split!r} have no image/mask pair ({shown}); "
            "run segcore.data.validate on the folder, then fix the files or split.txt"
        )
    return wanted


# ----------------------------------------------------------------------------------------------------------------
# Datasets


class SegmentationDataset(Dataset):
    """Shared behaviour: a list of (name, image path, target path), class metadata and an optional transform."""

    def __init__(
        self, samples: list[tuple[str, Path, Path]], class_names: list[str], class_colors: list[list[int]] | None,
        ignore_index: int | None, transform: Callable | None,
    ):
        if not samples:
            raise DatasetError("the dataset is empty: no image/label pairs were selected")
        self.samples = samples
        self.class_names = list(class_names)
        self.class_colors = [list(color) for color in (class_colors or default_palette(len(class_names)))]
        self.ignore_index = ignore_index
        self.transform = transform

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def load_target(self, path: Path) -> np.ndarray:
        raise NotImplementedError

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The untransformed (image uint8 (H, W, 3), target (H, W)) pair; sizes are checked."""
        name, image_path, target_path = self.samples[index]
        image = read_image(image_path)
        target = self.load_target(target_path)
        if image.shape[:2] != target.shape[:2]:
            raise DatasetError(
                f"{image_path} is {image.shape[1]}x{image.shape[0]} but its label {target_path} is "
                f"{target.shape[1]}x{target.shape[0]}; resize the label to the image (nearest neighbour) — "
                "segcore.data.validate lists every such pair"
            )
        return image, target

    def __getitem__(self, index: int):
        image, target = self.load(index)
        return self.transform(image, target) if self.transform is not None else (image, target)


def _keep_listed(pairs: list, names_file: Path, split: str | None) -> list:
    """The pairs whose names `names_file` lists; every listed name must be among the pairs."""
    try:
        lines = names_file.read_text().splitlines()
    except OSError as error:
        raise DatasetError(f"{names_file}: cannot read the names file ({error.strerror}); give a text file with one "
                           "image name per line") from None
    listed = {line.split("#", 1)[0].strip() for line in lines} - {""}
    kept = [pair for pair in pairs if pair[0] in listed]
    missing = listed - {pair[0] for pair in kept}
    if missing:
        where = f"split {split!r}" if split is not None else "the dataset"
        raise DatasetError(f"{names_file}: {len(missing)} listed name(s) are not in {where}, e.g. "
                           f"{sorted(missing)[0]!r}; list names of that split's images without their extension")
    if not kept:
        raise DatasetError(f"{names_file}: lists no image names")
    return kept


class FolderDataset(SegmentationDataset):
    """Images in root/images, PNG masks with the same base names in root/masks (or name.jpg + name_mask.png).

    Masks: "binary" datasets (greyscale masks holding only 0/255 or 0/1) become {0, 1}; other masks ("indexed")
    keep their values as class indices, palette PNGs included; colour masks are mapped through the class colours.
    `classes`: None (read root/classes.json if present), a number of classes, a list of names, or a classes.json path.
    `mask_format`: "auto" looks at up to 8 masks spread over the dataset; "binary" or "indexed" forces a decoding.
    Without class names an indexed dataset is scanned once for its largest index (write classes.json to skip that).
    `split`: selects the names of one split from root/split.txt ("name split" per line).
    `negatives_only`: keep only the pairs whose mask is all background (class 0 or ignored), e.g. the person-free
    scenes of a person dataset, to sample them as a source of their own; every mask is read once to find them.
    `names_file`: keep only the pairs named in this text file (one name per line, '#' starts a comment), e.g. the
    training images a model gets most wrong, mined to be sampled more often (hard example mining).
    """

    def __init__(
        self, root: str | os.PathLike, images: str = "images", masks: str = "masks", classes=None,
        split: str | None = None, transform: Callable | None = None, ignore_index: int = IGNORE_INDEX,
        mask_format: str = "auto", negatives_only: bool = False, names_file: str | os.PathLike | None = None,
    ):
        self.root = Path(root)
        listing = find_pairs(self.root, images, masks)
        if not listing.pairs:
            raise DatasetError(
                f"{self.root}: no image/mask pairs ({len(listing.images_without_masks)} images, "
                f"{len(listing.masks_without_images)} masks without a partner); masks must be PNGs named like "
                "their images — run segcore.data.validate for details"
            )
        pairs = listing.pairs
        if split is not None:
            wanted = _select_split([name for name, _, _ in pairs], self.root, split)
            pairs = [pair for pair in pairs if pair[0] in wanted]
            if not pairs:
                raise DatasetError(f"{self.root / 'split.txt'}: split {split!r} is empty")
        if names_file is not None:
            pairs = _keep_listed(pairs, Path(names_file), split)

        class_info = self._resolve_classes(classes)
        if class_info and "ignore_index" in class_info:
            ignore_index = class_info["ignore_index"]
        if mask_format not in ("auto", "binary", "indexed"):
            raise ConfigError(f"mask_format must be 'auto', 'binary' or 'indexed', got {mask_format!r}")
        self.ignore_index = ignore_index
        self._colors_for_masks = class_info.get("colors") if class_info else None
        if mask_format == "auto":
            two_classes_or_unknown = class_info is None or len(class_info["names"]) == 2
            mask_format = "binary" if two_classes_or_unknown and self._looks_binary(pairs) else "indexed"
        self.mask_format = mask_format

        if class_info is not None:
            names, colors = class_info["names"], class_info.get("colors")
        elif mask_format == "binary":
            names, colors = ["background", "foreground"], None
        else:
            largest = self._largest_index(pairs)
            names, colors = [f"class_{index}" for index in range(largest + 1)], None
        if negatives_only:
            pairs = [pair for pair in pairs if self._is_negative(pair[2])]
            if not pairs:
                raise DatasetError(f"{self.root}: negatives_only was asked for, but every mask holds foreground")
        super().__init__(pairs, names, colors, ignore_index, transform)
        self.layout = listing.layout

    def _is_negative(self, mask_path: Path) -> bool:
        mask = self.load_target(mask_path)
        return not bool(((mask != 0) & (mask != self.ignore_index)).any())

    def _resolve_classes(self, classes) -> dict | None:
        if classes is None:
            path = self.root / "classes.json"
            return _load_classes_file(path) if path.is_file() else None
        if isinstance(classes, int) and not isinstance(classes, bool):
            if classes < 1:
                raise ConfigError(f"classes must be at least 1, got {classes}; give the number of classes in the masks")
            return {"names": [f"class_{index}" for index in range(classes)], "colors": None}
        if isinstance(classes, (str, os.PathLike)):
            return _load_classes_file(Path(classes))
        return parse_classes(classes if isinstance(classes, dict) else list(classes))

    def _looks_binary(self, pairs) -> bool:
        # A majority vote, as validate() does, so a few anti-aliased 0/255 masks do not make the dataset "indexed".
        step = max(1, len(pairs) // 8)
        votes = []
        for _, _, mask_path in pairs[::step][:8]:
            with Image.open(mask_path) as image:
                if image.mode == "P":
                    return False
            mask = read_mask(mask_path)
            if mask.ndim != 2:
                return False
            votes.append(is_binary_encoded(mask))
        return sum(votes) * 2 >= len(votes)

    def _largest_index(self, pairs) -> int:
        largest = 0
        for _, _, mask_path in pairs:
            mask = self.load_target(mask_path)
            valid = mask[mask != self.ignore_index]
            if valid.size:
                largest = max(largest, int(valid.max()))
        return largest

    def load_target(self, path: Path) -> np.ndarray:
        mask = read_mask(path)
        if mask.ndim == 3:
            if not self._colors_for_masks:
                raise DatasetError(
                    f"{path}: a colour mask, but no class colours are known; add \"colors\" to classes.json or "
                    "save the mask as class indices (greyscale or palette PNG)"
                )
            return colors_to_indices(mask, self._colors_for_masks, self.ignore_index)
        if self.mask_format == "binary":
            return decode_binary_mask(mask, self.ignore_index)
        return mask.astype(np.int64)


class CamVidDataset(SegmentationDataset):
    """CamVid road scenes, 11 classes in the "segnet" layout (root/train + root/trainannot, label 11 "Unlabelled"
    becomes ignore_index 255), or the original 32-class colour layout ("color": root/train + root/train_labels/
    NAME_L.png, colours from root/class_dict.csv when present, else the standard 32-class palette; "Void" and any
    unknown colour become 255).
    """

    def __init__(
        self, root: str | os.PathLike, split: str = "train", layout: str = "segnet", transform: Callable | None = None,
    ):
        self.root, self.split, self.layout = Path(root), split, layout
        image_dir = self.root / split
        if layout == "segnet":
            label_dir, label_name = self.root / f"{split}annot", "{}.png"
            names, colors = CAMVID_CLASSES, CAMVID_COLORS
            self._palette = None
        elif layout == "color":
            label_dir, label_name = self.root / f"{split}_labels", "{}_L.png"
            names, colors, self._void_colors = self._read_class_colors()
            self._palette = colors + self._void_colors
        else:
            raise ConfigError(f"CamVid layout must be 'segnet' or 'color', got {layout!r}")
        for folder in (image_dir, label_dir):
            if not folder.is_dir():
                other = "color" if layout == "segnet" else "segnet"
                raise DatasetError(
                    f"{folder}: missing for CamVid split {split!r} in the {layout!r} layout; check root and split, "
                    f"or try layout={other!r}"
                )
        samples = []
        for image_path in _list_files(image_dir):
            if image_path.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            label_path = label_dir / label_name.format(image_path.stem)
            if not label_path.is_file():
                raise DatasetError(f"{image_path}: no label {label_path}; restore it or remove the image")
            samples.append((image_path.stem, image_path, label_path))
        super().__init__(samples, names, colors, IGNORE_INDEX, transform)

    def _read_class_colors(self) -> tuple[list[str], list[list[int]], list[list[int]]]:
        table = self.root / "class_dict.csv"
        rows = [(name, list(color)) for name, color in CAMVID_32_CLASSES]
        if table.is_file():
            try:
                with table.open(newline="", encoding="utf-8") as stream:
                    reader = csv.DictReader(stream)
                    rows = [(row["name"], [int(row["r"]), int(row["g"]), int(row["b"])]) for row in reader]
            except (KeyError, ValueError, TypeError) as error:
                raise DatasetError(f"{table}: expected columns name,r,g,b with integer colours ({error})") from None
        names = [name for name, _ in rows if name.lower() not in VOID_CLASS_NAMES]
        colors = [color for name, color in rows if name.lower() not in VOID_CLASS_NAMES]
        void = [color for name, color in rows if name.lower() in VOID_CLASS_NAMES]
        return names, colors, void

    def load_target(self, path: Path) -> np.ndarray:
        label = read_mask(path)
        if self.layout == "segnet":
            if label.ndim != 2:
                raise DatasetError(f"{path}: a colour image, but the segnet layout needs indices; use layout='color'")
            label = label.astype(np.int64)
            label[label >= len(CAMVID_CLASSES)] = IGNORE_INDEX
            return label
        if label.ndim == 2:
            label = np.repeat(label[..., None], 3, axis=2)  # a grey colour label (e.g. all Sky) saved as one channel
        return colors_to_indices(label, self._palette, IGNORE_INDEX, ignore_colors=self._void_colors)


class VOCDataset(SegmentationDataset):
    """PASCAL VOC segmentation: JPEGImages/, SegmentationClass/ palette PNGs, ImageSets/Segmentation/{split}.txt.

    root may be the VOC2012 folder or a folder holding VOCdevkit/VOC2012. Index 255 (object borders) is ignored.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Callable | None = None):
        root = Path(root)
        for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
            if (candidate / "JPEGImages").is_dir():
                root = candidate
                break
        else:
            raise DatasetError(f"{root}: no JPEGImages/ here nor in VOCdevkit/VOC2012; give the VOC2012 folder")
        self.root = root
        list_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not list_file.is_file():
            available = sorted(path.stem for path in (root / "ImageSets" / "Segmentation").glob("*.txt"))
            raise DatasetError(f"{list_file}: missing; splits available: {', '.join(available) or 'none'}")
        names = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
        samples = [
            (name, root / "JPEGImages" / f"{name}.jpg", root / "SegmentationClass" / f"{name}.png") for name in names
        ]
        missing = [str(path) for _, image, mask in samples for path in (image, mask) if not path.is_file()]
        if missing:
            raise DatasetError(f"{list_file}: {len(missing)} listed file(s) are missing, e.g. {missing[0]}")
        super().__init__(samples, VOC_CLASSES, default_palette(len(VOC_CLASSES)), IGNORE_INDEX, transform)

    def load_target(self, path: Path) -> np.ndarray:
        label = read_mask(path)
        if label.ndim == 3:  # a palette PNG re-saved as RGB: map the VOC colours back to indices
            return colors_to_indices(label, self.class_colors, IGNORE_INDEX, ignore_colors=[VOC_BORDER_COLOR])
        return label.astype(np.int64)


class SaliencyDataset(SegmentationDataset):
    """Images with fixation-density maps (float32 (H, W) in [0, 1]) and optional binary fixation maps.

    Layout: root/images/NAME.jpg, root/masks/NAME.png (density, 8 or 16 bit), root/fixations/NAME.png (non-zero =
    fixated). Select samples with `names` (strings, or numbers matched against numeric file names, e.g.
    range(1001, 1501)) or `split`: from root/split.txt when present, else OSIE's convention (train 1001-1500,
    val 1501-1600, test 1601-1700). With `with_fixations=True` items are (image, density, fixations) and the
    transform is called with all three.
    """

    def __init__(
        self, root: str | os.PathLike, split: str | None = None, names: Iterable | None = None,
        transform: Callable | None = None, with_fixations: bool = False, images: str = "images",
        maps: str = "masks", fixations: str = "fixations",
    ):
        self.root = Path(root)
        listing = find_pairs(self.root, images, maps)
        pairs = listing.pairs
        if split is not None and names is not None:
            raise ConfigError("give split or names, not both")
        if split is not None:
            if (self.root / "split.txt").is_file():
                wanted = _select_split([name for name, _, _ in pairs], self.root, split)
                pairs = [pair for pair in pairs if pair[0] in wanted]
            elif split in OSIE_SPLITS:
                pairs = self._select_names(pairs, OSIE_SPLITS[split])
            else:
                raise DatasetError(
                    f"{self.root}: unknown split {split!r}; without split.txt the splits are OSIE's: "
                    f"{', '.join(f'{key} {r.start}-{r.stop - 1}' for key, r in OSIE_SPLITS.items())}"
                )
        elif names is not None:
            pairs = self._select_names(pairs, names)
        if not pairs:
            raise DatasetError(f"{self.root}: no image/map pairs match the selection (split={split!r})")
        self.fixation_dir = self.root / fixations
        self.with_fixations = with_fixations
        if with_fixations:
            missing = [name for name, _, _ in pairs if not (self.fixation_dir / f"{name}.png").is_file()]
            if missing:
                raise DatasetError(
                    f"{self.fixation_dir}: no fixation map for {len(missing)} image(s), e.g. {missing[0]}.png; "
                    "add them or use with_fixations=False"
                )
        super().__init__(pairs, ["saliency"], [[255, 255, 255]], None, transform)

    @staticmethod
    def _select_names(pairs, names: Iterable) -> list:
        wanted_numbers, wanted_strings = set(), set()
        for name in names:
            (wanted_numbers if isinstance(name, (int, np.integer)) else wanted_strings).add(
                int(name) if isinstance(name, (int, np.integer)) else str(name)
            )
        selected = []
        for pair in pairs:
            name = pair[0]
            if name in wanted_strings or (name.isdigit() and int(name) in wanted_numbers):
                selected.append(pair)
        return selected

    def load_target(self, path: Path) -> np.ndarray:
        density = read_mask(path)
        if density.ndim == 3:
            density = density.mean(axis=2)
        scale = 65535.0 if density.max() > 255 else 255.0
        return (density.astype(np.float32) / np.float32(scale)).clip(0.0, 1.0)

    def load_fixations(self, name: str) -> np.ndarray:
        """(H, W) uint8, 1 where a viewer fixated."""
        points = read_mask(self.fixation_dir / f"{name}.png")
        if points.ndim == 3:
            points = points.max(axis=2)
        return (points > 0).astype(np.uint8)

    def __getitem__(self, index: int):
        image, density = self.load(index)
        if not self.with_fixations:
            return self.transform(image, density) if self.transform is not None else (image, density)
        fixations = self.load_fixations(self.samples[index][0])
        if fixations.shape != density.shape:
            raise DatasetError(
                f"{self.fixation_dir / (self.samples[index][0] + '.png')}: fixation map size {fixations.shape} "
                f"differs from its density map {density.shape}; regenerate it at the image size"
            )
        if self.transform is not None:
            return self.transform(image, density, fixations)
        return image, density, fixations
