"""app/services.py with tiny models trained on red rectangles: background removal, segment, compare, catalog, errors."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app import services
from segcore import compose
from segcore.errors import SegcoreError
from segcore.inference import RUNTIMES


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
    opaque_or_clear = (cut.alpha <= 1e-3) | (cut.alpha >= 1 - 1e-3)  # the photo's own colours, soft edges aside
    assert np.array_equal(cut.image[..., :3][opaque_or_clear], image[opaque_or_clear])
    assert iou(cut.image[..., 3] > 127, mask == 1) > 0.8
    assert cut.latency_ms > 0 and cut.total_ms >= cut.latency_ms

    green = services.remove_background(image, model="squares-a", mode="replace", background_color="#00ff00",
                                       refine_edges=False, foreground_colours=False)
    alpha = green.alpha[..., None]
    expected = alpha * image + (1.0 - alpha) * np.array([0, 255, 0])
    assert np.abs(green.image - expected).max() <= 1.0
    assert iou(green.alpha > 0.5, mask == 1) > 0.8
    # by default the soft edge gets the person's estimated colours (no halo of the old background)
    default = services.remove_background(image, model="squares-a", mode="replace", background_color="#00ff00",
                                         refine_edges=False)
    foreground = compose.estimate_foreground(image, default.alpha)
    expected = alpha * foreground + (1.0 - alpha) * np.array([0, 255, 0])
    assert np.abs(default.image - expected).max() <= 1.0
    soft = (green.alpha > 0.05) & (green.alpha < 0.95)
    assert soft.sum() > 50 and np.abs(default.image[soft].astype(int) - green.image[soft]).mean() > 1

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
    assert [row[5] for row in table] == [services.get_segmenter(name).runtime for name in ("squares-a", "squares-b")]
    assert table[0][5] in RUNTIMES


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


def test_webcam_session_smooths_its_own_frames(app_dirs, square_photo):
    _, image, mask = square_photo
    session = services.WebcamSession()
    first = session.process(image, model="squares-a", mode="cutout", refine_edges=False)
    assert first.image.shape == (*image.shape[:2], 4)
    assert "ms this frame" in first.message and "frames/s" in first.message
    noisy = image.copy()
    noisy[mask == 1] = (noisy[mask == 1] * 0.6).astype(np.uint8)  # a darker square: the raw mask changes
    raw = services.remove_background(noisy, model="squares-a", refine_edges=False).alpha
    second = session.process(noisy, model="squares-a", mode="cutout", refine_edges=False)
    # the smoothed alpha lies between the previous frame's and the new raw one (it never overshoots either)
    low, high = np.minimum(first.alpha, raw) - 1e-6, np.maximum(first.alpha, raw) + 1e-6
    assert np.all((second.alpha >= low) & (second.alpha <= high))
    assert np.abs(second.alpha - raw).max() > 0.01  # and it is not simply the new frame's mask
    # another browser's session starts from its own first frame, not from this one's history
    assert np.array_equal(services.WebcamSession().process(noisy, model="squares-a", refine_edges=False).alpha, raw)
    refused = session.process(image, model="saliency-tiny")
    assert refused.image is None and "cannot remove backgrounds" in refused.message
    assert services.WebcamSession().process(None).message == "waiting for the webcam"


def test_photos_run_the_models_test_time_setting_and_webcam_frames_do_not(app_dirs, square_photo, monkeypatch):
    from segcore.inference import TestTimeAugmentation

    _, image, _ = square_photo
    segmenter = services.get_segmenter("squares-a")  # the cached one every call below uses
    monkeypatch.setattr(segmenter, "tta", TestTimeAugmentation.parse("flip"))  # as `ship --tta flip` configures
    photo = services.remove_background(image, model="squares-a").alpha
    plain = services.remove_background(image, model="squares-a", tta="none").alpha
    webcam = services.WebcamSession().process(image, model="squares-a").alpha
    assert np.array_equal(webcam, plain)  # one network pass per frame
    assert np.abs(photo - plain).max() > 1e-3  # the photo also went through the mirrored pass
    assert np.array_equal(photo, services.remove_background(image, model="squares-a", tta="flip").alpha)


def test_webcam_session_leaves_no_trail_after_a_scene_change(app_dirs):
    from tests.app.bad_inputs import scene

    before, before_mask = scene(160, 200, seed=31)
    after, after_mask = scene(160, 200, seed=32)
    moved_share = (after_mask != before_mask).mean()
    assert 0.05 < moved_share < 0.25  # the square moved: a motion, too small to count as a cut
    session = services.WebcamSession()
    for _ in range(4):
        session.process(before, model="squares-a")
    moved = session.process(after, model="squares-a").alpha
    fresh = services.remove_background(after, model="squares-a").alpha
    left_behind = (before_mask == 1) & (after_mask == 0)
    assert np.abs(moved - fresh)[left_behind].max() < 0.02  # where the square was: no ghost
    assert np.abs(moved - fresh).mean() < 0.002  # only the uncertain edge band leans on the history
    # a cut (most of the picture changes): the smoothed alpha is the new frame's own
    cut = np.random.default_rng(5).integers(0, 90, (160, 200, 3), dtype=np.uint8)
    cut[10:150, 10:190] = (230, 46, 46)
    assert np.array_equal(session.process(cut, model="squares-a").alpha,
                          services.remove_background(cut, model="squares-a").alpha)


def test_services_take_uploaded_bytes_and_file_objects(app_dirs, square_photo):
    import io

    path, image, mask = square_photo
    data = path.read_bytes()
    expected = services.remove_background(str(path), model="squares-a").image

    class Upload(io.BytesIO):  # what Streamlit's file_uploader hands over: bytes with a name
        name = "my photo.png"

    with open(path, "rb") as opened:
        sources = [data, bytearray(data), io.BytesIO(data), Upload(data), opened]
        for source in sources:
            assert np.array_equal(services.remove_background(source, model="squares-a").image, expected)
    assert np.array_equal(services.segment(Upload(data), "squares-a").labels,
                          services.segment(str(path), "squares-a").labels)
    assert len(services.compare(data, ["squares-a", "squares-b"]).rows) == 2
    broken = Upload(b"not a picture at all")
    with pytest.raises(SegcoreError, match="^my-photo.png: not an image") as caught:
        services.remove_background(broken, model="squares-a")
    assert "segcore-upload" not in str(caught.value)
    with pytest.raises(SegcoreError, match="empty"):
        services.load_image(b"")
    assert services.upload_name(Upload(data)) == "my-photo.png" and services.upload_name(data) == "upload"


def test_downloads_are_named_after_the_upload(app_dirs, square_photo):
    path, image, _mask = square_photo
    result = services.remove_background(str(path), model="squares-a")
    first = services.download_file(result.image, "/some/upload/cache/astronaut.jpg", "cutout")
    second = services.download_file(result.image, "/elsewhere/astronaut.jpg", "cutout")
    assert first.name == second.name == "astronaut-cutout.png" and first.parent != second.parent
    with Image.open(first) as saved:
        assert saved.mode == "RGBA" and np.array_equal(np.asarray(saved), result.image)
    assert not [name for name in first.parent.iterdir() if name.name != "astronaut-cutout.png"]  # no leftovers
    assert services.download_file(image, b"raw bytes", "blur").name == "image-blur.png"


def test_before_after_is_opaque_and_transparency_is_a_checkerboard(app_dirs, square_photo):
    path, image, mask = square_photo
    cut = services.remove_background(str(path), model="squares-a")
    before, after = cut.before_after()
    assert np.array_equal(before, image) and after.shape == image.shape  # RGB both: nothing shows through
    clear = cut.image[..., 3] == 0
    assert clear.sum() > 1000
    assert set(np.unique(after[clear]).tolist()) == {204, 255}  # the two greys of the checks
    solid = cut.image[..., 3] == 255
    assert np.array_equal(after[solid], image[solid])
    rgba = np.zeros((64, 64, 4), np.uint8)
    board = services.on_checkerboard(rgba, square=8)
    assert board[0, 0, 0] != board[0, 8, 0] and board[0, 0, 0] == board[8, 8, 0]


def test_background_examples_are_photos_of_people():
    names = [path.name for path in services.background_examples()]
    assert names == ["astronaut.jpg", "camera.jpg"]
    assert {"chelsea.jpg", "coffee.jpg", "street-generated.png"} <= {path.name for path in services.example_images()}


def test_explore_captions_say_what_each_picture_shows(app_dirs, square_photo):
    path = str(square_photo[0])
    result = services.segment(path, "squares-a")
    assert result.overlay_caption == "squares-a: semantic mask over the photo: square"
    assert "probability of 'square'" in result.class_map_caption and "squares-a" in result.confidence_caption
    assert result.crf_before_after() is None and "dense CRF off" in result.summary()
    saliency = services.segment(path, "saliency-tiny")
    captions = [saliency.mask_caption, saliency.overlay_caption, saliency.confidence_caption,
                saliency.class_map_caption]
    assert all("saliency-tiny" in caption for caption in captions) and len(set(captions)) == 4
    assert "saliency" not in result.overlay_caption


def test_saliency_legend_is_a_heat_scale(app_dirs, square_photo):
    result = services.segment(str(square_photo[0]), "saliency-tiny")
    legend = result.legend()
    assert [name for name, _, _ in legend] == [f"saliency {low}%-{low + 20}% of peak" for low in (80, 60, 40, 20, 0)]
    assert sum(share for _, _, share in legend) == pytest.approx(1.0)
    hottest, coldest = legend[0][1], legend[-1][1]
    assert int(hottest[1:3], 16) > 150 > int(hottest[5:7], 16)  # red end of JET
    assert int(coldest[5:7], 16) > 150 > int(coldest[1:3], 16)  # blue end
    assert set(result.color_map()) == {name for name, _, _ in legend}
    assert all(name in result.color_map() for _, name in result.annotations())


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (9, 12), (9, 300), (300, 9)])
def test_tiny_images_do_not_crash(app_dirs, shape):
    image = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    result = services.segment(image, "squares-a", crf=True)
    for picture in (result.confidence_map, result.class_map):
        assert picture.shape[0] == shape[0] and picture.shape[1] > shape[1]
    assert services.segment(image, "saliency-tiny").overlay.shape[0] == shape[0]
    assert services.remove_background(image, model="squares-a").image.shape == (*shape, 4)
    assert services.WebcamSession().process(image, model="squares-a").image.shape == (*shape, 4)


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


# ------------------------------------------------------------------------------- fine-tune: checks at Start, jobs
def write_square_zip(path, count: int = 20, split: bool = False, size: int = 64, seed: int = 5):
    """A zip of red-rectangle scenes (images/*.png) with 0/255 masks (masks/*.png), without split.txt."""
    from tests.conftest import make_square_scene

    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, "w") as archive:
        for index in range(count):
            image, mask = make_square_scene(size, size, rng)
            for folder, array in (("images", image), ("masks", (mask * 255).astype(np.uint8))):
                buffer = io.BytesIO()
                Image.fromarray(array).save(buffer, format="PNG")
                archive.writestr(f"{folder}/{index:03d}.png", buffer.getvalue())
    return path


def uploaded_folders(runs):
    return sorted(path.name for path in (runs / "app-data").glob("upload-*")) if (runs / "app-data").is_dir() else []


def test_a_zip_without_split_holds_out_a_seeded_tenth_and_trains_to_the_end(app_dirs, tmp_path):
    upload = write_square_zip(tmp_path / "squares.zip")
    status = services.finetune_start(upload=str(upload), base="scratch: unet", epochs=1, lr=3e-3, batch_size=8,
                                     input_size=64, name="no-split")
    note = "no split.txt: 10 % of the pairs (2) held out for validation, seed 0"
    assert note in status["notes"] and note in status["dataset_report"]
    final = services.job_manager().wait(status["id"], timeout=180)
    assert final["state"] == "finished", final["error"]
    assert note in final["notes"] and final["history"][0]["images"] == 2  # validated on the 2 held-out pairs
    # the dataset unpacked from the upload is removed once its job has ended
    assert "/app-data/upload-" in final["data"] and not Path(final["data"]).exists()
    first = services.prepare_dataset(str(upload))[0]
    split = (first / "split.txt").read_text().split()
    assert split.count("val") == 2 and split.count("train") == 18
    # the same zip again gets the same split (seed 0)
    again = services.prepare_dataset(str(upload))[0]
    assert (again / "split.txt").read_text() == (first / "split.txt").read_text()
    # a fresh model takes its classes from the data
    trained = services.find_model("fine-tuned/no-split")
    assert trained.class_names == ("background", "foreground")
    assert final["start_metric"] is None and not final.get("worse_than_start")


def test_a_fine_tune_of_a_saved_binary_model_keeps_its_classes_and_says_when_it_got_worse(app_dirs, tmp_path):
    upload = write_square_zip(tmp_path / "squares.zip")
    # lr 1.0 with Adam wrecks the trained squares-a in its first steps
    status = services.finetune_start(upload=str(upload), base="from: squares-a", epochs=1, lr=1.0, batch_size=8,
                                     input_size=64, name="too-fast")
    final = services.job_manager().wait(status["id"], timeout=180)
    assert final["state"] == "finished", final["error"]
    start = final["start_metric"]
    assert start["metric"] == "fg_iou" and start["images"] == 2 and start["value"] > 0.6
    assert final["best_value"] < start["value"] and final["worse_than_start"] is True
    assert "WORSE than the starting model squares-a" in final["message"]
    assert f"{start['value']:.4f} before" in final["message"]
    recorded = json.loads((Path(final["job_dir"]) / "job.json").read_text())
    assert recorded["start_metric"] == start and recorded["worse_than_start"] is True
    trained = services.find_model("fine-tuned/too-fast")
    assert trained.class_names == ("background", "square")  # not background/foreground from the 0/255 masks
    assert trained.config["class_colors"] == services.find_model("squares-a").config["class_colors"]
    from app import gradio_ui

    assert "WORSE than the starting model" in services.job_status_text(final)
    assert "starting model squares-a: fg_iou" in services.job_status_text(final)


def _palette_mask(values: np.ndarray) -> Image.Image:
    mask = Image.fromarray(values.astype(np.uint8), mode="P")
    mask.putpalette([0, 0, 0, 255, 255, 255] + [120, 0, 0] * 254)
    return mask


def test_a_bad_zip_and_bad_numbers_list_every_problem_on_its_own_line_without_server_paths(app_dirs, tmp_path):
    upload = tmp_path / "bad.zip"
    with zipfile.ZipFile(upload, "w") as archive:
        def put(name, picture):
            buffer = io.BytesIO()
            picture.save(buffer, format="PNG")
            archive.writestr(name, buffer.getvalue())

        square = np.zeros((32, 32), dtype=np.uint8)
        square[8:20, 8:20] = 1
        for index in range(3):
            put(f"data/images/{index}.png", Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)))
        put("data/masks/0.png", _palette_mask(square))
        put("data/masks/1.png", _palette_mask(np.zeros((16, 32), dtype=np.uint8)))  # not the image's size
        put("data/masks/2.png", _palette_mask(square * 5))  # index 5: squares-a has 2 classes
    with pytest.raises(services.FinetuneProblems) as caught:
        services.finetune_start(upload=str(upload), base="from: squares-a", epochs=0, lr=float("nan"),
                                batch_size=-1, input_size=4096)
    problems = caught.value.problems
    expected = ["epochs must be between 1 and 1000, not 0", "learning rate must be a finite number, not nan",
                "batch size must be between 1 and 256, not -1", "input size must be between 32 and 1024, not 4096",
                "masks/1.png: the mask is 32x16 but its image images/1.png is 32x32",
                "masks/2.png: class indices [5] but the starting model has 2 classes"]
    for text in expected:
        assert sum(text in problem for problem in problems) == 1, (text, problems)
    message = str(caught.value)
    assert message.splitlines()[1:] == [f"- {problem}" for problem in problems]  # one problem per line
    for folder in (str(tmp_path), str(app_dirs[1]), str(services.ROOT)):
        assert folder not in message
    assert services.job_manager().jobs() == [] and uploaded_folders(app_dirs[1]) == []

    # an archive refused as a whole is one problem, named by its file name only
    text = tmp_path / "notes.zip"
    text.write_text("not a zip")
    with pytest.raises(services.FinetuneProblems) as caught:
        services.finetune_start(upload=str(text), base="scratch: unet", epochs=1, lr=1e-3, batch_size=4,
                                input_size=64)
    assert caught.value.problems == [caught.value.problems[0]] and "notes.zip: not a readable zip" in str(caught.value)
    assert str(tmp_path) not in str(caught.value)
    # too few pairs, and a split.txt without a validation split
    few = write_square_zip(tmp_path / "few.zip", count=2)
    with pytest.raises(services.FinetuneProblems, match="only 2 image/mask pair"):
        services.finetune_start(upload=str(few), base="scratch: unet", epochs=1, lr=1e-3, batch_size=4,
                                input_size=64)
    no_val = write_square_zip(tmp_path / "no-val.zip", count=4)
    with zipfile.ZipFile(no_val, "a") as archive:
        archive.writestr("split.txt", "000 train\n001 train\n002 train\n003 test\n")
    with pytest.raises(services.FinetuneProblems, match="split.txt: no image/mask pair is in the 'val' split"):
        services.finetune_start(upload=str(no_val), base="scratch: unet", epochs=1, lr=1e-3, batch_size=4,
                                input_size=64)
    assert services.job_manager().jobs() == [] and uploaded_folders(app_dirs[1]) == []


def test_jobs_on_disk_are_listed_and_resumed_by_the_manager_made_at_launch(app_dirs, tmp_path):
    from app import gradio_ui
    from app.jobs import JobManager

    dataset = services.prepare_dataset(sample=next(iter(services.SAMPLE_DATASETS)))[0]
    config = services.finetune_config(dataset, "scratch: unet", epochs=1, lr=3e-3, batch_size=8, input_size=64,
                                      freeze_encoder=False)
    earlier_app = JobManager(app_dirs[1] / "app-jobs", autostart=False)  # an app stopped before running it
    first = earlier_app.submit(config, name="left-queued", notes=["a note"])
    earlier_app.shutdown()

    assert services.start_job_manager() is None  # what launch() calls
    final = services.job_manager().wait(first, timeout=180)  # ran without anyone opening the tab
    assert final["state"] == "finished" and final["notes"] == ["a note"]
    rows = services.finetune_jobs()
    assert [(row["id"], row["name"], row["state"]) for row in rows] == [(first, "left-queued", "finished")]
    picker, table = gradio_ui._job_list()
    assert picker["choices"][0][1] == first and picker["value"] == first
    assert table["name"].tolist() == ["left-queued"]


def write_model_copy(source, target, **config_changes):
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    config.update(config_changes)
    (target / "config.json").write_text(json.dumps(config))


def test_binary_models_with_different_class_names_compare_as_foreground_vs_background(app_dirs, square_photo,
                                                                                    tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    write_model_copy(app_dirs[0] / "squares-a", weights / "squares-a")
    write_model_copy(app_dirs[0] / "squares-b", weights / "people-b", class_names=["background", "person"])
    monkeypatch.setattr(services, "WEIGHTS_DIR", weights)
    path, _image, mask = square_photo
    truth = tmp_path / "truth.png"
    Image.fromarray((mask * 255).astype(np.uint8)).save(truth)
    result = services.compare(str(path), ["squares-a", "people-b"], str(truth))
    assert any("foreground differently (square, person)" in note for note in result.notes)
    for row in result.rows:
        assert row.metrics["iou"] == pytest.approx(iou(row.labels == 1, mask == 1), abs=1e-6)
    assert result.rows[0].metrics["iou"] > 0.8
    share = (result.rows[0].labels != result.rows[1].labels).mean()
    assert (share > 0) == bool((result.disagreement[:, :200] != result.disagreement[0, 0]).any())
    # models whose class 0 is not background stay incomparable with a truth
    write_model_copy(app_dirs[0] / "squares-b", weights / "odd", class_names=["square", "background"])
    with pytest.raises(SegcoreError, match="same classes, or two-class models whose class 0 is background"):
        services.compare(str(path), ["squares-a", "odd"], str(truth))


def test_a_camvid_truth_with_void_11_is_scored_with_the_void_left_out(app_dirs, square_photo, tmp_path, monkeypatch):
    import torch

    import segcore
    from segcore.data.datasets import CAMVID_CLASSES, CAMVID_COLORS
    from segcore.metrics import ConfusionMatrix

    weights = tmp_path / "weights"
    for seed, name in ((3, "camvid-a"), (4, "camvid-b")):
        torch.manual_seed(seed)
        model = segcore.create_model("unet", num_classes=11, width=8).eval()
        segcore.save_pretrained(model, weights / name, class_names=CAMVID_CLASSES, class_colors=CAMVID_COLORS,
                                input_size=(64, 64), normalization="imagenet",
                                training={"recipe": {"dataset": "camvid", "dataset_kwargs": {}}})
    write_model_copy(app_dirs[0] / "squares-a", weights / "squares-a")
    write_model_copy(app_dirs[0] / "squares-b", weights / "squares-b")
    monkeypatch.setattr(services, "WEIGHTS_DIR", weights)
    path = square_photo[0]
    truth = np.random.default_rng(0).integers(0, 11, size=(160, 200)).astype(np.uint8)
    truth[:40] = 11  # CamVid's "Unlabelled"
    truth_path = tmp_path / "camvid-truth.png"
    Image.fromarray(truth).save(truth_path)
    result = services.compare(str(path), ["camvid-a", "camvid-b"], str(truth_path))
    assert any("left out of the scores" in note for note in result.notes)
    for row in result.rows:
        labelled = truth != 11
        assert row.metrics["pixel_acc"] == pytest.approx((row.labels == truth)[labelled].mean(), abs=1e-6)
        expected = ConfusionMatrix(11, ignore_index=11).update(row.labels, truth.astype(np.int64)).compute()
        assert row.metrics["miou"] == pytest.approx(expected["miou"], abs=1e-6)
    # a model not trained on CamVid declares no void 11: a truth holding 11 is refused, naming the classes
    with pytest.raises(SegcoreError, match="class index 11 but the models know 2 classes"):
        services.compare(str(path), ["squares-a", "squares-b"], str(truth_path))
