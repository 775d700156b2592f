"""The app with its shipped weights: background removal defaults to person-fast and cuts out the
person in the bundled public-domain astronaut photo (regions marked by hand in tests/test_shipped_models.py).
One test per shipped portrait model; the Explore tab shows each shipped saliency model's map; Compare runs the
street models each in its own runtime (int8 where `segcore quantize` kept a graph) and says which."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from app import services
from segcore.zoo import shipped_models
from tests.test_shipped_models import BACKGROUND_REGIONS, PERSON_REGIONS, assert_covers_the_astronaut

ASTRONAUT = services.EXAMPLES_DIR / "astronaut.jpg"
SHIPPED = shipped_models(services.ROOT / "assets" / "weights")  # what served_shipped_app serves
PORTRAIT_MODELS = [entry.name for entry in SHIPPED if entry.task == "portrait"]


@pytest.mark.parametrize("name", PORTRAIT_MODELS)
def test_remove_background_cuts_out_the_astronaut(served_shipped_app, tmp_path, name):
    client = Client(served_shipped_app, verbose=False, analytics_enabled=False, download_files=str(tmp_path))
    assert services.default_background_model() in PORTRAIT_MODELS
    cutout, download, info = client.predict(handle_file(str(ASTRONAUT)), name, "cutout", 50, "#00b140", None, True,
                                            False, api_name="/remove_background")
    with Image.open(cutout) as picture:
        assert picture.mode == "RGBA" and picture.size == (512, 512)
        alpha = np.asarray(picture)[..., 3].astype(np.float32) / 255.0
    assert_covers_the_astronaut(alpha, f"the {name} cutout")
    if name == "portrait-sinet":  # trained on centred portraits: opaque on the whole suit
        left, top, right, bottom = PERSON_REGIONS["suit"]
        assert alpha[top:bottom, left:right].mean() > 0.98
    assert f"{name}: model" in info and download.endswith(".png")


SALIENCY_MODELS = [entry.name for entry in SHIPPED if entry.task == "saliency"]


@pytest.mark.parametrize("name", SALIENCY_MODELS)
def test_explore_shows_a_shipped_saliency_map(served_shipped_app, tmp_path, name):
    client = Client(served_shipped_app, verbose=False, analytics_enabled=False, download_files=str(tmp_path))
    outputs = client.predict(handle_file(str(ASTRONAUT)), name, False, "", api_name="/segment")
    overlay, info = outputs[1], outputs[-1]
    with Image.open(overlay) as picture:  # the JET overlay with its colour bar on the right
        assert picture.size[1] == 512 and picture.size[0] > 512
    assert "saliency" in info and name in info


# Here rather than in test_gradio_api.py: services are process-wide, so one module serves one weights folder.
def test_remove_background_of_the_astronaut_with_only_the_photo(served_shipped_app, tmp_path):
    """Defaults only: person-fast (people in any photo) cuts the astronaut out. It leaves holes in the dark folds of
    the lower suit (82 % of the suit box opaque; portrait-sinet, trained on centred portraits only, 95 %+), so the
    suit is held to the shipped-model bar here and the face to the near-opaque one."""
    client = Client(served_shipped_app, verbose=False, analytics_enabled=False, download_files=str(tmp_path))
    assert services.default_background_model() == "person-fast"
    cutout, download, info = client.predict(handle_file(str(ASTRONAUT)),
                                            api_name="/remove_background")
    with Image.open(cutout) as picture:
        assert picture.mode == "RGBA" and picture.size == (512, 512)
        alpha = np.asarray(picture)[..., 3].astype(np.float32) / 255.0
    assert "person-fast: model" in info
    assert_covers_the_astronaut(alpha, "the default cutout")
    left, top, right, bottom = PERSON_REGIONS["face"]
    assert alpha[top:bottom, left:right].mean() > 0.98  # opaque on the face
    for region in ("wall", "shuttle"):
        left, top, right, bottom = BACKGROUND_REGIONS[region]
        assert alpha[top:bottom, left:right].mean() < 0.02, region  # transparent on the background
    assert Path(download).name == "astronaut-cutout.png"
    with Image.open(download) as saved:
        assert np.array_equal(np.asarray(saved)[..., 3].astype(np.float32) / 255.0, alpha)


STREET_MODELS = [entry.name for entry in SHIPPED if entry.config["num_classes"] == 11]


def test_compare_shows_the_street_models_and_the_runtime_each_ran_in(served_shipped_app, tmp_path):
    import json

    client = Client(served_shipped_app, verbose=False, analytics_enabled=False, download_files=str(tmp_path))
    assert {"camvid-bisenet", "camvid-enet", "camvid-deeplabv3plus"} <= set(STREET_MODELS)
    street = services.EXAMPLES_DIR / "street-generated.png"
    gallery, table, _disagreement, _info = client.predict(handle_file(str(street)), STREET_MODELS[:4], None,
                                                          api_name="/compare")
    assert len(gallery) == len(STREET_MODELS[:4])
    columns = table["headers"]
    runtimes = {row[columns.index("model")]: row[columns.index("runtime")] for row in table["data"]}
    for name in STREET_MODELS[:4]:
        config = json.loads((services.ROOT / "assets" / "weights" / name / "config.json").read_text())
        expected = "onnxruntime-int8" if config.get("int8") else config.get("runtime", "onnxruntime")
        assert runtimes[name] == expected, (name, runtimes)
    assert runtimes["camvid-bisenet"] == "onnxruntime-int8" and runtimes["camvid-enet"] == "torch"
