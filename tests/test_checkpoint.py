"""Checkpoints: config + safetensors round trip, atomic writes, clear errors, no unpickling, Hub code paths."""

from __future__ import annotations

import json
import os
import pickle
import shutil

import pytest
import torch

import segcore
from segcore import checkpoint
from segcore.errors import CheckpointError


@pytest.fixture
def small_model():
    return segcore.create_model("unet", num_classes=3, width=4).eval()


def test_config_records_everything_needed_to_rebuild(small_model, tmp_path):
    segcore.save_pretrained(
        small_model, tmp_path / "m", class_names=["sky", "road", "car"], normalization="portraitnet",
        input_size=(96, 128), recipe="recipes/x.yaml", metrics={"miou": 0.5},
    )
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["architecture"] == "unet" and config["num_classes"] == 3
    assert config["model_kwargs"] == {"width": 4}
    assert config["class_names"] == ["sky", "road", "car"]
    assert len(config["class_colors"]) == 3 and all(len(c) == 3 for c in config["class_colors"])
    assert config["normalization"]["std"][0] == pytest.approx(1 / (0.017 * 255))
    assert config["input_size"] == [96, 128] and config["task"] == "semantic"
    assert config["meta"] == {"recipe": "recipes/x.yaml", "metrics": {"miou": 0.5}}
    loaded = segcore.load_pretrained(tmp_path / "m")
    assert loaded.segcore_config["class_names"] == ["sky", "road", "car"]
    # Saving a loaded model again keeps its metadata.
    segcore.save_pretrained(loaded, tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text())["class_names"] == ["sky", "road", "car"]


def test_float16_weights_are_half_the_size_and_load_into_float32(small_model, tmp_path):
    segcore.save_pretrained(small_model, tmp_path / "full")
    segcore.save_pretrained(small_model, tmp_path / "half", dtype="float16")
    full = (tmp_path / "full" / "model.safetensors").stat().st_size
    half = (tmp_path / "half" / "model.safetensors").stat().st_size
    assert half < 0.6 * full
    loaded = segcore.load_pretrained(tmp_path / "half")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.randn(1, 3, 48, 48)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x)["out"], small_model(x)["out"], atol=2e-2, rtol=1e-2)


def test_overwrite_replaces_a_model_folder_but_refuses_a_foreign_one(small_model, tmp_path):
    target = tmp_path / "m"
    segcore.save_pretrained(small_model, target, model_card="# card\n")
    segcore.save_pretrained(small_model, target, class_names=["a", "b", "c"])
    assert (target / "README.md").read_text() == "# card\n", "the model card survives a re-save"
    assert json.loads((target / "config.json").read_text())["class_names"] == ["a", "b", "c"]
    (target / "notes.txt").write_text("user's work")
    with pytest.raises(CheckpointError, match="notes.txt"):
        segcore.save_pretrained(small_model, target)
    assert (target / "notes.txt").read_text() == "user's work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"], "no temporary folders left behind"


def test_a_failed_save_leaves_no_partial_folder(small_model, tmp_path, monkeypatch):
    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", explode)
    with pytest.raises(OSError, match="disk full"):
        segcore.save_pretrained(small_model, tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_model_not_built_by_create_model_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="create_model"):
        segcore.save_pretrained(torch.nn.Conv2d(3, 2, 1), tmp_path / "m")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "config.json").unlink(), "config.json is missing"),
        (lambda d: (d / "config.json").write_text("{not json"), "not valid JSON"),
        (lambda d: (d / "config.json").write_text('{"num_classes": 3}'), "lacks architecture"),
        (lambda d: (d / "config.json").write_text('{"architecture": "vit9000", "num_classes": 3}'), "unknown model 'vit9000'"),
        (lambda d: (d / "model.safetensors").unlink(), "weights file is missing"),
        (lambda d: (d / "model.safetensors").write_bytes(b"\x00garbage"), "not a readable safetensors"),
    ],
)
def test_damaged_folders_give_errors_naming_the_file(small_model, tmp_path, damage, message):
    segcore.save_pretrained(small_model, tmp_path / "m")
    damage(tmp_path / "m")
    with pytest.raises(CheckpointError, match=message) as error:
        segcore.load_pretrained(tmp_path / "m")
    assert str(tmp_path / "m") in str(error.value)


def _edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if key == "width":
            config["model_kwargs"]["width"] = value
        elif key in ("mean", "std"):
            config["normalization"][key] = value
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("changes, message", [
    ({"input_size": [100000, 100000]}, r"input_size must be \[height, width\] with both in 8..4096"),
    ({"num_classes": 10**9}, "num_classes must be an integer in 1..1024"),
    ({"std": [0.0, 0.2, 0.2]}, "normalization std must be positive"),
    ({"mean": [0.5, float("nan"), 0.5]}, "normalization mean must be three finite numbers"),
    ({"width": 100000}, r"would have [\d,]+ parameters .* over the limit"),
])
def test_hand_edited_configs_out_of_bounds_are_refused_before_allocation(small_model, tmp_path, changes, message):
    segcore.save_pretrained(small_model, tmp_path / "m")
    _edit_config(tmp_path / "m", **changes)
    with pytest.raises(CheckpointError, match=message) as error:
        segcore.load_pretrained(tmp_path / "m")
    assert str(tmp_path / "m") in str(error.value)


