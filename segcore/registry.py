"""Model registry: architecture name -> builder plus metadata (task, paper, default input size).

`create_model` is the only way the app, the CLI and the trainer build a model. It records the architecture
name and the keyword arguments on the model (`model.segcore_config`) so `save_pretrained` can write a config that
rebuilds the same network without pickling anything.
"""

from __future__ import annotations

import importlib
import inspect
import json
from dataclasses import dataclass, field
from typing import Callable

import torch.nn as nn

TASKS = ("semantic", "portrait", "saliency")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    builder: Callable[..., nn.Module]
    task: str
    paper: str
    default_size: tuple[int, int]
    realtime: bool = False
    description: str = ""
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "task": self.task,
            "paper": self.paper,
            "default_size": list(self.default_size),
            "realtime": self.realtime,
            "description": self.description,
            **self.extra,
        }


_REGISTRY: dict[str, ModelInfo] = {}
_BUILTINS_LOADED = False


def register_model(
    name: str,
    *,
    task: str,
    paper: str,
    default_size: tuple[int, int],
    realtime: bool = False,
    **extra,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that registers a builder `fn(num_classes, in_channels=3, **kwargs) -> nn.Module`."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY and _REGISTRY[name].builder is not builder:
            raise ValueError(f"model name {name!r} is already registered by {_REGISTRY[name].builder.__module__}")
        doc = inspect.getdoc(builder) or ""
        _REGISTRY[name] = ModelInfo(
            name=name,
            builder=builder,
            task=task,
            paper=paper,
            default_size=tuple(default_size),
            realtime=realtime,
            description=doc.splitlines()[0] if doc else "",
            extra=dict(extra),
        )
        return builder

    return decorator


def _load_builtin_models() -> None:
    # Imported lazily: the model modules import this module to register themselves.
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        importlib.import_module("segcore.models")
        _BUILTINS_LOADED = True


def _lookup(name: str) -> ModelInfo:
    _load_builtin_models()
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY)) or "(none)"
        raise ValueError(f"unknown model {name!r}; known models: {known}")
    return _REGISTRY[name]


def list_models(task: str | None = None) -> list[str]:
    """Registered model names, sorted; `task` filters by "semantic" | "portrait" | "saliency"."""
    _load_builtin_models()
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; tasks are: {', '.join(TASKS)}")
    return sorted(name for name, info in _REGISTRY.items() if task is None or info.task == task)


def model_info(name: str) -> dict:
    """Metadata of a registered model: paper, task, default input size, real-time flag, one-line description."""
    return _lookup(name).as_dict()


def builder_parameters(name: str) -> tuple[str, ...]:
    """Names of the keyword arguments the builder of model `name` takes."""
    return tuple(inspect.signature(_lookup(name).builder).parameters)


def create_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build a registered architecture. The name and kwargs are kept on the model for `save_pretrained`."""
    info = _lookup(name)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    try:
        json.dumps(kwargs)
    except TypeError as error:
        raise ValueError(
            f"model kwargs must be JSON-serialisable so the model can be saved and rebuilt: {error}"
        ) from None
    try:
        model = info.builder(num_classes=num_classes, **kwargs)
    except TypeError as error:
        signature = inspect.signature(info.builder)
        raise ValueError(f"bad arguments for model {name!r}: {error}; the builder takes {signature}") from None
    model.segcore_config = {"architecture": name, "num_classes": num_classes, "model_kwargs": dict(kwargs)}
    return model
