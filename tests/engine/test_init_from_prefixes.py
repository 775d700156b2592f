"""init_from with init_from_prefixes: a saved model's tensors copied into another architecture under renamed
prefixes (a BiSeNet's ResNet18 into a DeepLab v3+), and only those."""

from __future__ import annotations

import pytest
import torch

import segcore
from segcore.engine.config import load_recipe
from segcore.engine.trainer import Trainer, transfer_matching_weights
from segcore.errors import SegcoreError
from tests.engine.shapes import write_shapes_dataset

PREFIXES = {"context_path.backbone.": "backbone."}


@pytest.fixture(scope="module")
def saved_bisenet(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("bisenet") / "source"
    segcore.save_pretrained(segcore.create_model("bisenet", num_classes=3, backbone="resnet18"), folder)
    return folder


def test_prefix_map_copies_exactly_the_renamed_tensors(saved_bisenet):
    source = segcore.load_pretrained(saved_bisenet)
    torch.manual_seed(1)
    target = segcore.create_model("deeplabv3plus", num_classes=3, backbone="resnet18", separable=True)
    before = {name: tensor.clone() for name, tensor in target.state_dict().items()}
    copied, total = transfer_matching_weights(source, target, PREFIXES)

    source_state, after = source.state_dict(), target.state_dict()
    renamed = {"backbone." + name[len("context_path.backbone."):] for name in source_state
               if name.startswith("context_path.backbone.")}
    assert copied == len(renamed) == 120 and total == len(after)
    for name, tensor in after.items():
        if name in renamed:
            assert torch.equal(tensor, source_state["context_path." + name]), name
        else:  # the heads (the classifier too, though BiSeNet has one of the same name) stay as built
            assert torch.equal(tensor, before[name]), name


def test_without_the_map_nothing_matches_and_the_longest_prefix_wins(saved_bisenet):
    source = segcore.load_pretrained(saved_bisenet)
    target = segcore.create_model("deeplabv3plus", num_classes=3, backbone="resnet18")
    assert transfer_matching_weights(source, target)[0] == 0
    # Each name takes its longest matching prefix: the backbone goes to "unused." but for layer1, which the
    # longest entry maps home; "context_path." renames only what is left (projections, ARMs: nothing matches).
    prefixes = {"context_path.": "backbone.", "context_path.backbone.": "unused.",
                "context_path.backbone.layer1.": "backbone.layer1."}
    copied, _ = transfer_matching_weights(source, target, prefixes)
    assert copied == sum(name.startswith("backbone.layer1.") for name in target.state_dict())


def test_the_trainer_copies_through_the_recipe_and_says_how_many(saved_bisenet, tmp_path):
    data = write_shapes_dataset(tmp_path / "shapes", count=4, size=48)
    settings = [f"data={data}", "model=deeplabv3plus", "model_kwargs={backbone: resnet18}", "input_size=[48, 48]",
                "epochs=1", "threads=2", f"init_from={saved_bisenet}"]
    prefixes = "init_from_prefixes={context_path.backbone.: backbone.}"
    trainer = Trainer(load_recipe(None, settings + [prefixes]), tmp_path / "run")
    assert trainer.init_message.endswith(f"copied 120 of {len(trainer.model.state_dict())} tensors")
    source = segcore.load_pretrained(saved_bisenet)
    copied = source.context_path.backbone.layer4[1].conv2.weight
    assert torch.equal(trainer.model.backbone.layer4[1].conv2.weight, copied)

    with pytest.raises(SegcoreError, match="no tensor matches.*set init_from_prefixes"):
        Trainer(load_recipe(None, settings), tmp_path / "run2")
    with pytest.raises(SegcoreError, match="no tensor matches.*under init_from_prefixes"):
        Trainer(load_recipe(None, settings + ["init_from_prefixes={spatial: nothing.}"]), tmp_path / "run3")


def test_bad_prefix_maps_are_recipe_errors():
    with pytest.raises(SegcoreError, match="init_from_prefixes must map"):
        load_recipe(None, ["init_from=somewhere", "init_from_prefixes=[a, b]"])
    with pytest.raises(SegcoreError, match="init_from, which is not set"):
        load_recipe(None, ["init_from_prefixes={a.: b.}"])
