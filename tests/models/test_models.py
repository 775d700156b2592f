"""One parametrised suite over every registered architecture (the segmentation_models_pytorch idea):
forward/backward at even and odd sizes, the output contract in train and eval mode, gradients reaching every
parameter, 1/2/12 classes, and an identical round trip through save_pretrained/load_pretrained."""

from __future__ import annotations

import pytest
import torch

import segcore

MODELS = segcore.list_models()
# Builder arguments that change the network's structure go through the same suite as the defaults (test id:
# name-variant); the default builds keep their plain names as ids.
VARIANTS = {
    "resnet18-os16-separable": ("deeplabv3plus", {"backbone": "resnet18", "separable": True}),
    "resnet18-os8": ("deeplabv3", {"backbone": "resnet18", "output_stride": 8}),
    "resnet34-os8": ("deeplabv3plus", {"backbone": "resnet34", "output_stride": 8}),
}
BUILDS = [pytest.param(name, {}, id=name) for name in MODELS] + [
    pytest.param(name, kwargs, id=f"{name}-{variant}") for variant, (name, kwargs) in VARIANTS.items()]


def _check_contract(output: dict, batch: int, classes: int, height: int, width: int, training: bool) -> None:
    assert isinstance(output, dict) and "out" in output
    assert output["out"].shape == (batch, classes, height, width)
    assert torch.isfinite(output["out"]).all()
    if "aux" in output:
        assert training, "aux heads are for training only"
        assert isinstance(output["aux"], list) and output["aux"]
        for aux in output["aux"]:
            assert aux.shape == (batch, classes, height, width)


@pytest.mark.parametrize("name, kwargs", BUILDS)
@pytest.mark.parametrize("shape", [(2, 64, 64), (1, 97, 131)])
def test_forward_backward_reaches_every_parameter(name, kwargs, shape):
    batch, height, width = shape
    model = segcore.create_model(name, num_classes=2, **kwargs).train()
    output = model(torch.randn(batch, 3, height, width))
    _check_contract(output, batch, 2, height, width, training=True)
    loss = output["out"].square().mean() + sum(aux.square().mean() for aux in output.get("aux", []))
    loss.backward()
    without_gradient = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not without_gradient, f"parameters without gradient: {without_gradient[:5]}"


@pytest.mark.parametrize("name, kwargs", BUILDS)
@pytest.mark.parametrize("num_classes", [1, 2, 12])
def test_eval_contract_for_class_counts(name, kwargs, num_classes):
    model = segcore.create_model(name, num_classes=num_classes, **kwargs).eval()
    with torch.inference_mode():
        output = model(torch.randn(1, 3, 97, 131))
    _check_contract(output, 1, num_classes, 97, 131, training=False)
    assert "aux" not in output


@pytest.mark.parametrize("name", MODELS)
def test_save_load_round_trip_gives_identical_outputs(name, tmp_path):
    model = segcore.create_model(name, num_classes=3).eval()
    # Perturb BatchNorm statistics so the round trip must carry buffers, not just parameters.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    segcore.save_pretrained(model, tmp_path / name)
    loaded = segcore.load_pretrained(tmp_path / name)
    x = torch.randn(1, 3, 64, 80)
    with torch.inference_mode():
        assert torch.equal(model(x)["out"], loaded(x)["out"])
    assert type(loaded) is type(model)


@pytest.mark.parametrize("name", MODELS)
def test_metadata_and_pretrained_flag(name):
    info = segcore.model_info(name)
    assert info["task"] in ("semantic", "portrait", "saliency")
    assert info["paper"] and len(info["default_size"]) == 2
    assert isinstance(info["realtime"], bool)


@pytest.mark.parametrize("name", MODELS)
def test_other_input_channel_counts(name):
    model = segcore.create_model(name, num_classes=2, in_channels=1).eval()
    with torch.inference_mode():
        assert model(torch.randn(1, 1, 64, 64))["out"].shape == (1, 2, 64, 64)


@pytest.mark.parametrize("name", MODELS)
def test_pretrained_backbone_offline_or_absent_is_a_clear_error(name, monkeypatch):
    import urllib.error

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with pytest.raises(ValueError) as error:
        segcore.create_model(name, num_classes=2, pretrained_backbone=True)
    message = str(error.value)
    assert "pretrained_backbone=False" in message or "no pretrained" in message or "no ImageNet" in message, message


ONNX_MODELS = [name for name in MODELS if segcore.model_info(name).get("onnx")]
ONNX_BUILDS = [build for build in BUILDS if build.values[0] in ONNX_MODELS]


def test_every_architecture_declares_whether_it_exports_to_onnx():
    assert {segcore.model_info(name).get("onnx") for name in MODELS} <= {"dynamic", "fixed"}
    assert "sinet" in ONNX_MODELS and "bisenet" in ONNX_MODELS


@pytest.mark.parametrize("name, kwargs", ONNX_BUILDS)
def test_onnx_export_runs_in_onnxruntime_like_the_model(name, kwargs):
    """Every architecture that claims ONNX exports, and ONNX Runtime reproduces its logits: at any size for
    "dynamic" exports (two odd sizes through one graph), at the export size for "fixed" ones."""
    import numpy as np

    from segcore.errors import SegcoreError
    from segcore.export import onnx_bytes
    from segcore.inference import OnnxRunner

    import onnx

    torch.manual_seed(0)
    model = segcore.create_model(name, num_classes=2, **kwargs).eval()
    prelus = [module for module in model.modules() if isinstance(module, torch.nn.PReLU)]
    for prelu in prelus:  # one slope per channel, negative and above 1 too, as trained ones are (freshly 0.25 each)
        prelu.weight.data.uniform_(-0.9, 1.1)
    dynamic = segcore.model_info(name)["onnx"] == "dynamic"
    graph = onnx_bytes(model, None if dynamic else (64, 80), check=False)
    if prelus:  # written as Relu, Mul and Add, which ONNX Runtime runs far faster (segcore.export)
        assert "PRelu" not in {node.op_type for node in onnx.load_from_string(graph).graph.node}
    runner = OnnxRunner(graph, threads=1)
    for height, width in [(64, 80), (97, 131)] if dynamic else [(64, 80)]:
        x = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(height))
        with torch.inference_mode():
            expected = model(x)["out"].numpy()
        got = runner(x.numpy())
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())
    if not dynamic:
        with pytest.raises(SegcoreError, match="exports to ONNX at one fixed size only"):
            onnx_bytes(model, None)
