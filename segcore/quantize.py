"""Static int8 quantisation of a saved model's ONNX export with ONNX Runtime's quantiser, kept only where it pays.

Activations are calibrated (min/max) on real images of the model's training data, preprocessed exactly as
`Segmenter` feeds them; weights are quantised per output channel (QDQ format, uint8 activations, int8 weights);
which convolutions stay in float is chosen on the split given, in this order, the first that keeps accuracy:
none, the last (the classifier), the first and the last (the stem too). No one choice suits every model here:
on CamVid val, camvid-bisenet gained 0.35 mIoU points fully quantised and lost 12.8 with its stem in float, while
camvid-deeplabv3plus lost 0.49 fully quantised, 0.38 with its classifier in float and 0.02 with both.
The int8 graph is written beside the weights (`model.int8.onnx`) only when, measured in the same run on the split
given, its fg IoU (mIoU for more than two classes) is at most `max_drop` points below the float export's and it is
clearly faster end to end than the runtime the model ran in; config.json then records the graph (with a digest of
the weights it was made from, so changed weights never run a stale graph), the measurements and
`"runtime": "onnxruntime-int8"`, and the model card gains a section with the numbers.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from segcore.checkpoint import CARD_NAME, CONFIG_NAME, INT8_NAME, load_pretrained
from segcore.errors import SegcoreError
from segcore.export import weights_digest
from segcore.fileio import atomic_path, write_json_atomic, write_text_atomic

INT8_RUNTIME = "onnxruntime-int8"
MAX_DROP_POINTS = 0.2  # the most fg IoU / mIoU (in points) an int8 graph may lose and still be shipped
CALIBRATION_IMAGES = 48
CARD_SECTION = "## int8 (ONNX Runtime static quantisation)"
# convolutions left in float, tried in this order until one keeps the model's accuracy
FLOAT_CHOICES = ((), ("last",), ("first", "last"))


def _calibration_inputs(segmenter, dataset, count: int, seed: int = 0):
    """Network inputs of `count` images of `dataset` (chosen with a seed), as the segmenter preprocesses them."""
    from segcore.inference import content_size, network_input_size

    chosen = np.random.default_rng(seed).permutation(len(dataset))[:count]
    input_size = tuple(segmenter.config["input_size"])
    policy = segmenter.config["resize"]
    for index in chosen:
        image = dataset.load(int(index))[0]
        size = network_input_size(image.shape[0], image.shape[1], input_size, policy)
        content = content_size(image.shape[0], image.shape[1], input_size, policy)
        yield segmenter.network_input(image, size, content)[None]


def _convolutions_kept_in_float(graph_path: Path, keep: tuple[str, ...]) -> list[str]:
    """Node names of the convolutions `keep` names: "first" (the stem that reads the image), "last" (the classifier
    that writes the logits)."""
    import onnx

    convolutions = [node.name for node in onnx.load(str(graph_path)).graph.node if node.op_type == "Conv"]
    if not convolutions:
        return []
    return sorted({convolutions[0] if place == "first" else convolutions[-1] for place in keep})


def int8_graph(segmenter, calibration_set, images: int = CALIBRATION_IMAGES, keep_float: tuple[str, ...] = ()) -> bytes:
    """The segmenter's float ONNX graph statically quantised to int8, calibrated on `images` of `calibration_set`;
    `keep_float`: convolutions left in float ("first", "last")."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from segcore.export import cached_onnx_bytes

    if len(calibration_set) == 0:
        raise SegcoreError("the calibration split holds no images; pass --calibration-split with images in it")
    inputs = _calibration_inputs(segmenter, calibration_set, images)
    input_name = segmenter.runner.input_name

    class Reader(CalibrationDataReader):
        def get_next(self):
            batch = next(inputs, None)
            return None if batch is None else {input_name: batch}

    with tempfile.TemporaryDirectory(prefix="segcore-int8-") as folder:
        float_path, prepared, quantised = (Path(folder) / name for name in ("float.onnx", "pre.onnx", "int8.onnx"))
        float_path.write_bytes(cached_onnx_bytes(segmenter.model, segmenter._onnx_input_size()))
        try:  # shape inference and graph folding the quantiser needs
            quant_pre_process(str(float_path), str(prepared))
        except Exception:  # noqa: BLE001 - its symbolic shape inference fails on some graphs (SINet's): ONNX's alone
            quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(quantised), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        nodes_to_exclude=_convolutions_kept_in_float(prepared, keep_float))
        return quantised.read_bytes()


