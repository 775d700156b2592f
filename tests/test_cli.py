"""The command line: list, predict, the not-yet-built subcommands, and exit code 1 with a clear line on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segcore.cli import main
from tests.conftest import make_square_scene

ROOT = Path(__file__).resolve().parent.parent


def test_list_plain_json_and_markdown(capsys):
    assert main(["list"]) == 0
    assert "unet" in capsys.readouterr().out
    assert main(["list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {row["name"] for row in rows} >= {"unet"}
    assert main(["list", "--details", "--markdown", "--task", "semantic"]) == 0
    table = capsys.readouterr().out
    assert table.startswith("| model |") and "| unet |" in table and "31.0" in table  # U-Net's 31.0 M parameters


def test_predict_writes_a_palette_mask(trained_model_dir, tmp_path, capsys):
    image, mask = make_square_scene(90, 120, np.random.default_rng(77))
    Image.fromarray(image).save(tmp_path / "scene.jpg", quality=95)
    out = tmp_path / "out" / "mask.png"
    probabilities = tmp_path / "p.npy"
    code = main(["predict", str(tmp_path / "scene.jpg"), "--model", str(trained_model_dir), "--out", str(out),
                 "--probabilities", str(probabilities), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    with Image.open(out) as written:
        labels = np.asarray(written)
        assert written.mode == "P" and labels.shape == (90, 120)
    iou = np.logical_and(labels == 1, mask == 1).sum() / np.logical_or(labels == 1, mask == 1).sum()
    assert iou > 0.8
    assert np.load(probabilities).shape == (2, 90, 120)


@pytest.mark.parametrize("case", ["not-an-image", "missing-model", "corrupt-config", "unknown-arch", "bad-suffix"])
def test_bad_input_exits_1_with_a_message_naming_the_problem(case, trained_model_dir, tmp_path, capsys):
    image = tmp_path / "scene.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(image)
    model = tmp_path / "model"
    model.mkdir()
    for name in ("config.json", "model.safetensors"):
        (model / name).write_bytes((trained_model_dir / name).read_bytes())
    out = str(tmp_path / "mask.png")
    if case == "not-an-image":
        image.write_text("this is text")
        expected = f"{image}: not an image"
    elif case == "missing-model":
        model = tmp_path / "no-such-model"
        expected = "no such file or folder"
    elif case == "corrupt-config":
        (model / "config.json").write_text("{")
        expected = "config.json: is not valid JSON"
    elif case == "unknown-arch":
        (model / "config.json").write_text('{"architecture": "mystery", "num_classes": 2}')
        expected = "unknown model 'mystery'"
    else:
        out = str(tmp_path / "mask.jpg")
        expected = "masks are written as PNG"
    assert main(["predict", str(image), "--model", str(model), "--out", out]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and "Traceback" not in err
    assert not Path(out).exists()


@pytest.mark.parametrize("command, issue", [("train", 5), ("eval", 5), ("bench", 3)])
def test_unbuilt_subcommands_say_so(command, issue, capsys):
    assert main([command]) == 2
    assert f"not implemented yet (issue {issue})" in capsys.readouterr().err


def test_python_dash_m_segcore_runs_as_a_program():
    result = subprocess.run([sys.executable, "-m", "segcore", "list"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "unet" in result.stdout
    result = subprocess.run([sys.executable, "-m", "segcore", "predict", "x.png", "--model", "nowhere/at-all/x", "--out", "m.png"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr


def test_app_entry_point_runs():
    result = subprocess.run([sys.executable, "app.py"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "unet" in result.stdout


def test_export_writes_a_program_that_matches_the_model(trained_model_dir, tmp_path, capsys):
    import torch

    import segcore

    out = tmp_path / "tiny.pt2"
    assert main(["export", "--model", str(trained_model_dir), "--out", str(out)]) == 0, capsys.readouterr().err
    program = torch.export.load(str(out)).module()
    model = segcore.load_pretrained(trained_model_dir)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(program(x), model(x)["out"], atol=1e-4, rtol=1e-4)
    assert main(["export", "--model", str(trained_model_dir), "--out", str(tmp_path / "x.onnx")]) == 1
    assert "use a path ending in .pt2" in capsys.readouterr().err
