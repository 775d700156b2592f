"""unpack_upload refuses each planted attack and leaves nothing behind; both good layouts are accepted."""

from __future__ import annotations

import io
import stat
import zipfile

import numpy as np
import pytest
from PIL import Image

from segcore.data import FolderDataset, UploadError, UploadLimits, unpack_upload
from tests.data.synthetic import scene


def _encoded(array: np.ndarray, file_format: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, file_format)
    return buffer.getvalue()


def _dataset_entries(count: int = 3, prefix: str = "", flat: bool = False) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    entries = {}
    for index in range(count):
        image, mask = scene(16, 20, rng)
        if flat:
            entries[f"{prefix}p{index}.jpg"] = _encoded(image, "JPEG")
            entries[f"{prefix}p{index}_mask.png"] = _encoded(mask * 255, "PNG")
        else:
            entries[f"{prefix}images/p{index}.jpg"] = _encoded(image, "JPEG")
            entries[f"{prefix}masks/p{index}.png"] = _encoded(mask * 255, "PNG")
    return entries


def _zip(path, entries: dict[str, bytes], extra: list[tuple[zipfile.ZipInfo, bytes]] = ()) -> str:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        for info, data in extra:
            archive.writestr(info, data)
    return path


@pytest.mark.parametrize("layout", ["top", "nested", "flat"])
def test_good_layouts_are_accepted(tmp_path, layout):
    entries = {
        "top": _dataset_entries(),
        "nested": {**_dataset_entries(prefix="my data/"), "__MACOSX/my data/._p0.jpg": b"junk",
                   "my data/classes.json": b'{"names": ["background", "person"]}'},
        "flat": {**_dataset_entries(flat=True), ".DS_Store": b"junk"},
    }[layout]
    upload = _zip(tmp_path / "upload.zip", entries)
    root, report = unpack_upload(upload, tmp_path / "datasets" / "mine")
    assert root == tmp_path / "datasets" / "mine"
    assert sorted(path.name for path in (root / "images").iterdir()) == ["p0.jpg", "p1.jpg", "p2.jpg"]
    assert sorted(path.name for path in (root / "masks").iterdir()) == ["p0.png", "p1.png", "p2.png"]
    assert report.ok and report.pairs == ["p0", "p1", "p2"], report.summary()
    assert len(FolderDataset(root)) == 3
    assert [path.name for path in (tmp_path / "datasets").iterdir()] == ["mine"]  # no temporary folder left
    if layout == "nested":
        assert FolderDataset(root).class_names == ["background", "person"]


def _link_entry(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


ATTACKS = {
    "absolute path": (lambda: ({"/etc/evil.png": b"x"}, []), None, "absolute path"),
    "dot-dot": (lambda: ({"images/../../evil.png": b"x"}, []), None, r"'\.\.'"),
    "backslash dot-dot": (lambda: ({"images\\..\\..\\evil.png": b"x"}, []), None, r"'\.\.'"),
    "symlink": (lambda: ({}, [_link_entry("masks/p9.png", "/etc/passwd")]), None, "symbolic link"),
    "too many files": (lambda: ({f"images/{i}.jpg": b"x" for i in range(6)}, []), UploadLimits(max_files=5),
                       "over the limit of 5"),
    "zip bomb by ratio": (lambda: ({"images/bomb.png": bytes(3 * 1024**2)}, []), None, "possible zip bomb"),
    "zip bomb of many small files": (lambda: ({f"images/zero{i}.png": bytes(32 * 1024) for i in range(40)}, []),
                                     UploadLimits(ratio_min_bytes=64 * 1024), "times in total"),
    "zip bomb by total size": (lambda: ({"images/a.png": bytes(600), "images/b.png": bytes(600)}, []),
                               UploadLimits(max_total_bytes=1000), "more than 1,000 bytes"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attacks_are_refused_and_nothing_is_extracted(tmp_path, attack):
    make, limits, message = ATTACKS[attack]
    planted, extra = make()
    upload = _zip(tmp_path / "upload.zip", {**_dataset_entries(), **planted}, extra)
    target = tmp_path / "out" / "dataset"
    with pytest.raises(UploadError, match=message):
        unpack_upload(upload, target, limits)
    assert not target.exists()
    assert list((tmp_path / "out").iterdir()) == []
    assert not (tmp_path / "etc").exists() and not (tmp_path / "evil.png").exists()


def test_header_that_lies_about_size_is_refused(tmp_path):
    upload = _zip(tmp_path / "upload.zip", {**_dataset_entries(), "images/big.png": bytes(5000)})
    data = bytearray((tmp_path / "upload.zip").read_bytes())
    # Shrink the declared size of images/big.png in both headers: zipfile then stops at 50 bytes and its CRC
    # check fails, or our counter trips; either way the upload is refused.
    name = b"images/big.png"
    for signature, size_offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        position = data.find(signature)
        while position != -1:
            name_offset = 30 if signature == b"PK\x03\x04" else 46
            if data[position + name_offset : position + name_offset + len(name)] == name:
                data[position + size_offset : position + size_offset + 4] = (50).to_bytes(4, "little")
            position = data.find(signature, position + 4)
    (tmp_path / "upload.zip").write_bytes(bytes(data))
    with pytest.raises(UploadError, match="big.png"):
        unpack_upload(upload, tmp_path / "out" / "dataset")
    assert list((tmp_path / "out").iterdir()) == []


def test_unusable_archives_explain_themselves(tmp_path):
    (tmp_path / "notzip.zip").write_bytes(b"hello")
    with pytest.raises(UploadError, match="not a readable zip"):
        unpack_upload(tmp_path / "notzip.zip", tmp_path / "a")
    upload = _zip(tmp_path / "odd.zip", {"photos/x.jpg": b"x", "labels/x.png": b"y"})
    with pytest.raises(UploadError, match="no dataset layout.*labels/, photos/"):
        unpack_upload(upload, tmp_path / "b")
    assert not (tmp_path / "b").exists()
    existing = tmp_path / "c"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    with pytest.raises(UploadError, match="already exists"):
        unpack_upload(_zip(tmp_path / "good.zip", _dataset_entries()), existing)
    assert (existing / "keep.txt").read_text() == "mine"
