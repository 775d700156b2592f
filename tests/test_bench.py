"""`bench predict` and `bench webcam`: what a user gets end to end (decoded RGB in, labels + alpha out), from one
or several callers, against a peer in the same run. Timings are reported, never asserted; what is checked is
that the figures are the right ones: every call counted, the accuracy pooled over the right images, the peer run
through the real worker process (a fake mediapipe package stands in for it)."""

from __future__ import annotations

import json

import cv2

import numpy as np
import pytest
from PIL import Image

from segcore import bench, peers
from segcore.cli import main
from segcore.errors import SegcoreError
from tests.conftest import make_square_scene
from tests.test_peers import make_fake_python


@pytest.fixture
def squares(tmp_path):
    """Four 40x50 square scenes as images/ + masks/ folders (masks 0/255), and the same with a split file."""
    rng = np.random.default_rng(5)
    for folder in ("images", "masks"):
        (tmp_path / "squares" / folder).mkdir(parents=True)
    for index in range(4):
        image, mask = make_square_scene(40, 50, rng)
        Image.fromarray(image).save(tmp_path / "squares" / "images" / f"{index}.png")
        Image.fromarray((mask * 255).astype(np.uint8)).save(tmp_path / "squares" / "masks" / f"{index}.png")
    (tmp_path / "squares" / "split.txt").write_text("0 test\n1 test\n2 test\n3 train\n")
    return tmp_path / "squares"


def test_bench_images_pairs_masks_by_stem_and_reads_splits(squares):
    samples = bench.bench_images(images=str(squares / "images"), masks=str(squares / "masks"))
    assert [name for name, _, _ in samples] == ["0.png", "1.png", "2.png", "3.png"]
    name, image, mask = samples[0]
    assert image.shape == (40, 50, 3) and image.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    assert len(bench.bench_images(data=str(squares), split="test")) == 3
    with pytest.raises(SegcoreError, match="not both"):
        bench.bench_images(images=str(squares / "images"), data=str(squares))
    (squares / "masks" / "2.png").unlink()
    with pytest.raises(SegcoreError, match="no mask for 2.png"):
        bench.bench_images(images=str(squares / "images"), masks=str(squares / "masks"))


class CountingPredictor:
    """Labels = the red channel > 127 (right on square scenes), counting calls from every thread."""

    def __init__(self):
        import threading

        self.calls, self._lock = 0, threading.Lock()

    def predict(self, image):
        from segcore.inference import Prediction

        with self._lock:
            self.calls += 1
        red = image[..., 0].astype(np.float32) / 255.0
        return Prediction((red > 0.5).astype(np.int64), alpha=red)


def test_predict_benchmark_counts_every_call_and_pools_the_accuracy(squares):
    samples = bench.bench_images(images=str(squares / "images"), masks=str(squares / "masks"))
    predictor = CountingPredictor()
    single = bench.predict_benchmark(predictor, samples, callers=1, passes=2, warmup=1, name="red")
    assert single["calls"] == 8 and single["images"] == 4
    assert single["fg_iou"] == pytest.approx(100.0)  # the red squares are exactly the masks
    assert predictor.calls == 1 + 4 + 8  # warm-up, accuracy pass, timed passes
    assert single["p95_ms"] >= single["median_ms"] > 0 and single["images_per_second"] > 0
    several = bench.predict_benchmark(predictor, samples, callers=3, passes=1, warmup=0, name="red")
    assert several["calls"] == 12 and several["fg_iou"] is None
    table = bench.predict_table([single, several], peer="red")
    assert table.splitlines()[2].startswith("| red |  |") and table.splitlines()[2].endswith("| 100.00 | 1.00x |")


def test_bench_predict_cli_runs_model_and_peer_on_the_same_images(trained_model_dir, squares, monkeypatch,
                                                                  tmp_path, capsys):
    monkeypatch.setenv(peers.PYTHON_VARIABLE, str(make_fake_python(tmp_path)))  # red channel as "person"
    record = tmp_path / "bench.json"
    code = main(["bench", "predict", "--model", str(trained_model_dir), "--data", str(squares), "--split", "test",
                 "--peer", "mediapipe", "--concurrency", "1", "2", "--runtime", "torch", "onnxruntime",
                 "--record", str(record)])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "3 images, end to end (decoded RGB in, labels + alpha out)" in printed
    results = json.loads(record.read_text())["results"]
    assert [(r["predictor"], r["runtime"], r["callers"]) for r in results] == [
        ("mediapipe", "mediapipe 0.0-fake worker", 1), ("tiny-unet", "torch", 1), ("tiny-unet", "torch", 2),
        ("tiny-unet", "onnxruntime", 1), ("tiny-unet", "onnxruntime", 2)]
    assert results[0]["fg_iou"] == pytest.approx(100.0)
    assert results[1]["fg_iou"] > 80 and results[1]["fg_iou"] == pytest.approx(results[3]["fg_iou"], abs=0.5)
    assert all(r["calls"] == 3 * r["callers"] for r in results)
    assert main(["bench", "predict", "--model", str(trained_model_dir), "--images", str(squares / "images"),
                 "--runtime", "tensorrt"]) == 1
    assert "unknown runtime 'tensorrt'" in capsys.readouterr().err


