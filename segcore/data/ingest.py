"""Safe unpacking of a user's dataset zip: refuse path tricks, links and zip bombs, normalise the layout, validate.

Every entry is checked before anything is written (absolute or drive paths, ".." components, symlinks and other
special files, encrypted entries, too many files, too many bytes, a suspicious compression ratio); while writing,
bytes are counted again because zip headers can lie. Extraction goes to a temporary folder beside `dest` that is
renamed into place only when everything succeeded, so a refused upload leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segcore.data.datasets import IMAGE_EXTENSIONS, JUNK_NAMES, find_pairs
from segcore.data.validate import ValidationReport, validate
from segcore.errors import DatasetError, SegcoreError
from segcore.fileio import write_text_atomic

CHUNK_BYTES = 1 << 20
DATASET_SIDE_FILES = ("classes.json", "split.txt")


class UploadError(SegcoreError):
    """An uploaded archive that was refused or has no usable layout; the message names the entry and the fix."""


@dataclass
class UploadLimits:
    """Caps on an uploaded zip. The ratio cap applies to each entry above ratio_min_bytes (tiny files compress
    extremely well without harm) and to the archive as a whole once it unpacks to more than ratio_min_bytes (many
    small files of zeros)."""

    max_files: int = 20_000
    max_total_bytes: int = 4 * 1024**3
    max_ratio: float = 100.0
    ratio_min_bytes: int = 1024**2


def _entry_parts(name: str) -> list[str]:
    # Windows archivers sometimes write backslashes; treat them as separators so "..\\x" cannot slip through.
    return [part for part in name.replace("\\", "/").split("/") if part not in ("", ".")]


def _is_junk_entry(parts: list[str]) -> bool:
    return any(part in JUNK_NAMES or part.startswith("._") for part in parts)


def _check_entries(archive: zipfile.ZipFile, limits: UploadLimits) -> list[tuple[zipfile.ZipInfo, list[str]]]:
    """The regular files to extract, with their path parts; raises UploadError on the first refused entry."""
    entries = archive.infolist()
    if len(entries) > limits.max_files:
        raise UploadError(f"the archive has {len(entries)} entries, over the limit of {limits.max_files}; "
                          "upload fewer files (split the dataset) or raise UploadLimits.max_files")
    files, seen, total, packed = [], set(), 0, 0
    for info in entries:
        name = info.filename
        if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
            raise UploadError(f"entry {name!r} has an absolute path; re-create the zip from inside the dataset folder")
        parts = _entry_parts(name)
        if ".." in parts:
            raise UploadError(f"entry {name!r} climbs out of the archive with '..'; re-create the zip without it")
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UploadError(f"entry {name!r} is a symbolic link; zip the real files instead (zip without -y)")
        # Many writers (Python's zipfile among them) store permission bits only; no type bits means a plain file.
        if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise UploadError(f"entry {name!r} is not a regular file (mode {oct(mode)}); zip only files and folders")
        if info.flag_bits & 0x1:
            raise UploadError(f"entry {name!r} is encrypted; upload an archive without a password")
        if info.is_dir() or not parts or _is_junk_entry(parts):
            continue
        key = "/".join(parts).lower()
        if key in seen:
            raise UploadError(f"entry {name!r} appears twice in the archive; re-create the zip")
        seen.add(key)
        total += info.file_size
        if total > limits.max_total_bytes:
            raise UploadError(f"the archive unpacks to more than {limits.max_total_bytes:,} bytes (at entry {name!r}); "
                              "upload a smaller dataset or raise UploadLimits.max_total_bytes")
        if info.file_size > limits.ratio_min_bytes and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise UploadError(f"entry {name!r} expands {info.file_size / max(info.compress_size, 1):.0f} times "
                              f"(limit {limits.max_ratio:.0f}): refused as a possible zip bomb; images and PNG "
                              "masks do not compress like that — check the file")
        packed += info.compress_size
        files.append((info, parts))
    if total > limits.ratio_min_bytes and total > limits.max_ratio * max(packed, 1):
        raise UploadError(f"the archive's files expand {total / max(packed, 1):.0f} times in total ({packed:,} bytes "
                          f"-> {total:,}; limit {limits.max_ratio:.0f}): refused as a possible zip bomb; images and "
                          "PNG masks do not compress like that — check the files")
    if not files:
        raise UploadError("the archive holds no files; zip the dataset folder (images/ and masks/)")
    return files


def _extract(archive: zipfile.ZipFile, files, target: Path, limits: UploadLimits) -> None:
    written_total = 0
    for info, parts in files:
        destination = target.joinpath(*parts)
        destination.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        with archive.open(info) as source, open(destination, "xb") as sink:
            while chunk := source.read(CHUNK_BYTES):
                written += len(chunk)
                written_total += len(chunk)
                if written > info.file_size or written_total > limits.max_total_bytes:
                    raise UploadError(f"entry {info.filename!r} unpacks to more bytes than its header declares; "
                                      "refused as a possible zip bomb — re-create the zip")
                sink.write(chunk)


def _visible(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.name not in JUNK_NAMES and not path.name.startswith("."))


def _find_dataset_root(extracted: Path) -> Path:
    """The folder holding images/ + masks/ or name + name_mask files: the top level or its single sub-folder."""
    candidates = [extracted]
    top = _visible(extracted)
    if len(top) == 1 and top[0].is_dir():
        candidates.append(top[0])
    for folder in candidates:
        if (folder / "images").is_dir() and (folder / "masks").is_dir():
            return folder
        if any(path.is_file() and path.stem.endswith("_mask") for path in _visible(folder)):
            return folder
    shown = ", ".join(path.name + ("/" if path.is_dir() else "") for path in top[:10]) or "nothing"
    raise UploadError(f"no dataset layout in the archive (top level: {shown}); zip either a folder with images/ and "
                      "masks/ (same base names, masks as PNG) or flat files name.jpg + name_mask.png")


def _flat_to_folders(folder: Path) -> None:
    """Move name.jpg -> images/name.jpg and name_mask.png -> masks/name.png, in place."""
    files = [path for path in _visible(folder) if path.is_file()]
    (folder / "images").mkdir()
    (folder / "masks").mkdir()
    for path in files:
        if path.stem.endswith("_mask"):
            path.rename(folder / "masks" / (path.stem[: -len("_mask")] + path.suffix))
        elif path.suffix.lower() in IMAGE_EXTENSIONS:
            path.rename(folder / "images" / path.name)


def unpack_upload(zip_path: str | os.PathLike, dest: str | os.PathLike,
                  limits: UploadLimits | None = None) -> tuple[Path, ValidationReport]:
    """Extract a dataset zip into the new folder `dest` (images/ + masks/ [+ classes.json, split.txt]) and validate it.

    Returns (dest, report); the report may hold errors for the caller to show. Raises UploadError when the archive
    is refused, in which case nothing is left on disk.
    """
    limits = limits or UploadLimits()
    zip_path, dest = Path(zip_path), Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UploadError(f"{dest.name}: already exists and is not empty; choose a new folder for the dataset")
    try:
        archive = zipfile.ZipFile(zip_path)
    except FileNotFoundError:
        raise UploadError(f"{zip_path.name}: no such file; upload it again") from None
    except (zipfile.BadZipFile, OSError) as error:
        raise UploadError(f"{zip_path.name}: not a readable zip archive ({_without_folder(error, zip_path)}); "
                          "upload a .zip file") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    workspace = Path(tempfile.mkdtemp(prefix=f".{dest.name}.unpacking-", dir=dest.parent))
    try:
        with archive:
            files = _check_entries(archive, limits)
            try:
                _extract(archive, files, workspace / "extracted", limits)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError) as error:
                raise UploadError(f"{zip_path.name}: the archive is damaged or uses an unsupported feature "
                                  f"({_without_folder(error, workspace / 'extracted')}); re-create it with a "
                                  "standard zip tool") from None
        root = _find_dataset_root(workspace / "extracted")
        if not ((root / "images").is_dir() and (root / "masks").is_dir()):
            _flat_to_folders(root)
        if dest.exists():
            dest.rmdir()  # empty, checked above
        os.replace(root, dest)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    return dest, validate(dest)



def _without_folder(error: Exception, folder: Path) -> str:
    """An OS error's text with the server-side folder left out (people know the files by their names in the zip)."""
    return str(error).replace(f"{folder}{os.sep}", "").replace(str(folder), "the archive")


def hold_out_split(root: str | os.PathLike, fraction: float = 0.1, seed: int = 0, images: str = "images",
                   masks: str = "masks") -> int:
    """Write root/split.txt for a dataset that has none: a seeded random `fraction` of the image/mask pairs (at
    least one) becomes "val", the rest "train". Returns how many pairs were held out. The file is written
    atomically; an existing split.txt is never replaced."""
    root = Path(root)
    if (root / "split.txt").exists():
        raise DatasetError("split.txt already exists; the dataset's own split is used as it is")
    names = [name for name, _, _ in find_pairs(root, images, masks).pairs]
    if len(names) < 2:
        raise DatasetError(f"{len(names)} image/mask pair(s): at least 2 are needed to hold one out for validation; "
                           "add more pairs")
    held_out = min(len(names) - 1, max(1, round(len(names) * fraction)))
    order = np.random.default_rng(seed).permutation(len(names))
    validation = {names[index] for index in order[:held_out]}
    lines = [f"{name} {'val' if name in validation else 'train'}" for name in names]
    write_text_atomic(root / "split.txt", "# written by segcore: no split.txt came with the upload\n"
                      + "\n".join(lines) + "\n")
    return held_out
