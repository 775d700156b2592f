"""The one rule for which torch device to run on, shared by training, evaluation, benchmarks and inference.

"auto" means the first CUDA GPU when there is one, else the CPU; an explicit device that this machine lacks is a
SegcoreError saying what to ask for instead, not a CUDA traceback minutes later.
"""

from __future__ import annotations

import torch

from segcore.errors import SegcoreError


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """The torch.device for "auto" (or None), "cpu", "cuda", "cuda:N" or a torch.device."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise SegcoreError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SegcoreError(f"device {str(name)!r} was asked for, but no CUDA GPU is available; use device=cpu or auto")
    return device
