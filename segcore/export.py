"""Export a saved model for deployment without segcore's Python classes: ONNX (.onnx, for ONNX Runtime) or a
`torch.export` program (.pt2).

What each architecture can do is declared in the registry (`onnx="dynamic"`: any height and width;
`onnx="fixed"`: one size, because it pads or crops skips, unpools by index or pools to fixed bins for odd sizes,
which the exporters cannot express symbolically). Every export is checked against the eager model before the file
is written (to a temporary file, then renamed). Architectures that export dynamically go through torch's
TorchScript-based exporter (it keeps symbolic sizes, and is quick), fixed-size ones through the `torch.export`-based
one (needs onnxscript), which also handles max-unpooling by index and adaptive pooling.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from segcore.checkpoint import load_pretrained
from segcore.errors import SegcoreError
from segcore.fileio import atomic_path
from segcore.registry import model_info

FORMATS = ("onnx", "torch")
SUFFIXES = {"onnx": ".onnx", "torch": ".pt2"}
ONNX_OPSET = 18
# Bumped whenever the graph written for the same weights changes (2: PReLU as Relu/Mul/Add), so cached exports made
# by an older segcore are not reused.
GRAPH_REVISION = 2
# Exported and eager logits may differ by float rounding: this much, relative to the logits' largest magnitude.
RELATIVE_TOLERANCE = 1e-4
CACHE_ENV = "SEGCORE_CACHE_DIR"  # where checked ONNX exports are kept between runs (default ~/.cache/segcore)

log = logging.getLogger(__name__)


class _PReLUAsReluMulAdd(torch.nn.Module):
    """nn.PReLU written as relu(x) * (1 - a) + x * a: the same function (to float rounding) in operators ONNX
    Runtime's CPU provider runs far faster than its PRelu kernel, which is slow and breaks its blocked (NCHWc) layout
    around every convolution. The network alone, one thread, 2026-12-06 (trainings on both cores): SINet 448x448
    (person-fast) 63.1 -> 35.8 ms, SINet 224x224 (portrait-sinet) 25.4 -> 5.7 ms, ENet 360x480 186.7 -> 126.8 ms."""

    def __init__(self, prelu: torch.nn.PReLU):
        super().__init__()
        slope = prelu.weight.detach().clone()
        self.register_buffer("slope", slope)
        self.register_buffer("keep", 1.0 - slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (-1,) + (1,) * (x.dim() - 2)  # one slope per channel (dim 1), or one for all
        return torch.relu(x) * self.keep.view(shape) + x * self.slope.view(shape)


def _for_onnx(model: torch.nn.Module) -> torch.nn.Module:
    """`model`, or a copy of it with every nn.PReLU as _PReLUAsReluMulAdd (the model itself is left as it is)."""
    if not any(isinstance(module, torch.nn.PReLU) for module in model.modules()):
        return model
    model = copy.deepcopy(model)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.PReLU):
                setattr(module, name, _PReLUAsReluMulAdd(child))
    return model


class _LogitsOnly(torch.nn.Module):
    """Deployment runtimes want a tensor, not a dict: return the "out" logits."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def _model_size(model: torch.nn.Module) -> tuple[int, int]:
    """A saved model's configured input size, or the architecture's default for a freshly created one."""
    config = model.segcore_config
    return tuple(config.get("input_size") or model_info(config["architecture"])["default_size"])


def onnx_capability(architecture: str) -> str | None:
    """"dynamic", "fixed" or None (cannot export), as the architecture's registry entry declares."""
    return model_info(architecture).get("onnx")


def _example(height: int, width: int, batch_size: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch_size, 3, height, width, generator=torch.Generator().manual_seed(seed))


def _check_size(height: int, width: int) -> None:
    if min(height, width) < 32:
        raise SegcoreError(f"input size {height}x{width} is too small; every model needs at least 32x32")


def _max_error(expected: torch.Tensor, got: np.ndarray | torch.Tensor) -> tuple[float, float]:
    got = torch.as_tensor(got)
    if tuple(got.shape) != tuple(expected.shape):
        return float("inf"), 0.0
    return float((expected - got).abs().max()), RELATIVE_TOLERANCE * max(1.0, float(expected.abs().max()))


