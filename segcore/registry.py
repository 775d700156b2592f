"""Model registry: architecture name -> builder plus metadata (task, paper, default input size) and capabilities.

`create_model` is the only way the app, the CLI and the trainer build a model. It records the architecture
name and the keyword arguments on the model (`model.segcore_config`) so `save_pretrained` can write a config that
rebuilds the same network without pickling anything. What a model can do (freeze its encoder, predict from its
encoder alone, feed contrastive pre-training, export to ONNX, start a quick fine-tune) is declared at its
`@register_model`, so the trainer, the export and the app read it instead of probing the module.
"""

from __future__ import annotations

import importlib
import inspect
import json
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.nn as nn

from segcore.errors import ModelError

TASKS = ("semantic", "portrait", "saliency")
ONNX_EXPORTS = ("dynamic", "fixed")
# Far above every architecture here (the largest, DeepLab with ResNet-101, has ~60 M); above it, a config is a typo.
MAX_CLASSES, MAX_PARAMETERS = 1024, 500_000_000


@dataclass(frozen=True)
class Capabilities:
    """What every model a builder makes can do; tests/models/test_capabilities.py checks each claim on the model.

    freezable_encoder: `model.encoder` is a pretrained-style encoder and `freeze_encoder()` / `unfreeze_encoder()`
        stop and restart its training (the trainer's `frozen_encoder_epochs`).
    encoder_prediction: the encoder predicts on its own: `encoder_logits(x)` gives it at the input size, and in
        training mode `aux[0]` is that same prediction (the trainer's `encoder_only_epochs`, SINet's phase 1).
    contrastive_features: dotted attribute path of the module whose input is the feature map contrastive
        pre-training projects (a classifier conv); None: the model has no single such map.
    light_fine_tune: model kwargs of a fresh model small enough to fine-tune in minutes on a CPU; None: the app
        does not offer this architecture as a fresh start.
    onnx: "dynamic" (one graph for every input size), "fixed" (exports at one size) or None (does not export).
    """

    freezable_encoder: bool = False
    encoder_prediction: bool = False
    contrastive_features: str | None = None
    light_fine_tune: dict | None = None
    onnx: str | None = None

    @property
    def exportable(self) -> bool:
        return self.onnx is not None

    def as_dict(self) -> dict:
        return {**asdict(self), "exportable": self.exportable}


@dataclass(frozen=True)
class ModelInfo:
    name: str
    builder: Callable[..., nn.Module]
    task: str
    paper: str
    default_size: tuple[int, int]
    realtime: bool = False
    description: str = ""
    capabilities: Capabilities = field(default_factory=Capabilities)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "task": self.task,
            "paper": self.paper,
            "default_size": list(self.default_size),
            "realtime": self.realtime,
            "description": self.description,
            **self.capabilities.as_dict(),
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
    **capabilities,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that registers a builder `fn(num_classes, in_channels=3, **kwargs) -> nn.Module`; the remaining
    keywords are its Capabilities (freezable_encoder=True, onnx="dynamic", ...)."""
    # A model author's mistakes, not a user's: plain ValueError/TypeError with a traceback into the model module.
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    declared = Capabilities(**capabilities)
    if declared.onnx not in (None, *ONNX_EXPORTS):
        raise ValueError(f"onnx must be one of {ONNX_EXPORTS} or None, got {declared.onnx!r}")

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
            capabilities=declared,
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
        raise ModelError(f"unknown model {name!r}; known models: {known}")
    return _REGISTRY[name]


def list_models(task: str | None = None) -> list[str]:
    """Registered model names, sorted; `task` filters by "semantic" | "portrait" | "saliency"."""
    _load_builtin_models()
    if task is not None and task not in TASKS:
        raise ModelError(f"unknown task {task!r}; tasks are: {', '.join(TASKS)}")
    return sorted(name for name, info in _REGISTRY.items() if task is None or info.task == task)


def model_info(name: str) -> dict:
    """Metadata of a registered model: paper, task, default input size, real-time flag, one-line description and
    its capabilities (see Capabilities), as a plain dict."""
    return _lookup(name).as_dict()


def capabilities(name: str) -> Capabilities:
    """What the architecture `name` declares it can do."""
    return _lookup(name).capabilities


def architectures_with(capability: str) -> list[str]:
    """Registered names, sorted, whose declared `capability` (a Capabilities field) is set: True, a module path,
    kwargs (an empty dict included) or an ONNX mode."""
    return [name for name in list_models() if getattr(_REGISTRY[name].capabilities, capability) not in (None, False)]


def builder_parameters(name: str) -> tuple[str, ...]:
    """Names of the keyword arguments the builder of model `name` takes."""
    return tuple(inspect.signature(_lookup(name).builder).parameters)


def _check_size_on_meta(name: str, builder, num_classes: int, kwargs: dict) -> None:
    """Build once on torch's meta device (no memory) and refuse models over MAX_PARAMETERS before allocating them,
    so a slip like width=100000 is a clear error, not minutes of swapping. Builders that cannot run on meta are
    simply built for real."""
    try:
        with torch.device("meta"):
            probe = builder(num_classes=num_classes, **kwargs)
        count = sum(parameter.numel() for parameter in probe.parameters())
    except TypeError:
        raise
    except Exception:  # noqa: BLE001 - any other failure shows (with its traceback) when built for real
        return
    if count > MAX_PARAMETERS:
        raise ModelError(
            f"model {name!r} with {kwargs or 'its defaults'} would have {count:,} parameters "
            f"(~{count * 4 / 2**30:.1f} GB), over the limit of {MAX_PARAMETERS:,}; check num_classes and the "
            "model kwargs (widths, channels)"
        )


def create_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build a registered architecture. The name and kwargs are kept on the model for `save_pretrained`."""
    info = _lookup(name)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or not 1 <= num_classes <= MAX_CLASSES:
        raise ModelError(f"num_classes must be an integer in 1..{MAX_CLASSES}, got {num_classes!r}")
    try:
        json.dumps(kwargs)
    except TypeError as error:
        raise ModelError(
            f"model kwargs must be JSON-serialisable so the model can be saved and rebuilt: {error}"
        ) from None
    try:
        _check_size_on_meta(name, info.builder, num_classes, kwargs)
        model = info.builder(num_classes=num_classes, **kwargs)
    except TypeError as error:
        signature = inspect.signature(info.builder)
        raise ModelError(f"bad arguments for model {name!r}: {error}; the builder takes {signature}") from None
    model.segcore_config = {"architecture": name, "num_classes": num_classes, "model_kwargs": dict(kwargs)}
    return model
