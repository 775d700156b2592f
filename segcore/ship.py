"""Ship a trained model: measure it on a named split, write it under assets/weights/NAME with a model card.

`python -m segcore ship RUN_DIR/best --name NAME --data ROOT --split test --licence "..."` evaluates the model
through `evaluate` (full-size images), times it on the CPU at its input size, and writes model.safetensors +
config.json + README.md (the card: data, split, recipe, epochs, wall time, hardware, parameters, metrics, licence).
Weights are stored in float16 only when that saves real space (over 5 MB) and changes no metric by more than 0.001;
weights that would still take over 25 MB are refused before anything is written.
Training-only auxiliary heads (builders with an `aux_head`/`aux_heads` switch: BiSeNet, DeepLab v3) are left out
of the shipped file; they never change a prediction.
A saliency model is measured next to the centre-bias baseline (a centred Gaussian) on the same images, and the card
says on which metrics it beats the baseline (KLD: lower is better; the others: higher).
"""

from __future__ import annotations

import copy
import csv
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import yaml

from segcore.checkpoint import build_config, load_pretrained, save_pretrained
from segcore.engine.data import open_dataset
from segcore.engine.evaluate import CenterBias, evaluate
from segcore.errors import SegcoreError
from segcore.inference import Segmenter
from segcore.registry import builder_parameters, create_model

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "assets" / "weights"
# Recorded test results of the contrastive-pretraining comparison (issue 6, item 4), rendered into docs/models.md.
CONTRASTIVE_RESULTS_DIR = Path(__file__).resolve().parent.parent / "docs" / "results" / "contrastive"
# Recorded evaluations of models trained on a lent GPU (issue 6, item 5), set against the shipped CPU models.
GPU_RESULTS_DIR = Path(__file__).resolve().parent.parent / "docs" / "results" / "bisenet-gpu"
# Person models and the MediaPipe peer on the same validation sources and test split (issue 13).
PERSON_RESULTS_DIR = Path(__file__).resolve().parent.parent / "docs" / "results" / "persons"
HALF_PRECISION_ABOVE_BYTES = 5 * 2**20
MAX_FILE_BYTES = 25 * 2**20
LOWER_IS_BETTER = {"kld"}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_latency_ms(model: torch.nn.Module, size: tuple[int, int], threads: int = 2, repeats: int = 10) -> float:
    """Median forward time of one image at `size` on the CPU with `threads` threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    model = model.to("cpu").eval()
    x = torch.randn(1, 3, *size)
    try:
        with torch.inference_mode():
            model(x)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return statistics.median(times) * 1000.0


END_TO_END_IMAGES = 20


def end_to_end_latency_ms(model: torch.nn.Module, dataset, images: int = END_TO_END_IMAGES) -> tuple[float, str]:
    """Median time a user waits for one photo of `dataset` at its full size: decoded RGB in, labels + alpha out,
    through Segmenter in the runtime the app picks, with one thread (the app's policy on 2 cores). Returns
    (milliseconds, runtime)."""
    from segcore.bench import end_to_end
    from segcore.inference import preferred_runtime

    runtime = preferred_runtime(model.segcore_config)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        segmenter = Segmenter(model, device="cpu", runtime=runtime)
        photos = [dataset.load(index)[0] for index in range(min(images, len(dataset)))]
        times = []
        for index, photo in enumerate([photos[0], *photos]):
            start = time.perf_counter()
            end_to_end(segmenter, photo)
            if index:  # the first call warms up
                times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return statistics.median(times) * 1000.0, runtime


def _training_summary(model_dir: Path, config: dict) -> dict:
    training = config.get("meta", {}).get("training", {})
    wall_seconds = run_training_summary(model_dir)["wall_seconds"]  # every stage of the run
    return {"epochs": training.get("epochs_done"), "device": training.get("device"),
            "recipe": training.get("recipe", {}), "data": training.get("data"), "wall_seconds": wall_seconds or None}


def _format_metrics(metrics: dict, class_names: list[str]) -> list[str]:
    lines = []
    for key, value in metrics.items():
        if isinstance(value, list):
            per_class = ", ".join(f"{name} {score * 100:.2f}" for name, score in zip(class_names, value))
            lines.append(f"| {key} (per class, %) | {per_class} |")
        elif isinstance(value, float):
            shown = f"{value * 100:.2f} %" if key in ("pixel_acc", "mean_acc", "miou", "fwiou", "fg_iou",
                                                      "boundary_f1") else f"{value:.4f}"
            lines.append(f"| {key} | {shown} |")
        else:
            lines.append(f"| {key} | {value} |")
    return lines


def beats_baseline(metrics: dict, baseline: dict) -> dict[str, bool]:
    """For each metric both share: does the model beat the baseline (strictly)?"""
    return {key: (metrics[key] < value if key in LOWER_IS_BETTER else metrics[key] > value)
            for key, value in baseline.items() if isinstance(value, float) and key in metrics}


def _baseline_lines(metrics: dict, baseline: dict) -> list[str]:
    wins = beats_baseline(metrics, baseline)
    lines = ["", f"### Against the {baseline['name']} baseline, same images", "",
             "| metric | model | baseline | model better |", "|---|---|---|---|"]
    for key, better in wins.items():
        lines.append(f"| {key}{' (lower is better)' if key in LOWER_IS_BETTER else ''} | {metrics[key]:.4f} | "
                     f"{baseline[key]:.4f} | {'yes' if better else 'no'} |")
    verdict = "every metric" if all(wins.values()) else f"{sum(wins.values())} of {len(wins)} metrics"
    lines += ["", f"The model beats the baseline on {verdict}."]
    return lines


def model_card(name: str, config: dict, metrics: dict, split: str, data: str, licence: str, training: dict,
               latency_ms: float, parameters: int, hardware: str, command: str,
               baseline: dict | None = None, notes: str = "", end_to_end: tuple[float, str] | None = None) -> str:
    hours = f"{training['wall_seconds'] / 3600:.2f} h" if training.get("wall_seconds") else "unknown"
    recipe = training.get("recipe", {})
    lines = [
        f"# {name}",
        "",
        f"`{config['architecture']}` ({config['task']}), {parameters / 1e6:.3f} M parameters, input "
        f"{config['input_size'][0]}x{config['input_size'][1]} (resize policy `{config['resize']}`), classes: "
        f"{', '.join(config['class_names'])}.",
        "",
        "## Training",
        "",
        f"- data: {training.get('data') or recipe.get('data')}",
        f"- recipe: `recipes/{name}.yaml` (loss {recipe.get('loss')}, optimizer {recipe.get('optimizer')}, "
        f"lr {recipe.get('lr')}, batch {recipe.get('batch_size')}, augmentation {recipe.get('augmentation')}, "
        f"normalisation {recipe.get('normalization')})",
        f"- epochs: {training.get('epochs')} (the selected checkpoint; the recipe runs {recipe.get('epochs')}); "
        f"wall time {hours}; hardware: {hardware}",
        f"- model selection: {recipe.get('best_metric') or 'default metric'} on the validation data named in the recipe",
        *([f"- notes: {notes}"] if notes else []),
        "",
        f"## Measured on `{data}`, split `{split}` ({metrics.get('images')} images, full size)",
        "",
        "| metric | value |",
        "|---|---|",
        *_format_metrics({k: v for k, v in metrics.items() if k != "images"}, config["class_names"]),
        *([f"| end to end, one photo of this split at full size (decoded RGB in, labels + alpha out), 1 thread, "
           f"{end_to_end[1]} (median of {END_TO_END_IMAGES}) | {end_to_end[0]:.1f} ms |"] if end_to_end else []),
        f"| network only, one image at the input size, 2 threads, torch | {latency_ms:.1f} ms |",
        *(_baseline_lines(metrics, baseline) if baseline else []),
        "",
        f"Measured by: `{command}`",
        "",
        "## Licence",
        "",
        licence,
        "",
    ]
    return "\n".join(lines)


def without_training_heads(model: torch.nn.Module) -> torch.nn.Module:
    """`model` rebuilt without its auxiliary heads, when its builder can leave them out; else `model` itself.

    The heads only feed training losses (their outputs exist in train mode alone), so every prediction stays the
    same; the copy's config records the switch, so it loads back as saved.
    """
    config = model.segcore_config
    kwargs = dict(config.get("model_kwargs", {}))
    parameters = builder_parameters(config["architecture"])
    switch = next((name for name in ("aux_heads", "aux_head") if name in parameters), None)
    if switch is None or not any(key.startswith(f"{switch}.") for key in model.state_dict()):
        return model
    kwargs[switch] = False
    slim = create_model(config["architecture"], config["num_classes"], **kwargs)
    slim.load_state_dict({key: tensor for key, tensor in model.state_dict().items()
                          if not key.startswith(f"{switch}.")}, strict=True)
    slim.segcore_config = {**config, "model_kwargs": kwargs}
    return slim.eval()


def ship_model(model_dir: str | Path, name: str, *, data: str, split: str, dataset: str | None = None,
               licence: str, weights_dir: Path = WEIGHTS_DIR, command: str = "", hardware: str | None = None,
               notes: str = "", class_names: list[str] | None = None) -> dict:
    """`hardware` overrides the device the run recorded (e.g. the GPU's name); `notes` go into the card;
    `class_names` renames the classes (e.g. background, person for a folder dataset's background, foreground)."""
    model_dir = Path(model_dir)
    model = without_training_heads(load_pretrained(model_dir, device="cpu"))
    config = model.segcore_config
    if class_names is not None:  # checked (one per class) before any measuring, as save_pretrained will store them
        config = {**config, "class_names": build_config(model, class_names=class_names)["class_names"]}
        model.segcore_config = config
    kind = dataset or ("saliency" if config["task"] == "saliency" else "folder")
    evaluation_set = open_dataset(kind, data, split, evaluation=True)
    metrics = evaluate(Segmenter(model, device="cpu"), evaluation_set)
    baseline = None
    if config["task"] == "saliency":
        center_bias = CenterBias()
        baseline = {"name": f"center-bias (sigma {center_bias.sigma_fraction} of each side)",
                    **evaluate(center_bias, evaluation_set)}
    parameters = sum(p.numel() for p in model.parameters())
    latency = cpu_latency_ms(model, tuple(config["input_size"]))
    end_to_end = end_to_end_latency_ms(model, evaluation_set)
    training = _training_summary(model_dir, config)
    hardware = hardware or training.get("device") or "cpu"
    if hardware == "cpu":
        hardware = f"CPU ({cpu_name()}, 2 cores)"
    dtype = "float32"
    weights_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    if weights_bytes > HALF_PRECISION_ABOVE_BYTES:
        half = copy.deepcopy(model).half().float()
        half_metrics = evaluate(Segmenter(half, device="cpu"), evaluation_set)
        # "Costs nothing": no metric moves by more than 0.001 (relative for metrics above 1, e.g. NSS).
        changes = [abs(half_metrics[k] - v) / max(1.0, abs(v)) for k, v in metrics.items() if isinstance(v, float)]
        if max(changes, default=0.0) <= 1e-3:
            dtype = "float16"
    stored_bytes = weights_bytes // 2 if dtype == "float16" else weights_bytes
    if stored_bytes > MAX_FILE_BYTES - 2**16:  # leave room for the safetensors header
        why = " (float16 changed a metric by more than 0.001)" if dtype == "float32" else ""
        raise SegcoreError(f"{name}: the {dtype} weights take {stored_bytes / 2**20:.1f} MB, over the 25 MB a shipped "
                           f"file may take{why}; ship a smaller model")
    card = model_card(name, config, metrics, split, data, licence, training, latency, parameters, hardware, command,
                      baseline=baseline, notes=notes, end_to_end=end_to_end)
    target = weights_dir / name
    shipped_meta = {"shipped": {"name": name, "split": split, "data": data, "metrics": metrics,
                                "cpu_latency_ms": latency, "end_to_end_ms": end_to_end[0],
                                "end_to_end_runtime": end_to_end[1], "parameters": parameters, "hardware": hardware,
                                "wall_seconds": training.get("wall_seconds"), "epochs": training.get("epochs"),
                                "weights_dtype": dtype, "licence": licence}}
    if baseline:
        shipped_meta["shipped"]["baseline"] = baseline
    save_pretrained(model, target, dtype=dtype, model_card=card, **shipped_meta)
    return {"path": str(target), "metrics": metrics, "cpu_latency_ms": latency, "dtype": dtype, "baseline": baseline}


def shipped_models(weights_dir: Path = WEIGHTS_DIR) -> list[dict]:
    """Config of every shipped model folder (with its "shipped" measurements), sorted by name."""
    rows = []
    if weights_dir.is_dir():
        for folder in sorted(weights_dir.iterdir()):
            config_path = folder / "config.json"
            if config_path.is_file():
                config = json.loads(config_path.read_text())
                rows.append({"folder": folder.name, **config})
    return rows


def _latency_cell(shipped: dict) -> str:
    network = f"network {shipped.get('cpu_latency_ms', float('nan')):.1f} ms"
    if "end_to_end_ms" in shipped:
        return f"end to end {shipped['end_to_end_ms']:.1f} ms ({shipped['end_to_end_runtime']}, 1 thread); {network}"
    return network


def shipped_table(weights_dir: Path = WEIGHTS_DIR) -> str:
    """Markdown table of shipped models for docs/models.md, from their configs' measured numbers."""
    lines = ["| shipped model | task | architecture | parameters (M) | input | metrics (split) | CPU latency | "
             "training |", "|---|---|---|---:|---|---|---:|---|"]
    for row in shipped_models(weights_dir):
        shipped = row.get("meta", {}).get("shipped", {})
        metrics = shipped.get("metrics", {})
        shown = ", ".join(f"{key} {value * 100:.1f}" if key not in ("cc", "nss", "kld", "sim", "auc_judd")
                          else f"{key} {value:.3f}" for key, value in metrics.items()
                          if isinstance(value, float) and key not in ("pixel_acc", "mean_acc", "fwiou"))
        shown += f" ({shipped.get('split')})"
        baseline = shipped.get("baseline")
        if baseline:
            wins = beats_baseline(metrics, baseline)
            shown += (f"; beats the centre-bias baseline on {sum(wins.values())} of {len(wins)} ("
                      + ", ".join(f"{key} {value:.3f}" for key, value in baseline.items()
                                  if isinstance(value, float)) + ")")
        hours = shipped.get("wall_seconds")
        lines.append(
            f"| {row['folder']} | {row['task']} | {row['architecture']} | {shipped.get('parameters', 0) / 1e6:.3f} | "
            f"{row['input_size'][0]}x{row['input_size'][1]} | {shown} | "
            f"{_latency_cell(shipped)} | "
            f"{shipped.get('epochs')} epochs, {hours / 3600 if hours else float('nan'):.2f} h, {shipped.get('hardware')} |"
        )
    if len(lines) == 2:
        lines.append("| (none shipped yet) | | | | | | | |")
    return "\n".join(lines)


def run_training_summary(model_dir: str | Path) -> dict:
    """What produced a trained model folder (RUN/best, or RUN/STAGE/best of a multi-stage run): recipe name,
    fraction of training labels, each stage's epochs and wall time (from its metrics.csv), and the totals."""
    model_dir = Path(model_dir)

    def recipe_of(folder: Path) -> dict:
        path = folder / "recipe.yaml"
        return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}

    # Each stage folder of a multi-stage run holds its own single-stage recipe; the run's recipe lists the stages.
    stage_dir, outer = model_dir.parent, model_dir.parent.parent
    outer_stages = [stage.get("name") for stage in recipe_of(outer).get("stages") or []]
    run_dir = outer if stage_dir.name in outer_stages else stage_dir
    recipe = recipe_of(run_dir)
    stage_names = [stage.get("name", f"stage{index}") for index, stage in enumerate(recipe.get("stages") or [])]
    stage_dirs = [(name, run_dir / name) for name in stage_names] or [("train", run_dir)]
    stages = []
    for name, folder in stage_dirs:
        rows = []
        if (folder / "metrics.csv").is_file():
            with open(folder / "metrics.csv", newline="") as stream:
                rows = list(csv.DictReader(stream))
        stages.append({"name": name, "epochs": int(rows[-1]["epoch"]) if rows else 0,
                       "wall_seconds": float(rows[-1]["seconds"]) if rows else 0.0})
    return {"run": run_dir.name, "train_fraction": float(recipe.get("train_fraction", 1.0)), "stages": stages,
            "epochs": sum(stage["epochs"] for stage in stages),
            "wall_seconds": sum(stage["wall_seconds"] for stage in stages)}


def recorded_runs(results_dir: Path) -> list[dict]:
    """The evaluations in `results_dir` that `segcore eval --record` wrote (each with its run's training summary)."""
    records = [json.loads(path.read_text()) for path in sorted(Path(results_dir).glob("*.json"))]
    return [record for record in records if "training" in record]


def comparison_table(results_dir: Path) -> str:
    """Markdown table of recorded evaluations (`segcore eval --record FILE`) in `results_dir`, grouped by the
    fraction of training labels and the total epochs (arms compare at equal epochs), the better arm of each named."""
    records = recorded_runs(results_dir)
    if not records:
        return "(no recorded runs yet)"

    def group_of(record: dict) -> tuple[float, int]:
        return record["training"]["train_fraction"], record["training"]["epochs"]

    records.sort(key=lambda r: (*group_of(r), r["training"]["run"]))
    lines = ["| run | training labels | stages (epochs) | epochs | wall time | fg IoU | mIoU | boundary F | split |",
             "|---|---:|---|---:|---:|---:|---:|---:|---|"]
    for record in records:
        training = record["training"]
        stages = " + ".join(f"{stage['name']} {stage['epochs']}" for stage in training["stages"])
        lines.append(
            f"| {training['run']} | {training['train_fraction'] * 100:.0f} % | {stages} | {training['epochs']} | "
            f"{training['wall_seconds'] / 3600:.2f} h | {record['fg_iou'] * 100:.2f} | {record['miou'] * 100:.2f} | "
            f"{record['boundary_f1']:.3f} | {record['split']} ({record['images']} images) |")
    lines.append("")
    for fraction, epochs in sorted({group_of(r) for r in records}):
        group = [r for r in records if group_of(r) == (fraction, epochs)]
        where = f"{fraction * 100:.0f} % of the labels, {epochs} epochs"
        if len(group) > 1:
            best = max(group, key=lambda r: r["fg_iou"])
            others = ", ".join(f"{r['training']['run']} {r['fg_iou'] * 100:.2f}" for r in group if r is not best)
            lines.append(f"- {where}: {best['training']['run']} is better, fg IoU {best['fg_iou'] * 100:.2f} against "
                         f"{others}.")
        else:
            lines.append(f"- {where}: only {group[0]['training']['run']} is recorded so far; no comparison yet.")
    return "\n".join(lines)


def _headline(record: dict) -> tuple[str, float]:
    """The metric a run is ranked by: foreground IoU for two-class (portrait) results, else mIoU."""
    return ("fg_iou", record["fg_iou"]) if "fg_iou" in record else ("miou", record["miou"])


def against_shipped_table(results_dir: Path, weights_dir: Path = WEIGHTS_DIR) -> str:
    """Markdown table of recorded evaluations (`segcore eval --record FILE`) in `results_dir`, each set against the
    best other shipped model measured on the same data and split, and whether it ships itself (as a folder of its
    run's name)."""
    records = recorded_runs(results_dir)
    if not records:
        return "(no recorded runs yet)"
    shipped = [(row["folder"], row["meta"]["shipped"]) for row in shipped_models(weights_dir)]
    lines = ["| run | split | epochs | wall time | metric | best other shipped model, same data and split | ships |",
             "|---|---|---:|---:|---:|---|---|"]
    for record in records:
        training = record["training"]
        key, value = _headline(record)
        ships, peers = "no", []
        for folder, measured in shipped:
            same = measured["data"] == record["data"] and measured["split"] == record["split"]
            if not same or key not in measured["metrics"]:
                continue
            if folder == training["run"]:
                ships = f"yes, as {folder}"
            else:
                peers.append((measured["metrics"][key], folder))
        peer = max(peers, default=None)
        against = (f"{peer[1]}: {key} {peer[0] * 100:.2f} ({'beaten' if value > peer[0] else 'not beaten'})"
                   if peer else "none")
        lines.append(f"| {training['run']} | {record['split']} ({record['images']} images) | {training['epochs']} | "
                     f"{training['wall_seconds'] / 60:.1f} min | {key} {value * 100:.2f} | {against} | {ships} |")
    return "\n".join(lines)


def _evaluated_sets(record: dict) -> dict[str, dict]:
    """"source split" -> metrics of one record: per source for `eval --recipe`, else the one data folder."""
    if "sources" in record:
        return {f"{name} {record['split']}": metrics for name, metrics in record["sources"].items()}
    return {f"{Path(record['data']).name} {record['split']}": record}


def person_table(results_dir: Path = PERSON_RESULTS_DIR, peer_prefix: str = "mediapipe") -> str:
    """Markdown table: fg IoU (%) of each recorded model or peer on each evaluated set, and for each model the sets
    where it is at or above the peer (records written by `segcore eval ... --record docs/results/persons/X.json`)."""
    records = [json.loads(path.read_text()) for path in sorted(Path(results_dir).glob("*.json"))]
    if not records:
        return "(no recorded evaluations yet)"
    rows: dict[str, dict[str, dict]] = {}
    for record in records:
        rows.setdefault(record["model"], {}).update(_evaluated_sets(record))
    columns = list(dict.fromkeys(column for sets in rows.values() for column in sets))
    columns.sort(key=lambda column: column.endswith(" test"))  # validation sets first, the test split last
    lines = ["| model | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for model, sets in rows.items():
        cells = [f"{sets[column]['fg_iou'] * 100:.2f}" if column in sets else "" for column in columns]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    images = {column: next(sets[column]["images"] for sets in rows.values() if column in sets) for column in columns}
    lines.append("")
    lines.append("Images per set: " + ", ".join(f"{column} {count}" for column, count in images.items()) + ".")
    peers = [model for model in rows if model.startswith(peer_prefix)]
    for peer in peers:
        for model, sets in rows.items():
            if model in peers:
                continue
            shared = [column for column in columns if column in sets and column in rows[peer]]
            at_or_above = [column for column in shared if sets[column]["fg_iou"] >= rows[peer][column]["fg_iou"]]
            below = [column for column in shared if column not in at_or_above]
            lines.append(f"- {model} against {peer}: at or above on {len(at_or_above)} of {len(shared)} sets"
                         + (f"; below on {', '.join(below)}" if below else "") + ".")
    return "\n".join(lines)
