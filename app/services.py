"""UI-agnostic operations shared by the Gradio and Streamlit apps: the model catalog for now.

The UIs call only this module; it calls the public segcore API. Run/compare/refine and fine-tune jobs join it
when the app issue lands.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import segcore

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "assets" / "weights"


@dataclass(frozen=True)
class CatalogEntry:
    name: str  # folder name of a trained model, shown in model pickers
    path: Path
    architecture: str
    task: str
    class_names: tuple[str, ...]


def trained_models(weights_dir: Path = WEIGHTS_DIR) -> list[CatalogEntry]:
    """Trained models shipped under assets/weights (each folder: config.json + model.safetensors)."""
    entries = []
    if weights_dir.is_dir():
        for folder in sorted(weights_dir.iterdir()):
            if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
                config = segcore.checkpoint.read_config(folder / "config.json")
                entries.append(
                    CatalogEntry(
                        name=folder.name,
                        path=folder,
                        architecture=config["architecture"],
                        task=config.get("task", segcore.model_info(config["architecture"])["task"]),
                        class_names=tuple(config.get("class_names", ())),
                    )
                )
    return entries


def architectures() -> list[dict]:
    """Every registered architecture with its metadata."""
    return [segcore.model_info(name) for name in segcore.list_models()]
