"""The MediaPipe selfie-segmenter peer: confidence -> Prediction, the worker protocol, errors and `eval --peer`.

None of it needs mediapipe: a fake backend, or a fake `mediapipe` package run through the real worker process,
stands in for it. Only the last test runs the real model, when mediapipe (or SEGCORE_MEDIAPIPE_PYTHON) is there.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segcore import peers
from segcore.cli import main
from segcore.errors import SegcoreError
from segcore.peers import MediaPipeWorker, open_peer
from tests.conftest import make_square_scene

ROOT = Path(__file__).resolve().parent.parent

FAKE_SOLUTION = '''
import numpy as np

class SelfieSegmentation:
    def __init__(self, model_selection=0):
        self.model_selection = model_selection

    def process(self, image):
        if image.shape[1] == 13:
            raise RuntimeError("fake failure on width 13")
        red = image[..., 0].astype(np.float32) / 255
        mask = red if self.model_selection == 0 else 1 - red

        class Result:
            segmentation_mask = mask
        return Result()
'''


def red_confidence(image: np.ndarray) -> np.ndarray:
    return image[..., 0].astype(np.float32) / 255


def make_fake_python(folder: Path, with_solution: bool = True) -> Path:
    """A `python` for SEGCORE_MEDIAPIPE_PYTHON: this interpreter with a fake mediapipe package on its path."""
    package = folder / "site" / "mediapipe"
    (package / "python" / "solutions").mkdir(parents=True)
    (package / "__init__.py").write_text("__version__ = '0.0-fake'\n")
    (package / "python" / "__init__.py").write_text("")
    (package / "python" / "solutions" / "__init__.py").write_text("")
    if with_solution:  # without it, it looks like mediapipe >= 0.10.30, which dropped the selfie segmenter
        (package / "python" / "solutions" / "selfie_segmentation.py").write_text(FAKE_SOLUTION)
    python = folder / "python"
    # The worker is started with -I, which would hide PYTHONPATH: drop it for the fake.
    python.write_text(f'#!/bin/sh\n[ "$1" = "-I" ] && shift\nPYTHONPATH="{folder / "site"}" exec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    return python


@pytest.fixture
def no_mediapipe(monkeypatch):
    """As on CI: mediapipe cannot be imported and no separate interpreter is named."""
    monkeypatch.delenv(peers.PYTHON_VARIABLE, raising=False)
    monkeypatch.setitem(sys.modules, "mediapipe", None)


def test_confidence_becomes_two_class_probabilities_and_labels_at_the_image_size():
    height, width = 7, 11
    confidence = np.linspace(-0.2, 1.2, height * width, dtype=np.float32).reshape(height, width)
    confidence[3, 4] = 0.5  # exactly 0.5 is background: labels are p > 0.5
    peer = open_peer("mediapipe", backend=lambda image: confidence)
    prediction = peer.predict(np.zeros((height, width, 3), dtype=np.uint8))
    person = np.clip(confidence, 0, 1)
    assert prediction.probabilities.shape == (2, height, width) and prediction.probabilities.dtype == np.float32
    np.testing.assert_allclose(prediction.probabilities[1], person)
    np.testing.assert_allclose(prediction.probabilities.sum(axis=0), 1.0, atol=1e-6)
    assert prediction.labels.dtype == np.int64 and prediction.labels[3, 4] == 0
    np.testing.assert_array_equal(prediction.labels, (person > 0.5).astype(np.int64))
    assert prediction.latency_ms >= 0 and peer.latency_summary()["median_ms"] == pytest.approx(prediction.latency_ms)
    assert peer.config["task"] == "portrait" and peer.num_classes == 2 and peer.class_names == ["background", "person"]
    assert open_peer("mediapipe-landscape", backend=red_confidence).config["input_size"] == [144, 256]


def test_a_mask_of_the_wrong_size_is_a_bug_not_a_silent_resize():
    peer = open_peer("mediapipe", backend=lambda image: np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(RuntimeError, match=r"\(4, 4\) mask for a \(5, 6\) image"):
        peer.predict(np.zeros((5, 6, 3), dtype=np.uint8))


def test_unknown_peer_lists_the_known_ones():
    with pytest.raises(SegcoreError, match="not one of mediapipe, mediapipe-landscape, and unknown model .deeplab-tf."):
        open_peer("deeplab-tf")


def test_without_mediapipe_the_error_gives_the_setup_commands(no_mediapipe):
    with pytest.raises(SegcoreError) as caught:
        open_peer("mediapipe")
    message = str(caught.value)
    assert f"pip install mediapipe=={peers.MEDIAPIPE_VERSION}" in message
    assert "export SEGCORE_MEDIAPIPE_PYTHON=" in message and "docs/benchmarks.md" in message


def test_eval_without_mediapipe_exits_1_with_the_setup_commands(no_mediapipe, tmp_path, capsys):
    assert main(["eval", "--peer", "mediapipe", "--data", str(tmp_path), "--split", "val"]) == 1
    assert f"pip install mediapipe=={peers.MEDIAPIPE_VERSION}" in capsys.readouterr().err


def test_a_missing_interpreter_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv(peers.PYTHON_VARIABLE, str(tmp_path / "no-venv" / "bin" / "python"))
    with pytest.raises(SegcoreError, match="no-venv/bin/python: no Python interpreter there; set it up"):
        open_peer("mediapipe")


@pytest.mark.parametrize("others", [["--model", "runs/x/best"], ["--baseline", "center-bias"]])
def test_eval_refuses_a_peer_together_with_a_model_or_baseline(others, tmp_path, capsys):
    assert main(["eval", "--peer", "mediapipe", *others, "--data", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert f"{others[0]} and --peer" in error and "give only one of them" in error


def test_the_worker_process_answers_images_in_order_and_survives_a_failing_one(tmp_path):
    python = make_fake_python(tmp_path)
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, size=shape, dtype=np.uint8) for shape in ((5, 8, 3), (31, 17, 3), (1, 1, 3))]
    worker = MediaPipeWorker(python, model_selection=0)
    try:
        assert worker.version == "0.0-fake" and str(python) in worker.description
        for image in images:
            np.testing.assert_array_equal(worker(image), red_confidence(image))
        with pytest.raises(RuntimeError, match="fake failure on width 13"):
            worker(np.zeros((4, 13, 3), dtype=np.uint8))
        np.testing.assert_array_equal(worker(images[1]), red_confidence(images[1]))
    finally:
        worker.close()
    assert worker._process.returncode == 0, "the worker exits cleanly when its input closes"
    landscape = MediaPipeWorker(python, model_selection=1)
    try:
        np.testing.assert_allclose(landscape(images[0]), 1 - red_confidence(images[0]), atol=1e-6)
    finally:
        landscape.close()


def test_an_interpreter_whose_mediapipe_has_no_selfie_segmenter_is_reported(tmp_path):
    python = make_fake_python(tmp_path, with_solution=False)
    with pytest.raises(SegcoreError) as caught:
        MediaPipeWorker(python, model_selection=0)
    message = str(caught.value)
    assert "could not run the MediaPipe worker" in message and "cannot load the selfie segmenter" in message
    assert f"pip install mediapipe=={peers.MEDIAPIPE_VERSION}" in message


@pytest.mark.parametrize("with_solution", [True, False])
def test_mediapipe_importable_here_runs_in_process(with_solution, monkeypatch, tmp_path):
    make_fake_python(tmp_path, with_solution=with_solution)
    monkeypatch.delenv(peers.PYTHON_VARIABLE, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for name in [name for name in sys.modules if name == "mediapipe" or name.startswith("mediapipe.")]:
        monkeypatch.delitem(sys.modules, name)
    try:
        if with_solution:
            image = np.random.default_rng(4).integers(0, 256, size=(9, 6, 3), dtype=np.uint8)
            peer = open_peer("mediapipe")
            assert peer.config["runtime"].startswith("mediapipe in-process")
            np.testing.assert_allclose(peer.predict(image).probabilities[1], red_confidence(image))
        else:
            with pytest.raises(SegcoreError, match=r"mediapipe 0\.0-fake in .* has no selfie segmenter"):
                open_peer("mediapipe")
    finally:  # the fake must not stay imported for later tests
        for name in [name for name in sys.modules if name == "mediapipe" or name.startswith("mediapipe.")]:
            del sys.modules[name]


def test_eval_peer_scores_with_the_project_metrics_and_records_without_training(monkeypatch, tmp_path, capsys):
    rng = np.random.default_rng(5)
    root = tmp_path / "squares"
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
    for index in range(3):
        image, mask = make_square_scene(40, 50, rng)
        Image.fromarray(image).save(root / "images" / f"{index}.png")
        Image.fromarray((mask * 255).astype(np.uint8)).save(root / "masks" / f"{index}.png")
    (root / "split.txt").write_text("0 val\n1 val\n2 train\n")
    python = make_fake_python(tmp_path)  # the real worker process, with the red channel as "person confidence"
    monkeypatch.setenv(peers.PYTHON_VARIABLE, str(python))
    record = tmp_path / "peer.json"
    code = main(["eval", "--peer", "mediapipe", "--data", str(root), "--split", "val", "--json", "--record", str(record)])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["images"] == 2 and metrics["fg_iou"] == 1.0 and metrics["boundary_f1"] == 1.0
    assert metrics["median_ms"] > 0 and metrics["model"].startswith("mediapipe (mediapipe 0.0-fake worker")
    assert json.loads(record.read_text()) == metrics, "a peer's record is its result, without a training summary"


def _real_mediapipe_available() -> bool:
    if os.environ.get(peers.PYTHON_VARIABLE):
        return True
    try:
        return importlib.util.find_spec("mediapipe") is not None
    except ValueError:
        return False


@pytest.mark.skipif(not _real_mediapipe_available(),
                    reason="needs mediapipe here or SEGCORE_MEDIAPIPE_PYTHON (docs/benchmarks.md)")
@pytest.mark.parametrize("name", ["mediapipe", "mediapipe-landscape"])
def test_the_real_selfie_segmenter_finds_the_astronaut(name):
    from segcore import read_image

    image = read_image(ROOT / "assets" / "examples" / "astronaut.jpg")  # 512x512, Eileen Collins, upper body
    with open_peer(name) as peer:
        labels = peer.predict(image).labels
        odd = peer.predict(image[:301, :203])
    assert labels[64:256, 192:256].mean() > 0.95, "her face and shoulders are person"
    assert labels[:128, 448:].mean() < 0.05 and labels[:64, :64].mean() < 0.05, "the top corners are background"
    assert 0.3 < labels.mean() < 0.8
    assert odd.labels.shape == (301, 203) and odd.probabilities.shape == (2, 301, 203)
