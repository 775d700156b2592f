"""The Gradio app served on a free loopback port, driven through gradio_client by its stable API names.

Every API name is called with real images; awkward uploads (a non-image, an empty file, a truncated JPEG, 16-bit,
CMYK, RGBA, EXIF-rotated, 100 megapixels, a zip without masks, a zip with ../ paths) get a clear message or a
correct result, and the app keeps serving afterwards.
"""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from app import services
from tests.app.bad_inputs import (
    ACCEPTED,
    REJECTED,
    scene,
    write_bad_inputs,
    write_huge_image,
)


@pytest.fixture(scope="module")
def client(served_app, tmp_path_factory):
    return Client(served_app, verbose=False, analytics_enabled=False,
                  download_files=str(tmp_path_factory.mktemp("downloads")))


def remove_background(client, path, mode="cutout", **overrides):
    arguments = {"image": handle_file(str(path)), "model": "squares-a", "mode": mode, "blur_strength": 50,
                 "background_color": "#00ff00", "background_image": None, "refine_edges": True, "crf": False}
    arguments.update(overrides)
    return client.predict(*arguments.values(), api_name="/remove_background")


def test_the_job_manager_is_made_at_launch(client):
    # jobs a stopped app left behind resume at once, not when someone opens the Fine-tune tab
    assert services._manager is not None


def test_api_names_are_stable(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/remove_background", "/segment", "/compare", "/finetune_start", "/finetune_status",
            "/finetune_cancel", "/list_models"} <= names


def test_list_models(client):
    listed = {row["name"]: row for row in client.predict(api_name="/list_models")}
    assert set(listed) == {"squares-a", "squares-b", "saliency-tiny"}
    assert listed["saliency-tiny"]["task"] == "saliency" and listed["squares-a"]["removes_background"]


def test_remove_background_returns_rgba_cutout(client, tmp_path):
    image, mask = scene(160, 200, seed=11)
    path = tmp_path / "scene.png"
    Image.fromarray(image).save(path)
    result, download, info = remove_background(client, path)
    with Image.open(result) as picture:
        assert picture.mode == "RGBA" and picture.size == (200, 160)
        alpha = np.asarray(picture)[..., 3]
    covered = alpha > 127
    assert np.logical_and(covered, mask == 1).sum() / np.logical_or(covered, mask == 1).sum() > 0.8
    with Image.open(download) as saved:
        assert saved.mode == "RGBA" and np.array_equal(np.asarray(saved)[..., 3], alpha)
    assert "squares-a: model" in info and "ms" in info
    blurred, _, _ = remove_background(client, path, mode="blur", blur_strength=90, crf=True)
    with Image.open(blurred) as picture:
        assert picture.mode == "RGB" and picture.size == (200, 160)


def test_segment_explore_outputs(client, tmp_path):
    image, _mask = scene(160, 200, seed=12)
    path = tmp_path / "scene.png"
    Image.fromarray(image).save(path)
    annotated, overlay, confidence, _class_map, slider, legend, info = client.predict(
        handle_file(str(path)), "squares-a", True, "", api_name="/segment")
    labels = {annotation["label"] for annotation in annotated["annotations"]}
    assert labels == {"background", "square"}
    with Image.open(overlay) as picture:
        assert picture.size == (200, 160)
    with Image.open(confidence) as picture:
        assert picture.size[1] == 160 and picture.size[0] > 200  # colour bar appended
    if "no before/after to show" in info:  # the CRF changed no pixel: no slider of two identical masks
        assert slider is None
    else:
        assert len(slider) == 2
    assert [row[0] for row in legend["data"]][:2] in (["background", "square"], ["square", "background"])
    assert "CRF" in info
    without_crf = client.predict(handle_file(str(path)), "squares-a", False, "", api_name="/segment")
    assert without_crf[4] is None and "dense CRF off" in without_crf[-1]
    saliency = client.predict(handle_file(str(path)), "saliency-tiny", False, "", api_name="/segment")
    assert "saliency" in saliency[-1]


