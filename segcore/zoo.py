"""The one catalogue of saved models: shipped folders, models fine-tuned in the app, and Hugging Face Hub ids.

A name means the same model everywhere (library, CLI, both UIs): `NAME` is the folder WEIGHTS_DIR/NAME,
`fine-tuned/JOB` the model of a finished app job under RUNS_DIR/app-jobs, anything else an existing path or a Hub
repo id, which `resolve` passes through for `load_pretrained` to open.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from segcore.checkpoint import CONFIG_NAME, WEIGHTS_NAME, is_hub_repo_id, read_config
from segcore.errors import CheckpointError
from segcore.registry import model_info

WEIGHTS_ENV = "SEGCORE_WEIGHTS_DIR"
RUNS_ENV = "SEGCORE_RUNS_DIR"
# The layout app/jobs.py writes (ROOT/JOB_ID/job.json with state, name, created, model_dir). It is read from disk
# rather than asked of the app's job manager, because segcore must not import app/ and the CLI has no manager.
APP_JOBS_FOLDER = "app-jobs"
JOB_FILE = "job.json"
FINE_TUNED_PREFIX = "fine-tuned/"
SOURCES = ("shipped", "fine-tuned", "folder")
# Background removal (app, webcam, `segcore cutout`) defaults to the first of these that is installed: person-fast
# is trained for people in any photo, portrait-sinet (the SINet paper's reproduction) for centred portraits only.
DEFAULT_BACKGROUND_MODELS = ("person-fast", "portrait-sinet")


class ModelNotFoundError(CheckpointError):
    """A model name that is neither installed, nor an existing path, nor a Hugging Face Hub repo id."""


def default_weights_dir() -> Path:
    """Where shipped models are installed: $SEGCORE_WEIGHTS_DIR, else assets/weights under the current folder."""
    return Path(os.environ.get(WEIGHTS_ENV) or Path("assets") / "weights")


def default_runs_dir() -> Path:
    """Where the app keeps its jobs: $SEGCORE_RUNS_DIR, else runs/ under the current folder."""
    return Path(os.environ.get(RUNS_ENV) or "runs")


@dataclass(frozen=True)
class SavedModel:
    name: str  # what pickers show and --model accepts: a shipped folder name, or "fine-tuned/<job name>"
    path: Path
    architecture: str
    task: str
    class_names: tuple[str, ...]
    source: str = "shipped"  # one of SOURCES ("folder": a model folder given by its path)
    config: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def removes_background(self) -> bool:
        """Models whose class 0 is background can cut out the rest (portrait and other foreground models)."""
        return self.task != "saliency" and len(self.class_names) >= 2 and self.class_names[0] == "background"

    @property
    def capabilities(self) -> dict[str, bool]:
        """What this saved model can do, by name, for pickers that filter on it."""
        return {"removes_background": self.removes_background}


def _saved_model(name: str, folder: Path, source: str) -> SavedModel:
    config = read_config(folder / CONFIG_NAME)
    architecture = config["architecture"]
    return SavedModel(
        name=name,
        path=folder,
        architecture=architecture,
        # Configs written before the task was recorded take the architecture's.
        task=config.get("task") or model_info(architecture)["task"],
        class_names=tuple(config.get("class_names", ())),
        source=source,
        config=config,
    )


def _is_model_folder(folder: Path) -> bool:
    return (folder / CONFIG_NAME).is_file() and (folder / WEIGHTS_NAME).is_file()


def shipped_models(weights_dir: str | os.PathLike | None = None) -> list[SavedModel]:
    """Every model folder (config.json + model.safetensors) under `weights_dir`, sorted by name."""
    weights_dir = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    if not weights_dir.is_dir():
        return []
    return [_saved_model(folder.name, folder, "shipped") for folder in sorted(weights_dir.iterdir())
            if _is_model_folder(folder)]


def _finished_jobs(runs_dir: Path) -> list[tuple[str, Path]]:
    """(job name, model folder) of every finished app job whose model is still there, newest first."""
    records = []
    jobs_root = runs_dir / APP_JOBS_FOLDER
    for job_file in jobs_root.glob(f"*/{JOB_FILE}") if jobs_root.is_dir() else ():
        try:
            record = json.loads(job_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # a job the manager is writing or a stranger's file: not a model yet
            continue
        if isinstance(record, dict) and record.get("state") == "finished" and record.get("model_dir"):
            records.append(record)
    records.sort(key=lambda record: (record.get("created") or 0, str(record.get("id"))), reverse=True)
    return [(str(record["name"]), Path(record["model_dir"])) for record in records
            if (Path(record["model_dir"]) / CONFIG_NAME).is_file()]


def fine_tuned_models(runs_dir: str | os.PathLike | None = None) -> list[SavedModel]:
    """Models of the app's finished fine-tuning jobs under `runs_dir`, newest first, named fine-tuned/<job name>."""
    runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    return [_saved_model(f"{FINE_TUNED_PREFIX}{name}", folder, "fine-tuned")
            for name, folder in _finished_jobs(runs_dir)]


