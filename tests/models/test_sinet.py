"""SINet against its paper (arXiv:1911.09099): size and cost, the information blocking map and its use, S2-blocks on
odd sizes, and the two-phase training hooks (encoder, encoder_logits, aux)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import segcore
from segcore.models.sinet import S2Block, S2Module


def _model(num_classes: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    return segcore.create_model("sinet", num_classes=num_classes)


def test_parameter_count_matches_paper():
    # Paper: 86.9K parameters for the 2-class portrait model.
    count = sum(p.numel() for p in _model(2).parameters())
    assert 0.9 * 87_000 <= count <= 1.1 * 87_000, count


def test_multiply_adds_at_224_match_paper():
    # The paper counts one multiply-add as one operation (0.064 G); FlopCounterMode counts it as two FLOPs, so
    # GMACs = total / 2. FlopCounterMode counts convolutions and matmuls only (not pooling, interpolation or
    # element-wise ops), which the paper's figure also leaves out.
    model = _model(2).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.randn(1, 3, 224, 224))
    gmacs = counter.get_total_flops() / 2 / 1e9
    assert 0.85 * 0.064 <= gmacs <= 1.15 * 0.064, gmacs


@pytest.mark.parametrize("num_classes", [1, 2, 5])
def test_information_blocking_map_is_one_minus_confidence(num_classes):
    decoder = _model(num_classes).decoder
    generator = torch.Generator().manual_seed(1)
    low_res_logits = 3 * torch.randn(2, num_classes, 7, 9, generator=generator)
    size = (14, 17)
    blocking = decoder.information_blocking_map(low_res_logits, size)
    upsampled = torch.nn.functional.interpolate(low_res_logits, size=size, mode="bilinear", align_corners=False)
    if num_classes == 1:
        probability = torch.sigmoid(upsampled)
        expected = 1 - torch.where(probability > 0.5, probability, 1 - probability)
    else:
        expected = 1 - upsampled.softmax(dim=1).max(dim=1, keepdim=True).values
    assert blocking.shape == (2, 1, *size)
    torch.testing.assert_close(blocking, expected)
    assert blocking.min() >= 0 and blocking.max() <= 1 - 1 / max(num_classes, 2) + 1e-6
    assert blocking.std() > 0.01  # random logits give a varied map, not a constant


def test_forward_blocks_high_resolution_features_with_the_map():
    model = _model(2).eval()
    decoder = model.decoder
    seen = {}

    original_map = decoder.information_blocking_map

    def recording_map(low_res_logits, size):
        seen["map_input"] = low_res_logits
        seen["map"] = original_map(low_res_logits, size)
        return seen["map"]

    decoder.information_blocking_map = recording_map
    hooks = [
        model.encoder.classifier.register_forward_hook(lambda m, i, o: seen.__setitem__("encoder_logits", o)),
        decoder.high_res_projection.register_forward_hook(lambda m, i, o: seen.__setitem__("projection", o)),
        decoder.upsampled_prediction_norm.register_forward_hook(lambda m, i, o: seen.__setitem__("upsampled", o)),
        decoder.fused_norm.register_forward_pre_hook(lambda m, i: seen.__setitem__("fused", i[0])),
    ]
    torch.manual_seed(2)
    with torch.no_grad():
        model(torch.randn(1, 3, 97, 131))
    for hook in hooks:
        hook.remove()

    assert seen["map_input"] is seen["encoder_logits"]
    assert seen["map"].shape[-2:] == seen["projection"].shape[-2:]
    torch.testing.assert_close(seen["fused"], seen["projection"] * seen["map"] + seen["upsampled"])
    # Without the blocking the fused map would differ: the check above can tell the two apart.
    assert not torch.allclose(seen["fused"], seen["projection"] + seen["upsampled"])


@pytest.mark.parametrize("kernel_size, pool_size", [(3, 1), (5, 2), (3, 4)])
@pytest.mark.parametrize("height, width", [(13, 17), (7, 9), (28, 28)])
def test_s2_block_and_module_keep_odd_shapes(kernel_size, pool_size, height, width):
    torch.manual_seed(3)
    x = torch.randn(2, 8, height, width)
    assert S2Block(8, kernel_size, pool_size)(x).shape == x.shape
    module = S2Module(8, 8, [[kernel_size, pool_size], [3, 1]])
    assert module.residual
    assert module(x).shape == x.shape


def test_s2_block_pools_by_p_and_never_below_two_pixels():
    block = S2Block(4, 3, 4)
    assert block.pool(torch.randn(1, 4, 28, 27)).shape[-2:] == (7, 7)  # the paper's p, partial window kept
    assert block.pool(torch.randn(1, 4, 4, 4)).shape[-2:] == (2, 2)  # a 32x32 image's 1/8 map
    model = _model(2).train()
    torch.manual_seed(6)
    assert model(torch.randn(1, 3, 32, 32))["out"].shape == (1, 2, 32, 32)


def test_aux_is_the_encoder_prediction_in_train_mode_only():
    model = _model(2)
    torch.manual_seed(4)
    x = torch.randn(2, 3, 65, 81)
    train_output = model.train()(x)
    assert len(train_output["aux"]) == 1
    torch.testing.assert_close(train_output["aux"][0], model.encoder_logits(x))
    with torch.no_grad():
        assert "aux" not in model.eval()(x)


def test_encoder_logits_shape_and_phase_one_gradients():
    model = _model(3).train()
    torch.manual_seed(5)
    logits = model.encoder_logits(torch.randn(2, 3, 97, 131))
    assert logits.shape == (2, 3, 97, 131)
    logits.square().mean().backward()
    # Phase one trains model.encoder alone: its classifier is inside it, and nothing reaches the decoder.
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    assert all(p.grad is None for p in model.decoder.parameters())
    encoder_ids = {id(p) for p in model.encoder.parameters()}
    decoder_ids = {id(p) for p in model.decoder.parameters()}
    assert encoder_ids | decoder_ids == {id(p) for p in model.parameters()}


def test_metadata_and_no_pretrained_backbone():
    info = segcore.model_info("sinet")
    assert (info["task"], info["paper"], info["default_size"], info["realtime"]) == (
        "portrait", "arXiv:1911.09099", [224, 224], True)
    with pytest.raises(ValueError, match="no pretrained backbone"):
        segcore.create_model("sinet", num_classes=2, pretrained_backbone=True)