def _kept_words(keep_float) -> str:
    return {(): "every convolution in int8", ("last",): "the last convolution in float"}.get(
        tuple(keep_float), "the first and last convolutions in float")


def _card_section(result: dict) -> str:
    metric = result["metric"]
    label = "fg IoU" if metric == "fg_iou" else "mIoU"
    timings = result["end_to_end_ms"]
    rows = "\n".join(f"| end to end, {runtime} | {ms:.1f} ms |" for runtime, ms in timings.items())
    tried = "; ".join(f"{_kept_words(entry['float_convolutions'])}: {100 * entry[metric]:.2f} %"
                      for entry in result["tried"])
    return (f"{CARD_SECTION}\n\n"
            f"`{INT8_NAME}`: the ONNX export with int8 weights (per channel) and uint8 activations calibrated on "
            f"{result['calibration']['images']} images of {result['calibration']['data']} "
            f"({result['calibration']['split']}), kept because it loses no more than {result['max_drop']} points "
            f"and runs clearly faster. Measured in one run on {result['evaluated']['images']} images of "
            f"{result['evaluated']['data']} ({result['evaluated']['split']}), end to end as a user calls it (median "
            f"of {result['photos']} photos, 1 thread){'; ' + result['notes'] if result['notes'] else ''}:\n\n"
            f"| | |\n|---|---:|\n"
            f"| {label}, float (ONNX Runtime) | {100 * result['float']:.2f} % |\n"
            f"| {label}, int8 ({_kept_words(result['float_convolutions'])}) | {100 * result['int8']:.2f} % |\n"
            f"{rows}\n\n"
            f"Tried in order until one lost no more than {result['max_drop']} points: {tried}.\n"
            f"The app runs it in {result['runtime']}. Command: `{result['command']}`\n")


def _with_card_section(card: str, section: str) -> str:
    """The card with its int8 section replaced (or added at the end)."""
    start = card.find(CARD_SECTION)
    if start < 0:
        return card.rstrip("\n") + "\n\n" + section
    following = card.find("\n## ", start + len(CARD_SECTION))
    return card[:start] + section + (card[following + 1:] if following >= 0 else "")


