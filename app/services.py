"""UI-agnostic operations shared by the Gradio and Streamlit apps: model catalog, background removal, segmentation
with heatmaps and CRF refinement, model comparison, and fine-tuning jobs.

The UIs call only this module; it calls the public segcore API. Every problem a user can cause (a file that is not
an image, a model name that does not exist, a dataset zip without masks) raises SegcoreError with a message naming
the problem and the fix, which the UIs show as they are. Large photos are downscaled to APP_MAX_SIDE on load and
the result says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

import segcore
from segcore import compose, inference, visualize
from segcore.errors import ImageError, SegcoreError  # SegcoreError: the UIs catch it as services.SegcoreError
from segcore.image import fit_longer_side, image_size, read_image, to_rgb_uint8, write_image_atomic
from segcore.metrics import ConfusionMatrix

log = logging.getLogger("segcore.app")

ROOT = Path(__file__).resolve().parent.parent
# Both folders can be moved (tests point them at temporary folders; a deployment may keep runs elsewhere).
WEIGHTS_DIR = Path(os.environ.get("SEGCORE_WEIGHTS_DIR", ROOT / "assets" / "weights"))
RUNS_DIR = Path(os.environ.get("SEGCORE_RUNS_DIR", ROOT / "runs"))
EXAMPLES_DIR = ROOT / "assets" / "examples"

MAX_UPLOAD_BYTES = 100 * 1024**2  # the largest upload (photo or dataset zip) the apps take; Streamlit's
# server.maxUploadSize in .streamlit/config.toml says the same in MB
APP_MAX_SIDE = 2048  # longer side, in pixels, of what the app processes; larger photos are downscaled on load
CRF_MAX_PIXELS = 1_000_000  # the CRF runs on a copy downscaled to this size (the result is resized back)
SALIENCY_BANDS = 5  # a saliency map's legend: this many bands of its heat scale
# Photos of people among assets/examples (licences in its README): the background-removal examples; the others
# (a cat, a coffee cup, a drawn street) are for exploring the scene and saliency models.
PEOPLE_EXAMPLES = ("astronaut.jpg", "camera.jpg")
DEFAULT_BACKGROUND_MODELS = segcore.zoo.DEFAULT_BACKGROUND_MODELS  # background removal's and the webcam's default
SAMPLE_DATASETS = {"shapes (generated: 96 images, 3 classes)": "shapes"}


# ------------------------------------------------------------------------------------------------- model catalog
# The catalogue is segcore.zoo, shared with the library and the CLI; the app only says where its folders are
# (read at each call: tests and deployments move them).
CatalogEntry = segcore.zoo.SavedModel


def trained_models(weights_dir: Path | None = None) -> list[CatalogEntry]:
    """Trained models shipped under assets/weights (each folder: config.json + model.safetensors)."""
    return segcore.zoo.shipped_models(weights_dir or WEIGHTS_DIR)


def list_models(task: str | None = None, background_removal: bool = False) -> list[CatalogEntry]:
    """Shipped models, then models fine-tuned in the app (finished jobs, newest first), optionally filtered."""
    return segcore.zoo.saved_models(task, background_removal=background_removal, weights_dir=WEIGHTS_DIR,
                                    runs_dir=RUNS_DIR)


def model_names(task: str | None = None, background_removal: bool = False) -> list[str]:
    return [entry.name for entry in list_models(task, background_removal)]


def default_background_model() -> str | None:
    """segcore.zoo's choice (the CLI's too) among the app's models: the first installed of
    DEFAULT_BACKGROUND_MODELS, else the first portrait model that can remove a background, else any such model."""
    return segcore.zoo.default_background_model(weights_dir=WEIGHTS_DIR, runs_dir=RUNS_DIR)


def default_explore_model() -> str | None:
    """The Explore tab's starting model: the background-removal default, else the first installed model."""
    return default_background_model() or (model_names() or [None])[0]


def find_model(name: str | None) -> CatalogEntry:
    """The installed model called `name`; an unknown name's message lists the installed models, with the app's
    folders named by role, not by their server paths (any API caller can send any name)."""
    try:
        return segcore.zoo.find(name, weights_dir=WEIGHTS_DIR, runs_dir=RUNS_DIR)
    except segcore.zoo.ModelNotFoundError as error:
        text = str(error).replace(str(RUNS_DIR / segcore.zoo.APP_JOBS_FOLDER), "the app's fine-tuning jobs")
        raise segcore.zoo.ModelNotFoundError(text.replace(str(WEIGHTS_DIR), "the app's weights folder")) from None


def architectures() -> list[dict]:
    """Every registered architecture with its metadata."""
    return [segcore.model_info(name) for name in segcore.list_models()]


_segmenter_lock = threading.Lock()
_segmenters: dict[str, tuple[float, segcore.Segmenter]] = {}


RUNTIME_ENV = "SEGCORE_RUNTIME"  # torch, onnxruntime, onnxruntime-int8 or auto (default: what the model shipped with)


def _runtime_for(model) -> str:
    requested = os.environ.get(RUNTIME_ENV, "auto").strip() or "auto"
    if requested == "auto":
        return inference.preferred_runtime(model.segcore_config)
    if requested not in inference.RUNTIMES:
        raise SegcoreError(f"{RUNTIME_ENV}={requested!r}: use auto, {' or '.join(inference.RUNTIMES)}")
    return requested


def _load_segmenter(path: Path) -> segcore.Segmenter:
    """The model at `path` in the runtime the policy picks; an int8 graph that cannot run falls back to the float
    ONNX export, and a model ONNX Runtime cannot run to torch."""
    inference.configure_for_serving()  # threads per call and calls at once that never oversubscribe the cores
    model = segcore.load_pretrained(path, device="cpu")
    runtime = _runtime_for(model)
    fallbacks = {"onnxruntime-int8": ["onnxruntime-int8", "onnxruntime"], "onnxruntime": ["onnxruntime"]}
    for candidate in fallbacks.get(runtime, []):
        try:
            return segcore.Segmenter(model, device="cpu", runtime=candidate)
        except SegcoreError as error:
            log.warning("%s: %s unavailable for this model (%s); trying the next runtime", path.name, candidate, error)
    return segcore.Segmenter(model, runtime="torch")  # on the GPU where there is one


def get_segmenter(name: str) -> segcore.Segmenter:
    """A loaded model, cached by name (reloaded when its weights file changes)."""
    entry = find_model(name)
    stamp = (entry.path / "model.safetensors").stat().st_mtime
    with _segmenter_lock:
        cached = _segmenters.get(name)
        if cached is None or cached[0] != stamp:
            _segmenters[name] = (stamp, _load_segmenter(entry.path))
        return _segmenters[name][1]


# ---------------------------------------------------------------------------------------------------- images
@dataclass
class LoadedImage:
    array: np.ndarray  # RGB uint8 (H, W, 3)
    notes: list[str] = field(default_factory=list)


def upload_name(source, default: str = "upload") -> str:
    """The file name an upload is known by (a path's name; a file object's .name, as Streamlit's uploads and open
    files have), reduced to characters safe in a file name; `default` for bytes, arrays and nameless objects."""
    name = source if isinstance(source, (str, os.PathLike)) else getattr(source, "name", None)
    name = Path(str(name)).name if isinstance(name, (str, os.PathLike)) else ""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or default


def _is_upload(source) -> bool:
    """Bytes or a binary file-like object (what web front-ends hand over instead of a path)."""
    return isinstance(source, (bytes, bytearray, memoryview)) or callable(getattr(source, "read", None))


