"""The Streamlit app (app/streamlit_app.py) driven by streamlit.testing.v1.AppTest, page by page, with the tiny models
of tests/app/conftest.py: uploads go through the real st.file_uploader / st.camera_input widgets, and the tests read
back the pictures and downloads the page holds (from the test runtime's media storage) to check their pixels.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import streamlit.testing.v1.app_test as app_test_module
from PIL import Image
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from app import services
from tests.app.bad_inputs import scene
from tests.conftest import make_square_scene

SCRIPT = str(services.ROOT / "app" / "streamlit_app.py")
TIMEOUT = 120  # seconds per run: a busy 2-core machine runs the models slowly


class _RecordedStorage(MemoryMediaFileStorage):
    """The test runtime's media storage, remembered so a test can read what the page shows and offers."""

    instances: list[MemoryMediaFileStorage] = []

    def __init__(self, endpoint: str) -> None:
        super().__init__(endpoint)
        _RecordedStorage.instances.append(self)


@pytest.fixture
def media(monkeypatch):
    _RecordedStorage.instances = []
    monkeypatch.setattr(app_test_module, "MemoryMediaFileStorage", _RecordedStorage)

    def content(url: str) -> bytes:
        name = url.rsplit("/", 1)[-1]
        for storage in reversed(_RecordedStorage.instances):
            try:
                return storage.get_file(name).content
            except Exception:  # noqa: BLE001 - held by an earlier run's storage
                continue
        raise AssertionError(f"no media file {url}")

    return content


def picture(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)))


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def open_page(name: str) -> AppTest:
    app = AppTest.from_file(SCRIPT, default_timeout=TIMEOUT)
    app.run()
    assert not app.exception, app.exception
    app.sidebar.radio(key="page").set_value(name).run()
    assert not app.exception, app.exception
    return app


def test_background_removal_page_cuts_out_the_square(app_dirs, media):
    image, mask = make_square_scene(160, 200, np.random.default_rng(7))
    app = open_page("Background removal")
    assert "Upload a photo" in app.info[0].value
    app.file_uploader(key="bg-upload").set_value(("square.png", png(image), "image/png")).run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    download = app.get("download_button")[0]
    assert download.proto.label == "Download square-cutout.png"
    cutout = picture(media(download.proto.url))
    assert cutout.shape == (160, 200, 4)
    alpha = cutout[..., 3] / 255.0
    # the square is kept, the background goes (the tiny model trained on such scenes)
    assert alpha[mask == 1].mean() > 0.8 and alpha[mask == 0].mean() < 0.2
    shown = [picture(media(element.value[0])) for element in app.image]
    # the photo beside the result (Streamlit sends photos as JPEG)
    assert shown[0].shape == image.shape
    assert np.corrcoef(shown[0].ravel().astype(float), image.ravel().astype(float))[0, 1] > 0.8  # JPEG of a noisy scene
    assert shown[1].shape[:2] == (160, 200) and shown[1].shape[2] == 3  # the cutout drawn on a checkerboard
    assert app.main.caption[-1].value.startswith("squares-")  # the summary: model and timings


def test_background_removal_page_blur_and_camera(app_dirs, media):
    image, mask = make_square_scene(120, 160, np.random.default_rng(3))
    app = open_page("Background removal")
    app.radio(key="bg-mode").set_value("blur").run()
    app.radio(key="bg-kind").set_value("Camera").run()
    jpeg = io.BytesIO()
    Image.fromarray(image).save(jpeg, format="JPEG", quality=95)
    app.camera_input(key="bg-camera").set_value(("shot.jpg", jpeg.getvalue(), "image/jpeg")).run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    download = app.get("download_button")[0]
    assert download.proto.label.endswith("-blur.png")
    blurred = picture(media(download.proto.url))
    assert blurred.shape == (120, 160, 3)
    # the square keeps its sharp red, the background is changed by the blur
    assert np.abs(blurred[mask == 1].astype(int) - image[mask == 1]).mean() < 25


def test_background_removal_page_names_a_bad_upload(app_dirs):
    app = open_page("Background removal")
    app.file_uploader(key="bg-upload").set_value(("notes.png", b"not an image at all", "image/png")).run()
    assert not app.exception
    message = app.error[0].value
    assert "notes.png" in message and "segcore-upload" not in message and "Traceback" not in message


