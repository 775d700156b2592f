"""Two-stage recipe: pixel-contrastive pre-training with a projection head, then supervised fine-tuning."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

import segcore
from segcore.engine.config import load_recipe
from segcore.engine.contrastive import FeatureProjector, ProjectionHead, feature_source
from segcore.engine.stages import run_recipe
from segcore.errors import SegcoreError
from tests.engine.shapes import write_shapes_dataset


def test_projection_head_is_three_1x1_convs_with_unit_output():
    head = ProjectionHead(16)
    convs = [module for module in head if isinstance(module, torch.nn.Conv2d)]
    assert [conv.kernel_size for conv in convs] == [(1, 1)] * 3 and convs[-1].out_channels == 256
    assert sum(isinstance(module, torch.nn.ReLU) for module in head) == 2
    norms = head(torch.randn(2, 16, 5, 7)).norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))


def test_feature_source_is_the_classifier_input():
    sinet = segcore.create_model("sinet", 2)
    assert feature_source(sinet) is sinet.encoder.classifier
    projector = FeatureProjector(segcore.create_model("unet", 3, width=4), 32)
    assert projector(torch.randn(2, 3, 48, 48)).shape == (2, 32, 48, 48)
    with pytest.raises(SegcoreError, match="no single classifier"):
        feature_source(segcore.create_model("deeplabv2", 2))


def test_two_stage_recipe_runs_end_to_end(tmp_path):
    data = write_shapes_dataset(tmp_path / "shapes", count=24, size=48)
    recipe = {
        "data": str(data), "model": "unet", "model_kwargs": {"width": 4}, "input_size": [48, 48], "threads": 2,
        "batch_size": 4, "augmentation": "none",
        "stages": [
            {"name": "pretrain", "loss": "contrastive", "loss_kwargs": {"mode": "cross", "max_pixels": 256},
             "epochs": 2, "projection_dim": 32, "lr": 0.003},
            {"name": "finetune", "loss": "ce", "epochs": 2, "lr": 0.01},
        ],
    }
    (tmp_path / "two_stage.yaml").write_text(yaml.safe_dump(recipe))
    events = []
    result = run_recipe(load_recipe(tmp_path / "two_stage.yaml"), tmp_path / "run", callbacks=[events.append])
    assert result.status == "finished" and result.run_dir == tmp_path / "run" / "finetune"
    assert (tmp_path / "run" / "pretrain" / "DONE").is_file() and (tmp_path / "run" / "finetune" / "DONE").is_file()
    pretrain_losses = [e.loss for e in events if e.kind == "epoch" and e.stage == "pretrain"]
    assert len(pretrain_losses) == 2 and all(torch.isfinite(torch.tensor(pretrain_losses)))
    # The saved pre-trained model is the plain segmentation model: the projection head is dropped.
    pretrained = load_file(str(tmp_path / "run" / "pretrain" / "last" / "model.safetensors"))
    assert not any(name.startswith("head") for name in pretrained)
    assert set(pretrained) == set(segcore.create_model("unet", 3, width=4).state_dict())
    config = json.loads((tmp_path / "run" / "finetune" / "best" / "config.json").read_text())
    assert config["meta"]["training"]["recipe"]["init_from"].endswith("pretrain/last")
    assert "miou" in result.history[-1]
    # Resuming a finished multi-stage run skips the finished stages.
    again = run_recipe(load_recipe(tmp_path / "run" / "recipe.yaml"), tmp_path / "run", resume=True)
    assert again.status == "finished"
