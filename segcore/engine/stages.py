"""Run a recipe: one stage, or several in order (`stages:`), each in RUN_DIR/<stage name>/.

A later stage starts from the previous stage's final weights (`init_from`, matching tensors copied, so a new
classifier starts fresh). A stage whose loss is "contrastive" runs the pixel-contrastive pre-training loop.
Finished stages leave a DONE file, so `--resume` skips them and continues the first unfinished one.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

from segcore.engine.config import TrainConfig, write_recipe
from segcore.engine.events import TrainEvent
from segcore.engine.trainer import Trainer, TrainResult

DONE_NAME = "DONE"


def _trainer_for(config: TrainConfig, run_dir: Path, stage: str, callbacks, stop_event) -> Trainer:
    if config.loss == "contrastive":
        from segcore.engine.contrastive import ContrastiveTrainer

        return ContrastiveTrainer(config, run_dir, stage=stage, callbacks=callbacks, stop_event=stop_event)
    return Trainer(config, run_dir, stage=stage, callbacks=callbacks, stop_event=stop_event)


def run_recipe(config: TrainConfig, run_dir: str | Path, *, callbacks: list[Callable[[TrainEvent], None]] | None = None,
               resume: bool = False, stop_event: threading.Event | None = None) -> TrainResult:
    run_dir = Path(run_dir)
    stages = config.stage_configs()
    if len(stages) == 1 and not config.stages:
        trainer = _trainer_for(config, run_dir, "train", callbacks, stop_event)
        return trainer.fit(resume=resume and (run_dir / "trainer_state.pt").is_file())
    run_dir.mkdir(parents=True, exist_ok=True)
    write_recipe(config, run_dir / "recipe.yaml")
    result = None
    previous = None
    for name, stage_config in stages:
        stage_dir = run_dir / name
        if previous is not None and not stage_config.init_from:
            stage_config.init_from = str(previous / "last")
        if resume and (stage_dir / DONE_NAME).is_file():
            previous = stage_dir
            continue
        trainer = _trainer_for(stage_config, stage_dir, name, callbacks, stop_event)
        result = trainer.fit(resume=resume and (stage_dir / "trainer_state.pt").is_file())
        if result.status == "cancelled":
            return result
        if trainer.context.is_main:
            (stage_dir / DONE_NAME).write_text(result.status + "\n")
        previous = stage_dir
    if result is None:  # every stage was already done
        return TrainResult(previous, "finished", 0, "", None, [])
    return result