def test_bench_predict_times_test_time_augmentation_beside_the_plain_model(trained_model_dir, squares, tmp_path,
                                                                          capsys):
    record = tmp_path / "tta.json"
    code = main(["bench", "predict", "--model", str(trained_model_dir), "--data", str(squares), "--split", "test",
                 "--tta", "none", "flip", "--record", str(record)])
    assert code == 0, capsys.readouterr().err
    plain, flipped = json.loads(record.read_text())["results"]
    assert (plain["predictor"], flipped["predictor"]) == ("tiny-unet", "tiny-unet (tta flip)")
    assert flipped["fg_iou"] > 80 and flipped["fg_iou"] == pytest.approx(plain["fg_iou"], abs=5)
    assert main(["bench", "predict", "--model", str(trained_model_dir), "--data", str(squares), "--tta", "sideways"]) == 1
    assert "unknown test-time augmentation 'sideways'" in capsys.readouterr().err


def test_bench_predict_skips_a_runtime_a_model_cannot_run_in(trained_model_dir, squares, tmp_path, capsys):
    """The tiny model has no int8 graph: beside another runtime it is skipped with a line; alone it is the error."""
    record = tmp_path / "runtimes.json"
    code = main(["bench", "predict", "--model", str(trained_model_dir), "--data", str(squares), "--split", "test",
                 "--runtime", "onnxruntime-int8", "onnxruntime", "--record", str(record)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"skipped {trained_model_dir} in onnxruntime-int8: unet: this model has no int8 graph" in err
    assert [r["runtime"] for r in json.loads(record.read_text())["results"]] == ["onnxruntime"]
    assert main(["bench", "predict", "--model", str(trained_model_dir), "--data", str(squares), "--split", "test",
                 "--runtime", "onnxruntime-int8"]) == 1
    assert "error: unet: this model has no int8 graph; make one with `python -m segcore quantize" in (
        capsys.readouterr().err)


def test_bench_webcam_composites_every_frame_at_640x480(trained_model_dir, squares, tmp_path, capsys):
    record = tmp_path / "webcam.json"
    code = main(["bench", "webcam", "--model", str(trained_model_dir), "--images", str(squares / "images"),
                 "--mode", "replace", "--passes", "2", "--record", str(record)])
    assert code == 0, capsys.readouterr().err
    result = json.loads(record.read_text())["results"][0]
    assert result["frame"] == [480, 640] and result["frames"] == 8 and result["mode"] == "replace"
    assert result["median_ms"] >= result["model_ms"] > 0 and result["frames_per_second"] > 0
    frames = bench.webcam_frames([("a", np.zeros((100, 300, 3), np.uint8), None)])
    assert frames[0].shape == (480, 640, 3)


def test_matte_benchmark_scores_each_variant():
    """On generated scenes with a blurry stand-in model: refining and sharpening cut the partly transparent
    pixels away from the boundary, and the table shows every variant."""
    rng = np.random.default_rng(0)

    class BlurryModel:  # the true mask, blurred and squashed toward 0.5: a network's wide unsure band
        def predict(self, image):
            mask = (image[..., 0] > 120).astype(np.float32)
            alpha = 0.5 + 0.8 * (cv2.GaussianBlur(mask, (0, 0), 4) - 0.5)
            return type("P", (), {"alpha": alpha.astype(np.float32)})()

    samples = []
    for index in range(3):
        image = rng.integers(0, 60, (96, 128, 3), dtype=np.uint8)
        mask = np.zeros((96, 128), np.int64)
        mask[20 + index : 80, 30 : 90 + index] = 1
        image[mask == 1] += np.uint8(150)
        samples.append((f"scene{index}", image, mask))
    rows = bench.matte_benchmark(BlurryModel(), samples, name="blurry")
    by_variant = {row["variant"]: row for row in rows}
    assert set(by_variant) == {"probability", "sharpened", "refined", "foreground colours"}
    assert by_variant["probability"]["stray_soft"] > 0.05
    assert by_variant["sharpened"]["stray_soft"] < 0.5 * by_variant["probability"]["stray_soft"]
    assert by_variant["refined"]["stray_soft"] < 0.01
    assert by_variant["refined"]["sad"] < by_variant["probability"]["sad"]
    table = bench.matte_table(rows)
    assert "| blurry | refined | 3 |" in table and "+ foreground colours" in table
    colours = by_variant["foreground colours"]  # each scene laid over the next one's: a halo was measured
    assert colours["halo_photo"] > 0 and colours["halo_estimated"] > 0 and colours["ms"] > 0
    assert "| blurry | 3 |" in bench.halo_table(rows)


def test_replace_halo_is_zero_for_a_hard_matte_and_grows_with_a_contrasting_old_background():
    rng = np.random.default_rng(1)
    image = np.full((64, 64, 3), 200, np.uint8)
    hard = np.zeros((64, 64), np.float32)
    hard[16:48, 16:48] = 1.0
    assert bench.replace_halo(image, hard, rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))["halo_photo"] == 0.0
    soft = cv2.GaussianBlur(hard, (0, 0), 3)
    dark, light = np.zeros((64, 64, 3), np.uint8), np.full((64, 64, 3), 190, np.uint8)
    halo_dark = bench.replace_halo(image, soft, dark)
    assert halo_dark["halo_photo"] > 5 * bench.replace_halo(image, soft, light)["halo_photo"]
    # estimated colours carry less of the dark old background into the new one (blur fusion's two passes leave
    # about half of it on this small flat scene; 40 % less on the Shen photos, docs/benchmarks.md)
    assert halo_dark["halo_estimated"] < 0.7 * halo_dark["halo_photo"]
