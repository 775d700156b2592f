"""Saved models: a folder with `model.safetensors` + `config.json`, read from disk or from the Hugging Face Hub,
or found by name in the catalogue of installed models (segcore.zoo).

The config names the registered architecture and its kwargs, so loading rebuilds the network with
`create_model` and never unpickles anything: a checkpoint from a stranger cannot run code. Legacy `.pt`/`.pth`
files are accepted only through `torch.load(weights_only=True)` into an architecture the caller names.
Folders are written to a temporary sibling and renamed into place, so a crash never leaves half a model.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import shutil
import tempfile
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from segcore.data.palette import default_palette
from segcore.data.transforms import resolve_normalization
from segcore.errors import CheckpointError
from segcore.registry import MAX_CLASSES, create_model, model_info

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
FORMAT_VERSION = 1
RESIZE_POLICIES = ("fixed", "letterbox", "max_side", "none")
MIN_INPUT_SIDE, MAX_INPUT_SIDE = 8, 4096  # a network input side; beyond it a hand-edited config is a typo
# Files a model folder may hold; anything else means the folder is not ours and must not be replaced.
INT8_NAME = "model.int8.onnx"  # written by segcore.quantize beside the weights it was made from
_OWNED_FILES = {CONFIG_NAME, WEIGHTS_NAME, CARD_NAME, INT8_NAME}
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub_repo_id(value: str) -> bool:
    """Whether `value` has the shape of a Hugging Face Hub repo id ('owner/name'), not of a file name."""
    return bool(_REPO_ID.match(value)) and not value.endswith((".safetensors", ".pt", ".pth", ".json"))


def _json_ready(value, what: str):
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{what} must be JSON-serialisable: {error}") from None


def build_config(
    model: nn.Module,
    *,
    class_names=None,
    class_colors=None,
    normalization: str | None = None,
    mean=None,
    std=None,
    input_size=None,
    resize: str | None = None,
    ignore_index: int | None = 255,
    meta: dict | None = None,
) -> dict:
    """The config.json content for `model` (built by `create_model`), with defaults filled from the registry."""
    base = getattr(model, "segcore_config", None)
    if not base or "architecture" not in base:
        raise CheckpointError(
            "this model was not built with segcore.create_model, so its architecture cannot be recorded; "
            "build it with create_model(name, num_classes, ...)"
        )
    info = model_info(base["architecture"])
    num_classes = base["num_classes"]
    if class_names is None:
        class_names = base.get("class_names") or (
            ["background", "foreground"] if num_classes == 2 else [f"class_{index}" for index in range(num_classes)]
        )
    if len(class_names) != num_classes:
        raise CheckpointError(f"{len(class_names)} class names given ({', '.join(map(str, class_names))}) for a model "
                              f"with {num_classes} classes; give one name per class, in class order")
    if class_colors is None:
        class_colors = base.get("class_colors") or default_palette(max(num_classes, 2))[:num_classes]
    if len(class_colors) != num_classes or any(len(color) != 3 for color in class_colors):
        raise CheckpointError(f"class_colors must hold {num_classes} RGB triples, got {class_colors!r}")
    if normalization is None and mean is None and std is None and "normalization" in base:
        norm = dict(base["normalization"])
    else:
        norm = resolve_normalization(normalization, mean, std)
    if input_size is None:
        input_size = base.get("input_size") or info["default_size"]
    if len(input_size) != 2 or min(input_size) < 1:
        raise CheckpointError(f"input_size must be (height, width), got {input_size!r}")
    if resize is None:  # the policy the model was trained (and validated) with, as for the other fields
        resize = base.get("resize") or "fixed"
    if resize not in RESIZE_POLICIES:
        raise CheckpointError(f"resize must be one of {RESIZE_POLICIES}, got {resize!r}")
    merged_meta = dict(base.get("meta", {}))
    merged_meta.update(meta or {})
    return {
        "format_version": FORMAT_VERSION,
        "architecture": base["architecture"],
        "num_classes": num_classes,
        "model_kwargs": _json_ready(base.get("model_kwargs", {}), "model kwargs"),
        "task": base.get("task", info["task"]),
        "class_names": [str(name) for name in class_names],
        "class_colors": [[int(channel) for channel in color] for color in class_colors],
        "normalization": norm,
        "input_size": [int(input_size[0]), int(input_size[1])],
        "resize": resize,
        "ignore_index": ignore_index,
        # the test-time augmentation the model runs with by default (segcore.inference.TestTimeAugmentation)
        **({"tta": str(base["tta"])} if base.get("tta") else {}),
        # the runtime it runs fastest in end to end, where `segcore ship` timed more than one (an int8 graph is
        # made from one set of weights, so its entry and runtime are not carried to a re-saved model)
        **({"runtime": str(base["runtime"])} if base.get("runtime") not in (None, "", "onnxruntime-int8") else {}),
        "meta": _json_ready(merged_meta, "meta"),
    }


def _state_dict_for_saving(model: nn.Module, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    tensors = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu")
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        tensors[name] = tensor.contiguous().clone()
    return tensors


def save_pretrained(
    model: nn.Module,
    directory: str | os.PathLike,
    *,
    dtype: torch.dtype | str | None = None,
    model_card: str | None = None,
    class_names=None,
    class_colors=None,
    normalization: str | None = None,
    mean=None,
    std=None,
    input_size=None,
    resize: str | None = None,
    ignore_index: int | None = 255,
    **meta,
) -> Path:
    """Write `directory/model.safetensors` + `config.json` (+ README.md when `model_card` is given) atomically.

    `dtype="float16"` stores floating-point weights in half precision (loading casts back to the model's dtype).
    Extra keyword arguments land in the config's free-form "meta" (training data, recipe, metrics, ...).
    """
    directory = Path(directory)
    config = build_config(
        model,
        class_names=class_names,
        class_colors=class_colors,
        normalization=normalization,
        mean=mean,
        std=std,
        input_size=input_size,
        resize=resize,
        ignore_index=ignore_index,
        meta=meta,
    )
    if isinstance(dtype, str):
        if dtype not in ("float16", "bfloat16", "float32"):
            raise CheckpointError(f"dtype must be float16, bfloat16 or float32, got {dtype!r}")
        dtype = getattr(torch, dtype)
    if directory.exists():
        if not directory.is_dir():
            raise CheckpointError(f"{directory}: exists and is not a folder; choose another output path")
        foreign = sorted(entry.name for entry in directory.iterdir() if entry.name not in _OWNED_FILES)
        if foreign:
            raise CheckpointError(
                f"{directory}: holds files that are not part of a saved model ({', '.join(foreign[:5])}); "
                "refusing to replace it, choose an empty or new folder"
            )
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        weights = _state_dict_for_saving(model, dtype)
        save_file(weights, str(staging / WEIGHTS_NAME), metadata={"format": "pt", "segcore": str(FORMAT_VERSION)})
        (staging / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        if model_card is not None:
            (staging / CARD_NAME).write_text(model_card, encoding="utf-8")
        elif (directory / CARD_NAME).exists():
            shutil.copy2(directory / CARD_NAME, staging / CARD_NAME)
        # mkdtemp makes the folder private and safetensors writes 0600: a saved model is meant to be shared.
        staging.chmod(0o755)
        for entry in staging.iterdir():
            entry.chmod(0o644)
        if directory.exists():
            retired = directory.with_name(f".{directory.name}.old-{os.getpid()}")
            shutil.rmtree(retired, ignore_errors=True)
            os.rename(directory, retired)
            os.rename(staging, directory)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def read_config(path: str | os.PathLike) -> dict:
    """Parse and check a config.json; errors name the file and what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: config.json is missing; a saved model folder needs config.json and {WEIGHTS_NAME}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: is not a text file; re-save the model with segcore.save_pretrained") from None
    except json.JSONDecodeError as error:
        raise CheckpointError(
            f"{path}: is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}); "
            "re-save the model with segcore.save_pretrained"
        ) from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: must hold a JSON object")
    missing = [key for key in ("architecture", "num_classes") if key not in config]
    if missing:
        raise CheckpointError(f"{path}: lacks {', '.join(missing)}; re-save the model with segcore.save_pretrained")
    version = config.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {version!r} is newer than this segcore understands; upgrade segcore")
    return config


def config_problems(config: dict) -> list[str]:
    """What makes a (possibly hand-edited) config unusable before anything is built: sizes, classes, normalisation."""
    problems = []
    num_classes = config.get("num_classes")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or not 1 <= num_classes <= MAX_CLASSES:
        problems.append(f"num_classes must be an integer in 1..{MAX_CLASSES}, not {num_classes!r}")
    input_size = config.get("input_size")
    if input_size is not None and not (
            isinstance(input_size, list) and len(input_size) == 2
            and all(isinstance(side, int) and not isinstance(side, bool) and MIN_INPUT_SIDE <= side <= MAX_INPUT_SIDE
                    for side in input_size)):
        problems.append(f"input_size must be [height, width] with both in {MIN_INPUT_SIDE}..{MAX_INPUT_SIDE}, "
                        f"not {input_size!r}")
    normalization = config.get("normalization")
    if isinstance(normalization, dict):
        for key in ("mean", "std"):
            values = normalization.get(key)
            if not (isinstance(values, list) and len(values) == 3 and all(
                    isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                    for value in values)):
                problems.append(f"normalization {key} must be three finite numbers, not {values!r}")
            elif key == "std" and min(values) <= 0:
                problems.append(f"normalization std must be positive (it divides the pixels), not {values}")
    if "tta" in config and not isinstance(config["tta"], str):
        problems.append(f"tta must be a test-time augmentation such as \"flip\", not {config['tta']!r}")
    names = config.get("class_names")
    if names is not None and isinstance(num_classes, int) and (not isinstance(names, list) or len(names) != num_classes):
        problems.append(f"class_names must list one name per class ({num_classes}), not {names!r}")
    return problems


def _build_from_config(config: dict, source: Path) -> nn.Module:
    problems = config_problems(config)
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems) + "; fix config.json or re-save the model")
    try:
        model = create_model(config["architecture"], int(config["num_classes"]), **config.get("model_kwargs", {}))
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{source}: cannot rebuild the model: {error}") from None
    info = model_info(config["architecture"])
    # Fill what older or hand-written configs leave out, so every loaded model carries a complete config.
    full = {
        "task": info["task"],
        "input_size": list(info["default_size"]),
        "resize": "fixed",
        "ignore_index": 255,
        "meta": {},
        **config,
    }
    full.setdefault("normalization", resolve_normalization())
    num_classes = int(config["num_classes"])
    full.setdefault(
        "class_names",
        ["background", "foreground"] if num_classes == 2 else [f"class_{index}" for index in range(num_classes)],
    )
    full.setdefault("class_colors", default_palette(max(num_classes, 2))[:num_classes])
    model.segcore_config = full
    return model


