"""One error hierarchy: user-fixable problems raise SegcoreError subclasses whose message says the fix; the CLI
prints those as one line (exit 1) and lets any other exception, a bug, keep its traceback."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import segcore
from segcore import cli, errors
from segcore.data.transforms import SegmentationTransform, resolve_normalization
from segcore.devices import resolve_device
from segcore.inference import default_device
from segcore.losses import build_loss
from segcore.metrics import ConfusionMatrix
from segcore.refine import dense_crf, guided_filter


def test_every_error_class_is_a_segcore_error_and_a_value_error():
    classes = [value for value in vars(errors).values() if isinstance(value, type) and issubclass(value, Exception)]
    assert {cls.__name__ for cls in classes} >= {"SegcoreError", "ModelError", "ConfigError", "InputError",
                                                 "ImageError", "CheckpointError", "DatasetError"}
    assert all(issubclass(cls, errors.SegcoreError) and issubclass(cls, ValueError) for cls in classes)


USER_MISTAKES = {
    "unknown model": (lambda: segcore.create_model("unte", 2), errors.ModelError, "known models: "),
    "bad model kwargs": (lambda: segcore.create_model("unet", 2, depth=3), errors.ModelError, "the builder takes"),
    "bad backbone": (lambda: segcore.create_model("deeplabv3", 2, backbone="vgg16"), errors.ModelError,
                     "must be one of 'resnet18', 'resnet34', 'resnet50', 'resnet101'"),
    "no pretrained sinet": (lambda: segcore.create_model("sinet", 2, pretrained_backbone=True), errors.ModelError,
                            "pretrained_backbone=False"),
    "unknown loss": (lambda: build_loss("dice"), errors.ConfigError, "choose one of"),
    "bad loss kwargs": (lambda: build_loss("ce", weight_of_aux=0.4), errors.ConfigError, "it takes"),
    "bad temperature": (lambda: build_loss("contrastive", temperature=0), errors.ConfigError, "must be > 0"),
    "confusion classes": (lambda: ConfusionMatrix(0), errors.ConfigError, "must be >= 1"),
    "prediction size": (lambda: ConfusionMatrix(2).update(np.zeros((4, 4)), np.zeros((4, 5))), errors.InputError,
                        "resize the prediction"),
    "labels out of range": (lambda: ConfusionMatrix(2).update(np.full((2, 2), 3), np.zeros((2, 2))),
                            errors.InputError, "set ignore_index"),
    "grey image for the CRF": (lambda: dense_crf(np.zeros((8, 8), np.uint8), np.full((2, 8, 8), 0.5, np.float32)),
                               errors.ImageError, "convert grey or RGBA images to RGB"),
    "one-channel map for the CRF": (lambda: dense_crf(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.float32)),
                                    errors.InputError, "np.stack([1 - p, p])"),
    "CRF iterations": (lambda: dense_crf(np.zeros((8, 8, 3), np.uint8), np.full((2, 8, 8), 0.5, np.float32),
                                         iterations=-1), errors.ConfigError, "must be >= 0"),
    "guided filter radius": (lambda: guided_filter(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.float32),
                                                   radius=0), errors.ConfigError, "must be >= 1"),
    "normalisation preset": (lambda: resolve_normalization("imagenet21k"), errors.ConfigError, "presets are"),
    "augmentation preset": (lambda: SegmentationTransform("wild", (8, 8)), errors.ConfigError, "presets are"),
    "device name": (lambda: resolve_device("tpu"), errors.SegcoreError, "use auto, cpu, cuda or cuda:N"),
}


@pytest.mark.parametrize("mistake", USER_MISTAKES)
def test_user_mistakes_raise_the_right_subclass_with_the_fix(mistake):
    action, error_class, fix = USER_MISTAKES[mistake]
    with pytest.raises(error_class) as raised:
        action()
    assert fix in str(raised.value)


def test_one_device_rule_for_inference_and_training():
    assert default_device() == resolve_device("auto") == resolve_device(None)
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(errors.SegcoreError, match="no CUDA GPU is available; use device=cpu or auto"):
            resolve_device("cuda:0")


def _failing_list_command(monkeypatch, error: Exception) -> None:
    def fail(args):
        raise error

    monkeypatch.setattr(cli, "_cmd_list", fail)


def test_cli_prints_one_line_for_a_segcore_error(monkeypatch, capsys):
    _failing_list_command(monkeypatch, errors.ConfigError("temperature must be > 0, got 0; set a positive one"))
    assert cli.main(["list"]) == 1
    captured = capsys.readouterr()
    assert captured.err == "error: temperature must be > 0, got 0; set a positive one\n"
    assert "Traceback" not in captured.out + captured.err


@pytest.mark.parametrize("bug", [RuntimeError("shape bug"), ValueError("not a user error"), KeyError("missing")])
def test_cli_lets_a_bug_keep_its_traceback(monkeypatch, bug):
    _failing_list_command(monkeypatch, bug)
    with pytest.raises(type(bug)):
        cli.main(["list"])


def test_cli_turns_a_real_user_mistake_into_one_line(capsys):
    assert cli.main(["train"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
