"""Markdown tables for docs/models.md from measured numbers: the shipped models' configs and the evaluations
`segcore eval --record FILE` wrote. Folders are passed in (the CLI computes them from the current folder), so the
tables come out the same from a source checkout and from an installed package.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from segcore.zoo import shipped_models

LOWER_IS_BETTER = {"kld"}


def beats_baseline(metrics: dict, baseline: dict) -> dict[str, bool]:
    """For each metric both share: does the model beat the baseline (strictly)?"""
    return {key: (metrics[key] < value if key in LOWER_IS_BETTER else metrics[key] > value)
            for key, value in baseline.items() if isinstance(value, float) and key in metrics}


def _latency_cell(config: dict) -> str:
    shipped = config.get("meta", {}).get("shipped", {})
    cell = f"network {shipped.get('cpu_latency_ms', float('nan')):.1f} ms"
    if "end_to_end_ms" in shipped:
        cell = f"end to end {shipped['end_to_end_ms']:.1f} ms ({shipped['end_to_end_runtime']}, 1 thread); {cell}"
    int8 = config.get("int8")
    if int8:  # `segcore quantize` timed every runtime in its own run: the ratio is the comparable figure
        timings = int8["end_to_end_ms"]
        best_float = min((ms, runtime) for runtime, ms in timings.items() if runtime != "onnxruntime-int8")
        cell += (f"; runs int8 since `segcore quantize`: {timings['onnxruntime-int8']:.1f} ms against "
                 f"{best_float[0]:.1f} ms in {best_float[1]} in the same run")
    return cell


def _shipped_training(config: dict) -> str:
    """How a shipped model was trained, from its card: epochs, hours and hardware."""
    shipped = config.get("meta", {}).get("shipped", {})
    hours = shipped.get("wall_seconds")
    return f"{shipped.get('epochs')} epochs, {hours / 3600 if hours else float('nan'):.2f} h, {shipped.get('hardware')}"


def shipped_table(weights_dir: str | os.PathLike) -> str:
    """Markdown table of shipped models for docs/models.md, from their configs' measured numbers."""
    lines = ["| shipped model | task | architecture | parameters (M) | input | metrics (split) | CPU latency | "
             "training |", "|---|---|---|---:|---|---|---:|---|"]
    for entry in shipped_models(weights_dir):
        config = entry.config
        shipped = config.get("meta", {}).get("shipped", {})
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
        lines.append(
            f"| {entry.name} | {entry.task} | {entry.architecture} | {shipped.get('parameters', 0) / 1e6:.3f} | "
            f"{config['input_size'][0]}x{config['input_size'][1]} | {shown} | "
            f"{_latency_cell(config)} | {_shipped_training(config)} |"
        )
    if len(lines) == 2:
        lines.append("| (none shipped yet) | | | | | | | |")
    return "\n".join(lines)


def recorded_runs(results_dir: str | os.PathLike) -> list[dict]:
    """The evaluations in `results_dir` that `segcore eval --record` wrote (each with its run's training summary)."""
    records = [json.loads(path.read_text()) for path in sorted(Path(results_dir).glob("*.json"))]
    return [record for record in records if "training" in record]


def comparison_table(results_dir: str | os.PathLike) -> str:
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


def headline(record: dict) -> tuple[str, float]:
    """The metric a run is ranked by: foreground IoU for two-class (portrait) results, else mIoU."""
    return ("fg_iou", record["fg_iou"]) if "fg_iou" in record else ("miou", record["miou"])


def against_shipped_table(results_dir: str | os.PathLike, weights_dir: str | os.PathLike) -> str:
    """Markdown table of recorded evaluations (`segcore eval --record FILE`) in `results_dir`, each set against the
    best other shipped model measured on the same data and split, and whether it ships itself (as a folder of its
    run's name)."""
    records = recorded_runs(results_dir)
    if not records:
        return "(no recorded runs yet)"
    shipped = [(entry.name, entry.config["meta"]["shipped"]) for entry in shipped_models(weights_dir)]
    lines = ["| run | split | epochs | wall time | metric | best other shipped model, same data and split | ships |",
             "|---|---|---:|---:|---:|---|---|"]
    for record in records:
        training = record["training"]
        key, value = headline(record)
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


def person_table(results_dir: str | os.PathLike, peer_prefix: str = "mediapipe") -> str:
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


def tta_table(results_dir: str | os.PathLike, weights_dir: str | os.PathLike, bench_file=None) -> str:
    """Markdown table of each shipped model evaluated with and without test-time augmentation (records written by
    `segcore eval --model NAME [--tta T] --record docs/results/street/X.json`): the headline metric, its change
    against the same model's plain pass, the end-to-end median ms from `bench predict --tta ... --record
    bench_file` when that run timed the same setting, and how the model was trained (its card; on its plain row)."""
    records = [json.loads(path.read_text()) for path in sorted(Path(results_dir).glob("*.json"))]
    if not records:
        return "(no recorded evaluations yet)"
    timings = {}
    if bench_file is not None and Path(bench_file).is_file():
        timings = {result["predictor"]: result["median_ms"] for result in json.loads(Path(bench_file).read_text())
                   .get("results", []) if result.get("callers", 1) == 1}
    configs = {entry.name: entry.config for entry in shipped_models(weights_dir)}
    plain = {record["model"]: headline(record)[1] for record in records if not record.get("tta")}
    records.sort(key=lambda record: (record["model"], record.get("tta") is not None, len(record.get("tta") or "")))
    lines = ["| model | test-time augmentation | split | metric | change | median ms/img | time | training |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    for record in records:
        model, tta = record["model"], record.get("tta")
        key, value = headline(record)
        change = f"{(value - plain[model]) * 100:+.2f}" if tta and model in plain else ""
        ms = timings.get(f"{model} (tta {tta})" if tta else model)
        base_ms = timings.get(model)
        time_cell = f"{ms / base_ms:.2f}x" if ms is not None and base_ms else ""
        shipped = configs.get(Path(model).name)  # recorded by name (camvid-enet) or as the shipped folder's path
        training = "" if tta else _shipped_training(shipped) if shipped else "not shipped"  # once per model
        lines.append(f"| {model} | {tta or 'none'} | {record['split']} ({record['images']} images) | "
                     f"{key} {value * 100:.2f} | {change} | {'' if ms is None else f'{ms:.1f}'} | {time_cell} | "
                     f"{training} |")
    return "\n".join(lines)
