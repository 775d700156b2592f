"""The bundled example images: each is documented in assets/examples/README.md with a licence, opens as RGB and
stays small, and the generated street scene is reproduced pixel for pixel by its script."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segcore.image import read_image

EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
IMAGES = sorted(path for path in EXAMPLES.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)


def _readme_sections() -> dict[str, str]:
    """README section body by heading ("## name")."""
    text = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    parts = re.split(r"^## +(.+?) *$", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_there_are_examples_and_every_readme_entry_exists():
    assert len(IMAGES) >= 4
    assert sorted(_readme_sections()) == sorted(path.name for path in IMAGES)


@pytest.mark.parametrize("path", IMAGES, ids=lambda path: path.name)
def test_example_is_documented_with_a_licence_and_opens_as_rgb(path):
    section = _readme_sections().get(path.name)
    assert section is not None, f"{path.name} is not listed in assets/examples/README.md"
    for field in ("Shows", "Source", "Licence"):
        match = re.search(rf"^- {field}: *(\S.*)$", section, flags=re.MULTILINE)
        assert match and len(match.group(1)) > 10, f"{path.name}: no '{field}:' line in the README"
    with Image.open(path) as image:
        assert image.mode == "RGB"
    array = read_image(path)
    assert array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8 and min(array.shape[:2]) >= 256
    assert path.stat().st_size < 150_000


def test_make_generated_reproduces_the_street_scene(tmp_path):
    # Pixels are compared, not PNG bytes: another zlib may compress the same pixels differently.
    out = tmp_path / "street.png"
    subprocess.run([sys.executable, str(EXAMPLES / "make_generated.py"), "--out", str(out)], check=True,
                   capture_output=True, timeout=120)
    with Image.open(out) as fresh, Image.open(EXAMPLES / "street-generated.png") as committed:
        assert fresh.size == committed.size == (480, 360)
        assert fresh.mode == committed.mode == "RGB"
        assert np.array_equal(np.asarray(fresh), np.asarray(committed))