def saved_models(task: str | None = None, *, background_removal: bool = False,
                 weights_dir: str | os.PathLike | None = None,
                 runs_dir: str | os.PathLike | None = None) -> list[SavedModel]:
    """Shipped models, then fine-tuned ones; `task` and `background_removal` filter them."""
    entries = shipped_models(weights_dir) + fine_tuned_models(runs_dir)
    return [entry for entry in entries if (task is None or entry.task == task)
            and (not background_removal or entry.removes_background)]


def _where(weights_dir, runs_dir) -> str:
    weights_dir = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    return f"shipped in {weights_dir}, fine-tuned in {runs_dir / APP_JOBS_FOLDER}"


def _lookup(name: str, weights_dir, runs_dir) -> SavedModel | None:
    """The saved model called `name`, reading only what that name can point to."""
    if name.startswith(FINE_TUNED_PREFIX):
        return next((entry for entry in fine_tuned_models(runs_dir) if entry.name == name), None)
    if not name or name in (".", "..") or Path(name).name != name:  # a shipped name is one folder, never a path
        return None
    folder = (Path(weights_dir) if weights_dir is not None else default_weights_dir()) / name
    return _saved_model(name, folder, "shipped") if _is_model_folder(folder) else None


def find(name: str | None, *, weights_dir: str | os.PathLike | None = None,
         runs_dir: str | os.PathLike | None = None) -> SavedModel:
    """The saved model called `name`; ModelNotFoundError lists the installed ones when there is none."""
    entry = _lookup(name, weights_dir, runs_dir) if name else None
    if entry is not None:
        return entry
    known = ", ".join(entry.name for entry in saved_models(weights_dir=weights_dir, runs_dir=runs_dir))
    if not name:
        raise ModelNotFoundError("no model chosen; pick one from the model list"
                                 + ("" if known else " (none is installed: ship or fine-tune one first)"))
    raise ModelNotFoundError(f"unknown model {name!r}; available models: {known or 'none'} "
                             f"({_where(weights_dir, runs_dir)}); pick one of them, or ship or fine-tune one")


def resolve(name_or_path: str | os.PathLike, *, weights_dir: str | os.PathLike | None = None,
            runs_dir: str | os.PathLike | None = None) -> Path | str:
    """What `load_pretrained` opens for `name_or_path`: an existing file or folder as it is, a saved model's
    folder, or (as a str) a Hugging Face Hub repo id. An existing path wins over a name, a name over the Hub."""
    path = Path(name_or_path)
    if path.exists():
        return path
    text = str(name_or_path)
    entry = _lookup(text, weights_dir, runs_dir)
    if entry is not None:
        return entry.path
    # fine-tuned/JOB names only ever mean the app's jobs: a missing one must not turn into a Hub download.
    if is_hub_repo_id(text) and not text.startswith(FINE_TUNED_PREFIX):
        return text
    known = ", ".join(entry.name for entry in saved_models(weights_dir=weights_dir, runs_dir=runs_dir)) or "none"
    raise ModelNotFoundError(
        f"{text}: no such file or folder, installed model or Hugging Face Hub repo id; installed models: {known} "
        f"({_where(weights_dir, runs_dir)}); pass a model folder, one of those names, or a repo id like 'owner/name'"
    )


def describe(name_or_path: str | os.PathLike, *, weights_dir: str | os.PathLike | None = None,
             runs_dir: str | os.PathLike | None = None) -> SavedModel | None:
    """The catalogue entry of what `resolve` opens, read from its config.json without loading weights (so callers
    can check what a model can do first); None for a Hugging Face Hub repo id, whose config is not downloaded yet."""
    target = resolve(name_or_path, weights_dir=weights_dir, runs_dir=runs_dir)
    if not isinstance(target, Path):
        return None
    entry = _lookup(str(name_or_path), weights_dir, runs_dir)
    if entry is not None and entry.path == target:
        return entry
    if not _is_model_folder(target):
        return None  # a legacy weights file or a broken folder: load_pretrained says what is wrong with it
    return _saved_model(str(name_or_path), target, "folder")


def default_background_model(*, weights_dir: str | os.PathLike | None = None,
                             runs_dir: str | os.PathLike | None = None) -> str | None:
    """The model background removal uses when none is chosen: the first installed of DEFAULT_BACKGROUND_MODELS,
    else the first portrait model that removes backgrounds, else any such model; None when none is installed."""
    entries = saved_models(background_removal=True, weights_dir=weights_dir, runs_dir=runs_dir)
    names = [entry.name for entry in entries]
    for name in DEFAULT_BACKGROUND_MODELS:
        if name in names:
            return name
    portrait = [entry.name for entry in entries if entry.task == "portrait"]
    return (portrait or names or [None])[0]