@contextlib.contextmanager
def _as_file(source, what: str):
    """Uploaded bytes or a file-like object as a file named like the upload in a private temporary folder, so
    segcore.image reads it as it reads any file (EXIF, 16-bit, CMYK, damaged files); messages name the upload,
    not the folder."""
    name = upload_name(source)
    data = source.getvalue() if callable(getattr(source, "getvalue", None)) else (
        source.read() if callable(getattr(source, "read", None)) else bytes(source))
    if isinstance(data, str):
        raise ImageError(f"{name}: the {what} was opened as text; open it in binary mode ('rb')")
    if len(data) > MAX_UPLOAD_BYTES:
        raise SegcoreError(f"{name}: the {what} is {len(data) / 1024**2:.0f} MB, over the app's limit of "
                           f"{MAX_UPLOAD_BYTES / 1024**2:.0f} MB; upload a smaller file")
    folder = Path(tempfile.mkdtemp(prefix="segcore-upload-"))
    try:
        path = folder / name
        path.write_bytes(bytes(data))
        try:
            yield path
        except ImageError as error:
            raise ImageError(str(error).replace(f"{folder}{os.sep}", "")) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def load_image(source, max_side: int = APP_MAX_SIDE, what: str = "image") -> LoadedImage:
    """A file path, uploaded bytes, a binary file-like object, a numpy array or a PIL image -> RGB uint8,
    EXIF-rotated, downscaled to max_side when larger."""
    if source is None or (isinstance(source, str) and not source.strip()):
        raise ImageError(f"no {what} given; upload one (PNG, JPEG, BMP, TIFF or WebP)")
    if _is_upload(source):
        with _as_file(source, what) as path:
            return load_image(path, max_side, what)
    notes = []
    if isinstance(source, (str, os.PathLike)):
        # decoded reduced (never a full-size copy of a huge upload); the note tells the original size
        width, height = image_size(source)
        array = read_image(source, max_side=max_side)
    else:
        array = to_rgb_uint8(source)
        height, width = array.shape[:2]
    array = fit_longer_side(array, max_side)
    if max(height, width) > max_side:
        notes.append(f"the {what} was {width}x{height} and was downscaled to {array.shape[1]}x{array.shape[0]} "
                     f"(the app's limit is {max_side} px on the longer side)")
    return LoadedImage(np.ascontiguousarray(array), notes)


# Results written for download (one folder per request) live here and are removed RESULT_MAX_AGE_SECONDS after
# they were written (the UI has long since served or copied them), so the folder stays bounded however many
# requests come.
RESULTS_DIR = Path(tempfile.gettempdir()) / "segcore-app-results"
# SEGCORE_RESULT_MAX_AGE shortens it for soak runs (tests/soak), so the folders visibly level off within minutes
RESULT_MAX_AGE_SECONDS = float(os.environ.get("SEGCORE_RESULT_MAX_AGE", 600.0))


def prune_results(max_age: float | None = None, now: float | None = None) -> int:
    """Remove result folders older than max_age seconds (RESULT_MAX_AGE_SECONDS); returns how many went."""
    max_age = RESULT_MAX_AGE_SECONDS if max_age is None else max_age
    now = time.time() if now is None else now
    removed = 0
    if RESULTS_DIR.is_dir():
        for folder in RESULTS_DIR.iterdir():
            try:
                old = now - folder.stat().st_mtime > max_age
            except FileNotFoundError:  # removed by another request meanwhile
                continue
            if old:
                shutil.rmtree(folder, ignore_errors=True) if folder.is_dir() else folder.unlink(missing_ok=True)
                removed += 1
    return removed


def save_png(array: np.ndarray, folder: Path | None = None, stem: str = "result") -> Path:
    """Write an RGB or RGBA array as a PNG for download (atomic), by default in a fresh folder of its own under
    RESULTS_DIR (old result folders are pruned first)."""
    if folder is None:
        prune_results()
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="result-", dir=RESULTS_DIR))
    return write_image_atomic(Image.fromarray(array), Path(folder) / f"{stem}.png")


def download_name(source, kind: str) -> str:
    """What a result is downloaded as: NAME-KIND.png, NAME from the upload (astronaut.jpg -> astronaut-cutout.png)."""
    stem = Path(upload_name(source, default="image")).stem or "image"
    return f"{stem}-{kind}.png"


def download_file(array: np.ndarray, source, kind: str) -> Path:
    """A result as download_name(source, kind), written atomically into a folder of its own per request, so people
    downloading the same name at once never get each other's."""
    return save_png(array, stem=Path(download_name(source, kind)).stem)


