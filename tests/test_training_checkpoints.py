"""Training runs committed mid-way (assets/training/NAME) must stay resumable: every stage folder with a trainer
state (the run itself, or RUN/<stage> for a multi-stage recipe) has a model folder that loads strictly and a trainer
state that loads with weights_only=True and matches the model (its moving average where the run keeps one, in
trainer_ema.pt or, in older runs, inside the trainer state), and no file over 25 MB."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import segcore
from segcore.engine.config import load_recipe

ROOT = Path(__file__).resolve().parent.parent / "assets" / "training"
STAGES = sorted(state.parent for state in ROOT.rglob("trainer_state.pt"))


def _run_of(stage: Path) -> Path:
    return stage if stage.parent == ROOT else stage.parent


@pytest.mark.parametrize("stage", STAGES, ids=[str(stage.relative_to(ROOT)) for stage in STAGES])
def test_committed_run_is_resumable(stage):
    run = _run_of(stage)
    recipe = load_recipe(run / "recipe.yaml")
    config = load_recipe(stage / "recipe.yaml")
    assert config.model == recipe.model
    if stage != run:  # a stage of a multi-stage recipe: the run's recipe names it
        assert stage.name in [name for name, _ in recipe.stage_configs()]
    model = segcore.load_pretrained(stage / "last")
    assert model.segcore_config["architecture"] == config.model
    state = torch.load(stage / "trainer_state.pt", map_location="cpu", weights_only=True)
    assert state["epoch"] == len(state["history"]) >= 1
    network = state["network"]
    average = state.get("ema")  # runs saved before the moving average had a file of its own
    if (stage / "trainer_ema.pt").is_file():
        own = torch.load(stage / "trainer_ema.pt", map_location="cpu", weights_only=True)
        assert own["step"] == state["step"], "the moving average and the trainer state are from different steps"
        average = own["ema"]
    for path in stage.rglob("*"):
        assert path.stat().st_size < 25 * 2**20, f"{path} is over the 25 MB a committed file may take"
    if average is not None:  # last/ holds the weights' moving average (ema_decay); the raw weights are for resuming
        assert average.keys() - {"n_averaged"} == {f"module.{name}" for name in network}
        network = {name[len("module."):]: tensor for name, tensor in average.items() if name != "n_averaged"}
    if config.loss == "contrastive":  # the state holds the model and its projection head: compare the model
        assert any(name.startswith("head.") for name in network)
        network = {name[len("model."):]: tensor for name, tensor in network.items() if name.startswith("model.")}
    weights = model.state_dict()
    assert network.keys() == weights.keys()
    stored = getattr(torch, config.save_dtype)  # last/ may be float16 (save_dtype); the trainer state is float32
    for name, tensor in network.items():
        expected = tensor.to(stored) if tensor.is_floating_point() else tensor
        assert torch.equal(expected.float(), weights[name].float()), f"{name}: trainer state and last/ disagree"
    assert (run / "README.md").read_text().strip(), "a committed run explains itself"
