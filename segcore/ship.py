"""Ship a trained model: measure it on a named split, write it as WEIGHTS_DIR/NAME with a model card.
(The docs tables over shipped models are segcore.reports; reading run folders is segcore.runs.)

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
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from segcore.checkpoint import build_config, load_pretrained, save_pretrained
from segcore.engine.data import open_dataset
from segcore.engine.evaluate import CenterBias, evaluate
from segcore.errors import SegcoreError
from segcore.inference import Segmenter, TestTimeAugmentation, onnx_runnable, preferred_runtime
from segcore.registry import builder_parameters, create_model
from segcore.reports import LOWER_IS_BETTER, beats_baseline, headline
from segcore.runs import run_training_summary

HALF_PRECISION_ABOVE_BYTES = 5 * 2**20
MAX_FILE_BYTES = 25 * 2**20


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
APP_RUNTIME = "; the runtime the app uses"
CLEARLY_FASTER = 1.2  # another runtime replaces the default only when the default takes 1.2x its time


def end_to_end_latency_ms(predictor, photos: list) -> float:
    """Median time a user waits for one of `photos` (RGB uint8 at full size): decoded RGB in, labels + alpha out,
    through `predictor.predict` (a Segmenter, or a peer), with one torch thread (the app's policy on 2 cores)."""
    from segcore.bench import end_to_end

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        times = []
        for index, photo in enumerate([photos[0], *photos]):
            start = time.perf_counter()
            end_to_end(predictor, photo)
            if index:  # the first call warms up
                times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return statistics.median(times) * 1000.0


def _recipe_validation(segmenter, recipe_path: str | None) -> dict | None:
    """Metrics on every validation source of a multi-source recipe, or None for a single-dataset recipe."""
    if not recipe_path or not Path(recipe_path).is_file():
        return None
    from segcore.engine.config import load_recipe
    from segcore.engine.evaluate import evaluate_recipe_sources

    if not load_recipe(recipe_path).sources:
        return None
    return {"recipe": str(recipe_path), **evaluate_recipe_sources(segmenter, recipe_path)}


def _peer_result(name: str, evaluation_set, recipe_path: str | None, photos: list) -> dict:
    """The peer's metrics on the measured split (and the recipe's validation sources) and its end-to-end time on
    the same photos as the model, in the same run."""
    from segcore.engine.evaluate import evaluate_recipe_sources
    from segcore.peers import open_peer

    with open_peer(name) as predictor:
        return {"name": f"{name} ({predictor.runtime})", "metrics": evaluate(predictor, evaluation_set),
                "validation": evaluate_recipe_sources(predictor, recipe_path) if recipe_path else None,
                "end_to_end_ms": end_to_end_latency_ms(predictor, photos)}


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


def _peer_lines(metrics: dict, end_to_end, peer: dict) -> list[str]:
    key, value = headline(metrics)
    peer_value = peer["metrics"][key]
    return ["", f"### Beside {peer['name']}, same images, same run", "", "| | model | peer |", "|---|---:|---:|",
            f"| {key}, this split | {value * 100:.2f} % | {peer_value * 100:.2f} % |",
            f"| end to end, the same {END_TO_END_IMAGES} photos, median | {end_to_end[0]:.1f} ms | "
            f"{peer['end_to_end_ms']:.1f} ms ({end_to_end[0] / peer['end_to_end_ms']:.2f}x for the model) |"]


def _validation_lines(validation: dict, peer: dict | None) -> list[str]:
    """One row per validation source of the recipe (the sets the model was chosen on), the peer's beside it."""
    peer_sources = (peer or {}).get("validation") or {}
    key, _ = headline(validation)
    lines = ["", f"## Validation sources of `{validation['recipe']}` (full size{', with the peer' if peer else ''})",
             "", f"| source | images | {key} |" + (" peer |" if peer_sources else ""),
             "|---|---:|---:|" + ("---:|" if peer_sources else "")]
    for source, scores in validation["sources"].items():
        cell = f" {peer_sources['sources'][source][key] * 100:.2f} % |" if peer_sources else ""
        lines.append(f"| {source} | {scores['images']} | {scores[key] * 100:.2f} % |{cell}")
    mean_cell = f" {peer_sources[key] * 100:.2f} % |" if peer_sources else ""
    lines.append(f"| mean over sources | {validation['images']} | {validation[key] * 100:.2f} % |{mean_cell}")
    return lines


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


def _trained_on(recipe: dict, data: str, split: str) -> bool:
    """Whether the recipe trained on `split` of the same dataset folder (train_split "train+val" and split val)."""
    splits = str(recipe.get("train_split") or "").split("+")
    same_data = recipe.get("data") is None or Path(str(recipe["data"])).name == Path(str(data)).name
    return len(splits) > 1 and split in splits and same_data


def model_card(name: str, config: dict, metrics: dict, split: str, data: str, licence: str, training: dict,
               latency_ms: float, parameters: int, hardware: str, command: str,
               baseline: dict | None = None, notes: str = "", end_to_end: tuple[float, str] | None = None,
               recipe_path: str | None = None, slower_runtimes: dict[str, float] | None = None,
               validation: dict | None = None, peer: dict | None = None) -> str:
    hours = f"{training['wall_seconds'] / 3600:.2f} h" if training.get("wall_seconds") else "unknown"
    recipe = training.get("recipe", {})
    lines = [
        f"# {name}",
        "",
        f"`{config['architecture']}` ({config['task']}), {parameters / 1e6:.3f} M parameters, input "
        f"{config['input_size'][0]}x{config['input_size'][1]} (resize policy `{config['resize']}`), classes: "
        f"{', '.join(config['class_names'])}.",
        *(["", f"Runs with test-time augmentation `{config['tta']}` (logits of each pass averaged), chosen on "
           "validation; every figure below includes it. `Segmenter(..., tta=\"none\")` or `--tta none` turns it "
           "off; the app's webcam runs without it."] if config.get("tta") else []),
        "",
        "## Training",
        "",
        f"- data: {training.get('data') or recipe.get('data')}",
        f"- recipe: `{recipe_path or f'recipes/{name}.yaml'}` (loss {recipe.get('loss')}, "
        f"optimizer {recipe.get('optimizer')}, "
        f"lr {recipe.get('lr')}, batch {recipe.get('batch_size')}, augmentation {recipe.get('augmentation')}, "
        f"normalisation {recipe.get('normalization')})",
        f"- epochs: {training.get('epochs')} (the selected checkpoint; the recipe runs {recipe.get('epochs')}); "
        f"wall time {hours}; hardware: {hardware}",
        f"- model selection: {recipe.get('best_metric') or 'default metric'} on the validation data named in the recipe",
        *([f"- notes: {notes}"] if notes else []),
        "",
        f"## Measured on `{data}`, split `{split}` ({metrics.get('images')} images, full size)",
        "",
        *([f"The model was trained on this split as well (train_split `{recipe.get('train_split')}`, the final "
           "protocol once settings were chosen on val): these numbers are not held out. The held-out numbers are "
           "those of the run that chose the settings.", ""] if _trained_on(recipe, data, split) else []),
        "| metric | value |",
        "|---|---|",
        *_format_metrics({k: v for k, v in metrics.items() if k != "images"}, config["class_names"]),
        *([f"| end to end, one photo of this split at full size (decoded RGB in, labels + alpha out), 1 thread, "
           f"{end_to_end[1]} (median of {END_TO_END_IMAGES}{APP_RUNTIME if slower_runtimes else ''}) | "
           f"{end_to_end[0]:.1f} ms |"] if end_to_end else []),
        *[f"| the same in {runtime} | {ms:.1f} ms |" for runtime, ms in (slower_runtimes or {}).items()],
        f"| network only, one image at the input size, 2 threads, torch | {latency_ms:.1f} ms |",
        *(_peer_lines(metrics, end_to_end, peer) if peer else []),
        *(_validation_lines(validation, peer) if validation else []),
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


def ship_model(model_dir: str | os.PathLike, name: str, *, data: str, split: str, dataset: str | None = None,
               licence: str, weights_dir: str | os.PathLike, command: str = "", hardware: str | None = None,
               notes: str = "", class_names: list[str] | None = None, tta: str | None = None,
               recipe_path: str | None = None, peer: str | None = None) -> dict:
    """Write the model as `weights_dir/name` (the CLI passes assets/weights of the current folder).
    `hardware` overrides the device the run recorded (e.g. the GPU's name); `notes` go into the card;
    `class_names` renames the classes (e.g. background, person for a folder dataset's background, foreground);
    `tta` is the test-time augmentation the model runs with unless a caller turns it off (config "tta"; every
    figure on the card is measured with it); `recipe_path` is the recipe the card names (recipes/NAME.yaml): a
    multi-source recipe's validation sets are measured too, one row each (the sets the model was chosen on, beyond
    the training distribution); `peer` (e.g. "mediapipe") is scored on the same images and timed on the same photos
    in the same run, beside the model."""
    model_dir = Path(model_dir)
    model = without_training_heads(load_pretrained(model_dir, device="cpu"))
    config = model.segcore_config
    if class_names is not None:  # checked (one per class) before any measuring, as save_pretrained will store them
        config = {**config, "class_names": build_config(model, class_names=class_names)["class_names"]}
        model.segcore_config = config
    if tta is not None:
        augmentation = TestTimeAugmentation.parse(tta)
        config = {key: value for key, value in config.items() if key != "tta"}
        if augmentation is not None:
            config["tta"] = augmentation.spec
        model.segcore_config = config
    kind = dataset or ("saliency" if config["task"] == "saliency" else "folder")
    evaluation_set = open_dataset(kind, data, split, evaluation=True)
    segmenter = Segmenter(model, device="cpu")
    metrics = evaluate(segmenter, evaluation_set)
    validation = _recipe_validation(segmenter, recipe_path)
    photos = [evaluation_set.load(index)[0] for index in range(min(END_TO_END_IMAGES, len(evaluation_set)))]
    peer_result = _peer_result(peer, evaluation_set, recipe_path if validation else None, photos) if peer else None
    baseline = None
    if config["task"] == "saliency":
        center_bias = CenterBias()
        baseline = {"name": f"center-bias (sigma {center_bias.sigma_fraction} of each side)",
                    **evaluate(center_bias, evaluation_set)}
    parameters = sum(p.numel() for p in model.parameters())
    latency = cpu_latency_ms(model, tuple(config["input_size"]))
    # Timed in every runtime that runs the model here. The app keeps its default runtime unless another is clearly
    # faster, then config "runtime" names it: on this VM person-fast's ONNX Runtime / torch ratio came out 1.38,
    # 1.00, 0.85 and 0.82 in four quiet runs (docs/benchmarks.md), so a plain "faster" choice flipped between runs.
    runtimes = ["onnxruntime", "torch"] if onnx_runnable(config) else ["torch"]
    timings = {runtime: end_to_end_latency_ms(Segmenter(model, device="cpu", runtime=runtime), photos)
               for runtime in runtimes}
    config = {key: value for key, value in config.items() if key != "runtime"}
    default = preferred_runtime(config)
    fastest = min(timings, key=timings.get)
    chosen = fastest if timings[default] >= CLEARLY_FASTER * timings[fastest] else default
    if chosen != default:
        config["runtime"] = chosen
    model.segcore_config = config
    end_to_end = (timings[chosen], chosen)
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
                      baseline=baseline, notes=notes, end_to_end=end_to_end,
                      recipe_path=recipe_path,
                      slower_runtimes={runtime: ms for runtime, ms in timings.items() if runtime != chosen},
                      validation=validation, peer=peer_result)
    target = Path(weights_dir) / name
    shipped_meta = {"shipped": {"name": name, "split": split, "data": data, "metrics": metrics,
                                "cpu_latency_ms": latency, "end_to_end_ms": end_to_end[0],
                                "end_to_end_runtime": end_to_end[1], "end_to_end_ms_by_runtime": timings,
                                "parameters": parameters, "hardware": hardware,
                                "wall_seconds": training.get("wall_seconds"), "epochs": training.get("epochs"),
                                "weights_dtype": dtype, "licence": licence}}
    if baseline:
        shipped_meta["shipped"]["baseline"] = baseline
    if validation:
        shipped_meta["shipped"]["validation"] = validation
    if peer_result:
        shipped_meta["shipped"]["peer"] = peer_result
    save_pretrained(model, target, dtype=dtype, model_card=card, **shipped_meta)
    return {"path": str(target), "metrics": metrics, "cpu_latency_ms": latency, "dtype": dtype, "baseline": baseline}