def png_bytes(array: np.ndarray) -> bytes:
    """An RGB or RGBA array as PNG bytes (what a download button in memory hands over)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def on_checkerboard(image: np.ndarray, square: int | None = None) -> np.ndarray:
    """An RGBA picture over a light grey checkerboard (how image editors draw transparency), as RGB; RGB
    pictures come back unchanged. `square`: the checks' side, about 1/32 of the shorter side by default."""
    if image.ndim != 3 or image.shape[2] != 4:
        return image
    height, width = image.shape[:2]
    square = square or max(4, round(min(height, width) / 32))
    checks = (np.arange(height)[:, None] // square + np.arange(width)[None, :] // square) % 2
    board = np.where(checks == 0, 255.0, 204.0).astype(np.float32)[..., None]
    alpha = image[..., 3:4].astype(np.float32) / 255.0
    return np.rint(image[..., :3] * alpha + board * (1.0 - alpha)).astype(np.uint8)


# ------------------------------------------------------------------------------------------ background removal
@dataclass
class BackgroundResult:
    image: np.ndarray  # RGBA for cutout, RGB for blur/replace
    alpha: np.ndarray  # (H, W) float32 in [0, 1]
    model: str
    latency_ms: float  # model time
    total_ms: float  # everything: model, refinement, compositing
    notes: list[str] = field(default_factory=list)
    original: np.ndarray | None = None  # the photo as processed (RGB, downscaled like the result)

    def summary(self) -> str:
        text = f"{self.model}: model {self.latency_ms:.0f} ms, total {self.total_ms:.0f} ms"
        return "; ".join([text, *self.notes])

    def before_after(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(photo, result) for a before/after slider, both opaque: a cutout is drawn on a checkerboard, because
        a slider stacks the two pictures and the photo would show through a transparent result."""
        if self.original is None:
            return None
        return self.original, on_checkerboard(self.image)


BACKGROUND_MODES = compose.BACKGROUND_MODES


def remove_background(image, *, model: str | None = None, mode: str = "cutout", blur_strength: float = 50.0,
                      background_color: str = "#ffffff", background_image=None, refine_edges: bool = True,
                      crf: bool = False, smoother: compose.TemporalSmoother | None = None,
                      foreground_colours: bool = True, tta: str | None = None) -> BackgroundResult:
    """Cut out, blur or replace the background of a portrait. `smoother` carries the mask across webcam frames.
    `tta`: test-time augmentation for this picture; None runs the model as it was shipped (person-fast also sees
    the photo mirrored), the webcam passes "none" to keep its frame rate.
    `foreground_colours`: estimate the person's own colours in the soft edge (compose.estimate_foreground), so the
    old background does not show through a new one (40 % less halo on the Shen validation photos, 44-61 ms a
    600x800 photo on 2 busy cores; docs/benchmarks.md); the webcam leaves it out to keep its frame rate."""
    started = time.perf_counter()
    if mode not in BACKGROUND_MODES:
        raise SegcoreError(f"unknown mode {mode!r}; use one of {', '.join(BACKGROUND_MODES)}")
    model = model or default_background_model()
    if model is None:
        raise SegcoreError("no model that removes backgrounds is installed; ship person-fast or portrait-sinet, or fine-tune one")
    entry = find_model(model)
    if not entry.removes_background:
        raise SegcoreError(f"{model} cannot remove backgrounds (its first class is not 'background'); choose one of "
                           f"{', '.join(model_names(background_removal=True)) or 'none installed'}")
    loaded = load_image(image)
    picture = loaded.array
    replacement = None
    if mode == "replace" and background_image is not None:
        replacement = load_image(background_image, what="background image").array
    # segcore's path from photo to result, shared with `python -m segcore cutout`
    result, alpha, prediction = compose.predict_and_remove_background(
        get_segmenter(model), picture, mode, refine=refine_edges, crf=crf, crf_max_pixels=CRF_MAX_PIXELS,
        blur_strength=blur_strength, background=replacement if replacement is not None else background_color,
        foreground_colours=foreground_colours, smoother=smoother, tta=tta)
    total = (time.perf_counter() - started) * 1000.0
    return BackgroundResult(result, alpha, model, prediction.latency_ms, total, loaded.notes, original=picture)


@dataclass
class WebcamFrame:
    image: np.ndarray | None  # the result (RGBA cutout, RGB blur/replace); None when the frame was refused
    alpha: np.ndarray | None  # the smoothed (H, W) float32 matte used
    message: str  # the latency line, or what went wrong and how to fix it
    total_ms: float = 0.0


class WebcamSession:
    """One webcam stream (one browser tab): its own TemporalSmoother, so people streaming at once never blend
    each other's mattes, and the latency of its recent frames. The history starts over when the model or mode
    changes (a different matte is not flicker)."""

    LATENCY_WINDOW = 20  # frames the shown average covers

    def __init__(self) -> None:
        self.smoother = compose.TemporalSmoother()
        self._settings: tuple | None = None
        self._recent_ms: list[float] = []
        self.frames = 0

    def process(self, frame, *, model: str | None = None, mode: str = "cutout", blur_strength: float = 50.0,
                background_color: str = "#ffffff", refine_edges: bool = True) -> WebcamFrame:
        """Remove the background of one frame, smoothed with the stream's earlier frames. Problems the person can
        fix (a model that cannot remove backgrounds ...) come back as the frame's message, so the stream goes on."""
        if frame is None:
            return WebcamFrame(None, None, "waiting for the webcam")
        settings = (model, mode, bool(refine_edges))
        if settings != self._settings:
            self.smoother.reset()
            self._settings = settings
        try:
            result = remove_background(frame, model=model, mode=mode, blur_strength=blur_strength,
                                       background_color=background_color, refine_edges=refine_edges,
                                       smoother=self.smoother, foreground_colours=False, tta="none")
        except SegcoreError as error:
            self.smoother.reset()
            return WebcamFrame(None, None, str(error))
        self.frames += 1
        self._recent_ms = [*self._recent_ms, result.total_ms][-self.LATENCY_WINDOW:]
        average = sum(self._recent_ms) / len(self._recent_ms)
        message = (f"{result.total_ms:.0f} ms this frame (model {result.latency_ms:.0f} ms); "
                   f"{average:.0f} ms on average over the last {len(self._recent_ms)}, about "
                   f"{1000.0 / max(average, 1e-3):.1f} frames/s")
        return WebcamFrame(result.image, result.alpha, message, result.total_ms)


# ------------------------------------------------------------------------------------------------- explore
@dataclass
class SegmentResult:
    model: str
    task: str
    image: np.ndarray
    labels: np.ndarray
    probabilities: np.ndarray
    class_names: list[str]
    class_colors: list[list[int]]
    overlay: np.ndarray  # coloured mask over the image (saliency: JET overlay)
    confidence_map: np.ndarray  # heatmap of the winning class's probability, with a colour bar
    class_map: np.ndarray  # heatmap of one class's probability (saliency: the map itself), with a colour bar
    class_shown: str
    latency_ms: float
    crf_labels: np.ndarray | None = None
    crf_overlay: np.ndarray | None = None
    crf_ms: float | None = None
    notes: list[str] = field(default_factory=list)
    # what each picture shows, in words (the UIs caption the pictures with them)
    mask_caption: str = ""
    overlay_caption: str = ""
    confidence_caption: str = ""
    class_map_caption: str = ""

    def _saliency_bands(self) -> list[tuple[str, str, np.ndarray]]:
        """(name, JET colour, pixels) per band of saliency relative to its peak, hottest first: a heat scale."""
        saliency = self.probabilities[0]
        relative = saliency / max(float(saliency.max()), 1e-12)
        edges = np.linspace(0.0, 1.0, SALIENCY_BANDS + 1)
        bands = []
        for low, high in reversed(list(itertools.pairwise(edges))):
            inside = (relative >= low) & ((relative < high) if high < 1.0 else (relative <= high))
            colour = visualize.apply_colormap(np.array([[(low + high) / 2]]), "jet")[0, 0]
            bands.append((f"saliency {low:.0%}-{high:.0%} of peak", visualize.hex_color(colour), inside))
        return bands

    def legend(self) -> list[tuple[str, str, float]]:
        """(class name, hex colour, fraction of pixels) for every class present, largest first; for a saliency
        model the bands of its heat scale instead, hottest first, each with its share of the pixels."""
        if self.task == "saliency":
            return [(name, colour, float(inside.mean())) for name, colour, inside in self._saliency_bands()]
        counts = np.bincount(self.labels.ravel(), minlength=len(self.class_names)) / self.labels.size
        rows = [(name, visualize.hex_color(self.class_colors[index]), float(counts[index]))
                for index, name in enumerate(self.class_names) if counts[index] > 0]
        return sorted(rows, key=lambda row: -row[2])

    def annotations(self) -> list[tuple[np.ndarray, str]]:
        """(binary mask, class name) per class present, for gr.AnnotatedImage-style displays; for a saliency
        model the bands of its heat scale above the coldest (which would cover most photos in blue)."""
        if self.task == "saliency":
            return [(inside.astype(np.float32), name) for name, _, inside in self._saliency_bands()[:-1]
                    if inside.any()]
        return [((self.labels == index).astype(np.float32), name) for index, name in enumerate(self.class_names)
                if (self.labels == index).any()]

    def color_map(self) -> dict[str, str]:
        """Name -> hex colour of everything legend() lists (classes, or saliency bands)."""
        return {name: colour for name, colour, _ in self.legend()}

    def crf_before_after(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(mask before, mask after) the CRF for a slider; None when the CRF did not run or changed no pixel
        (two identical pictures would say nothing; summary() says why there is none)."""
        if self.crf_overlay is None or np.array_equal(self.crf_labels, self.labels):
            return None
        return self.overlay, self.crf_overlay

    def summary(self) -> str:
        lines = [f"{self.model} ({self.task}): {self.latency_ms:.0f} ms"]
        if self.crf_ms is not None:
            changed = float((self.crf_labels != self.labels).mean()) * 100.0
            lines.append(f"CRF: {self.crf_ms:.0f} ms, {changed:.1f}% of pixels changed class" +
                         ("" if changed else " (no before/after to show)"))
        elif self.task != "saliency":
            lines.append("dense CRF off (tick it for a before/after slider)")
        confidence = segcore.Prediction(self.labels, self.probabilities, self.latency_ms).confidence
        lines.append(f"mean confidence {float(confidence.mean()):.3f}")
        return "; ".join(lines + self.notes)


def segment(image, model: str, *, crf: bool = False, class_name: str | None = None) -> SegmentResult:
    """Run one model: coloured overlay, confidence and per-class probability heatmaps, optional CRF refinement."""
    entry = find_model(model)
    loaded = load_image(image)
    picture = loaded.array
    segmenter = get_segmenter(model)
    prediction = segmenter.predict(picture)
    names, colors = segmenter.class_names, segmenter.class_colors
    probabilities = prediction.probabilities
    if entry.task == "saliency" or probabilities.shape[0] == 1:
        saliency = probabilities[0]
        return SegmentResult(
            model=model, task="saliency", image=picture, labels=prediction.labels, probabilities=probabilities,
            class_names=names, class_colors=colors, overlay=visualize.saliency_overlay(picture, saliency),
            confidence_map=visualize.heatmap(prediction.confidence, "viridis", 0.5, 1.0, "confidence"),
            class_map=visualize.heatmap(saliency / max(float(saliency.max()), 1e-12), "jet", 0.0, 1.0,
                                        "relative saliency"),
            class_shown="saliency", latency_ms=prediction.latency_ms,
            notes=loaded.notes + (["CRF refinement applies to class masks, not saliency maps"] if crf else []),
            mask_caption=f"{model}: saliency in {SALIENCY_BANDS} bands of its heat scale (legend: hottest first)",
            overlay_caption=f"{model}: where people look, over the photo (JET heat scale, red = most looked at, "
                            "relative to the map's peak)",
            confidence_caption=f"{model}: confidence (saliency's distance from 0.5)",
            class_map_caption=f"{model}: saliency relative to its peak (JET heat scale)",
        )
    if class_name is None or class_name not in names:
        counts = np.bincount(prediction.labels.ravel(), minlength=len(names))
        foreground = [index for index in np.argsort(-counts) if index != 0 or len(names) == 1]
        class_index = int(foreground[0]) if foreground else 0
    else:
        class_index = names.index(class_name)
    skip = 0 if names and names[0] == "background" else None
    result = SegmentResult(
        model=model, task=entry.task, image=picture, labels=prediction.labels, probabilities=probabilities,
        class_names=names, class_colors=colors,
        overlay=visualize.overlay(picture, prediction.labels, colors, 0.55, skip_index=skip),
        confidence_map=visualize.heatmap(prediction.confidence, "viridis", 1.0 / len(names), 1.0, "confidence"),
        class_map=visualize.heatmap(probabilities[class_index], "viridis", 0.0, 1.0, f"p({names[class_index]})"),
        class_shown=names[class_index], latency_ms=prediction.latency_ms, notes=loaded.notes,
        mask_caption=f"{model}: {entry.task} mask, {len(names)} classes (legend: the classes present)",
        overlay_caption=_overlay_caption(model, entry.task, names, prediction.labels, skip),
        confidence_caption=f"{model}: confidence (probability of the predicted class)",
        class_map_caption=f"{model}: probability of '{names[class_index]}' at each pixel",
    )
    if crf:
        started = time.perf_counter()
        refined = segcore.refine.dense_crf(picture, probabilities, max_pixels=CRF_MAX_PIXELS)
        result.crf_ms = (time.perf_counter() - started) * 1000.0
        result.crf_labels = refined.argmax(axis=0)
        result.crf_overlay = visualize.overlay(picture, result.crf_labels, colors, 0.55, skip_index=skip)
    return result


def _overlay_caption(model: str, task: str, names: list[str], labels: np.ndarray, skip: int | None) -> str:
    """'portrait-sinet: portrait mask over the photo: person' (the classes present, largest first, at most four)."""
    counts = np.bincount(labels.ravel(), minlength=len(names))
    present = [names[index] for index in np.argsort(-counts) if counts[index] > 0 and index != skip]
    shown = ", ".join(present[:4]) + (f" and {len(present) - 4} more" if len(present) > 4 else "")
    return f"{model}: {task} mask over the photo: {shown or 'no class but ' + (names[skip] if skip is not None else '?')}"


def example_images() -> list[Path]:
    """Bundled example photos (assets/examples, each with its licence in the folder's README)."""
    if not EXAMPLES_DIR.is_dir():
        return []
    return sorted(path for path in EXAMPLES_DIR.iterdir()
                  if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp") and not path.name.startswith("."))


def background_examples() -> list[Path]:
    """The bundled photos of people (PEOPLE_EXAMPLES): what the background-removal examples offer."""
    return [path for path in example_images() if path.name in PEOPLE_EXAMPLES]


def class_colors() -> dict[str, str]:
    """Class name -> hex colour over all installed models (the first model naming a class sets its colour)."""
    colors: dict[str, str] = {}
    for entry in list_models():
        config = segcore.checkpoint.read_config(entry.path / "config.json")
        for name, color in zip(config.get("class_names", []), config.get("class_colors", [])):
            colors.setdefault(name, visualize.hex_color(color))
    return colors


def class_choices(model: str | None) -> list[str]:
    """The classes of `model` (the Explore tab's heatmap picker); [] for a name that is not installed."""
    try:
        return list(find_model(model).class_names)
    except SegcoreError:
        return []


def model_summaries() -> list[dict]:
    """Every model the app can run as plain data: name, task, architecture, classes, source (shipped or
    fine-tuned), whether it removes backgrounds (the /list_models API)."""
    return [{"name": entry.name, "task": entry.task, "architecture": entry.architecture,
             "classes": list(entry.class_names), "source": entry.source,
             "removes_background": entry.removes_background} for entry in list_models()]


# ------------------------------------------------------------------------------------------------- compare
@dataclass
class CompareRow:
    model: str
    latency_ms: float
    labels: np.ndarray
    overlay: np.ndarray
    metrics: dict = field(default_factory=dict)  # with a ground truth: iou (foreground), miou, pixel_acc
    runtime: str = ""  # what ran it (torch, onnxruntime, onnxruntime-int8): latencies differ by runtime too


@dataclass
class CompareResult:
    image: np.ndarray
    rows: list[CompareRow]
    disagreement: np.ndarray  # heatmap: share of model pairs that disagree at each pixel
    notes: list[str] = field(default_factory=list)

    COLUMNS = ("model", "latency (ms)", "IoU (foreground)", "mIoU", "pixel accuracy", "runtime")

    def table(self) -> list[list]:
        """One row per model under COLUMNS: model, latency ms, foreground IoU, mIoU, pixel accuracy (metrics blank
        without a ground truth), runtime."""
        def shown(value):
            return None if value is None else round(float(value), 4)

        return [[row.model, round(row.latency_ms, 1), shown(row.metrics.get("iou")), shown(row.metrics.get("miou")),
                 shown(row.metrics.get("pixel_acc")), row.runtime] for row in self.rows]


def void_labels(config: dict) -> set[int]:
    """Ground-truth values a model's config declares as "no label": its ignore_index, and CamVid's "Unlabelled"
    11 for models trained on CamVid's SegNet layout (which segcore.data.CamVidDataset reads as ignore)."""
    from segcore.data.datasets import CAMVID_CLASSES

    void = {int(config["ignore_index"])} if config.get("ignore_index") is not None else set()
    recipe = ((config.get("meta") or {}).get("training") or {}).get("recipe") or {}
    if recipe.get("dataset") == "camvid" and (recipe.get("dataset_kwargs") or {}).get("layout", "segnet") == "segnet":
        void.add(len(CAMVID_CLASSES))
    return void


def read_ground_truth(source, shape: tuple[int, int], class_names: list[str], class_colors: list[list[int]],
                      void: set[int] | frozenset = frozenset({255})) -> np.ndarray:
    """A ground-truth mask file -> (H, W) class indices, read as the datasets read masks (segcore.data.datasets:
    read_mask, decode_binary_mask, colors_to_indices). Accepts index masks (grey or palette PNG), 0/255 binary
    masks of two-class models, and colour masks painted in the models' class colours. Values in `void` (the
    models' declared void labels) become 255 and are left out of the scores. A mask of another size with the
    image's aspect ratio is resized (nearest neighbour) before its values are read."""
    from segcore.data.datasets import IGNORE_INDEX, colors_to_indices, decode_binary_mask, read_mask

    if source is None or (isinstance(source, str) and not source.strip()):
        raise ImageError("no ground-truth mask given; upload a PNG of class indices")
    if _is_upload(source):  # bytes or a file object (a Streamlit upload)
        with _as_file(source, "ground-truth mask") as path:
            return read_ground_truth(path, shape, class_names, class_colors, void)
    name = Path(source).name
    try:
        mask = read_mask(source)
    except ImageError as error:  # its message starts with the server path of the upload; people know the name
        raise ImageError(f"the ground-truth mask {name}: {str(error).split(': ', 1)[-1]}") from None
    if mask.shape[:2] != tuple(shape):
        height, width = shape
        if abs(mask.shape[1] / mask.shape[0] - width / height) > 0.02:
            raise SegcoreError(f"{name}: the ground-truth mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                               f"{width}x{height}; upload the mask made for this image")
        # nearest neighbour to the image's size before any conversion (any dtype, colour masks too): the int64
        # labels of a 75-megapixel mask at full size would take 600 MB, each copy of them as much again
        rows = np.arange(height) * mask.shape[0] // height
        columns = np.arange(width) * mask.shape[1] // width
        mask = np.ascontiguousarray(mask[rows[:, None], columns])
    if mask.ndim == 3:
        labels = colors_to_indices(mask, class_colors, ignore_index=-1)
        if (labels == -1).any():
            pixel = mask[labels == -1][0]
            colour = visualize.hex_color([int(channel) for channel in pixel])
            raise SegcoreError(f"{name}: the ground-truth mask has colour {colour}, which is no class colour of the "
                               f"chosen models ({', '.join(visualize.hex_color(c) for c in class_colors)}); upload a "
                               "mask of class indices (greyscale PNG) instead")
    elif len(class_names) == 2 and set(np.unique(mask).tolist()) <= {0, 255}:
        labels = decode_binary_mask(mask)
    else:
        labels = mask.astype(np.int64)
    labels = np.where(np.isin(labels, sorted(void)), IGNORE_INDEX, labels)
    scored = labels[labels != IGNORE_INDEX]
    if scored.size and (scored.max() >= len(class_names) or scored.min() < 0):
        bad = int(scored.max()) if scored.max() >= len(class_names) else int(scored.min())
        ignored = ", ".join(map(str, sorted(void | {IGNORE_INDEX})))
        raise SegcoreError(f"{name}: the ground-truth mask holds class index {bad} but the models know "
                           f"{len(class_names)} classes ({', '.join(class_names)}); use indices "
                           f"0..{len(class_names) - 1} ({ignored} = no label)")
    return labels


def _is_binary_foreground_model(class_names) -> bool:
    """Two classes, class 0 background: whatever the other is called, it is the foreground."""
    return len(class_names) == 2 and class_names[0] == "background"


def compare(image, models: list[str], ground_truth=None) -> CompareResult:
    """Run 2-4 models on one image: overlays, latencies, and with a ground-truth mask IoU/mIoU per model.
    Models with the same classes compare class by class; two-class models whose class 0 is background compare
    (and are scored) as foreground vs background whatever they call the foreground."""
    models = [name for name in (models or []) if name]
    if not 2 <= len(models) <= 4:
        raise SegcoreError(f"choose 2 to 4 models to compare (got {len(models)})")
    if len(set(models)) != len(models):
        raise SegcoreError("a model is chosen twice; choose different models")
    loaded = load_image(image)
    picture = loaded.array
    rows, notes = [], list(loaded.notes)
    for name in models:
        segmenter = get_segmenter(name)
        prediction = segmenter.predict(picture)
        skip = 0 if segmenter.class_names[0] == "background" else None
        if prediction.probabilities.shape[0] == 1:
            shown = visualize.saliency_overlay(picture, prediction.probabilities[0], with_colorbar=False)
        else:
            shown = visualize.overlay(picture, prediction.labels, segmenter.class_colors, 0.55, skip_index=skip)
        rows.append(CompareRow(name, prediction.latency_ms, prediction.labels, shown, runtime=segmenter.runtime))
    first = get_segmenter(models[0])
    class_lists = [list(get_segmenter(name).class_names) for name in models]
    same_classes = all(names == class_lists[0] for names in class_lists)
    binary = not same_classes and all(_is_binary_foreground_model(names) for names in class_lists)
    if binary:
        foregrounds = ", ".join(dict.fromkeys(names[1] for names in class_lists))
        notes.append(f"the models name their foreground differently ({foregrounds}): they are compared as "
                     "foreground vs background")
    elif not same_classes:
        notes.append("the models predict different classes: disagreement compares foreground (class != 0) only")
    label_maps = [row.labels if same_classes or binary else (row.labels != 0).astype(np.int64) for row in rows]
    disagreeing = np.zeros(picture.shape[:2], dtype=np.float32)
    pairs = 0
    for first_index in range(len(label_maps)):
        for second_index in range(first_index + 1, len(label_maps)):
            disagreeing += label_maps[first_index] != label_maps[second_index]
            pairs += 1
    disagreement = visualize.heatmap(disagreeing / pairs, "inferno", 0.0, 1.0, "disagree")
    if ground_truth is not None:
        if not (same_classes or binary):
            raise SegcoreError("a ground truth can score only models with the same classes, or two-class models "
                               "whose class 0 is background; choose models trained for the same task")
        class_names = list(first.class_names) if same_classes else ["background", "foreground"]
        void = set().union(*(void_labels(find_model(name).config) for name in models))
        truth = read_ground_truth(ground_truth, picture.shape[:2], class_names, first.class_colors, void)
        if (truth == 255).any():
            notes.append(f"{(truth == 255).mean():.1%} of the ground truth's pixels carry no label "
                         f"({', '.join(map(str, sorted(void)))}) and are left out of the scores")
        for row in rows:
            scores = ConfusionMatrix(len(class_names), ignore_index=255).update(row.labels, truth).compute()
            row.metrics = {"miou": scores["miou"], "pixel_acc": scores["pixel_acc"],
                           "iou": scores["iou"][1] if len(class_names) == 2 else None}
    return CompareResult(picture, rows, disagreement, notes)


# ---------------------------------------------------------------------------------------------- fine-tuning
_manager_lock = threading.Lock()
_manager = None

FINETUNE_VAL_FRACTION = 0.1  # held out for validation when an upload brings no split.txt
FINETUNE_SPLIT_SEED = 0
MIN_FINETUNE_PAIRS = 3  # two to train on (batch normalisation needs two samples), one to validate on
# (label, smallest, largest, whole number) of each number the Fine-tune tab takes
FINETUNE_NUMBERS = {"epochs": ("epochs", 1, 1000, True), "lr": ("learning rate", 1e-6, 1.0, False),
                    "batch_size": ("batch size", 1, 256, True), "input_size": ("input size", 32, 1024, True)}
# Jobs queued or running at once: per owner (one browser or API client) and for the whole app. Jobs run one at a
# time, so a longer queue only makes people wait (20 jobs of 1000 epochs were once queued in 6 s).
FINETUNE_MAX_ACTIVE_PER_OWNER = 2
FINETUNE_MAX_ACTIVE = 8
FINETUNE_KILL_RETRIES = 2  # resumes of a job whose training process was SIGKILLed (out of memory) before it fails
ADMIN_ENV = "SEGCORE_ADMIN"  # 1: every caller sees and may cancel every job (`python app.py --admin` sets it too)
_admin = False


class FinetuneProblems(SegcoreError):
    """Everything that keeps a fine-tune from starting, found at Start; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("the fine-tune cannot start; fix these and press Start again:\n"
                         + "\n".join(f"- {problem}" for problem in self.problems))


def set_admin(enabled: bool) -> None:
    """Admin mode for this process (`python app.py --admin`): see admin_mode()."""
    global _admin
    _admin = bool(enabled)


def admin_mode() -> bool:
    """Whether every caller sees and may cancel every job: set_admin(True) or SEGCORE_ADMIN=1."""
    return _admin or os.environ.get(ADMIN_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def owner_key(token: str) -> str:
    """The key a job is filed under for an owner's token (a browser's stored token, an API client's session or
    the token it passes): a digest, so job.json and the status JSON never hold a token that would let a reader act
    as its owner."""
    token = str(token).strip()
    if not token or len(token) > 256:
        raise SegcoreError("the owner token must be 1 to 256 characters; pass another one, or none to use your "
                           "session's")
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:32]


def _jobs_of(owner: str | None) -> str | None:
    """The owner key whose jobs `owner` (a token) may see and act on; None, every job, for code in the app's own
    process (owner None: tests, scripts) and in admin mode. The UIs always pass a token."""
    return None if owner is None or admin_mode() else owner_key(owner)


def job_manager():
    """The app's one JobManager (jobs persisted under RUNS_DIR/app-jobs; a restart resumes them)."""
    global _manager
    with _manager_lock:
        if _manager is None:
            from app.jobs import JobManager

            _manager = JobManager(RUNS_DIR / "app-jobs", on_end=_remove_job_upload, autostart=False,
                                  max_active=FINETUNE_MAX_ACTIVE, max_active_per_owner=FINETUNE_MAX_ACTIVE_PER_OWNER,
                                  max_kill_retries=FINETUNE_KILL_RETRIES)
            clean_app_data(_manager.jobs())
            _manager.start()
        return _manager


def _app_data() -> Path:
    return RUNS_DIR / "app-data"


def _remove_job_upload(record: dict) -> None:
    """A job has ended: the dataset unpacked from its upload (RUNS_DIR/app-data/upload-*) is no longer needed."""
    data = record.get("data")
    if data:
        _remove_upload_folder(Path(data))


def _remove_upload_folder(path: Path) -> None:
    app_data = _app_data().resolve()
    for folder in (path, *path.parents):  # the dataset may be a sub-folder of the unpacked upload
        if folder.parent.resolve() == app_data:
            if folder.name.startswith("upload-"):
                shutil.rmtree(folder, ignore_errors=True)
            return


def clean_app_data(jobs: list[dict]) -> list[str]:
    """At start-up: remove what a stopped or killed app left in RUNS_DIR/app-data: half-unpacked uploads
    (.upload-*.unpacking-*), half-written samples (.sample-*), and unpacked uploads no queued or running job needs.
    Returns the names removed."""
    app_data = _app_data()
    if not app_data.is_dir():
        return []
    needed = set()
    for job in jobs:
        if job.get("state") in ("queued", "running") and job.get("data"):
            path = Path(job["data"]).resolve()
            needed.update({path, *path.parents})
    removed = []
    for entry in app_data.iterdir():
        stale = entry.name.startswith(".") or (entry.name.startswith("upload-") and entry.resolve() not in needed)
        if stale and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    if removed:
        log.info("removed %d stale folder(s) from %s", len(removed), app_data)
    return removed


def start_job_manager() -> str | None:
    """Create the job manager now (at app launch), so jobs a stopped app left queued or running resume at once
    rather than when someone opens the Fine-tune tab. Returns why it could not (another app holds the jobs
    folder: this one still serves inference), else None."""
    try:
        job_manager()
    except SegcoreError as error:
        log.warning("fine-tuning jobs are not run by this app: %s", error)
        return str(error)
    return None


def reset_job_manager() -> None:
    """Stop the current manager (tests, or a new RUNS_DIR); the next call makes a fresh one."""
    global _manager
    with _manager_lock:
        if _manager is not None:
            _manager.shutdown()
        _manager = None


def _without_folder(text: str, folder: Path) -> str:
    """Messages name files inside a dataset as they are named in the upload, never by their server path."""
    return text.replace(f"{folder}{os.sep}", "").replace(str(folder), "the dataset")


def _unpack_or_generate(upload, sample: str | None) -> tuple[Path, bool]:
    """(dataset folder, whether it is a fresh upload folder of this request's own)."""
    from segcore.data.ingest import unpack_upload
    from segcore.data.synthetic import write_shapes_dataset

    stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{uuid.uuid4().hex[:8]}"  # unique however many uploads a second
    if upload is not None:
        job_manager()  # the manager cleans app-data at its start; it must not take this upload for a stale one
        if _is_upload(upload):  # bytes or a file object (a Streamlit upload): unpacked from a private copy
            with _as_file(upload, "dataset zip") as path:
                folder, _report = unpack_upload(path, _app_data() / f"upload-{stamp}")
        else:
            folder, _report = unpack_upload(upload, _app_data() / f"upload-{stamp}")
        return folder, True
    if sample:
        kind = SAMPLE_DATASETS.get(sample, sample)
        if kind != "shapes":
            raise SegcoreError(f"unknown sample {sample!r}; choose one of {', '.join(SAMPLE_DATASETS)}")
        folder = _app_data() / "sample-shapes"
        if not (folder / "split.txt").is_file():
            folder.parent.mkdir(parents=True, exist_ok=True)
            workspace = Path(tempfile.mkdtemp(prefix=".sample-", dir=folder.parent))
            write_shapes_dataset(workspace, count=96, size=96, val_fraction=0.25, seed=0)
            if not folder.exists():
                os.replace(workspace, folder)
            else:
                shutil.rmtree(workspace, ignore_errors=True)
        return folder, False
    raise SegcoreError("no dataset: upload a zip (images/ + masks/) or choose the bundled sample")


def _report_text(report, folder: Path) -> str:
    """The validation report without its server path: counts, mask format, classes, then each problem."""
    layout = {"folders": "images/ + masks/", "flat": "name.jpg + name_mask.png"}.get(report.layout, "no layout")
    lines = [f"{len(report.pairs)} image/mask pairs ({layout})"]
    if report.mask_format:
        classes = f"; classes: {', '.join(report.class_names)}" if report.class_names else ""
        lines.append(f"masks: {report.mask_format}{classes}")
    lines.append(f"{len(report.errors)} error(s), {len(report.warnings)} warning(s)")
    lines += [_without_folder(str(problem), folder) for problem in report.errors + report.warnings]
    return "\n".join(lines)


def _check_dataset(folder: Path, start: dict | None) -> tuple[object, list[str], list[str]]:
    """(validation report, problems, notes) of a dataset folder for a fine-tune; `start` is the starting model's
    config (its classes decide what the masks may hold), None for a fresh model."""
    from segcore.data.datasets import read_split_file
    from segcore.data.validate import validate

    classes = None
    if start is not None:
        classes = {"names": list(start["class_names"]), "colors": start.get("class_colors")}
        if start.get("ignore_index") is not None:
            classes["ignore_index"] = int(start["ignore_index"])
    report = validate(folder, classes=classes, classes_label="the starting model")
    problems = [_without_folder(f"{problem.file}: {problem.message}; fix: {problem.fix}", folder)
                for problem in report.errors]
    notes = []
    names = set(report.pairs)
    if report.pairs and len(report.pairs) < MIN_FINETUNE_PAIRS:
        problems.append(f"only {len(report.pairs)} image/mask pair(s); a fine-tune needs at least "
                        f"{MIN_FINETUNE_PAIRS} (two to train on, one to validate on): add more pairs")
    if start is not None:
        count = len(start["class_names"])
        if (folder / "classes.json").is_file():
            from segcore.data.datasets import _load_classes_file

            try:
                own = _load_classes_file(folder / "classes.json")["names"]
            except SegcoreError:
                own = None  # already reported by validate
            if own is not None and len(own) != count:
                problems.append(f"classes.json names {len(own)} classes ({', '.join(own)}) but the starting model "
                                f"has {count} ({', '.join(start['class_names'])}); remove classes.json, make it "
                                "match the model, or start from scratch")
            elif own is not None and own != list(start["class_names"]):
                notes.append(f"the starting model's class names are kept ({', '.join(start['class_names'])}); "
                             f"classes.json's ({', '.join(own)}) are not used")
        if count > 2 and report.mask_values and set(report.mask_values) <= {0, 255}:
            problems.append(f"the masks hold only 0 and 255 (a foreground/background mask) but the starting model "
                            f"has {count} classes (255 = ignore); save masks as class indices 0..{count - 1}, or "
                            "start from a two-class model")
    split_file = folder / "split.txt"
    if split_file.is_file() and names:
        try:
            membership = read_split_file(split_file)
        except (SegcoreError, UnicodeDecodeError):
            membership = None  # already reported by validate
        if membership is not None:
            for split in ("train", "val"):
                if not any(member == split and name in names for name, member in membership.items()):
                    problems.append(f"split.txt: no image/mask pair is in the {split!r} split; add lines "
                                    f"'name {split}', or remove split.txt (then {FINETUNE_VAL_FRACTION * 100:g} % "
                                    "of the pairs are held out for validation)")
    return report, problems, notes


def _number_problems(values: dict) -> tuple[dict, list[str]]:
    """The Fine-tune tab's numbers, checked: (the usable ones, a problem per bad one)."""
    checked, problems = {}, []
    for key, value in values.items():
        label, low, high, whole = FINETUNE_NUMBERS[key]
        try:
            number = float(value)
        except (TypeError, ValueError):
            problems.append(f"{label} must be a number, not {value!r}")
            continue
        shown = f"{number:g}"
        if not np.isfinite(number):
            problems.append(f"{label} must be a finite number, not {shown}")
        elif not low <= number <= high:
            problems.append(f"{label} must be between {low:g} and {high:g}, not {shown}")
        elif whole and number != int(number):
            problems.append(f"{label} must be a whole number, not {shown}")
        else:
            checked[key] = int(number) if whole else number
    return checked, problems


def _starting_point(base: str) -> tuple[str, str, dict | None]:
    """("scratch" or "from", architecture or model name, the saved model's config or None)."""
    if not base or ":" not in base:
        raise SegcoreError(f"unknown starting point {base!r}; choose one of {', '.join(finetune_base_choices())}")
    kind, name = (part.strip() for part in base.split(":", 1))
    if kind == "scratch":
        offered = segcore.registry.architectures_with("light_fine_tune")
        if name not in offered:
            raise SegcoreError(f"unknown architecture {name!r} for a fresh fine-tune; choose one of "
                               f"{', '.join(offered)}")
        return kind, name, None
    if kind == "from":
        entry = find_model(name)
        if entry.task == "saliency":
            raise SegcoreError(f"{name} is a saliency model; the Fine-tune tab trains on class masks: start from a "
                               "segmentation model or from scratch")
        return kind, name, segcore.checkpoint.read_config(entry.path / "config.json")
    raise SegcoreError(f"unknown starting point {base!r}; choose one of {', '.join(finetune_base_choices())}")


@dataclass
class _Prepared:
    path: Path
    report: object


def prepare_dataset(upload=None, sample: str | None = None, base: str | None = None) -> tuple[Path, str]:
    """Unpack and validate an uploaded dataset zip, or generate a bundled sample, for a fine-tune from `base`
    (its classes decide what the masks may hold; None: a fresh model). An upload without split.txt gets one: a
    seeded FINETUNE_VAL_FRACTION of the pairs (at least one) for validation. Returns (folder, report text);
    raises FinetuneProblems listing every problem (a refused upload leaves nothing on disk)."""
    start = _starting_point(base)[2] if base else None
    prepared, notes = _prepare_checked(upload, sample, start, [])
    return prepared.path, "\n".join([_report_text(prepared.report, prepared.path), *notes])


def _prepare_checked(upload, sample, start: dict | None, problems: list[str]) -> tuple[_Prepared, list[str]]:
    """Unpack (or generate) and check the dataset; `problems` found earlier (settings) are listed with its own."""
    from segcore.data.ingest import hold_out_split

    try:
        path, uploaded = _unpack_or_generate(upload, sample)
    except SegcoreError as error:
        raise FinetuneProblems([*problems, str(error)]) from None
    report, found, notes = _check_dataset(path, start)
    problems = [*problems, *found]
    if not problems and not (path / "split.txt").is_file():
        held_out = hold_out_split(path, FINETUNE_VAL_FRACTION, FINETUNE_SPLIT_SEED)
        notes.insert(0, f"no split.txt: {FINETUNE_VAL_FRACTION * 100:g} % of the pairs ({held_out}) held out for "
                        f"validation, seed {FINETUNE_SPLIT_SEED}")
    if problems:
        if uploaded:
            shutil.rmtree(path, ignore_errors=True)
        raise FinetuneProblems(problems)
    return _Prepared(path, report), notes


def finetune_base_choices() -> list[str]:
    """What a fine-tune can start from: a fresh architecture, or a trained model's weights."""
    # Fresh starts: the architectures that declare a light fine-tune (small enough to train in minutes on a CPU).
    fresh = [f"scratch: {name}" for name in segcore.registry.architectures_with("light_fine_tune")]
    return fresh + [f"from: {entry.name}" for entry in list_models() if entry.task != "saliency"]


def finetune_config(dataset: Path, base: str, *, epochs: int, lr: float, batch_size: int, input_size: int,
                    freeze_encoder: bool) -> dict:
    """The TrainConfig (as a dict) for a fine-tune from the UI's choices. A saved starting model keeps its
    classes (names, colours, ignore index); a fresh one takes the data's."""
    kind, name, saved = _starting_point(base)
    config: dict = {"data": str(dataset), "dataset": "folder", "epochs": int(epochs), "lr": float(lr),
                    "batch_size": int(batch_size), "input_size": [int(input_size), int(input_size)],
                    "augmentation": "scene", "device": "auto", "workers": 0, "val_every": 1,
                    "train_split": "train", "val_split": "val", "seed": FINETUNE_SPLIT_SEED}
    if kind == "scratch":
        config.update(model=name, model_kwargs=dict(segcore.registry.capabilities(name).light_fine_tune))
    else:
        classes = {"names": list(saved["class_names"]), "colors": saved.get("class_colors")}
        if saved.get("ignore_index") is not None:
            classes["ignore_index"] = int(saved["ignore_index"])
        config.update(model=saved["architecture"], model_kwargs=saved.get("model_kwargs", {}),
                      init_from=str(find_model(name).path),
                      normalization=_normalization_name(saved.get("normalization")), dataset_kwargs={"classes": classes})
    if freeze_encoder:
        if not segcore.registry.capabilities(config["model"]).freezable_encoder:
            able = ", ".join(segcore.registry.architectures_with("freezable_encoder"))
            raise SegcoreError(f"freezing the encoder needs a model with a freezable encoder ({able}), not "
                               f"{config['model']}; untick 'freeze encoder'")
        config["frozen_encoder_epochs"] = -1
    return config


def _normalization_name(normalization) -> str:
    from segcore.data.transforms import NORMALIZATION_PRESETS

    for name, preset in NORMALIZATION_PRESETS.items():
        if normalization and np.allclose(preset["mean"], normalization["mean"]) and np.allclose(
                preset["std"], normalization["std"]):
            return name
    return "imagenet"


def finetune_start(*, upload=None, sample: str | None = None, base: str = "scratch: unet", epochs=5, lr=1e-3,
                   batch_size=8, input_size=128, freeze_encoder: bool = False, name: str | None = None,
                   owner: str | None = None) -> dict:
    """Check everything the job could fail on, then queue it under `owner` (a token, see owner_key; None: no
    owner) and return its status. Raises FinetuneProblems with every problem found (settings, starting point,
    dataset), one per line, before anything is queued; JobQueueFull (one line) before anything is unpacked when
    the owner or the app has as many jobs queued or running as allowed."""
    owner = None if owner is None else owner_key(owner)
    job_manager().check_capacity(owner)
    numbers, problems = _number_problems({"epochs": epochs, "lr": lr, "batch_size": batch_size,
                                          "input_size": input_size})
    start = None
    try:
        _, _, start = _starting_point(base)
    except SegcoreError as error:
        problems.append(str(error))
    else:
        architecture = start["architecture"] if start else base.split(":", 1)[1].strip()
        if freeze_encoder and not segcore.registry.capabilities(architecture).freezable_encoder:
            able = ", ".join(segcore.registry.architectures_with("freezable_encoder"))
            problems.append(f"freezing the encoder needs a model with a freezable encoder ({able}), not "
                            f"{architecture}; untick 'freeze encoder'")
    prepared, notes = _prepare_checked(upload, sample, start, problems)
    dataset = prepared.path
    config = finetune_config(dataset, base, freeze_encoder=freeze_encoder, **numbers)
    start_model = base.split(":", 1)[1].strip() if start is not None else None
    manager = job_manager()
    try:
        job_id = manager.submit(config, name=name or f"{config['model']}-{dataset.name}", notes=notes,
                                start_model=start_model, owner=owner)
    except SegcoreError:  # the queue filled meanwhile: the unpacked upload would be left with no job to remove it
        _remove_upload_folder(dataset)
        raise
    status = public_status(manager.status(job_id))
    status["dataset_report"] = "\n".join([_report_text(prepared.report, dataset), *notes])
    return status


# What a job's status may show to the person or API client it belongs to: no server folders, no process ids, no
# owner key.
_PRIVATE_STATUS_FIELDS = ("job_dir", "run_dir", "log_path", "data", "init_from", "model_dir", "pid", "orphan_pid",
                          "owner")


def public_status(status: dict) -> dict:
    """A JobManager status without server paths (what the apps and the API hand out); a finished job names its
    model as every model list does (`fine_tuned_model`: fine-tuned/NAME)."""
    if not status:
        return {}
    shown = {key: value for key, value in status.items() if key not in _PRIVATE_STATUS_FIELDS}
    shown["fine_tuned_model"] = (f"{segcore.zoo.FINE_TUNED_PREFIX}{status['name']}"
                                 if status.get("state") == "finished" and status.get("model_dir") else None)
    return shown


def finetune_status(job_id: str | None = None, owner: str | None = None) -> dict:
    """A job's status (the newest job when no id is given) as public_status; {} when there is none. With `owner`
    (a token), only that owner's jobs are found, unless the app runs in admin mode."""
    manager = job_manager()
    if not job_id:
        jobs = manager.jobs(_jobs_of(owner))
        return public_status(jobs[0]) if jobs else {}
    return public_status(manager.status(job_id, _jobs_of(owner)))


def finetune_jobs(owner: str | None = None) -> list[dict]:
    """The jobs on disk (with `owner`: that owner's, unless in admin mode), newest first: what the Fine-tune tab's
    job picker and table show."""
    rows = []
    for status in job_manager().jobs(_jobs_of(owner)):
        start = status.get("start_metric") or {}
        rows.append({"id": status["id"], "name": status["name"], "state": status["state"],
                     "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(status["created"])),
                     "epoch": status.get("epoch"), "epochs": status.get("epochs"),
                     "metric": status.get("metric"), "best": status.get("best_value"),
                     "start": start.get("value"), "worse_than_start": bool(status.get("worse_than_start"))})
    return rows


JOB_TABLE_COLUMNS = ["name", "state", "created", "epochs", "metric", "best", "start model", "worse than start"]


def job_table(rows: list[dict] | None = None) -> list[dict]:
    """finetune_jobs() as the rows of the jobs table both apps show (JOB_TABLE_COLUMNS, rounded for reading)."""
    def shown(value):
        return None if value is None else round(float(value), 4)

    return [{"name": row["name"], "state": row["state"], "created": row["created"],
             "epochs": f"{row['epoch'] or 0}/{row['epochs'] or '?'}", "metric": row["metric"],
             "best": shown(row["best"]), "start model": shown(row["start"]),
             "worse than start": "yes" if row["worse_than_start"] else ""}
            for row in (finetune_jobs() if rows is None else rows)]


def job_label(row: dict) -> str:
    """How a job picker names one of finetune_jobs()'s rows."""
    return f"{row['name']} ({row['state']}, {row['created']})"


def job_status_text(status: dict) -> str:
    """A job's status as Markdown lines (state, queue position, progress, loss, time left, error, notes, the
    starting model's score), what both apps show beside the curves."""
    if not status:
        return "no fine-tuning job yet"
    state = status.get("state", "?")
    lines = [f"**{status.get('name', status.get('id'))}** (`{status.get('id')}`): **{state}**"]
    if state == "queued" and status.get("queue_position"):
        lines.append(f"position in queue: {status['queue_position']}")
    if status.get("epochs"):
        lines.append(f"epoch {status.get('epoch', 0)}/{status['epochs']}, step {status.get('step', 0)}/"
                     f"{status.get('steps', '?')} on {status.get('device', '?')}")
    if status.get("loss") is not None:
        lines.append(f"loss {status['loss']:.4f}")
    if status.get("eta_seconds") is not None and state == "running":
        lines.append(f"about {status['eta_seconds'] / 60:.1f} min left")
    if status.get("error"):
        lines.append(f"error: {status['error']}")
    if status.get("message"):
        lines.append(str(status["message"]))
    lines += [str(note) for note in status.get("notes") or []]
    start = status.get("start_metric")
    if start and status.get("start_model"):
        lines.append(f"starting model {status['start_model']}: {start['metric']} {start['value']:.4f} on the "
                     f"{start['images']} validation image(s) before fine-tuning")
    if state == "finished":
        lines.append(f"the model is now in every model list as fine-tuned/{status.get('name')}")
    return "  \n".join(lines)


CURVE_METRICS = ("miou", "fg_iou", "pixel_acc", "cc")


def job_curves(status: dict):
    """(training loss, validation metrics) of a job as long-form DataFrames (epoch, value, series), what both
    apps plot."""
    import pandas as pd

    history = status.get("history") or []
    losses = pd.DataFrame([{"epoch": record["epoch"], "value": record["train_loss"], "series": "train loss"}
                           for record in history if record.get("train_loss") is not None],
                          columns=["epoch", "value", "series"])
    metric_rows = [{"epoch": record["epoch"], "value": record[key], "series": key}
                   for record in history for key in CURVE_METRICS if isinstance(record.get(key), (int, float))]
    return losses, pd.DataFrame(metric_rows, columns=["epoch", "value", "series"])


def job_progress(status: dict) -> float:
    """How far a job is, 0..1 (finished: 1), from its epoch and step counts."""
    if status.get("state") == "finished":
        return 1.0
    epochs, steps = status.get("epochs") or 0, status.get("steps") or 0
    if not epochs:
        return 0.0
    done = max(0, (status.get("epoch") or 0) - 1) + ((status.get("step") or 0) / steps if steps else 0.0)
    return float(min(1.0, max(0.0, done / epochs)))


def finished_model_archive(status: dict) -> Path | None:
    """The zip of a finished job's model (for download), from its public_status; None while it has not finished."""
    if status.get("fine_tuned_model"):
        return model_archive(status["fine_tuned_model"])
    return None


def finetune_cancel(job_id: str | None = None, owner: str | None = None) -> dict:
    """Cancel a job (the newest queued or running one when no id is given); with `owner` (a token) only that
    owner's, unless the app runs in admin mode. Returns its public_status."""
    manager = job_manager()
    if not job_id:
        active = [job for job in manager.jobs(_jobs_of(owner)) if job.get("state") in ("queued", "running")]
        if not active:
            raise SegcoreError("no job is queued or running; there is nothing to cancel")
        job_id = active[0]["id"]
    return public_status(manager.cancel(job_id, _jobs_of(owner)))


def model_archive(name: str) -> Path:
    """A zip of a model folder (weights, config, card) for download."""
    entry = find_model(name)
    prune_results()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="model-", dir=RESULTS_DIR))
    safe = entry.name.replace("/", "-")
    return Path(shutil.make_archive(str(folder / safe), "zip", root_dir=entry.path))
