"""Training events and the callbacks that consume them (tqdm for the CLI; the app subscribes its own).

A callback is any callable taking a TrainEvent. Kinds: "start", "step", "epoch", "validation", "checkpoint",
"end". Callbacks run on rank 0 only and must be quick: they are called from the training loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainEvent:
    kind: str
    stage: str
    epoch: int  # 1-based epoch being trained (0 before the first)
    epochs: int
    step: int  # global optimisation steps done in this stage
    steps: int  # total steps planned for this stage
    device: str
    loss: float | None = None
    lr: float | None = None
    metrics: dict = field(default_factory=dict)
    eta_seconds: float | None = None
    message: str = ""
    best_metric: str | None = None  # validation events that choose best/: the metric they choose it by


class TqdmCallback:
    """A progress bar over steps with loss, lr and ETA; validation results printed under it."""

    def __init__(self):
        self._bar = None

    def __call__(self, event: TrainEvent) -> None:
        from tqdm import tqdm

        if event.kind == "start":
            self._bar = tqdm(total=event.steps, desc=f"{event.stage} ({event.device})", unit="step", dynamic_ncols=True)
            if event.message:
                self._bar.write(event.message)
        elif event.kind == "step" and self._bar is not None:
            self._bar.update(event.step - self._bar.n)
            self._bar.set_postfix(epoch=f"{event.epoch}/{event.epochs}", loss=f"{event.loss:.4f}", lr=f"{event.lr:.2e}")
        elif event.kind == "validation" and self._bar is not None:
            shown = {k: round(v, 4) for k, v in event.metrics.items() if isinstance(v, float)}
            self._bar.write(f"epoch {event.epoch}: {shown}")
        elif event.kind == "end" and self._bar is not None:
            self._bar.close()
            self._bar = None
            if event.message:
                print(event.message)