def test_explore_page_shows_mask_legend_heatmaps_and_crf(app_dirs, media):
    image, _ = scene(96, 128, seed=4)
    app = open_page("Explore")
    app.selectbox(key="ex-model").set_value("squares-a")
    app.checkbox(key="ex-crf").check()
    app.file_uploader(key="ex-upload").set_value(("scene.png", png(image), "image/png")).run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    captions = [caption for element in app.image for caption in element.captions]
    assert any("mask over the photo" in caption for caption in captions)
    assert any("confidence" in caption for caption in captions)
    assert any("probability of" in caption for caption in captions)
    legend = next(element.value for element in app.markdown if element.value.startswith("**Legend**"))
    assert "background" in legend
    confidence = picture(media(app.image[1].value[0]))
    assert confidence.shape[1] > 128  # the heatmap carries its colour bar beside the map
    assert "CRF" in app.main.caption[-1].value


def test_explore_page_saliency_model(app_dirs):
    image, _ = scene(96, 128, seed=5)
    app = open_page("Explore")
    app.selectbox(key="ex-model").set_value("saliency-tiny")
    app.file_uploader(key="ex-upload").set_value(("scene.png", png(image), "image/png")).run()
    assert not app.exception and not app.error
    legend = next(element.value for element in app.markdown if element.value.startswith("**Legend**"))
    assert "saliency" in legend and "of peak" in legend


def test_compare_page_scores_against_a_ground_truth(app_dirs):
    image, mask = make_square_scene(160, 200, np.random.default_rng(7))
    app = open_page("Compare")
    assert app.multiselect(key="cmp-models").value == ["saliency-tiny", "squares-a"] or len(
        app.multiselect(key="cmp-models").value) == 2
    app.multiselect(key="cmp-models").set_value(["squares-a", "squares-b"])
    app.file_uploader(key="cmp-upload").set_value(("square.png", png(image), "image/png"))
    app.file_uploader(key="cmp-truth").set_value(("truth.png", png((mask * 255).astype(np.uint8)), "image/png")).run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    table = app.dataframe[0].value
    assert list(table["model"]) == ["squares-a", "squares-b"]
    truth = mask.astype(bool)
    assert table["IoU (foreground)"].iloc[0] > 0.8  # the well-trained model finds the square
    assert set(np.unique(truth)) == {False, True}
    assert len(app.image) == 3  # two overlays and the disagreement map


def test_compare_page_asks_for_two_models(app_dirs):
    image, _ = scene(64, 64, seed=6)
    app = open_page("Compare")
    app.multiselect(key="cmp-models").set_value(["squares-a"])
    app.file_uploader(key="cmp-upload").set_value(("a.png", png(image), "image/png")).run()
    assert not app.exception
    assert "choose 2 to 4 models" in app.error[0].value


def _dataset_zip() -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index in range(8):
            image, mask = make_square_scene(64, 64, rng)
            archive.writestr(f"images/{index}.png", png(image))
            archive.writestr(f"masks/{index}.png", png(mask.astype(np.uint8)))
    return buffer.getvalue()


def test_finetune_page_lists_every_problem_at_start(app_dirs):
    app = open_page("Fine-tune")
    assert "no fine-tuning job yet" in app.info[0].value
    app.number_input(key="ft-lr").set_value(1.0)
    app.button[0].click().run()  # Start with no dataset
    assert not app.exception
    assert "cannot start" in app.error[0].value and "no dataset" in app.error[0].value


def test_finetune_page_runs_a_job_from_an_uploaded_zip(app_dirs):
    app = open_page("Fine-tune")
    app.file_uploader(key="ft-upload").set_value(("squares.zip", _dataset_zip(), "application/zip"))
    app.number_input(key="ft-epochs").set_value(1)
    app.number_input(key="ft-size").set_value(64)
    app.text_input(key="ft-name").set_value("streamlit-squares")
    app.button[0].click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    assert "Dataset checked" in app.success[0].value and "8 image/mask pairs" in app.success[0].value
    job_id = app.session_state["ft-job"]
    services.job_manager().wait(job_id, timeout=240)
    app.run()
    assert not app.exception
    status = "\n".join(element.value for element in app.markdown)
    assert "streamlit-squares" in status and "finished" in status
    assert any(button.proto.label.startswith("Download the model") for button in app.get("download_button"))
    assert app.get("arrow_vega_lite_chart") or app.get("vega_lite_chart")  # the loss and metric curves
    table = app.dataframe[0].value
    assert table["name"].tolist()[0] == "streamlit-squares" and table["state"].tolist()[0] == "finished"
    # the new model is offered on the other pages
    assert "fine-tuned/streamlit-squares" in services.model_names()
