"""Every model shipped under assets/weights loads and predicts a sane mask on a bundled or generated image.

Portrait models must cut the person out of the bundled public-domain astronaut photo: the regions below were
marked by hand on assets/examples/astronaut.jpg (512x512): face and suit are person, the wall, the shuttle model
and the flag's upper corner are background. Saliency models must look at the astronaut's face more than at the
photo as a whole and at any background box. Nothing here needs ../shared.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import segcore
from segcore.reports import beats_baseline
from segcore.zoo import shipped_models

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "assets" / "weights"
SHIPPED = [entry.name for entry in shipped_models(WEIGHTS_DIR)]
# (left, top, right, bottom) in pixels of the 512x512 astronaut photo
PERSON_REGIONS = {"face": (180, 40, 270, 150), "suit": (100, 260, 270, 400)}
BACKGROUND_REGIONS = {"wall": (300, 0, 370, 120), "shuttle": (385, 60, 450, 250), "flag": (0, 0, 60, 120)}
# A sane person mask covers most of each person box (holes in dark folds of the suit are tolerated) and little of
# each background box.
MIN_PERSON_COVER, MAX_BACKGROUND_COVER = 0.75, 0.2
# A saliency map's mean over the face box, as a multiple of its mean over the whole photo.
FACE_OVER_IMAGE = 2.0
# Person models (trained for people in any photo, not only portraits) must also leave the generated street, which
# shows buildings, a tree, a car and no one, almost empty.
PERSON_MODELS = [name for name in SHIPPED if name.startswith("person-")]
MAX_PERSON_ON_EMPTY_STREET = 0.02
# Models whose weights have landed: each must stay shipped.
EXPECTED = {"camvid-bisenet", "camvid-deeplabv3plus", "camvid-enet", "person-fast", "portrait-sinet", "saliency-unet"}


def assert_covers_the_astronaut(person: np.ndarray, what: str) -> None:
    """`person`: (512, 512) person mask or alpha in [0, 1] of the astronaut photo."""
    for region, (left, top, right, bottom) in PERSON_REGIONS.items():
        covered = float(person[top:bottom, left:right].mean())
        assert covered > MIN_PERSON_COVER, f"{what} misses the astronaut's {region} ({covered:.2f} covered)"
    for region, (left, top, right, bottom) in BACKGROUND_REGIONS.items():
        covered = float(person[top:bottom, left:right].mean())
        assert covered < MAX_BACKGROUND_COVER, f"{what} marks the {region} as person ({covered:.2f} covered)"


def assert_looks_at_the_astronauts_face(segmenter, what: str) -> None:
    """People look at faces: a saliency model must put clearly more of its map on the astronaut's face than on
    the photo as a whole, and more on the face than on any hand-marked background box."""
    saliency = segmenter.predict(segcore.read_image(EXAMPLES / "astronaut.jpg")).probabilities[0]
    left, top, right, bottom = PERSON_REGIONS["face"]
    face = float(saliency[top:bottom, left:right].mean())
    assert face > FACE_OVER_IMAGE * float(saliency.mean()), f"{what}: face {face:.3f}, image {saliency.mean():.3f}"
    for region, (left, top, right, bottom) in BACKGROUND_REGIONS.items():
        background = float(saliency[top:bottom, left:right].mean())
        assert face > background, f"{what}: the {region} ({background:.3f}) draws more than the face ({face:.3f})"


@pytest.mark.parametrize("name", PERSON_MODELS)
def test_person_models_find_no_one_in_an_empty_street(name):
    segmenter = segcore.Segmenter.from_pretrained(WEIGHTS_DIR / name, device="cpu")
    assert segmenter.class_names == ["background", "person"]
    labels = segmenter.predict(segcore.read_image(EXAMPLES / "street-generated.png")).labels
    person = float((labels == 1).mean())
    assert person < MAX_PERSON_ON_EMPTY_STREET, f"{name} marks {person:.1%} of the empty street as person"


def test_the_expected_models_ship():
    assert EXPECTED <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_folder_is_complete_and_small(name):
    folder = WEIGHTS_DIR / name
    assert {"config.json", "model.safetensors", "README.md"} <= {path.name for path in folder.iterdir()}
    for path in folder.iterdir():
        assert path.stat().st_size < 25 * 2**20, f"{path} is over 25 MB"
    config = json.loads((folder / "config.json").read_text())
    shipped = config["meta"]["shipped"]
    assert shipped["split"] and shipped["metrics"] and shipped["licence"]
    card = (folder / "README.md").read_text()
    assert shipped["licence"] in card and shipped["split"] in card
    if config["task"] == "saliency":  # measured next to the centre-bias baseline, and better on every metric
        wins = beats_baseline(shipped["metrics"], shipped["baseline"])
        assert set(wins) == {"cc", "nss", "kld", "sim", "auc_judd"} and all(wins.values()), wins


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_predicts_a_sane_mask(name):
    segmenter = segcore.Segmenter.from_pretrained(WEIGHTS_DIR / name, device="cpu")
    task = segmenter.config["task"]
    photo = EXAMPLES / ("astronaut.jpg" if task == "portrait" else "street-generated.png")
    image = segcore.read_image(photo)
    prediction = segmenter.predict(image)
    assert prediction.labels.shape == image.shape[:2]
    assert np.isfinite(prediction.probabilities).all()
    if prediction.probabilities.shape[0] > 1:
        assert np.allclose(prediction.probabilities.sum(axis=0), 1.0, atol=1e-4)
    if task == "portrait":
        assert segmenter.class_names == ["background", "person"], "the app names what a portrait model cuts out"
        assert_covers_the_astronaut(prediction.labels != segmenter.class_names.index("background"), name)
    elif task == "saliency":
        assert_looks_at_the_astronauts_face(segmenter, name)
    else:
        assert len(np.unique(prediction.labels)) >= 2  # a street scene holds more than one class
        if "Road" in segmenter.class_names:  # the generated scene's tarmac, left of the car, bottom of the picture
            road = float((prediction.labels[300:360, 0:250] == segmenter.class_names.index("Road")).mean())
            assert road > 0.6, f"{name}: only {road:.2f} of the road in the generated street scene is Road"


INT8_MODELS = [name for name in SHIPPED if json.loads((WEIGHTS_DIR / name / "config.json").read_text()).get("int8")]
# Pixels whose label an int8 graph kept by `segcore quantize` (at most 0.2 mIoU points lost on CamVid val) shares
# with its float weights, on the generated street.
MIN_INT8_AGREEMENT = 0.95  # camvid-bisenet: 96.2 % on the generated street (a scene unlike CamVid)


def test_street_models_ship_int8_graphs():
    """camvid-bisenet and camvid-deeplabv3plus passed quantize's gates on CamVid val (docs/benchmarks.md)."""
    assert {"camvid-bisenet", "camvid-deeplabv3plus"} <= set(INT8_MODELS)


@pytest.mark.parametrize("name", INT8_MODELS)
def test_shipped_int8_graph_runs_by_default_and_agrees_with_the_weights(name):
    from segcore.inference import preferred_runtime

    model = segcore.load_pretrained(WEIGHTS_DIR / name, device="cpu")
    assert preferred_runtime(model.segcore_config) == "onnxruntime-int8"
    int8 = segcore.Segmenter(model, runtime="onnxruntime-int8")
    image = segcore.read_image(EXAMPLES / "street-generated.png")
    labels = int8.predict(image).labels
    agreement = float((labels == segcore.Segmenter(model, runtime="torch").predict(image).labels).mean())
    assert agreement > MIN_INT8_AGREEMENT, f"{name}: int8 agrees with the float model on {agreement:.1%} of pixels"
    road = float((labels[300:360, 0:250] == int8.class_names.index("Road")).mean())
    assert road > 0.6, f"{name}: only {road:.2f} of the road in the generated street scene is Road in int8"
