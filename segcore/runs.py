"""Reading what `segcore train` leaves in a run folder: each stage's metrics.csv and recipe.yaml.

One reader for the per-epoch log serves the app's progress curves (app/jobs.py), the model card and the recorded
evaluations (`segcore eval --record`), so they can never disagree on what a run did.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import yaml

METRICS_FILE = "metrics.csv"
RECIPE_FILE = "recipe.yaml"
# Columns that count things; every other numeric column is a float (loss, lr, seconds, metrics).
_INTEGER_COLUMNS = ("epoch", "step")


def read_metrics_csv(path: str | os.PathLike) -> list[dict]:
    """One dict per logged epoch, numbers parsed (epoch and step as int), empty cells left out; [] when the file
    is missing or unreadable (a run that has not finished its first epoch)."""
    try:
        with open(path, newline="", encoding="utf-8") as stream:
            rows = list(csv.DictReader(stream))
    except OSError:
        return []
    parsed = []
    for row in rows:
        record = {}
        for key, value in row.items():
            if value in ("", None):
                continue
            try:
                number = float(value)
            except ValueError:
                record[key] = value
                continue
            record[key] = int(number) if key in _INTEGER_COLUMNS else number
        parsed.append(record)
    return parsed


def _recipe_of(folder: Path) -> dict:
    path = folder / RECIPE_FILE
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def run_training_summary(model_dir: str | os.PathLike) -> dict:
    """What produced a trained model folder (RUN/best, or RUN/STAGE/best of a multi-stage run): recipe name,
    fraction of training labels, each stage's epochs and wall time (from its metrics.csv), and the totals."""
    model_dir = Path(model_dir)
    # Each stage folder of a multi-stage run holds its own single-stage recipe; the run's recipe lists the stages.
    stage_dir, outer = model_dir.parent, model_dir.parent.parent
    outer_stages = [stage.get("name") for stage in _recipe_of(outer).get("stages") or []]
    run_dir = outer if stage_dir.name in outer_stages else stage_dir
    recipe = _recipe_of(run_dir)
    stage_names = [stage.get("name", f"stage{index}") for index, stage in enumerate(recipe.get("stages") or [])]
    stage_dirs = [(name, run_dir / name) for name in stage_names] or [("train", run_dir)]
    stages = []
    for name, folder in stage_dirs:
        rows = read_metrics_csv(folder / METRICS_FILE)
        last = rows[-1] if rows else {}
        stages.append({"name": name, "epochs": int(last.get("epoch", 0)),
                       "wall_seconds": float(last.get("seconds", 0.0))})
    return {"run": run_dir.name, "train_fraction": float(recipe.get("train_fraction", 1.0)), "stages": stages,
            "epochs": sum(stage["epochs"] for stage in stages),
            "wall_seconds": sum(stage["wall_seconds"] for stage in stages)}