def _load_state_dict_strictly(model: nn.Module, state_dict: dict, source: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [
        f"{name} {tuple(state_dict[name].shape)} vs {tuple(expected[name].shape)}"
        for name in expected
        if name in state_dict and tuple(state_dict[name].shape) != tuple(expected[name].shape)
    ]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if mismatched:
            problems.append(f"{len(mismatched)} with other shapes (e.g. {'; '.join(mismatched[:3])})")
        architecture = model.segcore_config["architecture"]
        raise CheckpointError(
            f"{source}: the weights do not match the architecture {architecture!r} "
            f"with num_classes={model.segcore_config['num_classes']}: tensors {', '.join(problems)}; "
            "check that config.json belongs to these weights"
        )
    converted = {name: tensor.to(expected[name].dtype) for name, tensor in state_dict.items()}
    model.load_state_dict(converted, strict=True)


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file is missing; a saved model folder needs {WEIGHTS_NAME}")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file ({error}); re-save or re-download it") from None


def _load_pickle_weights_only(path: Path) -> dict[str, torch.Tensor]:
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "unsupported content"
        raise CheckpointError(
            f"{path}: refused: the file holds Python objects other than tensors, and unpickling them could run "
            f"code ({first_line}); convert it to safetensors in an environment you trust"
        ) from None
    except (RuntimeError, OSError, EOFError) as error:
        raise CheckpointError(f"{path}: not a readable PyTorch weights file ({error})") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
            break
    if not isinstance(loaded, dict) or not all(isinstance(value, torch.Tensor) for value in loaded.values()):
        raise CheckpointError(f"{path}: does not hold a state dict of tensors")
    return loaded