def onnx_bytes(model: torch.nn.Module, input_size: tuple[int, int] | None = None, batch_size: int = 1,
               check: bool = True) -> bytes:
    """The model as an ONNX graph: at `input_size`, or with dynamic height and width when None (only for
    architectures registered with onnx="dynamic"). With `check`, ONNX Runtime must reproduce the eager logits."""
    return _onnx_export(model, input_size, batch_size, check)[0]


def cache_dir() -> Path:
    """$SEGCORE_CACHE_DIR, else segcore/ under $XDG_CACHE_HOME or ~/.cache."""
    configured = os.environ.get(CACHE_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "segcore"


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over every weight and buffer of `model`, by name: what an export or an int8 graph was made from."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def int8_graph_path(model: torch.nn.Module) -> Path:
    """The int8 graph `segcore quantize` saved beside `model`'s weights, checked to have been made from these
    weights (the runner of `Segmenter(runtime="onnxruntime-int8")`)."""
    config = model.segcore_config
    entry = config.get("int8")
    folder = getattr(model, "segcore_source", None)
    if not entry or folder is None:
        raise SegcoreError(f"{config['architecture']}: this model has no int8 graph; make one with `python -m "
                           "segcore quantize --model MODEL --data DIR --split val`, or use runtime 'onnxruntime'")
    path = Path(folder) / entry["file"]
    if not path.is_file():
        raise SegcoreError(f"{path}: missing, though config.json lists it; run `python -m segcore quantize` again "
                           "or use runtime 'onnxruntime'")
    if entry.get("weights_sha256") != weights_digest(model):
        raise SegcoreError(f"{path} was made from other weights than {Path(folder).name}'s; run `python -m segcore "
                           "quantize` again or use runtime 'onnxruntime'")
    return path


def _export_key(model: torch.nn.Module, input_size: tuple[int, int] | None, batch_size: int) -> str:
    """A digest of everything the exported graph depends on: architecture and kwargs, every weight and buffer,
    the size it is exported at, the opset, the torch that traced it and GRAPH_REVISION."""
    digest = hashlib.sha256()
    header = {"config": {key: model.segcore_config.get(key) for key in ("architecture", "model_kwargs",
                                                                          "num_classes")},
              "input_size": list(input_size) if input_size else None, "batch_size": batch_size,
              "opset": ONNX_OPSET, "torch": torch.__version__, "graph_revision": GRAPH_REVISION}
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    digest.update(weights_digest(model).encode())
    return digest.hexdigest()


def cached_onnx_bytes(model: torch.nn.Module, input_size: tuple[int, int] | None = None, batch_size: int = 1,
                      refresh: bool = False) -> bytes:
    """onnx_bytes (checked against the eager model), kept in cache_dir() so the next process that loads the same
    weights skips the export (2-3 s for SINet on this CPU: an app's first request). The file is named by a digest
    of the weights and export settings, so changed weights never reuse a stale graph; an unreadable or unwritable
    cache only costs the export. `refresh` exports again and replaces the cached file (one found damaged)."""
    path = cache_dir() / "onnx" / f"{_export_key(model, input_size, batch_size)}.onnx"
    if not refresh:
        try:
            data = path.read_bytes()
            if data:
                return data
        except OSError:
            pass
    data = onnx_bytes(model, input_size, batch_size)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as temporary:
            temporary.write_bytes(data)
    except OSError as error:
        log.warning("could not keep the ONNX export in %s (%s); the next load exports again", path.parent, error)
    return data


def _onnx_export(model: torch.nn.Module, input_size: tuple[int, int] | None, batch_size: int,
                 check: bool) -> tuple[bytes, float | None]:
    """onnx_bytes, plus the largest |ONNX Runtime - eager| seen by the check (None unchecked)."""
    model = model.eval()
    architecture = model.segcore_config["architecture"]
    capability = onnx_capability(architecture)
    if capability is None:
        raise SegcoreError(f"{architecture} cannot be exported to ONNX; run it with runtime='torch'")
    if input_size is None and capability != "dynamic":
        height, width = _model_size(model)
        raise SegcoreError(
            f"{architecture} exports to ONNX at one fixed size only (it pads or crops skips for odd sizes); pass an "
            f"input size, e.g. --size {height} {width}")
    height, width = input_size or _model_size(model)
    _check_size(height, width)
    wrapper = _LogitsOnly(model).eval()  # the reference the export is checked against
    exported = _LogitsOnly(_for_onnx(model)).eval()
    example = _example(height, width, batch_size)
    dynamic = {"image": {2: "height", 3: "width"}, "logits": {2: "height", 3: "width"}} if input_size is None else None
    with warnings.catch_warnings():  # both exporters warn about traced sizes and their own deprecations
        warnings.simplefilter("ignore")
        if capability == "dynamic":  # the TorchScript-based exporter keeps symbolic sizes (and is quick)
            buffer = io.BytesIO()
            torch.onnx.export(exported, (example,), buffer, input_names=["image"], output_names=["logits"],
                              opset_version=ONNX_OPSET, dynamic_axes=dynamic, dynamo=False)
            data = buffer.getvalue()
        else:  # the torch.export-based one also handles unpooling by index and adaptive pooling at one size
            try:
                with contextlib.redirect_stdout(io.StringIO()):  # its progress lines
                    program = torch.onnx.export(exported, (example,), None, input_names=["image"],
                                                output_names=["logits"], opset_version=ONNX_OPSET, dynamo=True,
                                                verbose=False)
            except ImportError as error:
                raise SegcoreError(f"exporting {architecture} to ONNX needs onnxscript: pip install onnxscript") from error
            data = program.model_proto.SerializeToString()
    if not check:
        return data, None
    sizes = [(height, width)] if dynamic is None else [(height, width), (height + 17, width - 11)]
    from segcore.inference import OnnxRunner

    runner = OnnxRunner(data, threads=1)
    largest = 0.0
    for seed, (check_height, check_width) in enumerate(sizes):
        sample = _example(check_height, check_width, batch_size, seed)
        with torch.no_grad():
            expected = wrapper(sample)
        error, allowed = _max_error(expected, runner(sample.numpy()))
        if error > allowed:
            raise SegcoreError(f"the ONNX export of {architecture} disagrees with the model at "
                               f"{check_height}x{check_width} (max abs error {error:.3g}); not exported")
        largest = max(largest, error)
    return data, largest


def export_model(model_path: str | os.PathLike, out_path: str | os.PathLike,
                 input_size: tuple[int, int] | None = None, batch_size: int = 1, format: str = "torch") -> dict:
    """Export `model_path` (folder or Hub repo id) to `out_path`; returns a summary with the check's error.

    format "onnx": dynamic height/width where the architecture allows and no size is given, else `input_size` or
    the config's; format "torch": a .pt2 program at `input_size` or the config's size."""
    if format not in FORMATS:
        raise SegcoreError(f"unknown export format {format!r}; use one of {', '.join(FORMATS)}")
    out_path = Path(out_path)
    if out_path.suffix != SUFFIXES[format]:
        raise SegcoreError(f"{out_path}: {format} exports are written as {SUFFIXES[format]} files; use a path ending "
                           f"in {SUFFIXES[format]}")
    model = load_pretrained(model_path, device="cpu").eval()
    config = model.segcore_config
    if format == "onnx":
        dynamic = input_size is None and onnx_capability(config["architecture"]) == "dynamic"
        size = None if dynamic else tuple(input_size or config["input_size"])
        data, error = _onnx_export(model, size, batch_size, check=True)
        height, width = size or config["input_size"]
        with atomic_path(out_path) as temporary:
            Path(temporary).write_bytes(data)
        shape = [batch_size, 3, "height" if dynamic else height, "width" if dynamic else width]
        return {"path": str(out_path), "format": format, "input_shape": shape, "max_abs_error": error,
                "architecture": config["architecture"]}
    height, width = input_size or config["input_size"]
    _check_size(height, width)
    wrapper = _LogitsOnly(model).eval()
    example = _example(height, width, batch_size)
    with torch.no_grad():
        program = torch.export.export(wrapper, (example,))
        expected = wrapper(example)
        got = program.module()(example)
    error, allowed = _max_error(expected, got)
    if error > allowed:
        raise SegcoreError(f"the exported program disagrees with the model (max abs error {error:.3g}); not written")
    with atomic_path(out_path) as temporary:
        torch.export.save(program, temporary)
    return {"path": str(out_path), "format": format, "input_shape": [batch_size, 3, height, width],
            "max_abs_error": error, "architecture": config["architecture"]}
