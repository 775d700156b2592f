"""Benchmarks against peer implementations: segcore's dense CRF (segcore.refine.dense_crf) against pydensecrf2
(Kraehenbuehl's C++ permutohedral-lattice code) on the same synthetic scene, parameters and thread count.

`crf_benchmark()` returns a dict of timings and quality figures plus a markdown table row (`CRF_TABLE_HEADER`
names its columns) for docs/benchmarks.md.
"""

from __future__ import annotations

import statistics
import time

import cv2
import numpy as np
import torch

from segcore.errors import ConfigError
from segcore.metrics import ConfusionMatrix
from segcore.refine import PROBABILITY_FLOOR, dense_crf

CRF_DEFAULTS = {"theta_alpha": 80.0, "theta_beta": 13.0, "theta_gamma": 3.0, "w1": 10.0, "w2": 3.0}

CRF_TABLE_HEADER = (
    "| scene | size | labels | iterations | threads | segcore (ms) | pydensecrf2 (ms) | speed-up | label agreement "
    "| mIoU before | mIoU segcore | mIoU pydensecrf2 |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def _shape_layers(height: int, width: int) -> list[np.ndarray]:
    """Four filled shapes (disc, rectangle, triangle, rotated ellipse) as uint8 masks, later ones on top."""
    scale = min(height, width)

    def point(x: float, y: float) -> tuple[int, int]:
        return int(width * x), int(height * y)

    layers = [np.zeros((height, width), dtype=np.uint8) for _ in range(4)]
    cv2.circle(layers[0], point(0.62, 0.55), int(scale * 0.22), 1, -1)
    cv2.rectangle(layers[1], point(0.08, 0.1), point(0.4, 0.38), 1, -1)
    cv2.fillPoly(layers[2], [np.array([point(0.1, 0.92), point(0.38, 0.5), point(0.5, 0.95)], np.int32)], 1)
    cv2.ellipse(layers[3], point(0.82, 0.18), (int(scale * 0.12), int(scale * 0.07)), 30, 0, 360, 1, -1)
    return layers


def make_crf_scene(height: int = 512, width: int = 512, labels: int = 2, seed: int = 0, noise: float = 8.0):
    """A synthetic scene with sharp edges and a blurred, shifted prediction of it.

    Returns image (H, W, 3) uint8, ground truth (H, W) int64 in 0..labels-1, and probabilities (labels, H, W)
    float32: the one-hot ground truth shifted by a few pixels and Gaussian-blurred, so that its argmax has soft,
    misplaced edges that an edge-aware CRF can snap back to the image's edges. `noise` is the standard deviation
    of the Gaussian colour noise (0..255 scale)."""
    if labels < 2:
        raise ConfigError(f"a CRF scene needs at least 2 labels, got {labels}; ask for 2 or more")
    rng = np.random.default_rng(seed)
    scale = min(height, width)
    layers = _shape_layers(height, width)
    truth = np.zeros((height, width), dtype=np.int64)
    region = np.zeros((height, width), dtype=np.int64)  # every shape its own colour, even when labels repeat
    for index, layer in enumerate(layers):
        truth[layer == 1] = 1 + index % (labels - 1)
        region[layer == 1] = 1 + index
    palette = rng.integers(0, 256, size=(len(layers) + 1, 3))
    palette[0] = (40, 60, 50)
    image = palette[region].astype(np.float64) + rng.normal(0.0, noise, size=(height, width, 3))
    image = np.clip(image, 0, 255).astype(np.uint8)

    shift = max(1, scale // 64)
    shifted = np.roll(truth, (shift, -shift), axis=(0, 1))
    one_hot = np.stack([(shifted == label).astype(np.float32) for label in range(labels)])
    sigma = scale / 40.0
    blurred = np.stack([cv2.GaussianBlur(channel, (0, 0), sigma) for channel in one_hot])
    probs = 0.2 / labels + 0.8 * blurred
    probs = (probs / probs.sum(axis=0, keepdims=True)).astype(np.float32)
    return image, truth, probs


def pydensecrf_refine(image: np.ndarray, probs: np.ndarray, iterations: int = 5, **params) -> np.ndarray:
    """pydensecrf2 with the same energy: unary -log(max(P, floor)), Gaussian (theta_gamma, w2) and bilateral
    (theta_alpha, theta_beta, w1) Potts kernels, symmetric normalisation (its default)."""
    try:
        import pydensecrf.densecrf as densecrf
    except ImportError as error:  # a test/benchmark dependency only
        raise ImportError("the CRF benchmark needs pydensecrf2: pip install -r requirements-dev.txt") from error

    settings = {**CRF_DEFAULTS, **params}
    labels, height, width = probs.shape
    crf = densecrf.DenseCRF2D(width, height, labels)
    unary = -np.log(np.clip(probs, PROBABILITY_FLOOR, None)).reshape(labels, -1)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=settings["theta_gamma"], compat=settings["w2"])
    crf.addPairwiseBilateral(
        sxy=settings["theta_alpha"],
        srgb=settings["theta_beta"],
        rgbim=np.ascontiguousarray(image),
        compat=settings["w1"],
    )
    return np.asarray(crf.inference(iterations), dtype=np.float32).reshape(labels, height, width)


def _miou(probs: np.ndarray, truth: np.ndarray) -> float:
    confusion = ConfusionMatrix(probs.shape[0])
    confusion.update(probs.argmax(axis=0), truth)
    return confusion.compute()["miou"]


def crf_benchmark(
    size: int = 512,
    labels: int = 2,
    iterations: int = 5,
    repeats: int = 7,
    threads: int = 1,
    seed: int = 0,
    noise: float = 8.0,
    scene: tuple | None = None,
    scene_name: str = "given",
) -> dict:
    """Time dense_crf and pydensecrf2 on one synthetic size x size scene (CPU, alternating runs, `threads` torch
    and OpenCV threads; pydensecrf2 is single-threaded), and compare their labels and mIoU gains. Times are
    medians over `repeats` runs after one warm-up run of each. `scene` = (image, truth, probs) replaces the
    synthetic scene (e.g. a photo, its mask and blurred probabilities), named `scene_name` in the table row."""
    if scene is None:
        image, truth, probs = make_crf_scene(size, size, labels, seed, noise)
        scene_name = f"synthetic, colour noise {noise:g}"
    else:
        image, truth, probs = scene
    labels, height, width = probs.shape
    previous_threads, previous_opencv_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)  # the smoothness kernel runs through OpenCV on CPU
    try:
        ours_times, peer_times = [], []
        dense_crf(image, probs, iterations)  # warm-up: first-call allocations and library loading
        pydensecrf_refine(image, probs, iterations)
        for _ in range(repeats):
            start = time.perf_counter()
            ours = dense_crf(image, probs, iterations)
            ours_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            peer = pydensecrf_refine(image, probs, iterations)
            peer_times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous_threads)
        cv2.setNumThreads(previous_opencv_threads)
    ours_ms, peer_ms = 1000 * statistics.median(ours_times), 1000 * statistics.median(peer_times)
    result = {
        "scene": scene_name,
        "height": height,
        "width": width,
        "labels": labels,
        "iterations": iterations,
        "threads": threads,
        "segcore_ms": ours_ms,
        "pydensecrf2_ms": peer_ms,
        "segcore_min_ms": 1000 * min(ours_times),
        "pydensecrf2_min_ms": 1000 * min(peer_times),
        "speedup": peer_ms / ours_ms,
        "agreement": float((ours.argmax(axis=0) == peer.argmax(axis=0)).mean()),
        "miou_before": _miou(probs, truth),
        "miou_segcore": _miou(ours, truth),
        "miou_pydensecrf2": _miou(peer, truth),
    }
    result["markdown_row"] = (
        f"| {scene_name} | {height}x{width} | {labels} | {iterations} | {threads} | {ours_ms:.0f} | {peer_ms:.0f} | "
        f"{result['speedup']:.2f}x | {100 * result['agreement']:.2f}% | {result['miou_before']:.4f} | "
        f"{result['miou_segcore']:.4f} | {result['miou_pydensecrf2']:.4f} |"
    )
    return result


