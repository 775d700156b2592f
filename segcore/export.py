"""Export a saved model to a `torch.export` program (.pt2) for deployment without segcore's Python classes.

The program is exported at a fixed input size (the model's config input size unless given): several
architectures pad or crop skips for odd sizes, which symbolic shapes cannot express, and Segmenter resizes every
image to the configured size anyway. The export is checked against the eager model before the file is written.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from segcore.checkpoint import load_pretrained
from segcore.errors import SegcoreError
from segcore.fileio import atomic_path


class _LogitsOnly(torch.nn.Module):
    """Deployment runtimes want a tensor, not a dict: return the "out" logits."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def export_model(model_path: str | os.PathLike, out_path: str | os.PathLike,
                 input_size: tuple[int, int] | None = None, batch_size: int = 1) -> dict:
    """Export `model_path` (folder or Hub repo id) to `out_path` (.pt2); returns a summary with the check's error."""
    out_path = Path(out_path)
    if out_path.suffix != ".pt2":
        raise SegcoreError(f"{out_path}: exported programs are written as .pt2; use a path ending in .pt2")
    model = load_pretrained(model_path, device="cpu").eval()
    config = model.segcore_config
    height, width = input_size or config["input_size"]
    if min(height, width) < 32:
        raise SegcoreError(f"input size {height}x{width} is too small; every model needs at least 32x32")
    wrapper = _LogitsOnly(model).eval()
    example = torch.randn(batch_size, 3, height, width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        program = torch.export.export(wrapper, (example,))
        expected = wrapper(example)
        got = program.module()(example)
    max_error = float((expected - got).abs().max())
    if not torch.allclose(expected, got, atol=1e-4, rtol=1e-4):
        raise SegcoreError(f"the exported program disagrees with the model (max abs error {max_error:.3g}); not written")
    with atomic_path(out_path) as temporary:
        torch.export.save(program, temporary)
    return {"path": str(out_path), "input_shape": [batch_size, 3, height, width], "max_abs_error": max_error,
            "architecture": config["architecture"]}