def quantize_model(model_path: str | os.PathLike, *, data: str, split: str, dataset: str | None = None,
                   calibration_data: str | None = None, calibration_split: str = "train",
                   calibration_images: int = CALIBRATION_IMAGES, max_drop: float = MAX_DROP_POINTS,
                   min_speedup: float | None = None, command: str = "", notes: str = "") -> dict:
    """Quantise the saved model in folder `model_path`, measure float and int8 on `data`'s `split` in this run, and
    write the int8 graph (config.json and card updated) when it loses at most `max_drop` points and runs at least
    `min_speedup` (default segcore.ship.CLEARLY_FASTER) times faster end to end than the runtime the model runs in
    now; returns the measurements and `written` (with `why` where it was not)."""
    from segcore.engine.data import open_dataset
    from segcore.engine.evaluate import evaluate
    from segcore.inference import OnnxRunner, Segmenter, onnx_runnable, preferred_runtime
    from segcore.ship import CLEARLY_FASTER, END_TO_END_IMAGES, end_to_end_latency_ms

    folder = Path(model_path)
    if not (folder / CONFIG_NAME).is_file():
        raise SegcoreError(f"{model_path}: not a saved model folder; quantize writes beside the weights, so pass an "
                           "installed model's name or a folder (download a Hub model first)")
    if calibration_images < 1:
        raise SegcoreError(f"--calibration-images must be at least 1, got {calibration_images}")
    model = load_pretrained(folder, device="cpu")
    config = model.segcore_config
    if config.get("task") == "saliency":
        raise SegcoreError(f"{folder.name} is a saliency model; int8 is measured by fg IoU / mIoU, so only "
                           "segmentation models are quantised")
    if not onnx_runnable(config):
        raise SegcoreError(f"{folder.name} ({config['architecture']}, resize {config['resize']}) does not run in ONNX "
                           "Runtime here, so it cannot be quantised; install onnxruntime, or use a model that exports")
    kind = dataset or "folder"
    evaluation_set = open_dataset(kind, data, split, evaluation=True)
    calibration_set = open_dataset(kind, calibration_data or data, calibration_split)
    float_segmenter = Segmenter(model, device="cpu", runtime="onnxruntime")
    metric = "fg_iou" if config["num_classes"] == 2 else "miou"
    float_metrics = evaluate(float_segmenter, evaluation_set)
    tried = []
    for keep_float in FLOAT_CHOICES:
        graph = int8_graph(float_segmenter, calibration_set, calibration_images, keep_float)
        int8_segmenter = copy.copy(float_segmenter)
        int8_segmenter.runner = OnnxRunner(graph, runtime=INT8_RUNTIME)
        int8_metrics = evaluate(int8_segmenter, evaluation_set)
        tried.append({"float_convolutions": list(keep_float), metric: int8_metrics[metric],
                      "drop_points": 100.0 * (float_metrics[metric] - int8_metrics[metric])})
        if tried[-1]["drop_points"] <= max_drop:
            break
    photos = [evaluation_set.load(index)[0] for index in range(min(END_TO_END_IMAGES, len(evaluation_set)))]
    timings = {"torch": end_to_end_latency_ms(Segmenter(model, device="cpu", runtime="torch"), photos),
               "onnxruntime": end_to_end_latency_ms(float_segmenter, photos),
               INT8_RUNTIME: end_to_end_latency_ms(int8_segmenter, photos)}
    drop = tried[-1]["drop_points"]
    current = preferred_runtime({key: value for key, value in config.items() if key != "int8"})
    result = {"model": folder.name, "metric": metric, "float": float_metrics[metric], "int8": int8_metrics[metric],
              "drop_points": drop, "max_drop": max_drop, "float_convolutions": list(keep_float), "tried": tried,
              "end_to_end_ms": timings, "photos": len(photos),
              "previous_runtime": current,
              "calibration": {"data": str(calibration_data or data), "split": calibration_split,
                              "images": min(calibration_images, len(calibration_set))},
              "evaluated": {"data": str(data), "split": split, "images": float_metrics["images"]},
              "command": command or "segcore quantize", "notes": notes}
    min_speedup = CLEARLY_FASTER if min_speedup is None else min_speedup
    faster = timings[INT8_RUNTIME] * min_speedup <= timings[current]
    if drop > max_drop:
        losses = "; ".join(f"{_kept_words(entry['float_convolutions'])}: {entry['drop_points']:.2f}" for entry in tried)
        result["written"], result["why"] = False, (
            f"{metric} dropped more than {max_drop} points however many convolutions stayed in float ({losses})")
        return result
    if not faster:
        result["written"], result["why"] = False, (
            f"int8 took {timings[INT8_RUNTIME]:.1f} ms end to end against {timings[current]:.1f} ms in {current}, "
            f"not {min_speedup}x faster")
        return result
    result["runtime"] = INT8_RUNTIME
    with atomic_path(folder / INT8_NAME) as temporary:
        temporary.write_bytes(graph)
    saved = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    saved["int8"] = {"file": INT8_NAME, "weights_sha256": weights_digest(model),
                     **{key: result[key] for key in ("metric", "float", "int8", "drop_points", "float_convolutions",
                                                     "tried", "end_to_end_ms", "calibration", "evaluated")}}
    saved["runtime"] = INT8_RUNTIME
    write_json_atomic(folder / CONFIG_NAME, saved)
    card_path = folder / CARD_NAME
    card = card_path.read_text(encoding="utf-8") if card_path.is_file() else f"# {folder.name}\n"
    write_text_atomic(card_path, _with_card_section(card, _card_section(result)))
    result["written"] = True
    return result
