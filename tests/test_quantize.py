"""Static int8 quantisation: the graph is kept only when it passes the accuracy and speed gates, runs as the model's
runtime where it was kept, and is never run for other weights than those it was made from."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from safetensors.torch import save_file

import segcore
from segcore.cli import main
from segcore.engine.data import open_dataset
from segcore.errors import SegcoreError
from segcore.inference import preferred_runtime
from segcore.quantize import CARD_SECTION, INT8_NAME, INT8_RUNTIME


@pytest.fixture
def model_copy(trained_model_dir, tmp_path):
    folder = tmp_path / "tiny"
    shutil.copytree(trained_model_dir, folder)
    return folder


def _quantize(folder, data, *extra):
    return main(["quantize", "--model", str(folder), "--data", str(data), "--split", "test",
                 "--calibration-split", "train", *extra])


def test_int8_graph_is_kept_with_its_measurements_and_runs_as_the_models_runtime(model_copy, square_dataset,
                                                                                   capsys):
    # the speed gate is the only part that depends on the machine; it has its own test below
    assert _quantize(model_copy, square_dataset, "--min-speedup", "0") == 0, capsys.readouterr().err
    assert "int8 graph written, runtime onnxruntime-int8" in capsys.readouterr().out
    config = json.loads((model_copy / "config.json").read_text())
    entry = config["int8"]
    assert config["runtime"] == INT8_RUNTIME and entry["file"] == INT8_NAME and (model_copy / INT8_NAME).is_file()
    assert entry["calibration"]["images"] == 2 and entry["evaluated"]["images"] == 4
    assert entry["drop_points"] == pytest.approx(100 * (entry["float"] - entry["int8"])) and entry["drop_points"] <= 0.2
    # the first choice that kept the accuracy: every earlier one lost more than 0.2 points
    assert entry["tried"][-1]["float_convolutions"] == entry["float_convolutions"]
    assert all(earlier["drop_points"] > 0.2 for earlier in entry["tried"][:-1])
    assert entry["float"] > 0.8, "the tiny U-Net really segments the squares"
    assert set(entry["end_to_end_ms"]) == {"torch", "onnxruntime", INT8_RUNTIME}
    card = (model_copy / "README.md").read_text()
    assert card.count(CARD_SECTION) == 1
    assert f"| fg IoU, float (ONNX Runtime) | {100 * entry['float']:.2f} % |" in card
    assert f"| fg IoU, int8 (" in card and f") | {100 * entry['int8']:.2f} % |" in card

    model = segcore.load_pretrained(model_copy)
    assert preferred_runtime(model.segcore_config) == INT8_RUNTIME
    int8 = segcore.Segmenter(model, runtime=INT8_RUNTIME)
    plain = segcore.Segmenter(model, runtime="torch")
    assert int8.runtime == INT8_RUNTIME
    dataset = open_dataset("folder", str(square_dataset), "test", evaluation=True)
    for index in range(len(dataset)):
        image, mask = dataset.load(index)
        labels = int8.predict(image).labels
        assert (labels == plain.predict(image).labels).mean() > 0.98
        assert (labels == np.asarray(mask)).mean() > 0.95
    # quantising again replaces the card's section instead of adding a second one
    assert _quantize(model_copy, square_dataset, "--min-speedup", "0") == 0
    assert (model_copy / "README.md").read_text().count(CARD_SECTION) == 1


@pytest.mark.parametrize("gate, why", [
    (["--min-speedup", "1000"], "int8 took"),  # no graph runs 1000x faster
    (["--max-drop", "-100", "--min-speedup", "0"], "fg_iou dropped more than -100.0 points however many convolutions "
     "stayed in float (every convolution in int8: "),  # none gains 100 points, whichever layers stay in float
])
def test_a_graph_that_fails_a_gate_is_not_kept_and_nothing_changes(model_copy, square_dataset, capsys, gate, why):
    before = {path.name: path.read_bytes() for path in model_copy.iterdir()}
    assert _quantize(model_copy, square_dataset, *gate) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: int8 not kept for tiny: {why}") and "fg IoU float" in err[0]
    if "dropped" in why:
        assert "the last convolution in float: " in err[0] and "the first and last convolutions in float: " in err[0]
    assert {path.name: path.read_bytes() for path in model_copy.iterdir()} == before
    with pytest.raises(SegcoreError, match="has no int8 graph; make one with `python -m segcore quantize"):
        segcore.Segmenter.from_pretrained(model_copy, runtime=INT8_RUNTIME)


def test_changed_weights_never_run_a_stale_graph(model_copy, square_dataset):
    from app import services

    assert _quantize(model_copy, square_dataset, "--min-speedup", "0") == 0
    model = segcore.load_pretrained(model_copy)
    changed = {name: tensor + 0.01 if tensor.is_floating_point() else tensor
               for name, tensor in model.state_dict().items()}
    save_file({name: tensor.contiguous() for name, tensor in changed.items()}, str(model_copy / "model.safetensors"))
    with pytest.raises(SegcoreError, match="made from other weights"):
        segcore.Segmenter.from_pretrained(model_copy, runtime=INT8_RUNTIME)
    # the app falls back to the float export of the weights it has
    assert services._load_segmenter(model_copy).runtime == "onnxruntime"
    # a model saved from it (a fine-tune, a re-ship) carries neither the graph's entry nor its runtime
    segcore.save_pretrained(segcore.load_pretrained(model_copy), model_copy.parent / "resaved")
    config = json.loads((model_copy.parent / "resaved" / "config.json").read_text())
    assert "int8" not in config and "runtime" not in config
    assert not (model_copy.parent / "resaved" / INT8_NAME).exists()
    assert preferred_runtime(config) == "onnxruntime"
    # re-saving into the folder itself is allowed (the int8 graph is one of a saved model's files) and removes it
    segcore.save_pretrained(segcore.load_pretrained(model_copy), model_copy)
    assert not (model_copy / INT8_NAME).exists()


def test_a_hub_model_brings_its_int8_graph(model_copy, square_dataset, tmp_path, monkeypatch):
    import huggingface_hub

    assert _quantize(model_copy, square_dataset, "--min-speedup", "0") == 0
    calls = []

    def fake_download(repo_id, filename, revision=None, local_files_only=False, **kwargs):
        calls.append(filename)
        cache = tmp_path / "hub-cache"
        cache.mkdir(exist_ok=True)
        shutil.copy(model_copy / filename, cache / filename)
        return str(cache / filename)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    segmenter = segcore.Segmenter.from_pretrained("segcore/tiny-int8", runtime=INT8_RUNTIME)
    assert calls == ["config.json", "model.safetensors", INT8_NAME] and segmenter.runtime == INT8_RUNTIME


@pytest.mark.parametrize("args, message", [
    (["--calibration-images", "0"], "--calibration-images must be at least 1"),
    (["--calibration-split", "nosuchsplit"], "nosuchsplit"),
])
def test_bad_requests_are_one_error_line(model_copy, square_dataset, capsys, args, message):
    assert _quantize(model_copy, square_dataset, *args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]
    assert not (model_copy / INT8_NAME).exists()


def test_a_saliency_model_is_refused(model_copy, tmp_path, capsys):
    config = json.loads((model_copy / "config.json").read_text())
    (model_copy / "config.json").write_text(json.dumps({**config, "task": "saliency"}))
    assert main(["quantize", "--model", str(model_copy), "--data", str(tmp_path), "--split", "val"]) == 1
    assert "is a saliency model; int8 is measured by fg IoU / mIoU" in capsys.readouterr().err