def test_every_api_name_needs_only_its_required_input(client, tmp_path):
    image, mask = scene(160, 200, seed=15)
    path = tmp_path / "portrait.png"
    Image.fromarray(image).save(path)
    cutout, download, info = client.predict(handle_file(str(path)), api_name="/remove_background")
    with Image.open(cutout) as picture:
        assert picture.mode == "RGBA"
        alpha = np.asarray(picture)[..., 3]
    assert np.logical_and(alpha > 127, mask == 1).sum() / np.logical_or(alpha > 127, mask == 1).sum() > 0.8
    assert Path(download).name == "portrait-cutout.png" and "squares-a: model" in info  # the default model
    blurred = client.predict(handle_file(str(path)), mode="blur", api_name="/remove_background")
    assert Path(blurred[1]).name == "portrait-blur.png"
    outputs = client.predict(handle_file(str(path)), api_name="/segment")
    assert "squares-a" in outputs[-1]
    gallery, *_ = client.predict(handle_file(str(path)), api_name="/compare")
    assert len(gallery) == 2
    assert isinstance(client.predict(api_name="/finetune_status"), tuple)
    with pytest.raises(AppError, match="nothing to cancel"):
        client.predict(api_name="/finetune_cancel")
    parameters = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for name in ("/remove_background", "/segment", "/compare"):
        required = [item["parameter_name"] for item in parameters[name]["parameters"]
                    if not item["parameter_has_default"]]
        assert required == ["image"], (name, required)
    for name in ("/finetune_start", "/finetune_status", "/finetune_cancel", "/list_models"):
        assert all(item["parameter_has_default"] for item in parameters[name]["parameters"]), name


def test_compare_with_ground_truth(client, tmp_path):
    image, mask = scene(160, 200, seed=13)
    path, truth = tmp_path / "scene.png", tmp_path / "truth.png"
    Image.fromarray(image).save(path)
    Image.fromarray(mask.astype(np.uint8)).save(truth)
    gallery, table, _disagreement, _info = client.predict(
        handle_file(str(path)), ["squares-a", "squares-b"], handle_file(str(truth)), api_name="/compare")
    assert len(gallery) == 2 and "squares-a" in gallery[0]["caption"]
    rows = {row[0]: row for row in table["data"]}
    assert rows["squares-a"][2] > 0.8 and 0.0 <= rows["squares-b"][2] <= 1.0
    assert rows["squares-a"][1] > 0  # latency
    with pytest.raises(AppError, match="choose 2 to 4 models"):
        client.predict(handle_file(str(path)), ["squares-a"], None, api_name="/compare")


def test_finetune_start_status_cancel(client, tmp_path):
    sample = next(iter(services.SAMPLE_DATASETS))
    job_id, text, checked = client.predict(None, sample, "scratch: unet", 1, 0.003, 8, 64, False, "api-job",
                                           api_name="/finetune_start")
    assert job_id and "api-job" in text and "96 image/mask pairs" in checked
    deadline = time.time() + 120
    while True:
        _status_text, losses, _metrics, download, status = client.predict(job_id, api_name="/finetune_status")
        if status["state"] in ("finished", "failed", "cancelled") or time.time() > deadline:
            break
        time.sleep(0.5)
    assert status["state"] == "finished", status
    assert download and zipfile.is_zipfile(download)
    assert "fine-tuned/api-job" in {row["name"] for row in client.predict(api_name="/list_models")}
    assert len(losses["data"]) >= 1

    second, _, _ = client.predict(None, sample, "scratch: unet", 50, 0.003, 8, 64, False, "to-cancel",
                                  api_name="/finetune_start")
    deadline = time.time() + 60
    while services.finetune_status(second)["state"] != "running" and time.time() < deadline:
        time.sleep(0.2)
    # inference keeps working while the job trains in its own process
    image, _ = scene(96, 96, seed=14)
    Image.fromarray(image).save(tmp_path / "during.png")
    during = client.predict(handle_file(str(tmp_path / "during.png")), "squares-a", False, "", api_name="/segment")
    assert "squares-a" in during[-1]
    assert services.finetune_status(second)["state"] == "running"
    text = client.predict(second, api_name="/finetune_cancel")
    assert "cancelled" in text or "cancel" in text
    status = services.job_manager().wait(second, timeout=60)
    assert status["state"] == "cancelled"


