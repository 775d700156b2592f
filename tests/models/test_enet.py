"""ENet-specific checks: about 0.37M parameters (the paper's Table 3), the bottleneck layout of Table 1 (dilated and
asymmetric convolutions in stages 2 and 3), a 16-channel InitialBlock, and decoder unpooling with the encoder's
indices; ENet has no pretrained backbone."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import segcore
from segcore.models.enet import Bottleneck

TABLE1_SECTION = ["regular", "dilated 2", "asymmetric 5", "dilated 4", "regular", "dilated 8", "asymmetric 5",
                  "dilated 16"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return segcore.create_model("enet", num_classes=11).eval()


def _describe(bottleneck: Bottleneck) -> str:
    convs = [m for m in bottleneck.extension.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
    kernels = [conv.kernel_size for conv in convs]
    if kernels == [(5, 1), (1, 5)]:
        return "asymmetric 5"
    assert kernels == [(3, 3)], kernels
    return "regular" if convs[0].dilation == (1, 1) else f"dilated {convs[0].dilation[0]}"


def test_parameter_count_is_the_papers(model):
    count = sum(parameter.numel() for parameter in model.parameters())
    # ENet paper, Table 3: 0.37M parameters; this model has about 0.361M at CamVid's 11 classes.
    assert abs(count - 0.37e6) / 0.37e6 < 0.10, count


def test_stages_follow_table1(model):
    assert [_describe(block) for block in model.stage2] == TABLE1_SECTION
    assert [_describe(block) for block in model.stage3] == TABLE1_SECTION
    assert [_describe(block) for block in model.stage1] == ["regular"] * 4
    assert [_describe(block) for block in model.stage4] == ["regular"] * 2
    assert _describe(model.stage5) == "regular"


def test_initial_block_gives_16_maps_at_half_resolution_on_odd_sizes(model):
    assert model.initial.conv.out_channels == 13 and model.initial.conv.stride == (2, 2)
    with torch.no_grad():
        out = model.initial(torch.randn(1, 3, 97, 131))
    assert out.shape == (1, 16, 49, 66)


def test_upsampling_bottlenecks_unpool_with_the_downsampling_indices(model):
    recorded = {}

    def record(name):
        return lambda module, args, out: recorded.__setitem__(name, (args, out))

    hooks = [getattr(model, name).register_forward_hook(record(name))
             for name in ("bottleneck1_0", "bottleneck2_0")]
    hooks += [getattr(model, name).unpool.register_forward_hook(record(name))
              for name in ("bottleneck4_0", "bottleneck5_0")]
    with torch.no_grad():
        model(torch.randn(1, 3, 97, 131))
    for hook in hooks:
        hook.remove()

    for down, up in (("bottleneck2_0", "bottleneck4_0"), ("bottleneck1_0", "bottleneck5_0")):
        (down_input,), (_, down_indices) = recorded[down]
        (values, up_indices, size), unpooled = recorded[up]
        assert up_indices is down_indices
        assert unpooled.shape[-2:] == down_input.shape[-2:] == tuple(size)


def test_pretrained_backbone_is_refused():
    with pytest.raises(ValueError, match="no pretrained backbone"):
        segcore.create_model("enet", num_classes=2, pretrained_backbone=True)
