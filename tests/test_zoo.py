"""The catalogue of saved models (segcore.zoo): shipped folders and finished app jobs found by name, names resolved
for load_pretrained / Segmenter.from_pretrained, and unknown names refused with the list of installed ones.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import segcore
from segcore import zoo
from segcore.errors import CheckpointError, SegcoreError


def _job(runs, job_id: str, name: str, state: str, model_dir, created: float) -> None:
    """A job folder as app/jobs.py leaves it: ROOT/JOB_ID/job.json."""
    folder = runs / zoo.APP_JOBS_FOLDER / job_id
    folder.mkdir(parents=True)
    (folder / zoo.JOB_FILE).write_text(json.dumps({"id": job_id, "name": name, "state": state, "created": created,
                                                   "model_dir": str(model_dir) if model_dir else None}))


@pytest.fixture
def catalogue(trained_model_dir, tmp_path, monkeypatch):
    """Two shipped models (one foreground model, one saliency), two finished jobs, a failed and a broken one."""
    weights, runs = tmp_path / "weights", tmp_path / "runs"
    shutil.copytree(trained_model_dir, weights / "squares")
    saliency = segcore.create_model("unet", num_classes=1, width=4)
    saliency.segcore_config["task"] = "saliency"
    segcore.save_pretrained(saliency, weights / "saliency-tiny", class_names=["saliency"], input_size=(32, 32))
    (weights / "notes").mkdir()  # not a model folder: left out
    shutil.copytree(trained_model_dir, tmp_path / "job-a-model")
    _job(runs, "001", "older", "finished", tmp_path / "job-a-model", 1.0)
    _job(runs, "002", "newer", "finished", trained_model_dir, 2.0)
    _job(runs, "003", "broken", "failed", None, 3.0)
    _job(runs, "004", "gone", "finished", tmp_path / "deleted", 4.0)  # its model folder was removed
    (runs / zoo.APP_JOBS_FOLDER / "005").mkdir()
    (runs / zoo.APP_JOBS_FOLDER / "005" / zoo.JOB_FILE).write_text("{half written")
    monkeypatch.setenv(zoo.WEIGHTS_ENV, str(weights))
    monkeypatch.setenv(zoo.RUNS_ENV, str(runs))
    return weights, runs


def test_shipped_then_fine_tuned_newest_first(catalogue, trained_model_dir, tmp_path):
    entries = zoo.saved_models()
    assert [entry.name for entry in entries] == ["saliency-tiny", "squares", "fine-tuned/newer", "fine-tuned/older"]
    by_name = {entry.name: entry for entry in entries}
    squares = by_name["squares"]
    assert (squares.source, squares.architecture, squares.task) == ("shipped", "unet", "semantic")
    assert squares.class_names == ("background", "square") and squares.path == catalogue[0] / "squares"
    assert squares.config["input_size"] == [64, 64]
    assert by_name["fine-tuned/older"].source == "fine-tuned"
    assert by_name["fine-tuned/older"].path == tmp_path / "job-a-model"
    assert by_name["fine-tuned/newer"].path == trained_model_dir


def test_capabilities_and_filters(catalogue):
    assert zoo.find("squares").removes_background and zoo.find("squares").capabilities == {"removes_background": True}
    assert not zoo.find("saliency-tiny").removes_background, "a saliency map has no background class"
    assert [entry.name for entry in zoo.saved_models("saliency")] == ["saliency-tiny"]
    assert [entry.name for entry in zoo.saved_models(background_removal=True)] == [
        "squares", "fine-tuned/newer", "fine-tuned/older"]


def test_folders_given_win_over_the_environment(catalogue, tmp_path):
    assert zoo.saved_models(weights_dir=tmp_path / "nowhere", runs_dir=tmp_path / "nowhere") == []
    assert [entry.name for entry in zoo.shipped_models(catalogue[0])] == ["saliency-tiny", "squares"]
    assert zoo.find("squares", weights_dir=catalogue[0], runs_dir=tmp_path / "nowhere").name == "squares"


def test_unknown_names_list_what_is_installed_and_the_fix(catalogue):
    with pytest.raises(zoo.ModelNotFoundError, match=r"unknown model 'nope'; available models: saliency-tiny, "
                       r"squares, fine-tuned/newer, fine-tuned/older \(shipped in .*weights, fine-tuned in .*app-jobs\)"
                       r"; pick one of them, or ship or fine-tune one"):
        zoo.find("nope")
    with pytest.raises(SegcoreError, match="fine-tuned/broken"):  # a failed job offers no model
        zoo.find("fine-tuned/broken")
    with pytest.raises(SegcoreError, match="no model chosen; pick one from the model list$"):
        zoo.find("")
    with pytest.raises(CheckpointError, match="no such file or folder, installed model or Hugging Face Hub repo id; "
                       "installed models: saliency-tiny, squares"):
        zoo.resolve("nope")
    with pytest.raises(zoo.ModelNotFoundError):
        zoo.find("../weights/squares")  # a shipped name is a folder name, never a path out of the weights folder


def test_nothing_installed_says_how_to_get_a_model(tmp_path):
    with pytest.raises(zoo.ModelNotFoundError, match=r"none is installed: ship or fine-tune one first"):
        zoo.find(None, weights_dir=tmp_path, runs_dir=tmp_path)
    with pytest.raises(zoo.ModelNotFoundError, match="available models: none"):
        zoo.find("x", weights_dir=tmp_path, runs_dir=tmp_path)


def test_resolve_prefers_a_path_then_a_name_then_the_hub(catalogue, tmp_path, monkeypatch):
    assert zoo.resolve("squares") == catalogue[0] / "squares"
    assert zoo.resolve("fine-tuned/older") == tmp_path / "job-a-model"
    assert zoo.resolve("owner/some-model") == "owner/some-model", "a Hub id passes through as a str"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "squares").mkdir()  # an existing relative path wins over the installed name
    assert zoo.resolve("squares") == Path("squares")


def test_load_pretrained_and_segmenter_take_a_name(catalogue, trained_model_dir):
    by_name = segcore.load_pretrained("squares")
    by_path = segcore.load_pretrained(trained_model_dir)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(by_name(x)["out"], by_path(x)["out"])
    segmenter = segcore.Segmenter.from_pretrained("fine-tuned/newer", device="cpu")
    assert segmenter.class_names == ["background", "square"]
    assert segmenter.predict(np.zeros((40, 50, 3), dtype=np.uint8)).labels.shape == (40, 50)
    with pytest.raises(segcore.ModelNotFoundError, match="installed models: saliency-tiny, squares"):
        segcore.Segmenter.from_pretrained("portrait-nothing")


def test_the_public_api_exports_the_catalogue(catalogue):
    assert [entry.name for entry in segcore.saved_models("saliency")] == ["saliency-tiny"]
    assert segcore.find_saved_model("squares") == zoo.find("squares")
    assert isinstance(segcore.find_saved_model("squares"), segcore.SavedModel)