@pytest.mark.parametrize("name", list(REJECTED))
def test_rejected_images_give_a_clear_message_in_every_tab(client, tmp_path, name):
    path = write_bad_inputs(tmp_path)[name]
    message = REJECTED[name]
    with pytest.raises(AppError, match=message):
        remove_background(client, path)
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(str(path)), "squares-a", False, "", api_name="/segment")
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(str(path)), ["squares-a", "squares-b"], None, api_name="/compare")
    assert client.predict(api_name="/list_models")  # still serving


@pytest.mark.parametrize("name", ACCEPTED)
def test_awkward_but_valid_images_are_processed(client, tmp_path, name):
    path = write_bad_inputs(tmp_path)[name]
    result, _, _info = remove_background(client, path)
    with Image.open(result) as picture:
        assert picture.mode == "RGBA" and picture.size == (160, 120)  # EXIF rotation applied
        alpha = np.asarray(picture)[..., 3]
    annotated, *_ = client.predict(handle_file(str(path)), "squares-a", False, "", api_name="/segment")
    with Image.open(annotated["image"]) as picture:
        assert picture.size == (160, 120)
    gallery, *_ = client.predict(handle_file(str(path)), ["squares-a", "squares-b"], None, api_name="/compare")
    assert len(gallery) == 2
    if name in ("cmyk.jpg", "rgba.png", "exif-rotated.jpg"):  # colour kept: the red square is found
        _, mask = scene()
        covered = alpha > 127
        assert np.logical_and(covered, mask == 1).sum() / np.logical_or(covered, mask == 1).sum() > 0.6


def test_a_100_megapixel_image_is_downscaled(client, tmp_path):
    path = write_huge_image(tmp_path / "huge.png")
    result, _, info = remove_background(client, path, refine_edges=False)
    with Image.open(result) as picture:
        assert picture.size == (2048, 1434)
    assert "12000x8400 and was downscaled to 2048x1434" in info


def refused_start(client, upload, *settings):
    """The problems panel of a Start that queued nothing (the job id comes back empty)."""
    job_id, _status, problems = client.predict(handle_file(str(upload)), "", "scratch: unet", *settings, False, "",
                                               api_name="/finetune_start")
    assert job_id == "" and problems.startswith("**The fine-tune cannot start")
    assert "/tmp" not in problems and "gradio" not in problems  # no server paths
    return [line[2:] for line in problems.splitlines() if line.startswith("- ")]


def test_bad_dataset_zips_are_refused_with_the_reason(client, tmp_path):
    no_masks = tmp_path / "no-masks.zip"
    image, _ = scene()
    Image.fromarray(image).save(tmp_path / "a.png")
    with zipfile.ZipFile(no_masks, "w") as archive:
        archive.write(tmp_path / "a.png", "images/a.png")
        archive.write(tmp_path / "a.png", "images/b.png")
    problems = refused_start(client, no_masks, 1, 0.003, 8, 64)
    assert len(problems) == 1 and "mask" in problems[0]
    escaping = tmp_path / "escaping.zip"
    with zipfile.ZipFile(escaping, "w") as archive:
        archive.writestr("../../outside.png", (tmp_path / "a.png").read_bytes())
    assert any(".." in problem for problem in refused_start(client, escaping, 1, 0.003, 8, 64))
    text = tmp_path / "not-a-zip.zip"
    text.write_text("hello")
    problems = refused_start(client, text, 0, -1, 0, 64)  # and three bad numbers: one line each
    assert len(problems) == 4 and "not-a-zip.zip: not a readable zip" in problems[-1]
    assert problems[:3] == ["epochs must be between 1 and 1000, not 0", "learning rate must be between 1e-06 and 1, "
                            "not -1", "batch size must be between 1 and 256, not 0"]
    assert client.predict(api_name="/list_models")
