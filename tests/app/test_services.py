"""app/services.py with tiny models trained on red rectangles: background removal, segment, compare, catalog, errors."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from PIL import Image

from app import services
from segcore.errors import SegcoreError


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1))


def test_catalog_lists_models_with_their_tasks(app_dirs):
    entries = {entry.name: entry for entry in services.list_models()}
    assert set(entries) == {"squares-a", "squares-b", "saliency-tiny"}
    assert entries["saliency-tiny"].task == "saliency" and not entries["saliency-tiny"].removes_background
    assert entries["squares-a"].removes_background and entries["squares-a"].class_names == ("background", "square")
    assert services.model_names(background_removal=True) == ["squares-a", "squares-b"]
    assert services.default_background_model() == "squares-a"
    with pytest.raises(SegcoreError, match="unknown model .nope.; available models: saliency-tiny, squares-a, squares-b"):
        services.find_model("nope")


def test_remove_background_modes(app_dirs, square_photo):
    path, image, mask = square_photo
    cut = services.remove_background(str(path), model="squares-a", mode="cutout")
    assert cut.image.shape == (*image.shape[:2], 4) and cut.image.dtype == np.uint8
    assert np.array_equal(cut.image[..., :3], image)
    assert iou(cut.image[..., 3] > 127, mask == 1) > 0.8
    assert cut.latency_ms > 0 and cut.total_ms >= cut.latency_ms

    green = services.remove_background(image, model="squares-a", mode="replace", background_color="#00ff00",
                                       refine_edges=False)
    alpha = green.alpha[..., None]
    expected = alpha * image + (1.0 - alpha) * np.array([0, 255, 0])
    assert np.abs(green.image - expected).max() <= 1.0
    assert iou(green.alpha > 0.5, mask == 1) > 0.8

    blurred = services.remove_background(image, model="squares-a", mode="blur", blur_strength=80, crf=True)
    inside = (mask == 1) & (blurred.alpha > 0.9)
    outside = (mask == 0) & (blurred.alpha < 0.1)
    assert inside.sum() > 1000 and outside.sum() > 10000
    assert np.abs(blurred.image[inside].astype(int) - image[inside]).mean() < 8
    assert np.abs(blurred.image[outside].astype(int) - image[outside]).mean() > 5  # the noise is blurred away

    photo = np.full((50, 80, 3), 30, dtype=np.uint8)
    replaced = services.remove_background(image, model="squares-a", mode="replace", background_image=photo)
    assert replaced.image.shape == image.shape


def test_remove_background_refuses_bad_requests(app_dirs, square_photo, tmp_path):
    path = square_photo[0]
    with pytest.raises(SegcoreError, match="saliency-tiny cannot remove backgrounds"):
        services.remove_background(str(path), model="saliency-tiny")
    with pytest.raises(SegcoreError, match="unknown mode 'erase'"):
        services.remove_background(str(path), model="squares-a", mode="erase")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(SegcoreError, match="empty"):
        services.remove_background(str(empty), model="squares-a")
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    with pytest.raises(SegcoreError, match="not an image"):
        services.remove_background(str(text), model="squares-a")
    with pytest.raises(SegcoreError, match="no image given"):
        services.remove_background(None, model="squares-a")


def test_large_images_are_downscaled_with_a_note(app_dirs):
    big = np.zeros((2500, 3000, 3), dtype=np.uint8)
    loaded = services.load_image(big)
    assert loaded.array.shape == (1707, 2048, 3)
    assert "3000x2500 and was downscaled to 2048x1707" in loaded.notes[0]
    small = services.load_image(np.zeros((10, 12, 3), dtype=np.uint8))
    assert small.notes == [] and small.array.shape == (10, 12, 3)


def test_segment_gives_overlay_heatmaps_and_crf(app_dirs, square_photo):
    path, image, mask = square_photo
    result = services.segment(str(path), "squares-a", crf=True)
    assert iou(result.labels == 1, mask == 1) > 0.8
    assert result.class_shown == "square"
    height, width = image.shape[:2]
    assert result.overlay.shape == image.shape
    for picture in (result.confidence_map, result.class_map):  # the map plus a colour bar on the right
        assert picture.shape[0] == height and picture.shape[1] > width and picture.dtype == np.uint8
    assert iou(result.crf_labels == 1, mask == 1) > 0.8 and result.crf_ms > 0
    legend = result.legend()
    assert {row[0] for row in legend} == {"background", "square"}
    assert abs(sum(row[2] for row in legend) - 1.0) < 1e-6
    annotated = {name: area for area, name in result.annotations()}
    assert np.array_equal(annotated["square"] > 0, result.labels == 1)
    assert "CRF" in result.summary()
    # the background pixels of the overlay are the photo's own
    assert np.array_equal(result.overlay[result.labels == 0], image[result.labels == 0])
    chosen = services.segment(image, "squares-a", class_name="background")
    assert chosen.class_shown == "background"


def test_segment_saliency_model_gives_jet_overlay(app_dirs, square_photo):
    result = services.segment(str(square_photo[0]), "saliency-tiny", crf=True)
    assert result.task == "saliency" and result.crf_labels is None
    assert result.overlay.shape[0] == 160 and result.overlay.shape[1] > 200  # overlay + colour bar
    assert "CRF refinement applies to class masks" in result.summary()


def test_compare_scores_each_model_against_a_ground_truth(app_dirs, square_photo, tmp_path):
    path, _image, mask = square_photo
    truth = tmp_path / "truth.png"
    Image.fromarray((mask * 255).astype(np.uint8)).save(truth)  # a 0/255 binary mask
    result = services.compare(str(path), ["squares-a", "squares-b"], str(truth))
    assert [row.model for row in result.rows] == ["squares-a", "squares-b"]
    for row in result.rows:
        expected = iou(row.labels == 1, mask == 1)
        assert row.metrics["iou"] == pytest.approx(expected, abs=1e-6)
    assert result.rows[0].metrics["iou"] > 0.8
    share = (result.rows[0].labels != result.rows[1].labels).mean()
    assert result.disagreement.shape[0] == 160
    assert (share > 0) == bool((result.disagreement[:, :200] != result.disagreement[0, 0]).any())
    table = result.table()
    assert table[0][0] == "squares-a" and table[0][2] == pytest.approx(result.rows[0].metrics["iou"], abs=1e-4)


def test_compare_refuses_bad_requests(app_dirs, square_photo, tmp_path):
    path, _image, _mask = square_photo
    with pytest.raises(SegcoreError, match="choose 2 to 4 models"):
        services.compare(str(path), ["squares-a"])
    with pytest.raises(SegcoreError, match="chosen twice"):
        services.compare(str(path), ["squares-a", "squares-a"])
    wrong = tmp_path / "wrong.png"
    Image.fromarray(np.zeros((100, 100), dtype=np.uint8)).save(wrong)
    with pytest.raises(SegcoreError, match="the ground-truth mask is 100x100 but the image is 200x160"):
        services.compare(str(path), ["squares-a", "squares-b"], str(wrong))
    colours = tmp_path / "colours.png"
    Image.fromarray(np.full((160, 200, 3), (10, 200, 30), dtype=np.uint8)).save(colours)
    with pytest.raises(SegcoreError, match="colour #0ac81e, which is no class colour"):
        services.compare(str(path), ["squares-a", "squares-b"], str(colours))
    with pytest.raises(SegcoreError, match="same classes"):
        services.compare(str(path), ["squares-a", "saliency-tiny"], str(colours))


def test_finetune_config_from_choices(app_dirs, tmp_path):
    config = services.finetune_config(tmp_path, "scratch: unet", epochs=2, lr=0.01, batch_size=4, input_size=64,
                                      freeze_encoder=False)
    assert config["model"] == "unet" and config["model_kwargs"] == {"width": 16} and config["epochs"] == 2
    start = services.finetune_config(tmp_path, "from: squares-a", epochs=1, lr=0.01, batch_size=4, input_size=64,
                                     freeze_encoder=False)
    assert start["init_from"] == str(app_dirs[0] / "squares-a") and start["model_kwargs"]["width"] == 8
    with pytest.raises(SegcoreError, match="freezing the encoder needs"):
        services.finetune_config(tmp_path, "scratch: unet", epochs=1, lr=0.01, batch_size=4, input_size=64,
                                 freeze_encoder=True)
    with pytest.raises(SegcoreError, match="unknown starting point"):
        services.finetune_config(tmp_path, "whatever", epochs=1, lr=0.01, batch_size=4, input_size=64,
                                 freeze_encoder=False)
    with pytest.raises(SegcoreError, match="no dataset"):
        services.finetune_start(base="scratch: unet")


def test_bad_dataset_uploads_list_their_problems(app_dirs, tmp_path):
    no_masks = tmp_path / "no-masks.zip"
    with zipfile.ZipFile(no_masks, "w") as archive:
        buffer = tmp_path / "a.png"
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(buffer)
        archive.write(buffer, "images/a.png")
    with pytest.raises(SegcoreError) as caught:
        services.prepare_dataset(str(no_masks))
    assert "mask" in str(caught.value)
    escaping = tmp_path / "escaping.zip"
    with zipfile.ZipFile(escaping, "w") as archive:
        archive.writestr("../evil.png", b"x")
    with pytest.raises(SegcoreError, match=r"\.\."):
        services.prepare_dataset(str(escaping))
    assert not (app_dirs[1] / "evil.png").exists() and not (tmp_path / "evil.png").exists()


def test_finetune_job_produces_a_model_every_picker_lists(app_dirs):
    status = services.finetune_start(sample=next(iter(services.SAMPLE_DATASETS)), base="scratch: unet", epochs=1,
                                     lr=3e-3, batch_size=8, input_size=64, name="shapes-test")
    assert status["state"] in ("queued", "running")
    assert "96 image/mask pairs" in status["dataset_report"] and "0 error(s)" in status["dataset_report"]
    final = services.job_manager().wait(status["id"], timeout=120)
    assert final["state"] == "finished", final
    assert services.finetune_status()["id"] == status["id"]
    names = services.model_names()
    assert "fine-tuned/shapes-test" in names
    assert services.segment(np.zeros((64, 64, 3), dtype=np.uint8), "fine-tuned/shapes-test").labels.shape == (64, 64)
    archive = services.model_archive("fine-tuned/shapes-test")
    with zipfile.ZipFile(archive) as opened:
        assert {"config.json", "model.safetensors"} <= set(opened.namelist())
    with pytest.raises(SegcoreError, match="nothing to cancel"):
        services.finetune_cancel()


def test_webcam_frames_share_a_temporal_smoother(app_dirs, square_photo):
    from app import gradio_ui

    _, image, mask = square_photo
    first, info, state = gradio_ui.remove_background_live(image, "squares-a", "cutout", 50, "#00ff00", False, None)
    assert first.shape == (*image.shape[:2], 4) and "ms per frame" in info and state is not None
    noisy = image.copy()
    noisy[mask == 1] = (noisy[mask == 1] * 0.6).astype(np.uint8)  # a darker square: the raw mask changes
    raw = services.remove_background(noisy, model="squares-a", refine_edges=False).alpha
    second, _, same_state = gradio_ui.remove_background_live(noisy, "squares-a", "cutout", 50, "#00ff00", False,
                                                             state)
    assert same_state is state
    previous = first[..., 3].astype(np.float32) / 255.0
    smoothed = second[..., 3].astype(np.float32) / 255.0
    # the smoothed alpha lies between the previous frame's and the new raw one (it never overshoots either)
    low, high = np.minimum(previous, raw) - 1 / 255, np.maximum(previous, raw) + 1 / 255
    assert np.all((smoothed >= low) & (smoothed <= high))
    assert np.abs(smoothed - raw).max() > 0.01  # and it is not simply the new frame's mask
    _, message, _ = gradio_ui.remove_background_live(image, "saliency-tiny", "cutout", 50, "#00ff00", False, state)
    assert "cannot remove backgrounds" in message


def test_a_second_app_on_the_same_jobs_folder_still_serves_inference(app_dirs, square_photo):
    from app.jobs import JobManager

    other = JobManager(app_dirs[1] / "app-jobs", autostart=False)  # another app instance holds the folder
    try:
        assert services.model_names() == ["saliency-tiny", "squares-a", "squares-b"]
        assert services.segment(str(square_photo[0]), "squares-a").labels.shape == (160, 200)
        with pytest.raises(SegcoreError, match="another segcore app is already running these jobs"):
            services.finetune_status()
    finally:
        other.shutdown()