def test_weights_that_do_not_match_the_architecture(small_model, tmp_path):
    segcore.save_pretrained(small_model, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["num_classes"] = 5
    config["class_names"] = [f"class_{i}" for i in range(5)]
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"do not match the architecture 'unet' with num_classes=5.*other shapes"):
        segcore.load_pretrained(tmp_path / "m")
    config["num_classes"], config["model_kwargs"] = 3, {"width": 8}
    config["class_names"] = config["class_names"][:3]
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="do not match"):
        segcore.load_pretrained(tmp_path / "m")


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    payload = _RunsCode()
    payload.marker = marker
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as stream:
        pickle.dump({"state_dict": payload}, stream, protocol=2)
    with pytest.raises(CheckpointError, match="refused"):
        segcore.load_pretrained(evil, architecture="unet", num_classes=2)
    assert not marker.exists(), "loading must never execute the pickle's code"
    with pytest.raises(CheckpointError, match="architecture= and num_classes="):
        segcore.load_pretrained(evil)


def test_plain_state_dict_pt_file_loads_into_a_named_architecture(small_model, tmp_path):
    torch.save({"state_dict": small_model.state_dict()}, tmp_path / "weights.pth")
    loaded = segcore.load_pretrained(tmp_path / "weights.pth", architecture="unet", num_classes=3, model_kwargs={"width": 4})
    x = torch.randn(1, 3, 40, 40)
    with torch.inference_mode():
        assert torch.equal(loaded(x)["out"], small_model(x)["out"])


def test_safetensors_file_path_uses_config_beside_it(small_model, tmp_path):
    segcore.save_pretrained(small_model, tmp_path / "m")
    loaded = segcore.load_pretrained(tmp_path / "m" / "model.safetensors")
    assert loaded.segcore_config["num_classes"] == 3


def test_not_a_path_and_not_a_repo_id(tmp_path):
    with pytest.raises(CheckpointError, match="no such file or folder"):
        segcore.load_pretrained(str(tmp_path / "missing" / "model"))
    with pytest.raises(CheckpointError, match="not a model folder or weights file"):
        (tmp_path / "x.txt").write_text("hi")
        segcore.load_pretrained(tmp_path / "x.txt")


def test_an_installed_name_loads_before_the_hub_is_asked(small_model, tmp_path, monkeypatch):
    """`load_pretrained(NAME)` opens WEIGHTS_DIR/NAME; a name of the repo-id shape (fine-tuned/JOB) is looked up in
    the catalogue first, so the Hub is never asked for it."""
    segcore.save_pretrained(small_model, tmp_path / "weights" / "tiny", class_names=["a", "b", "c"])
    monkeypatch.setenv("SEGCORE_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("SEGCORE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(checkpoint, "_download_from_hub", lambda *args: pytest.fail("the Hub was asked"))
    loaded = segcore.load_pretrained("tiny")
    assert loaded.segcore_config["class_names"] == ["a", "b", "c"] and not loaded.training
    with pytest.raises(CheckpointError, match="fine-tuned/none: no such .* installed models: tiny \\("):
        segcore.load_pretrained("fine-tuned/none")


def test_hub_repo_id_is_fetched_with_hf_hub_download(small_model, tmp_path, monkeypatch):
    """The real Hub code path, served from a local folder in place of the network."""
    import huggingface_hub

    segcore.save_pretrained(small_model, tmp_path / "published")
    calls = []

    def fake_download(repo_id, filename, revision=None, local_files_only=False, **kwargs):
        calls.append((repo_id, filename, revision, local_files_only))
        cache = tmp_path / "cache" / repo_id.replace("/", "--")
        cache.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "published" / filename, cache / filename)
        return str(cache / filename)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    loaded = segcore.load_pretrained("segcore/tiny-unet", revision="v1")
    assert [c[1] for c in calls] == ["config.json", "model.safetensors"]
    assert calls[0][0] == "segcore/tiny-unet" and calls[0][2] == "v1" and calls[0][3] is False
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(loaded(x)["out"], small_model(x)["out"])


def test_hub_offline_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE is set.*unset HF_HUB_OFFLINE"):
        segcore.load_pretrained("someone/some-model")


def test_hub_unreachable_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    import huggingface_hub.constants as constants

    # A closed loopback port stands in for "no network": the real client fails to connect.
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", "http://127.0.0.1:9/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    # The client retries with back-off (about 23 s in all); skip its sleeps, keep its logic.
    import time
    import types

    from huggingface_hub.utils import _http

    no_sleep = types.SimpleNamespace(**{n: getattr(time, n) for n in dir(time) if not n.startswith("_")})
    no_sleep.sleep = lambda seconds: None
    monkeypatch.setattr(_http, "time", no_sleep)
    with pytest.raises(CheckpointError, match="could not be reached|download from the Hugging Face Hub failed"):
        segcore.load_pretrained("someone/some-model")


def test_a_saved_model_is_readable_by_others(small_model, tmp_path):
    directory = segcore.save_pretrained(small_model, tmp_path / "shared-model", model_card="# card\n")
    assert directory.stat().st_mode & 0o777 == 0o755
    assert {path.name: path.stat().st_mode & 0o777 for path in directory.iterdir()} == {
        "model.safetensors": 0o644, "config.json": 0o644, "README.md": 0o644}
