"""Tiny images and odd server settings through the served app (issue 17 item 5).

Images 1 px tall or wide, or 9 px tall (what broke the colour bar once), come back at their own size from every
path: /remove_background (every mode), /segment (class and saliency models, CRF), /compare, a webcam frame and the
cutout CLI. The app is served with a GRADIO_TEMP_DIR that does not end in /gradio and holds a space, and a
message about an upload still names only the person's file; a ground truth with labels beyond the models' classes
is refused with the classes listed.
"""

from __future__ import annotations

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from app import gradio_ui, services
from segcore.cli import main
from tests.app.conftest import _serve

TINY_SHAPES = [(1, 1), (1, 9), (9, 1), (9, 40)]  # (height, width)


@pytest.fixture(scope="module")
def upload_folder(tmp_path_factory):
    return tmp_path_factory.mktemp("server") / "uploads here"


@pytest.fixture(scope="module")
def client(app_weights_dir, tmp_path_factory, upload_folder):
    """The app with the tiny models, its uploads in `upload_folder` (GRADIO_TEMP_DIR) instead of <temp>/gradio."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(upload_folder))
        server = _serve(app_weights_dir, tmp_path_factory)
        url = next(server)
        try:
            yield Client(url, verbose=False, analytics_enabled=False,
                         download_files=str(tmp_path_factory.mktemp("downloads")))
        finally:
            server.close()  # runs _serve's clean-up: the server stops


def tiny_photo(folder, height, width, seed=0):
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    path = folder / f"tiny-{height}x{width}.png"
    Image.fromarray(image).save(path)
    return path


def size_of(path) -> tuple[int, int]:
    with Image.open(path) as picture:
        return picture.size


@pytest.mark.parametrize(("height", "width"), TINY_SHAPES)
def test_tiny_images_come_back_at_their_size_from_every_api(client, tmp_path, height, width):
    path = tiny_photo(tmp_path, height, width)
    for mode in services.BACKGROUND_MODES:
        result, download, _info = client.predict(handle_file(str(path)), "squares-a", mode,
                                                 api_name="/remove_background")
        assert size_of(result) == size_of(download) == (width, height), mode
    annotated, overlay, confidence, class_map, _slider, _legend, info = client.predict(
        handle_file(str(path)), "squares-a", True, "", api_name="/segment")
    assert size_of(annotated["image"]) == size_of(overlay) == (width, height) and "CRF" in info
    for heatmap in (confidence, class_map):  # the map and its colour bar, at the image's height
        assert size_of(heatmap)[1] == height and size_of(heatmap)[0] > width
    saliency = client.predict(handle_file(str(path)), "saliency-tiny", False, "", api_name="/segment")
    assert size_of(saliency[1])[1] == height
    gallery, table, disagreement, _info = client.predict(handle_file(str(path)), ["squares-a", "squares-b"], None,
                                                         api_name="/compare")
    assert [size_of(item["image"]) for item in gallery] == [(width, height)] * 2
    assert size_of(disagreement)[1] == height and len(table["data"]) == 2


@pytest.mark.parametrize(("height", "width"), TINY_SHAPES)
def test_a_tiny_webcam_frame_is_processed(app_dirs, height, width):
    frame = np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)
    shown, message, session = gradio_ui.remove_background_live(frame, "squares-a", "cutout", 50, "#ffffff", True, None)
    assert shown.shape == (height, width, 4) and "ms this frame" in message and session.frames == 1


@pytest.mark.parametrize(("height", "width"), TINY_SHAPES)
def test_the_cutout_cli_writes_tiny_images_at_their_size(app_weights_dir, tmp_path, height, width):
    path = tiny_photo(tmp_path, height, width)
    for mode in services.BACKGROUND_MODES:
        out = tmp_path / f"out-{mode}.png"
        assert main(["cutout", str(path), "--out", str(out), "--mode", mode,
                     "--model", str(app_weights_dir / "squares-a")]) == 0
        assert size_of(out) == (width, height), mode


def test_messages_name_the_upload_whatever_gradio_temp_dir_is(client, tmp_path, upload_folder):
    path = tmp_path / "my holiday.png"
    path.write_text("a text file with a .png name")
    for call in (lambda: client.predict(handle_file(str(path)), api_name="/remove_background"),
                 lambda: client.predict(handle_file(str(path)), "squares-a", False, "", api_name="/segment"),
                 lambda: client.predict(handle_file(str(path)), ["squares-a", "squares-b"], None,
                                        api_name="/compare")):
        with pytest.raises(AppError) as raised:
            call()
        message = str(raised.value)
        assert message.startswith("my holiday.png: not an image"), message
        assert str(upload_folder) not in message and "/tmp" not in message and "uploads here" not in message
    assert any(upload_folder.rglob("my holiday.png"))  # the upload really went to GRADIO_TEMP_DIR


def test_ground_truth_labels_beyond_the_classes_list_the_classes(client, tmp_path):
    image = np.random.default_rng(2).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "photo.png")
    truth = np.zeros((40, 50), dtype=np.uint8)
    truth[10:20, 10:20] = 7
    Image.fromarray(truth).save(tmp_path / "labels.png")
    with pytest.raises(AppError) as raised:
        client.predict(handle_file(str(tmp_path / "photo.png")), ["squares-a", "squares-b"],
                       handle_file(str(tmp_path / "labels.png")), api_name="/compare")
    assert str(raised.value) == ("labels.png: the ground-truth mask holds class index 7 but the models know 2 classes "
                                 "(background, square); use indices 0..1 (255 = no label)")
    assert client.predict(api_name="/list_models")  # still serving


def test_a_large_ground_truth_is_scored_at_the_image_size(app_dirs, square_photo, tmp_path):
    # a mask 4x the photo's size is brought to the photo's size before its values are converted (a huge mask's
    # int64 copies at full size cost gigabytes); nearest neighbour keeps every label, so the scores are the same
    path, _image, mask = square_photo
    small, large = tmp_path / "truth.png", tmp_path / "truth-large.png"
    Image.fromarray(mask.astype(np.uint8)).save(small)
    Image.fromarray(np.repeat(np.repeat(mask.astype(np.uint8), 4, axis=0), 4, axis=1)).save(large)
    at_size = services.compare(str(path), ["squares-a", "squares-b"], str(small))
    scaled = services.compare(str(path), ["squares-a", "squares-b"], str(large))
    assert [row.metrics for row in scaled.rows] == [row.metrics for row in at_size.rows]
    assert scaled.rows[0].metrics["iou"] > 0.8
