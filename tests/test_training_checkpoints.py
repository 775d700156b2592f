"""Training runs committed mid-way (assets/training/NAME) must stay resumable: their model folder loads strictly
and their trainer state loads with weights_only=True and matches the model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import segcore
from segcore.engine.config import load_recipe

RUNS = sorted(path for path in (Path(__file__).resolve().parent.parent / "assets" / "training").glob("*")
              if (path / "trainer_state.pt").is_file())


@pytest.mark.parametrize("run", RUNS, ids=[run.name for run in RUNS])
def test_committed_run_is_resumable(run):
    config = load_recipe(run / "recipe.yaml")
    model = segcore.load_pretrained(run / "last")
    assert model.segcore_config["architecture"] == config.model
    state = torch.load(run / "trainer_state.pt", map_location="cpu", weights_only=True)
    assert state["epoch"] == len(state["history"]) >= 1
    weights = model.state_dict()
    for name, tensor in state["network"].items():
        assert torch.equal(tensor.float(), weights[name].float()), f"{name}: trainer state and last/ disagree"
    assert (run / "README.md").read_text().strip(), "a committed run explains itself"
