"""Each capability an architecture declares at its @register_model is true of the model it builds, and the ones
it does not declare are absent: the trainer, the contrastive stage and the app rely on the declarations alone."""

from __future__ import annotations

import pytest
import torch

import segcore
from segcore.engine.contrastive import FeatureProjector, feature_source
from segcore.registry import Capabilities, architectures_with, capabilities

MODELS = segcore.list_models()


def _build(name: str, num_classes: int = 2) -> torch.nn.Module:
    # The light kwargs where declared keep the heavier architectures quick to build and run.
    return segcore.create_model(name, num_classes, **(capabilities(name).light_fine_tune or {}))


def test_declarations_are_capabilities_and_reach_model_info():
    for name in MODELS:
        declared = capabilities(name)
        assert isinstance(declared, Capabilities)
        info = segcore.model_info(name)
        assert info["exportable"] == declared.exportable == (declared.onnx is not None)
        assert {key: info[key] for key in ("freezable_encoder", "encoder_prediction", "contrastive_features",
                                           "light_fine_tune", "onnx")} == {
            "freezable_encoder": declared.freezable_encoder, "encoder_prediction": declared.encoder_prediction,
            "contrastive_features": declared.contrastive_features, "light_fine_tune": declared.light_fine_tune,
            "onnx": declared.onnx}
    assert architectures_with("freezable_encoder") == ["unet_resnet50"]
    assert architectures_with("encoder_prediction") == ["sinet"]
    # What the app offered before the declarations, no more and no fewer.
    assert architectures_with("light_fine_tune") == ["bisenet", "enet", "sinet", "unet", "unet_resnet50"]


def test_unknown_capability_is_a_registration_bug():
    with pytest.raises(TypeError, match="removes_everything"):
        segcore.register_model("x", task="semantic", paper="-", default_size=(8, 8), removes_everything=True)
    with pytest.raises(ValueError, match="onnx must be one of"):
        segcore.register_model("x", task="semantic", paper="-", default_size=(8, 8), onnx="sometimes")


@pytest.mark.parametrize("name", MODELS)
def test_freezable_encoder_is_declared_exactly_where_the_trainer_can_freeze(name):
    model = _build(name)
    declared = capabilities(name).freezable_encoder
    assert hasattr(model, "freeze_encoder") == declared
    if not declared:
        return
    model.freeze_encoder()
    model.train()
    assert not any(parameter.requires_grad for parameter in model.encoder.parameters())
    assert not model.encoder.training, "a frozen encoder keeps its BatchNorm statistics in train mode"
    assert any(parameter.requires_grad for name_, parameter in model.named_parameters()
               if not name_.startswith("encoder."))
    model.unfreeze_encoder()
    assert all(parameter.requires_grad for parameter in model.encoder.parameters()) and model.encoder.training


@pytest.mark.parametrize("name", MODELS)
def test_encoder_prediction_is_aux_zero_in_training(name):
    model = _build(name, num_classes=3)
    declared = capabilities(name).encoder_prediction
    assert hasattr(model, "encoder_logits") == declared
    if not declared:
        return
    x = torch.randn(2, 3, 67, 75)
    torch.manual_seed(0)
    output = model.train()(x)
    encoder_logits = model.encoder_logits(x)
    assert output["aux"][0].shape == encoder_logits.shape == (2, 3, 67, 75)
    torch.testing.assert_close(output["aux"][0], encoder_logits)


@pytest.mark.parametrize("name", [name for name in MODELS if capabilities(name).contrastive_features])
def test_contrastive_feature_source_is_a_conv_the_forward_calls(name):
    model = _build(name)
    source = feature_source(model)
    assert source is model.get_submodule(capabilities(name).contrastive_features)
    assert isinstance(source, torch.nn.Conv2d)
    projector = FeatureProjector(model, width=16).train()
    projected = projector(torch.randn(2, 3, 64, 64))
    assert projected.shape[:2] == (2, 16)
    torch.testing.assert_close(projected.norm(dim=1), torch.ones_like(projected[:, 0]))


@pytest.mark.parametrize("name", architectures_with("light_fine_tune"))
def test_light_fine_tune_kwargs_build_a_model_no_larger_than_the_default(name):
    light = _build(name)
    default = segcore.create_model(name, 2)
    assert light.segcore_config["model_kwargs"] == capabilities(name).light_fine_tune
    count = lambda model: sum(parameter.numel() for parameter in model.parameters())  # noqa: E731
    assert count(light) <= count(default)
    with torch.inference_mode():
        assert light.eval()(torch.randn(1, 3, 64, 64))["out"].shape == (1, 2, 64, 64)
