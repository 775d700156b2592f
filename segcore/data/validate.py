"""Dataset checks before training: every problem names the file, says what is wrong and how to fix it.

Errors stop training (the dataset would crash or learn wrong labels): no pairs, unreadable, truncated or empty files,
size mismatches (EXIF rotation included), JPEG masks, duplicate names, class indices beyond classes.json, colour
masks without class colours, broken classes.json or split.txt. Warnings are handled but worth a look: unpaired files
(skipped), 16-bit/CMYK/RGBA/palette images (converted to 8-bit RGB), 16-bit or RGB/RGBA masks, in-between values in
0/255 masks (thresholded at 128), colours not in classes.json (ignored), and 180-degree/mirror EXIF orientations.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from segcore.data.datasets import (
    IGNORE_INDEX, DatasetError, _load_classes_file, colors_to_indices, find_pairs, is_binary_encoded, parse_classes,
    read_mask, read_split_file,
)
from segcore.errors import ImageError

EXIF_ORIENTATION_TAG = 0x0112
EXIF_ORIENTATION_NAMES = {
    2: "mirrored", 3: "rotated 180 degrees", 4: "flipped upside down", 5: "mirrored and rotated 90 degrees",
    6: "rotated 90 degrees clockwise", 7: "mirrored and rotated 270 degrees", 8: "rotated 90 degrees anticlockwise",
}
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


@dataclass
class Problem:
    severity: str  # "error" or "warning"
    kind: str  # short code, e.g. "missing_mask", "size_mismatch", "truncated"
    file: str  # path relative to the dataset root
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.severity.upper():7} {self.file}: {self.message}. Fix: {self.fix}"


@dataclass
class ValidationReport:
    """The outcome of validate(): pairs found and every problem, errors first in summary()."""

    root: Path
    layout: str = ""
    pairs: list[str] = field(default_factory=list)  # base names of image/mask pairs
    images_without_masks: list[str] = field(default_factory=list)
    masks_without_images: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    mask_format: str = ""  # "binary", "indexed" or "color"
    mask_values: list[int] = field(default_factory=list)  # every raw value seen in single-channel masks
    class_names: list[str] | None = None
    image_folder: str = "images"
    mask_folder: str = "masks"

    @property
    def errors(self) -> list[Problem]:
        return [problem for problem in self.problems if problem.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [problem for problem in self.problems if problem.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def problems_for(self, file_name: str) -> list[Problem]:
        """Problems whose file path ends with file_name (e.g. "masks/003.png" or "003.png")."""
        return [problem for problem in self.problems if problem.file.endswith(file_name)]

    def summary(self, max_lines: int = 60) -> str:
        layout = {"folders": f"{self.image_folder}/ + {self.mask_folder}/",
                  "flat": "name.jpg + name_mask.png"}.get(self.layout, self.layout)
        lines = [f"Dataset {self.root} ({layout or 'no layout found'}): {len(self.pairs)} image/mask pairs"]
        if self.mask_format:
            values = self.mask_values
            shown = ", ".join(map(str, values[:20])) + (" ..." if len(values) > 20 else "")
            classes = f"; classes: {', '.join(self.class_names)}" if self.class_names else ""
            lines.append(f"Masks: {self.mask_format}" + (f"; values seen: {shown}" if values else "") + classes)
        lines.append(f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)")
        ordered = self.errors + self.warnings
        lines += [str(problem) for problem in ordered[:max_lines]]
        if len(ordered) > max_lines:
            lines.append(f"... and {len(ordered) - max_lines} more (see report.problems)")
        lines.append("Ready to train." if self.ok else "Fix the errors above before training.")
        return "\n".join(lines)


@dataclass
class _FileInfo:
    problems: list[Problem] = field(default_factory=list)
    size: tuple[int, int] | None = None  # (width, height) as read, EXIF applied
    raw_size: tuple[int, int] | None = None  # (width, height) as stored
    orientation: int = 1
    mode: str = ""
    values: np.ndarray | None = None  # masks: unique values (single channel)
    colors: np.ndarray | None = None  # colour masks: the (H, W, 3) array
    readable: bool = False


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _cut_short(path: Path) -> bool:
    """A JPEG without its end-of-image marker or a PNG without its IEND chunk: the file was cut off."""
    with path.open("rb") as stream:
        head = stream.read(8)
        stream.seek(max(0, path.stat().st_size - 32))
        tail = stream.read()
    if head.startswith(b"\xff\xd8"):
        return b"\xff\xd9" not in tail
    if head.startswith(b"\x89PNG"):
        return b"IEND" not in tail
    return False


def _truncated_problem(path: Path, name: str, what: str, detail: str) -> Problem:
    return Problem("error", "truncated", name, f"the {what} file is truncated ({detail})",
                   f"the file was cut short (an interrupted copy or upload); copy or export the {what} again")


def _open_checked(path: Path, name: str, info: _FileInfo, what: str) -> Image.Image | None:
    if path.stat().st_size == 0:
        info.problems.append(Problem("error", "empty_file", name, f"the {what} file is empty (0 bytes)",
                                     f"upload or export the {what} again"))
        return None
    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        if _cut_short(path):
            info.problems.append(_truncated_problem(path, name, what, "its header is incomplete"))
        else:
            info.problems.append(Problem("error", "unreadable", name, "not an image file Pillow can read",
                                         f"re-save the {what} as {'PNG' if what == 'mask' else 'JPEG or PNG'}"))
        return None


def _load_checked(image: Image.Image, path: Path, name: str, info: _FileInfo, what: str) -> bool:
    try:
        image.load()
        return True
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        if "truncated" in str(error).lower() or _cut_short(path):
            info.problems.append(_truncated_problem(path, name, what, str(error)))
        else:
            info.problems.append(Problem("error", "unreadable", name, f"the {what} is damaged ({error})",
                                         f"export or copy the {what} again"))
        return False


def _check_image(path: Path, root: Path) -> _FileInfo:
    info, name = _FileInfo(), _relative(path, root)
    image = _open_checked(path, name, info, "image")
    if image is None:
        return info
    with image:
        info.mode, info.raw_size = image.mode, image.size
        try:
            info.orientation = int(image.getexif().get(EXIF_ORIENTATION_TAG, 1) or 1)
        except (OSError, ValueError, TypeError):
            info.orientation = 1
        width, height = image.size
        info.size = (height, width) if info.orientation in (5, 6, 7, 8) else (width, height)
        if image.format == "JPEG":
            image.draft("RGB", (max(1, width // 8), max(1, height // 8)))  # decodes every byte, 64x fewer pixels
        if not _load_checked(image, path, name, info, "image"):
            return info
    info.readable = True
    mode = info.mode
    if mode in SIXTEEN_BIT_MODES:
        info.problems.append(Problem("warning", "16bit", name, f"a {mode} (16/32-bit) image; it is scaled to 8 bits",
                                     "export it as an 8-bit RGB JPEG or PNG to see exactly what the model sees"))
    elif mode == "CMYK":
        info.problems.append(Problem("warning", "cmyk", name, "a CMYK image; it is converted to RGB and colours may "
                                     "shift", "export it in RGB (sRGB) colour"))
    elif mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        info.problems.append(Problem("warning", "rgba", name, "the image has transparency; it is composited on white",
                                     "save it without an alpha channel (RGB) if the background matters"))
    elif mode == "P":
        info.problems.append(Problem("warning", "palette_image", name, "a palette (256-colour) image; it is "
                                     "converted to RGB", "save photos as RGB JPEG or PNG"))
    return info


def _check_mask(path: Path, root: Path) -> _FileInfo:
    info, name = _FileInfo(), _relative(path, root)
    image = _open_checked(path, name, info, "mask")
    if image is None:
        return info
    with image:
        info.mode, info.raw_size = image.mode, image.size
        if not _load_checked(image, path, name, info, "mask"):
            return info
    try:
        array = read_mask(path)
    except ImageError as error:
        info.problems.append(Problem("error", "mask_mode", name, str(error).split(": ", 1)[-1],
                                     "save the mask as an 8-bit greyscale or palette PNG of class indices"))
        return info
    info.readable = True
    info.size = (array.shape[1], array.shape[0])
    if array.ndim == 3:
        info.colors = array
    elif array.dtype == np.uint8:
        info.values = np.flatnonzero(np.bincount(array.ravel(), minlength=256))  # much faster than np.unique
    else:
        info.values = np.unique(array)
    if info.mode in SIXTEEN_BIT_MODES:
        info.problems.append(Problem("warning", "16bit", name, f"a {info.mode} (16-bit) mask; values are read as "
                                     "class indices", "save masks as 8-bit greyscale or palette PNGs"))
    elif info.mode in ("RGBA", "LA", "PA"):
        info.problems.append(Problem("warning", "rgba", name, "the mask has an alpha channel; it is dropped",
                                     "save the mask without alpha (greyscale or palette PNG)"))
    elif info.mode in ("RGB",) and array.ndim == 2:
        info.problems.append(Problem("warning", "rgb_mask", name, "a greyscale mask saved as RGB; the first channel "
                                     "is used", "save it as a single-channel (L) PNG"))
    return info


def _compare_sizes(image_name: str, mask_name: str, image: _FileInfo, mask: _FileInfo) -> list[Problem]:
    if mask.size == image.size:
        if image.orientation != 1 and image.size == image.raw_size:
            how = EXIF_ORIENTATION_NAMES.get(image.orientation, f"orientation {image.orientation}")
            return [Problem("warning", "exif_rotation", image_name,
                            f"EXIF orientation {image.orientation}: the image is {how} when read, which keeps its "
                            f"size, so the mask {mask_name} cannot tell whether it follows",
                            "check the pair by eye; re-save the image with the rotation applied "
                            "(PIL.ImageOps.exif_transpose) to remove the doubt")]
        return []
    if image.orientation != 1 and mask.size == image.raw_size:
        how = EXIF_ORIENTATION_NAMES.get(image.orientation, f"orientation {image.orientation}")
        return [Problem("error", "exif_rotation", image_name,
                        f"EXIF orientation {image.orientation}: the image is {how} when read "
                        f"({image.size[0]}x{image.size[1]}), but its mask {mask_name} is not "
                        f"({mask.size[0]}x{mask.size[1]})",
                        "re-save the image with the rotation applied (PIL.ImageOps.exif_transpose) and rotate the "
                        "mask the same way, or strip the EXIF orientation tag if the mask matches the stored pixels")]
    return [Problem("error", "size_mismatch", mask_name,
                    f"the mask is {mask.size[0]}x{mask.size[1]} but its image {image_name} is "
                    f"{image.size[0]}x{image.size[1]}",
                    "resize the mask to the image size with nearest-neighbour interpolation, or pair the right files")]


def validate(root: str | os.PathLike, images: str = "images", masks: str = "masks",
             workers: int | None = None, classes=None, classes_label: str = "the classes given") -> ValidationReport:
    """Check a dataset folder (images/ + masks/, or name.jpg + name_mask.png) and report every problem.

    `classes` (names, or a classes.json-style dict) replaces root/classes.json, e.g. a model's own classes when
    the data fine-tunes it; mask values are then checked against those, and messages call them `classes_label`."""
    root = Path(root)
    report = ValidationReport(root=root, image_folder=images, mask_folder=masks)
    try:
        listing = find_pairs(root, images, masks)
    except DatasetError as error:
        report.problems.append(Problem("error", "no_pairs", str(root), str(error).split(": ", 1)[-1],
                                       "arrange the files in one of the two layouts"))
        return report
    report.layout = listing.layout
    report.pairs = [name for name, _, _ in listing.pairs]
    report.images_without_masks = [path.stem for path in listing.images_without_masks]
    report.masks_without_images = [path.stem for path in listing.masks_without_images]
    relative = lambda path: _relative(path, root)  # noqa: E731
    mask_dir = relative(listing.mask_dir) if listing.layout == "folders" else "."
    lossy_mask_names = {path.stem[: -len("_mask")] if path.stem.endswith("_mask") else path.stem
                        for path in listing.non_png_masks}
    for path in listing.images_without_masks:
        if path.stem in lossy_mask_names:
            continue  # reported once, as the non-PNG mask
        expected = f"{mask_dir}/{path.stem}.png" if listing.layout == "folders" else f"{path.stem}_mask.png"
        report.problems.append(Problem("warning", "missing_mask", relative(path), "no mask; the image is skipped",
                                       f"add its mask as {expected.lstrip('./')} or remove the image"))
    for path in listing.masks_without_images:
        report.problems.append(Problem("warning", "orphan_mask", relative(path), "no image with this base name; the "
                                       "mask is skipped", "add the image (same base name) or remove the mask"))
    for paths in listing.duplicate_names:
        report.problems.append(Problem("error", "duplicate_name", relative(paths[0]),
                                       f"{len(paths)} files share this base name: "
                                       f"{', '.join(relative(path) for path in paths)}",
                                       "keep one file per base name"))
    for path in listing.non_png_masks:
        report.problems.append(Problem("error", "non_png_mask", relative(path), "a mask in a lossy or non-PNG "
                                       "format; compression alters label values and it is not used",
                                       "save the mask as PNG (same base name)"))
    for path in listing.stray_files:
        report.problems.append(Problem("warning", "stray_file", relative(path), "not an image or PNG mask; ignored",
                                       "remove it if it does not belong to the dataset"))
    if not listing.pairs:
        report.problems.append(Problem("error", "no_pairs", relative(listing.mask_dir) or ".",
                                       "no image has a mask with the same base name",
                                       "name each mask like its image (photo1.jpg -> photo1.png)"))
        return report

    class_info = None
    classes_file = root / "classes.json"
    if classes is not None:
        class_info = parse_classes(classes if isinstance(classes, dict) else list(classes), classes_label)
        report.class_names = class_info["names"]
    elif classes_file.is_file():
        try:
            class_info = _load_classes_file(classes_file)
            report.class_names = class_info["names"]
        except DatasetError as error:
            report.problems.append(Problem("error", "classes", "classes.json", str(error).split(": ", 1)[-1],
                                           "fix the file or remove it"))
    ignore_index = class_info["ignore_index"] if class_info and "ignore_index" in class_info else IGNORE_INDEX

    def check(pair):
        _, image_path, mask_path = pair
        return _check_image(image_path, root), _check_mask(mask_path, root)

    with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
        results = list(pool.map(check, listing.pairs))

    greyscale, colour = [], []
    for (name, image_path, mask_path), (image, mask) in zip(listing.pairs, results):
        report.problems += image.problems + mask.problems
        if image.readable and mask.readable:
            report.problems += _compare_sizes(relative(image_path), relative(mask_path), image, mask)
        if mask.values is not None:
            greyscale.append((mask_path, mask))
        elif mask.colors is not None:
            colour.append((mask_path, mask))

    _check_values(report, greyscale, colour, class_info, ignore_index, relative,
                  "classes.json" if classes is None else classes_label)
    _check_split(report, root, relative)
    return report


def _check_values(report, greyscale, colour, class_info, ignore_index, relative,
                  classes_label: str = "classes.json") -> None:
    colors = class_info.get("colors") if class_info else None
    if colour:
        report.mask_format = "color"
        for path, mask in colour:
            if not colors:
                report.problems.append(Problem("error", "color_mask", relative(path), "a colour-coded mask, but no "
                                               "class colours are known", "add \"colors\" to classes.json, or save "
                                               "masks as class indices (greyscale or palette PNG)"))
                continue
            unknown = int((colors_to_indices(mask.colors, colors, -1) == -1).sum())
            if unknown:
                report.problems.append(Problem("warning", "unexpected_values", relative(path),
                                               f"{unknown} pixels have colours not in classes.json; they are ignored",
                                               "paint them with a class colour, or add the colour to classes.json"))
    if not greyscale:
        return
    report.mask_values = sorted(set(np.concatenate([mask.values for _, mask in greyscale]).tolist()))
    number_of_classes = len(class_info["names"]) if class_info else None
    palette = any(mask.mode == "P" for _, mask in greyscale)
    binary_count = sum(is_binary_encoded(mask.values) for _, mask in greyscale)
    binary = (number_of_classes in (None, 2)) and not palette and binary_count * 2 >= len(greyscale)
    report.mask_format = report.mask_format or ("binary" if binary else "indexed")
    if binary:
        if report.class_names is None:
            report.class_names = ["background", "foreground"]
        for path, mask in greyscale:
            values = set(mask.values.tolist())
            if not (is_binary_encoded(mask.values) or values <= {0, 1, ignore_index}):
                odd = sorted(values - {0, 1, 255})
                report.problems.append(Problem(
                    "warning", "unexpected_values", relative(path),
                    f"a 0/255 mask with other values {_short(odd)}; they are thresholded at 128",
                    "export the mask with hard edges (no anti-aliasing), only 0 and 255, as PNG"))
        return
    if number_of_classes is None:
        return
    for path, mask in greyscale:
        values = mask.values
        bad = values[(values >= number_of_classes) & (values != ignore_index)]
        if bad.size:
            report.problems.append(Problem(
                "error", "unexpected_values", relative(path),
                f"class indices {_short(bad.tolist())} but {classes_label} has {number_of_classes} classes "
                f"(0..{number_of_classes - 1}, {ignore_index} = ignore)",
                "fix the mask's values" + (", or add the missing classes to classes.json"
                                           if classes_label == "classes.json" else "")))


def _short(values: list[int]) -> str:
    return "[" + ", ".join(map(str, values[:8])) + (", ...]" if len(values) > 8 else "]")


def _check_split(report: ValidationReport, root: Path, relative) -> None:
    split_file = root / "split.txt"
    if not split_file.is_file():
        return
    try:
        membership = read_split_file(split_file)
    except (DatasetError, UnicodeDecodeError) as error:
        report.problems.append(Problem("error", "split", "split.txt", str(error).split(": ", 1)[-1],
                                       "write one 'name split' pair per line"))
        return
    pairs = set(report.pairs)
    missing = sorted(set(membership) - pairs)
    if missing:
        report.problems.append(Problem("error", "split", "split.txt",
                                       f"{len(missing)} listed name(s) have no image/mask pair: {_short(missing)}",
                                       "add the files or remove those lines"))
    unlisted = sorted(pairs - set(membership))
    if unlisted:
        report.problems.append(Problem("warning", "split", "split.txt",
                                       f"{len(unlisted)} pair(s) are in no split: {_short(unlisted)}",
                                       "add a line 'name split' for each, or leave them out on purpose"))
