"""Training engine: TrainConfig/recipes, the supervised Trainer, contrastive two-stage runs, evaluation, DDP."""

from segcore.engine.config import TrainConfig, load_recipe
from segcore.engine.events import TqdmCallback, TrainEvent

__all__ = ["TqdmCallback", "TrainConfig", "TrainEvent", "load_recipe"]
