"""SegNet-specific checks: the decoder upsamples by max-unpooling with the encoder's own pooling indices, puts each
value back at its argmax position, and never concatenates encoder features; the size matches the paper's 29.46M."""

from __future__ import annotations

import pytest
import torch

import segcore
from segcore.models.segnet import ENCODER_CHANNELS


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return segcore.create_model("segnet", num_classes=11).eval()


def test_decoder_unpools_with_the_encoders_indices_at_argmax_positions(model):
    pooled, unpooled = [], []
    hooks = [model.pool.register_forward_hook(lambda module, args, out: pooled.append((args[0].shape, out[1])))]
    for stage in model.decoder:
        hooks.append(stage.unpool.register_forward_hook(lambda module, args, out: unpooled.append((args, out))))
    with torch.no_grad():
        model(torch.randn(1, 3, 67, 75))  # odd sizes: pooling drops rows and columns the unpooling must restore
    for hook in hooks:
        hook.remove()

    assert len(pooled) == len(unpooled) == 5
    for (pre_pool_shape, encoder_indices), ((values, indices, size), out) in zip(reversed(pooled), unpooled):
        assert indices is encoder_indices
        assert out.shape == pre_pool_shape and tuple(size) == tuple(pre_pool_shape[-2:])
        # Each value goes back to the position its max came from; everything else is zero.
        expected = torch.zeros(out.shape).flatten(2).scatter(2, indices.flatten(2), values.flatten(2))
        assert torch.equal(out, expected.view(out.shape))
        assert out.count_nonzero() <= values.count_nonzero() and values.count_nonzero() > 0


def test_decoder_does_not_concatenate_encoder_features(model, monkeypatch):
    concatenations = []
    original_cat = torch.cat
    monkeypatch.setattr(torch, "cat", lambda *args, **kwargs: concatenations.append(1) or original_cat(*args, **kwargs))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert not concatenations
    # A concatenated skip would widen each decoder stage's first convolution beyond its unpooled input.
    for stage, channels in zip(model.decoder, reversed(ENCODER_CHANNELS)):
        assert stage.convs[0][0].in_channels == channels


def test_parameter_count_matches_the_paper(model):
    count = sum(parameter.numel() for parameter in model.parameters())
    assert abs(count - 29.46e6) / 29.46e6 < 0.01, count  # ENet paper, Table 3: SegNet has 29.46M parameters
