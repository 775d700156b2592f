"""unet_resnet50-specific checks: freeze_encoder()/unfreeze_encoder() toggle gradients and keep a frozen encoder's
BatchNorm statistics fixed, the lighter encoders build with their channel counts, a bad encoder name is refused,
and every reduced skip reaches the output."""

from __future__ import annotations

import pytest
import torch

import segcore
from segcore.models.backbones import resnet_channels
from segcore.models.unet_resnet import SKIP_LAYERS


def _model(encoder: str = "resnet18"):
    torch.manual_seed(0)
    return segcore.create_model("unet_resnet50", num_classes=1, encoder=encoder)


def _all_have_gradients(parameters) -> bool:
    return all(parameter.grad is not None and parameter.grad.abs().sum() > 0 for parameter in parameters)


def _decoder_parameters(model):
    encoder_ids = {id(parameter) for parameter in model.encoder.parameters()}
    return [parameter for parameter in model.parameters() if id(parameter) not in encoder_ids]


def test_frozen_encoder_gets_no_gradients_and_keeps_its_statistics():
    model = _model()
    model.freeze_encoder()
    model.train()
    assert not any(parameter.requires_grad for parameter in model.encoder.parameters())
    assert not any(module.training for module in model.encoder.modules())
    assert all(module.training for module in model.up_blocks.modules())
    statistics = {name: buffer.clone() for name, buffer in model.encoder.named_buffers()}

    model(torch.randn(2, 3, 64, 64))["out"].square().mean().backward()
    assert all(parameter.grad is None for parameter in model.encoder.parameters())
    assert _all_have_gradients(_decoder_parameters(model))
    for name, buffer in model.encoder.named_buffers():
        assert torch.equal(buffer, statistics[name]), name


def test_unfreezing_restores_encoder_training():
    model = _model()
    model.freeze_encoder()
    model.unfreeze_encoder()
    model.train()
    assert all(parameter.requires_grad for parameter in model.encoder.parameters())
    assert all(module.training for module in model.encoder.modules())
    model(torch.randn(2, 3, 64, 64))["out"].square().mean().backward()
    assert _all_have_gradients(model.encoder.parameters())


@pytest.mark.parametrize("encoder", ["resnet18", "resnet34", "resnet50"])
def test_encoder_choices_build_with_their_channels(encoder):
    model = _model(encoder).eval()
    channels = resnet_channels(encoder)
    for name in SKIP_LAYERS:
        assert model.skip_reductions[name][0].in_channels == channels[name]
    assert model.up_blocks[0][0].in_channels == channels["layer4"]
    with torch.no_grad():
        assert model(torch.randn(1, 3, 67, 75))["out"].shape == (1, 1, 67, 75)


def test_unknown_encoder_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="resnet50, resnet18, resnet34"):
        segcore.create_model("unet_resnet50", num_classes=1, encoder="vgg16")


@pytest.mark.parametrize("skip", SKIP_LAYERS)
def test_every_skip_reaches_the_output(skip):
    model = _model().eval()
    x = torch.randn(1, 3, 67, 75)
    with torch.no_grad():
        reference = model(x)["out"]
        handle = model.skip_reductions[skip].register_forward_hook(lambda module, args, out: torch.zeros_like(out))
        without_skip = model(x)["out"]
        handle.remove()
    assert not torch.allclose(reference, without_skip)


def test_decoder_scale_narrows_every_decoder_width_and_keeps_the_output_size():
    torch.manual_seed(0)
    full = segcore.create_model("unet_resnet50", num_classes=1, encoder="resnet18")
    half = segcore.create_model("unet_resnet50", num_classes=1, encoder="resnet18", decoder_scale=0.5)
    full_widths = [block[0].out_channels for block in full.up_blocks]
    assert [block[0].out_channels for block in half.up_blocks] == [width // 2 for width in full_widths]
    # The shipped saliency model's size: ResNet18 encoder, half-width decoder, float16 under 25 MB.
    assert sum(t.numel() * 2 for t in half.state_dict().values()) < 25 * 2**20
    with torch.no_grad():
        assert half.eval()(torch.randn(1, 3, 67, 75))["out"].shape == (1, 1, 67, 75)
    with pytest.raises(ValueError, match="decoder_scale"):
        segcore.create_model("unet_resnet50", num_classes=1, decoder_scale=0)
