"""Supervised trainer: one loop for every registered architecture, configured by TrainConfig.

Adam/AdamW/SGD, poly learning rate with linear warm-up, bfloat16 autocast and channels_last on CUDA, gradient
clipping, an optional exponential moving average of the weights (`ema_decay`: validated, kept and shipped in place
of the raw weights), SINet's encoder-only phase and frozen-encoder schedules, validation through `evaluate` with
`best/` kept by the chosen metric, early stopping, and exact resume: each epoch reseeds every RNG from (seed, epoch) and
RUN_DIR/trainer_state.pt holds optimizer, scheduler and counters (read back with weights_only=True), and
RUN_DIR/trainer_ema.pt the moving average, so 4 epochs equal 2 epochs plus a resumed 2. RUN_DIR holds last/, best/ (save_pretrained folders), metrics.csv,
curves.png and recipe.yaml; under torchrun only rank 0 writes.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import random
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler

from segcore.checkpoint import load_pretrained, save_pretrained
from segcore.engine.config import TrainConfig, write_recipe
from segcore.engine.data import build_datasets
from segcore.engine.distributed import DistributedContext, all_reduce_sum, barrier, setup_distributed
from segcore.data.multisource import MultiSourceDataset
from segcore.devices import resolve_device
from segcore.engine.evaluate import evaluate, evaluate_sources
from segcore.engine.events import TrainEvent
from segcore.errors import ConfigError, SegcoreError
from segcore.fileio import atomic_path
from segcore.inference import Segmenter, set_num_threads
from segcore.losses import build_loss
from segcore.registry import architectures_with, capabilities, create_model, model_info

log = logging.getLogger(__name__)
STATE_NAME = "trainer_state.pt"
# The weights' moving average (ema_decay) in a file of its own: with weights and Adam's two moments a larger model's
# trainer state nears 25 MB alone (BiSeNet-Xception39: 22.8 MB), the most a file committed between sessions may take.
EMA_STATE_NAME = "trainer_ema.pt"
# A run stops when a step's loss passes both bounds: far above the median of its first steps, and large in itself
# (a lr typed a few zeros too big trains on at losses near 1e8 otherwise, and ships a "best" model).
REFERENCE_STEPS, EXPLOSION_FACTOR, EXPLODED_LOSS = 10, 1000.0, 1000.0
MINIMISED_METRICS = {"kld", "loss"}


@dataclass
class TrainResult:
    run_dir: Path
    status: str  # "finished" | "stopped_early" | "cancelled"
    epochs_done: int
    best_metric: str
    best_value: float | None
    history: list[dict]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def transfer_matching_weights(source: nn.Module, target: nn.Module,
                              prefixes: dict[str, str] | None = None) -> tuple[int, int]:
    """Copy every tensor whose name and shape match (a new head for other classes stays freshly initialised).

    With `prefixes` ({source prefix: target prefix}) only the source's tensors under a listed prefix take part,
    renamed (the longest matching prefix wins): {"context_path.backbone.": "backbone."} moves a BiSeNet's ResNet
    into a DeepLab, whose same-named classifier then stays fresh. Returns (tensors copied, tensors in the target).
    """
    source_state = source.state_dict()
    target_state = target.state_dict()
    if prefixes:
        ordered = sorted(prefixes.items(), key=lambda item: len(item[0]), reverse=True)
        renamed = {}
        for name, tensor in source_state.items():
            match = next(((old, new) for old, new in ordered if name.startswith(old)), None)
            if match is not None:
                renamed[match[1] + name[len(match[0]):]] = tensor
        source_state = renamed
    copied = {name: tensor for name, tensor in source_state.items()
              if name in target_state and target_state[name].shape == tensor.shape}
    target.load_state_dict(copied, strict=False)
    return len(copied), len(target_state)


def poly_lr_lambda(total_steps: int, power: float, warmup_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(step, total_steps) / max(total_steps, 1)
        return max(0.0, 1.0 - progress) ** power

    return factor


def default_best_metric(task: str, num_classes: int) -> str:
    """The validation metric best/ is chosen by when the recipe names none (the app's job list shows it too,
    from the trainer's validation events)."""
    if task == "saliency":
        return "cc"
    return "fg_iou" if num_classes == 2 else "miou"


class _EncoderPrediction(nn.Module):
    """Presents a model's own encoder prediction (SINet's 1/8 output) as its output, for phase-1 validation; only
    for architectures that declare the encoder_prediction capability."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.model.encoder_logits(x)}


class Trainer:
    """Runs one training stage. `callbacks` get TrainEvents; `stop_event.set()` cancels after the current step."""

    def __init__(self, config: TrainConfig, run_dir: str | os.PathLike, *, stage: str = "train",
                 callbacks: list[Callable[[TrainEvent], None]] | None = None,
                 stop_event: threading.Event | None = None, model: nn.Module | None = None):
        self.config = config
        self.run_dir = Path(run_dir)
        self.stage = stage
        self.callbacks = list(callbacks or [])
        self.stop_event = stop_event or threading.Event()
        self._reference_losses: list[float] = []  # the run's first losses, the yardstick of a blow-up
        self.init_message = ""  # what init_from copied, told with the start event
        self.device = resolve_device(config.device)
        self.context: DistributedContext = setup_distributed(self.device.type)
        if self.context.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.context.local_rank)
        if config.threads:  # segcore's setting, so a later Segmenter (validation) keeps it despite SEGCORE_THREADS
            set_num_threads(int(config.threads))
        seed_everything(config.seed)
        self.train_set, self.val_set, self.data_info = build_datasets(config)
        # The data decides the task: any architecture trained on density maps is a saliency model.
        self.task = "saliency" if config.dataset == "saliency" else model_info(config.model)["task"]
        self.model = model if model is not None else self._build_model()
        self.model.segcore_config.update(
            class_names=self.data_info["class_names"],
            class_colors=self.data_info["class_colors"],
            normalization=self.data_info["normalization"],
            input_size=list(config.input_size),
            resize=config.resize,
            ignore_index=self.data_info.get("ignore_index", 255),
            task=self.task,
        )
        self.model.to(self.device)
        if self.device.type == "cuda" and config.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.loss_fn = build_loss(config.loss, **config.loss_kwargs).to(self.device)
        self.best_metric = config.best_metric or default_best_metric(self.task, self.data_info["num_classes"])
        self._check_schedules()
        self.ema = None  # made in fit(), from the weights training starts (or resumes) with

    # ----------------------------------------------------------------------------------------------- set-up
    def _build_model(self) -> nn.Module:
        num_classes = self.data_info["num_classes"]
        model = create_model(self.config.model, num_classes, **self.config.model_kwargs)
        if self.config.init_from:
            source = load_pretrained(self.config.init_from)
            prefixes = self.config.init_from_prefixes
            copied, total = transfer_matching_weights(source, model, prefixes)
            renamed = f" under init_from_prefixes {prefixes}" if prefixes else ""
            if copied == 0:
                raise SegcoreError(f"init_from {self.config.init_from}: no tensor matches the {self.config.model} model "
                                   f"(it has {total}){renamed}; compare the names in model.state_dict() of both "
                                   "and set init_from_prefixes to {source prefix: target prefix}")
            self.init_message = f"init_from {self.config.init_from}{renamed}: copied {copied} of {total} tensors"
        return model

    def _check_schedules(self) -> None:
        declared = capabilities(self.config.model)
        for setting, capability in (("encoder_only_epochs", "encoder_prediction"),
                                    ("frozen_encoder_epochs", "freezable_encoder")):
            if getattr(self.config, setting) and not getattr(declared, capability):
                able = ", ".join(architectures_with(capability)) or "none"
                raise ConfigError(f"{setting} needs a model with the {capability} capability ({able}), not "
                                  f"{self.config.model}; set {setting}=0 or choose one of those models")

    def evaluated_model(self) -> nn.Module:
        """What validation scores and last/ and best/ keep: the weights' moving average when `ema_decay` is set,
        else the model itself."""
        return self.ema.module if self.ema is not None else self.model

    def _moving_average(self) -> "torch.optim.swa_utils.AveragedModel | None":
        if not self.config.ema_decay:
            return None
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        average = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(self.config.ema_decay),
                                use_buffers=True)  # BN statistics averaged too, so they match the weights
        average.module.segcore_config = self.model.segcore_config  # one config, whichever model is saved
        return average

    def trainable_module(self) -> nn.Module:
        """What the optimizer trains and DDP wraps: the model here; the model plus a projection head in
        contrastive pre-training."""
        return self.model

    def _optimizer(self) -> torch.optim.Optimizer:
        parameters = list(self.trainable_module().parameters())
        config = self.config
        if config.optimizer == "sgd":
            return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
        optimizer_class = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
        return optimizer_class(parameters, lr=config.lr, weight_decay=config.weight_decay)

    def _loader(self) -> tuple[DataLoader, DistributedSampler]:
        # One sampler for one process and for many: the same seeded permutation split across ranks, so a
        # distributed run sees exactly the batches a single process with the global batch would.
        sampler = DistributedSampler(self.train_set, num_replicas=self.context.world_size, rank=self.context.rank,
                                     shuffle=True, seed=self.config.seed, drop_last=False)
        per_rank = max(1, self.config.batch_size // self.context.world_size)
        drop_last = len(self.train_set) // self.context.world_size > per_rank
        loader = DataLoader(self.train_set, batch_size=per_rank, sampler=sampler, num_workers=self.config.workers,
                            drop_last=drop_last, pin_memory=self.device.type == "cuda",
                            persistent_workers=False)
        if len(loader) == 0:
            raise SegcoreError(f"the training set has {len(self.train_set)} images, fewer than one batch")
        return loader, sampler

    def _emit(self, event: TrainEvent) -> None:
        if self.context.is_main:
            for callback in self.callbacks:
                callback(event)

    # ----------------------------------------------------------------------------------------------- training
    def fit(self, resume: bool = False) -> TrainResult:
        config = self.config
        loader, sampler = self._loader()
        steps_per_epoch = len(loader)
        total_steps = config.iterations or config.epochs * steps_per_epoch
        epochs = math.ceil(total_steps / steps_per_epoch)
        optimizer = self._optimizer()
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, poly_lr_lambda(total_steps, config.lr_power, config.warmup_iterations))
        state = {"epoch": 0, "step": 0, "best_value": None, "stale_validations": 0, "history": []}
        self.ema = self._moving_average()
        if resume:
            state = self._restore(optimizer, scheduler)
        if self.context.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_recipe(config, self.run_dir / "recipe.yaml")
        barrier(self.context)

        self._emit(TrainEvent("start", self.stage, state["epoch"], epochs, state["step"], total_steps, str(self.device),
                              message=self.init_message))
        status = "finished"
        started = time.perf_counter()
        # Wall time accumulates across resumed sessions, so model cards report the whole training time.
        earlier_seconds = state["history"][-1]["seconds"] if state["history"] else 0.0
        steps_at_start = state["step"]
        epoch = state["epoch"]
        while epoch < epochs and state["step"] < total_steps:
            epoch += 1
            seed_everything(config.seed * 1_000_003 + epoch)
            sampler.set_epoch(epoch)
            if isinstance(self.train_set, MultiSourceDataset):
                self.train_set.set_epoch(epoch)  # before the loader's workers copy the dataset
            network = self._network_for_epoch(epoch)
            network.train()
            loss_sum = torch.zeros(2, dtype=torch.float64)
            for batch in loader:
                if self.stop_event.is_set() or state["step"] >= total_steps:
                    break
                loss = self._train_step(network, batch, epoch, optimizer)
                if self.ema is not None:
                    self.ema.update_parameters(self.model)
                scheduler.step()
                state["step"] += 1
                loss_sum += torch.tensor([loss, 1.0], dtype=torch.float64)
                elapsed = time.perf_counter() - started
                rate = elapsed / max(state["step"] - steps_at_start, 1)
                self._emit(TrainEvent("step", self.stage, epoch, epochs, state["step"], total_steps, str(self.device),
                                      loss=loss, lr=scheduler.get_last_lr()[0],
                                      eta_seconds=rate * (total_steps - state["step"])))
            if self.stop_event.is_set():
                status = "cancelled"
                epoch -= 1  # an interrupted epoch is not done: resume repeats it from its start
                break
            all_reduce_sum(loss_sum, self.context)
            record = {"epoch": epoch, "step": state["step"], "train_loss": float(loss_sum[0] / max(loss_sum[1], 1)),
                      "lr": scheduler.get_last_lr()[0],
                      "seconds": round(earlier_seconds + time.perf_counter() - started, 2)}
            improved = False
            if self.val_set is not None and (epoch % config.val_every == 0 or epoch == epochs):
                encoder_phase = bool(config.encoder_only_epochs) and epoch <= config.encoder_only_epochs
                metrics = self.validate(encoder_only=encoder_phase)
                if encoder_phase:
                    # The decoder is untrained in this phase: its scores are reported (as encoder_*) but choose
                    # no best/ and count for no early stopping.
                    metrics = {f"encoder_{key}": value for key, value in metrics.items() if key != "images"}
                record.update({key: value for key, value in metrics.items() if isinstance(value, (int, float))})
                value = metrics.get(self.best_metric)
                if value is None and not encoder_phase:
                    raise ConfigError(f"best_metric {self.best_metric!r} is not among the validation metrics "
                                      f"{sorted(metrics)}; set best_metric to one of them")
                if not encoder_phase:
                    improved = self._improves(value, state["best_value"])
                    if improved:
                        state["best_value"], state["stale_validations"] = float(value), 0
                    else:
                        state["stale_validations"] += 1
                self._emit(TrainEvent("validation", self.stage, epoch, epochs, state["step"], total_steps,
                                      str(self.device), metrics=metrics,
                                      best_metric=None if encoder_phase else self.best_metric))
            state["history"].append(record)
            state["epoch"] = epoch
            self._checkpoint(optimizer, scheduler, state, best=improved or self.val_set is None)
            self._emit(TrainEvent("epoch", self.stage, epoch, epochs, state["step"], total_steps, str(self.device),
                                  loss=record["train_loss"], lr=record["lr"], metrics=record))
            if (config.early_stopping_patience is not None
                    and state["stale_validations"] >= config.early_stopping_patience):
                status = "stopped_early"
                break
        message = (f"{status}: {state['epoch']} epoch(s), best {self.best_metric} = "
                   f"{state['best_value'] if state['best_value'] is not None else 'n/a'}; outputs in {self.run_dir}")
        self._emit(TrainEvent("end", self.stage, state["epoch"], epochs, state["step"], total_steps, str(self.device),
                              metrics={self.best_metric: state["best_value"]}, message=message))
        return TrainResult(self.run_dir, status, state["epoch"], self.best_metric, state["best_value"],
                           state["history"])

    def _network_for_epoch(self, epoch: int) -> nn.Module:
        """Apply the freeze schedule for this epoch and wrap for DDP (re-wrapped when trainability changes)."""
        config = self.config
        if config.frozen_encoder_epochs:
            frozen = config.frozen_encoder_epochs < 0 or epoch <= config.frozen_encoder_epochs
            self.model.freeze_encoder() if frozen else self.model.unfreeze_encoder()
        module = self.trainable_module()
        if not self.context.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel

        key = tuple(parameter.requires_grad for parameter in module.parameters())
        if getattr(self, "_ddp_key", None) != key:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            has_schedule = bool(config.encoder_only_epochs or config.frozen_encoder_epochs)
            self._ddp = DistributedDataParallel(module, device_ids=device_ids,
                                                find_unused_parameters=has_schedule)
            self._ddp_key = key
        return self._ddp

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.to(self.device, non_blocking=True)
        if tensor.dim() == 4 and self.device.type == "cuda" and self.config.channels_last:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        return tensor

    def _autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                              enabled=self.config.amp and self.device.type == "cuda")

    def compute_loss(self, network: nn.Module, batch, epoch: int) -> torch.Tensor:
        images, targets = (self._to_device(tensor) for tensor in batch[:2])
        with self._autocast():
            output = network(images)
        if self.config.encoder_only_epochs and epoch <= self.config.encoder_only_epochs:
            # Phase 1 (SINet): only the encoder's own prediction is supervised; models declaring encoder_prediction
            # return it as aux[0] in training mode.
            output = {"out": output["aux"][0]}
        output = {key: value.float() if torch.is_tensor(value) else [item.float() for item in value]
                  for key, value in output.items()}
        return self.loss_fn(output, targets)

    def _train_step(self, network: nn.Module, batch, epoch: int, optimizer: torch.optim.Optimizer) -> float:
        config = self.config
        loss = self.compute_loss(network, batch, epoch)
        if not torch.isfinite(loss):
            raise SegcoreError(f"the loss became {loss.item()} at epoch {epoch}; lower lr (now {config.lr}) or check "
                               "the data")
        value = float(loss.detach())
        if len(self._reference_losses) < REFERENCE_STEPS:
            self._reference_losses.append(value)
        else:
            reference = statistics.median(self._reference_losses)
            if value > max(EXPLODED_LOSS, EXPLOSION_FACTOR * reference):
                raise SegcoreError(f"the loss exploded from about {reference:.3g} to {value:.3g} at epoch {epoch}; "
                                   f"lower lr (now {config.lr}) or check the data")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.trainable_module().parameters(), config.grad_clip)
        optimizer.step()
        return value

    def validate(self, encoder_only: bool = False) -> dict:
        evaluated = self.evaluated_model()
        network = _EncoderPrediction(evaluated) if encoder_only else evaluated
        segmenter = Segmenter(network, self.model.segcore_config, device=self.device)
        options = {"boundary_tolerance": self.config.boundary_tolerance, "context": self.context}
        try:
            if isinstance(self.val_set, dict):
                return evaluate_sources(segmenter, self.val_set, **options)
            return evaluate(segmenter, self.val_set, **options)
        finally:
            self.model.train()

    def _improves(self, value: float, best: float | None) -> bool:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        if best is None:
            return True
        return value < best if self.best_metric in MINIMISED_METRICS else value > best

    # ----------------------------------------------------------------------------------------------- files
    def _model_meta(self, state: dict) -> dict:
        return {
            "training": {
                "recipe": self.config.to_dict(),
                "stage": self.stage,
                "epochs_done": state["epoch"],
                "steps_done": state["step"],
                "device": (f"{torch.cuda.get_device_name(self.device)} ({self.device})" if self.device.type == "cuda"
                           else str(self.device)),
                "world_size": self.context.world_size,
                "data": self.data_info.get("description", self.config.data),
            },
            "metrics": {"best_metric": self.best_metric, "best_value": state["best_value"],
                        "last": state["history"][-1] if state["history"] else {}},
        }

    def _checkpoint(self, optimizer, scheduler, state: dict, best: bool) -> None:
        if not self.context.is_main:
            barrier(self.context)
            return
        meta = self._model_meta(state)
        saved = self.evaluated_model()
        save_pretrained(saved, self.run_dir / "last", dtype=self.config.save_dtype, **meta)
        if best:
            save_pretrained(saved, self.run_dir / "best", dtype=self.config.save_dtype, **meta)
        trainer_state = {
            "stage": self.stage,
            "epoch": state["epoch"],
            "step": state["step"],
            "best_value": state["best_value"],
            "stale_validations": state["stale_validations"],
            "history": state["history"],
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "network": {name: tensor.detach().cpu() for name, tensor in self.trainable_module().state_dict().items()},
        }
        if self.ema is not None:  # written first: the trainer state, written last, says which step it belongs to
            average = {name: tensor.detach().cpu() for name, tensor in self.ema.state_dict().items()}
            with atomic_path(self.run_dir / EMA_STATE_NAME) as temporary:
                torch.save({"step": state["step"], "ema": average}, temporary)
        with atomic_path(self.run_dir / STATE_NAME) as temporary:
            torch.save(trainer_state, temporary)
        self._write_metrics(state["history"])
        barrier(self.context)
        self._emit(TrainEvent("checkpoint", self.stage, state["epoch"], 0, state["step"], 0, str(self.device),
                              message=str(self.run_dir / "last")))

    def _saved_average(self, saved: dict) -> dict | None:
        """The moving average saved with the trainer state `saved`: from its own file (or inside the state, as runs
        saved before it had one); None when there is none, or it belongs to another step (a crash between the two
        writes), in which case the average starts again from the restored weights."""
        path = self.run_dir / EMA_STATE_NAME
        if path.is_file():
            own = torch.load(path, map_location="cpu", weights_only=True)
            if own["step"] == saved["step"]:
                return own["ema"]
            log.warning("%s is from step %s, the trainer state from step %s; the moving average starts again from "
                        "the restored weights", path, own["step"], saved["step"])
            return None
        return saved.get("ema")

    def _restore(self, optimizer, scheduler) -> dict:
        path = self.run_dir / STATE_NAME
        if not path.is_file():
            raise SegcoreError(f"{self.run_dir}: nothing to resume ({STATE_NAME} is missing)")
        saved = torch.load(path, map_location="cpu", weights_only=True)
        # Full-precision weights live in the trainer state: last/ may be stored in float16 for shipping.
        self.trainable_module().load_state_dict(saved["network"])
        if self.ema is not None:
            average = self._saved_average(saved)
            if average is not None:
                self.ema.load_state_dict(average)
            else:  # a run resumed with ema_decay newly set: the average starts from the restored weights
                self.ema = self._moving_average()
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        return {key: saved[key] for key in ("epoch", "step", "best_value", "stale_validations", "history")}

    def _write_metrics(self, history: list[dict]) -> None:
        columns = []
        for record in history:
            columns.extend(key for key in record if key not in columns)
        with atomic_path(self.run_dir / "metrics.csv") as temporary, open(temporary, "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=columns)
            writer.writeheader()
            writer.writerows(history)
        write_curves(history, self.run_dir / "curves.png", self.best_metric)


def write_curves(history: list[dict], path: Path, metric: str) -> None:
    """Training loss and the validation metric per epoch, as a PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axis, metric_axis) = plt.subplots(1, 2, figsize=(9, 3.2))
    epochs = [record["epoch"] for record in history]
    loss_axis.plot(epochs, [record["train_loss"] for record in history], marker="o")
    loss_axis.set(title="training loss", xlabel="epoch")
    validated = [(record["epoch"], record[metric]) for record in history if metric in record]
    if validated:
        metric_axis.plot(*zip(*validated), marker="o", color="tab:green")
    metric_axis.set(title=f"validation {metric}", xlabel="epoch")
    figure.tight_layout()
    try:
        with atomic_path(path) as temporary:
            figure.savefig(temporary, dpi=80)
    finally:
        plt.close(figure)