def _download_from_hub(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    files = {}
    filenames = [CONFIG_NAME, WEIGHTS_NAME]
    for filename in filenames:
        if filename == WEIGHTS_NAME and (read_config(files[CONFIG_NAME]).get("int8") or {}).get("file") == INT8_NAME:
            filenames.append(INT8_NAME)  # the int8 graph `segcore quantize` saved beside the weights
        try:
            files[filename] = Path(
                hf_hub_download(repo_id, filename, revision=revision, local_files_only=offline, library_name="segcore")
            )
        except (LocalEntryNotFoundError, OfflineModeIsEnabled):
            if offline:
                raise CheckpointError(
                    f"{repo_id!r}: not a local folder, and HF_HUB_OFFLINE is set so the Hugging Face Hub was not "
                    "asked; unset HF_HUB_OFFLINE to download it, or pass the path of a saved model folder"
                ) from None
            raise CheckpointError(
                f"{repo_id!r}: not a local folder, and the Hugging Face Hub could not be reached to download it "
                "(no network?); connect to the internet, or download the repo elsewhere and pass its folder"
            ) from None
        except (RepositoryNotFoundError, RevisionNotFoundError) as error:
            raise CheckpointError(
                f"{repo_id!r}: no such local folder, and no such Hugging Face Hub repo or revision "
                f"({type(error).__name__}); check the path or repo id (private repos need `hf auth login`)"
            ) from None
        except EntryNotFoundError:
            raise CheckpointError(f"{repo_id!r}: the Hub repo has no {filename}; it is not a segcore model") from None
        except (HfHubHTTPError, OSError) as error:
            raise CheckpointError(
                f"{repo_id!r}: download from the Hugging Face Hub failed ({type(error).__name__}: {error}); "
                "check the network and try again, or pass a local folder"
            ) from None
    return files[CONFIG_NAME].parent


def load_pretrained(
    name_or_path: str | os.PathLike,
    device: str | torch.device | None = None,
    *,
    revision: str | None = None,
    architecture: str | None = None,
    num_classes: int | None = None,
    model_kwargs: dict | None = None,
) -> nn.Module:
    """Rebuild a saved model (in eval mode) from a folder, a weights file, an installed model's name
    (`load_pretrained("portrait-sinet")`, see segcore.zoo) or a Hugging Face Hub repo id.

    The returned model carries its full config as `model.segcore_config` (class names, colours, normalisation,
    input size, meta). For a bare `.pt`/`.pth`/`.safetensors` file without a config.json beside it, name the
    architecture and num_classes; `.pt`/`.pth` files are read with torch.load(weights_only=True) only.
    """
    from segcore.zoo import resolve  # the catalogue reads configs with this module: imported when first needed

    source = resolve(name_or_path)
    if isinstance(source, Path):
        if source.is_dir():
            config = read_config(source / CONFIG_NAME)
            weights_path = source / WEIGHTS_NAME
        else:
            suffix = source.suffix.lower()
            if suffix not in (".safetensors", ".pt", ".pth"):
                raise CheckpointError(
                    f"{source}: not a model folder or weights file; pass a folder with {CONFIG_NAME} and "
                    f"{WEIGHTS_NAME}, or a .safetensors/.pt/.pth file with architecture= and num_classes="
                )
            if architecture is not None:
                if num_classes is None:
                    raise CheckpointError(f"{source}: loading a bare weights file needs num_classes= as well")
                config = {"architecture": architecture, "num_classes": int(num_classes), "model_kwargs": model_kwargs or {}}
            elif (source.parent / CONFIG_NAME).is_file() and suffix == ".safetensors":
                config = read_config(source.parent / CONFIG_NAME)
            else:
                raise CheckpointError(
                    f"{source}: a bare weights file carries no architecture; pass architecture= and num_classes= "
                    f"(see segcore.list_models()), or load the folder that holds it with {CONFIG_NAME}"
                )
            weights_path = source
    else:
        folder = _download_from_hub(source, revision)
        config = read_config(folder / CONFIG_NAME)
        weights_path = folder / WEIGHTS_NAME
        source = folder
    model = _build_from_config(config, source)
    if weights_path.suffix.lower() in (".pt", ".pth"):
        state_dict = _load_pickle_weights_only(weights_path)
    else:
        state_dict = _load_safetensors(weights_path)
    _load_state_dict_strictly(model, state_dict, weights_path)
    model.eval()
    model.segcore_source = source if source.is_dir() else source.parent  # where files saved beside it are found
    if device is not None:
        model.to(device)
    return model