# ----------------------------------------------------------------------------------------------------------------
# Models: latency, throughput, FLOPs and peak memory of several architectures in one run, as ratios to a peer.

MODEL_TABLE_HEADER = (
    "| model | input | batch | device | parameters (M) | GFLOPs | latency (ms) | images/s | peak memory (MB) "
    "| latency vs peer |\n|---|---|---|---|---:|---:|---:|---:|---:|---:|"
)


def forward_gflops(model: torch.nn.Module, inputs: torch.Tensor) -> float:
    """GFLOPs of one forward pass of `model` on `inputs`, counted by torch.utils.flop_counter, which counts a
    multiply-add as 2 FLOPs (papers' GMACs are half of it)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(inputs)
    return counter.get_total_flops() / 1e9


def model_benchmark(name: str, size: tuple[int, int] | None = None, batch: int = 1, repeats: int = 10,
                    device: str | None = None, num_classes: int | None = None, threads: int | None = None) -> dict:
    """Median forward latency (eval mode, inference_mode) of a registered model on random input."""
    from segcore.engine.trainer import resolve_device
    from segcore.registry import create_model, model_info

    info = model_info(name)
    height, width = size or info["default_size"]
    device = resolve_device(device or "auto")  # a clear error, not a CUDA traceback, where no GPU is
    if threads:
        torch.set_num_threads(threads)
    classes = num_classes or (1 if info["task"] == "saliency" else 2)
    model = create_model(name, classes).eval().to(device)
    x = torch.randn(batch, 3, height, width, device=device)
    gflops = forward_gflops(model, x[:1])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    with torch.inference_mode():
        model(x)  # warm-up: allocator, oneDNN/cuDNN kernel selection
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
    latency = statistics.median(times)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"model": name, "size": [height, width], "batch": batch, "device": str(device),
            "parameters": sum(p.numel() for p in model.parameters()), "gflops": gflops,
            "latency_ms": latency * 1000.0, "images_per_second": batch / latency, "peak_memory_mb": peak,
            "threads": torch.get_num_threads()}


def model_table(results: list[dict], peer: str | None = None) -> str:
    """Markdown rows for model_benchmark results, latency as a ratio to `peer` (default: the first result)."""
    reference = next((r for r in results if r["model"] == peer), results[0])
    rows = [MODEL_TABLE_HEADER]
    for r in results:
        memory = f"{r['peak_memory_mb']:.0f}" if r["peak_memory_mb"] is not None else "n/a (CPU)"
        rows.append(
            f"| {r['model']} | {r['size'][0]}x{r['size'][1]} | {r['batch']} | {r['device']} | "
            f"{r['parameters'] / 1e6:.3f} | {r['gflops']:.2f} | {r['latency_ms']:.1f} | {r['images_per_second']:.1f} | "
            f"{memory} | {r['latency_ms'] / reference['latency_ms']:.2f}x {reference['model']} |"
        )
    return "\n".join(rows)


# --------------------------------------------------------------------------------------------------------------
# End-to-end prediction: what a user of Segmenter (or the app) gets, against a peer in the same run.

PREDICT_TABLE_HEADER = (
    "| predictor | runtime | threads/call | callers | images | median (ms) | p95 (ms) | images/s | fg IoU % "
    "| median vs peer |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def bench_images(images: str | None = None, masks: str | None = None, data: str | None = None,
                 split: str | None = None, limit: int | None = None,
                 val_fraction: float = 0.0) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """(name, RGB uint8 image, mask or None) from `images` (+ `masks`, paired by file stem) or a dataset root
    `data` (+ `split`), decoded before any timing. `val_fraction`: only the images of `split` that training holds
    out as validation when a dataset has no val split (engine.data.held_out_indices; Shen 2016: 0.1)."""
    from pathlib import Path

    from segcore.data.datasets import decode_binary_mask, is_binary_encoded, read_mask
    from segcore.errors import SegcoreError
    from segcore.image import read_image

    if bool(images) == bool(data):
        raise SegcoreError("give --images DIR (with --masks DIR for accuracy) or --data ROOT [--split S], not both")
    samples = []
    if data:
        from segcore.engine.data import held_out_indices, open_dataset

        dataset = open_dataset("folder", data, split, evaluation=True)
        indices = held_out_indices(len(dataset), val_fraction) if val_fraction > 0 else range(len(dataset))
        for index in list(indices)[:limit]:
            image, mask = dataset.load(index)
            samples.append((dataset.names[index], image, np.asarray(mask)))
        return samples
    folder = Path(images)
    if not folder.is_dir():
        raise SegcoreError(f"--images {images}: no such folder; give a folder of photos")
    suffixes = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
    files = sorted(path for path in folder.iterdir() if path.suffix.lower() in suffixes)[:limit]
    if not files:
        raise SegcoreError(f"--images {images}: no .jpg/.png images there")
    mask_files = {path.stem: path for path in Path(masks).iterdir()} if masks else {}
    for path in files:
        mask = None
        if masks:
            mask_path = mask_files.get(path.stem) or mask_files.get(f"{path.stem}_mask")
            if mask_path is None:
                raise SegcoreError(f"--masks {masks}: no mask for {path.name} (looked for {path.stem}.png)")
            mask = read_mask(mask_path)
            mask = decode_binary_mask(mask) if is_binary_encoded(np.unique(mask)) else mask
        samples.append((path.name, read_image(path), mask))
    return samples


def end_to_end(predictor, image: np.ndarray):
    """One user call: RGB in, labels and alpha out (what `bench predict` and the model cards time)."""
    prediction = predictor.predict(image)
    return prediction.labels, prediction.alpha


def predict_benchmark(predictor, samples, callers: int = 1, passes: int = 1, warmup: int = 2, name: str = "",
                      runtime: str = "") -> dict:
    """Time `predictor.predict` end to end (labels + alpha) over `samples` from `callers` threads at once, each
    going through every image `passes` times (starting at different images). Latencies are per call, as a caller
    sees them (waiting for a free inference slot included); fg IoU is pooled over the images with masks."""
    import threading

    for _, image, _ in samples[:warmup]:
        end_to_end(predictor, image)
    confusion = ConfusionMatrix(2, ignore_index=255)
    with_masks = [sample for sample in samples if sample[2] is not None]
    if callers == 1 and with_masks:
        for _, image, mask in with_masks:
            labels, _ = end_to_end(predictor, image)
            confusion.update(labels, mask)
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def caller(offset: int) -> None:
        order = samples[offset:] + samples[:offset]
        mine = []
        try:
            for _ in range(passes):
                for _, image, _ in order:
                    start = time.perf_counter()
                    end_to_end(predictor, image)
                    mine.append((time.perf_counter() - start) * 1000.0)
        except BaseException as error:  # noqa: BLE001 - reported after the threads join
            errors.append(error)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=caller, args=(index * len(samples) // callers,)) for index in range(callers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if errors:
        raise errors[0]
    fg_iou = confusion.compute()["fg_iou"] * 100.0 if with_masks and callers == 1 else None
    return {"predictor": name, "runtime": runtime, "callers": callers, "images": len(samples),
            "calls": len(latencies), "median_ms": float(np.median(latencies)),
            "p95_ms": float(np.percentile(latencies, 95)), "images_per_second": len(latencies) / wall,
            "fg_iou": fg_iou, "threads": torch.get_num_threads()}


def predict_table(results: list[dict], peer: str | None = None) -> str:
    """Markdown rows for predict_benchmark results; the last column compares each median with the peer's
    single-caller median (default: the first result's)."""
    reference = next((r for r in results if r["predictor"] == peer and r["callers"] == 1), results[0])
    rows = [PREDICT_TABLE_HEADER]
    for r in results:
        iou = f"{r['fg_iou']:.2f}" if r["fg_iou"] is not None else ""
        rows.append(f"| {r['predictor']} | {r['runtime']} | {r['threads']} | {r['callers']} | {r['images']} | "
                    f"{r['median_ms']:.1f} | {r['p95_ms']:.1f} | {r['images_per_second']:.1f} | {iou} | "
                    f"{r['median_ms'] / reference['median_ms']:.2f}x |")
    return "\n".join(rows)


# --------------------------------------------------------------------------------------------------------------
# Webcam: 640x480 frames through a model, edge refinement, temporal smoothing and compositing, as the app's live
# background removal runs them.

WEBCAM_TABLE_HEADER = (
    "| model | runtime | mode | frame | frames | median (ms) | p95 (ms) | frames/s | of which model (ms) |\n"
    "|---|---|---|---|---:|---:|---:|---:|---:|"
)


def webcam_frames(samples, size: tuple[int, int] = (480, 640)) -> list[np.ndarray]:
    """Each sample's image scaled to cover `size` and centre-cropped: what a 640x480 webcam delivers."""
    from segcore.compose import cover

    return [np.ascontiguousarray(cover(image, *size)) for _, image, _ in samples]


def webcam_benchmark(segmenter, frames: list[np.ndarray], mode: str = "blur", refine_edges: bool = True,
                     passes: int = 1, name: str = "", warmup: int = 3, foreground_colours: bool = False) -> dict:
    """Median and p95 ms per frame (frame in, composited frame out: compose.remove_background, as the app's live
    view runs it) and frames/s over `frames`, in order."""
    from segcore import compose

    smoother = compose.TemporalSmoother()

    def one(frame: np.ndarray) -> tuple[float, float]:
        started = time.perf_counter()
        prediction = segmenter.predict(frame)
        compose.remove_background(frame, prediction.alpha, mode, refine=refine_edges, smoother=smoother,
                                  foreground_colours=foreground_colours)
        return prediction.latency_ms, (time.perf_counter() - started) * 1000.0

    for frame in frames[:warmup]:
        one(frame)
    timings = [one(frame) for _ in range(passes) for frame in frames]
    totals = [total for _, total in timings]
    return {"predictor": name, "runtime": getattr(segmenter, "runtime", ""), "mode": mode,
            "frame": list(frames[0].shape[:2]), "frames": len(totals), "median_ms": float(np.median(totals)),
            "p95_ms": float(np.percentile(totals, 95)), "frames_per_second": len(totals) / (sum(totals) / 1000.0),
            "model_ms": float(np.median([model for model, _ in timings]))}


def webcam_table(results: list[dict]) -> str:
    rows = [WEBCAM_TABLE_HEADER]
    for r in results:
        rows.append(f"| {r['predictor']} | {r['runtime']} | {r['mode']} | {r['frame'][1]}x{r['frame'][0]} | "
                    f"{r['frames']} | {r['median_ms']:.1f} | {r['p95_ms']:.1f} | {r['frames_per_second']:.1f} | "
                    f"{r['model_ms']:.1f} |")
    return "\n".join(rows)


# --------------------------------------------------------------------------------------------------------------
# Mattes: how clean the alpha the app composites with is
# --------------------------------------------------------------------------------------------------------------

MATTE_VARIANTS = ("probability", "sharpened", "refined")


def replace_halo(image: np.ndarray, alpha: np.ndarray, old_background: np.ndarray,
                 new_colour=(0, 177, 64)) -> dict:
    """How much of an old background shows through a replaced one, by the matting benchmarks' composition
    protocol: the photo `image` is laid with `alpha` over `old_background` (another photo, covered to size), that
    composite is what background removal gets, and its result over `new_colour` is compared with the truth
    alpha * image + (1 - alpha) * new_colour. Returns the mean |error| in 8-bit levels over the partly transparent
    band (metrics.MATTE_SOFT_RANGE) with the composite's own colours ("photo") and with estimate_foreground's
    ("estimated"), and the ms of the estimation."""
    from segcore import compose
    from segcore.metrics import MATTE_SOFT_RANGE

    height, width = alpha.shape
    weight = alpha[..., None].astype(np.float32)
    old = compose.cover(old_background, height, width).astype(np.float32)
    new = np.empty_like(old)
    new[:] = np.asarray(new_colour, np.float32)
    photo = np.clip(np.rint(weight * image + (1 - weight) * old), 0, 255).astype(np.uint8)
    truth = weight * image + (1 - weight) * new
    band = (alpha > MATTE_SOFT_RANGE[0]) & (alpha < MATTE_SOFT_RANGE[1])
    started = time.perf_counter()
    estimated = compose.estimate_foreground(photo, alpha)
    milliseconds = (time.perf_counter() - started) * 1000.0
    errors = {}
    for key, colours in (("photo", photo), ("estimated", estimated)):
        result = weight * colours.astype(np.float32) + (1 - weight) * new
        errors[key] = float(np.abs(result - truth)[band].mean()) if band.any() else 0.0
    return {"halo_photo": errors["photo"], "halo_estimated": errors["estimated"], "ms": milliseconds}


def matte_benchmark(segmenter, samples, name: str = "") -> list[dict]:
    """Per matte variant, on images with masks: the model's foreground probability as is, sharpened
    (compose.matte refine=False) and refined (the app's "Refine edges"), scored by metrics.matte_statistics
    (means over images) with the median ms per image of the matte step. Foreground colour estimation runs on the
    refined matte, as before every composite: its row has its median ms and, with two or more images, the halo of
    a replaced background with and without it (replace_halo, each photo laid over the next one's scene)."""
    from segcore import compose
    from segcore.errors import SegcoreError
    from segcore.metrics import matte_statistics

    scores = {variant: [] for variant in MATTE_VARIANTS}
    times = {variant: [] for variant in MATTE_VARIANTS}
    halos = []
    for index, (_, image, mask) in enumerate(samples):
        if mask is None:
            raise SegcoreError("the matte benchmark scores against masks: give --masks DIR or --data ROOT")
        alpha = segmenter.predict(image).alpha
        for variant in MATTE_VARIANTS:
            started = time.perf_counter()
            result = alpha if variant == "probability" else compose.matte(image, alpha, refine=variant == "refined")
            times[variant].append((time.perf_counter() - started) * 1000.0)
            scores[variant].append(matte_statistics(result, np.asarray(mask) == 1))
            if variant == "refined":
                refined = result
        old_background = samples[(index + 1) % len(samples)][1]
        halos.append(replace_halo(image, refined, old_background if len(samples) > 1 else np.zeros_like(image)))
    rows = []
    for variant in MATTE_VARIANTS:
        means = {key: float(np.mean([score[key] for score in scores[variant]])) for key in scores[variant][0]}
        rows.append({"predictor": name, "variant": variant, "images": len(samples), **means,
                     "ms": float(np.median(times[variant]))})
    colours = {"predictor": name, "variant": "foreground colours", "images": len(samples),
               "ms": float(np.median([halo["ms"] for halo in halos]))}
    if len(samples) > 1:
        colours.update({key: float(np.mean([halo[key] for halo in halos])) for key in ("halo_photo", "halo_estimated")})
    rows.append(colours)
    return rows


def matte_table(results: list[dict]) -> str:
    rows = ["| model | matte | images | stray soft % | soft % | SAD | MAE % | boundary F | ms/img |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if "stray_soft" in r:
            rows.append(f"| {r['predictor']} | {r['variant']} | {r['images']} | {100 * r['stray_soft']:.2f} | "
                        f"{100 * r['soft']:.2f} | {r['sad']:.2f} | {100 * r['mae']:.2f} | {r['boundary_f1']:.4f} | "
                        f"{r['ms']:.1f} |")
        else:
            rows.append(f"| {r['predictor']} | + {r['variant']} | {r['images']} | | | | | | {r['ms']:.1f} |")
    return "\n".join(rows)


def halo_table(results: list[dict]) -> str:
    """The replaced-background halo (replace_halo) of each model's refined matte, photo vs estimated colours."""
    rows = ["| model | images | halo, photo colours | halo, estimated colours | change | ms/img |",
            "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        if "halo_photo" in r:
            change = (r["halo_estimated"] - r["halo_photo"]) / max(r["halo_photo"], 1e-9)
            rows.append(f"| {r['predictor']} | {r['images']} | {r['halo_photo']:.2f} | {r['halo_estimated']:.2f} | "
                        f"{100 * change:+.0f} % | {r['ms']:.1f} |")
    return "\n".join(rows)
