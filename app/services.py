"""UI-agnostic operations shared by the Gradio and Streamlit apps: model catalog, background removal, segmentation
with heatmaps and CRF refinement, model comparison, and fine-tuning jobs.

The UIs call only this module; it calls the public segcore API. Every problem a user can cause (a file that is not
an image, a model name that does not exist, a dataset zip without masks) raises SegcoreError with a message naming
the problem and the fix, which the UIs show as they are. Large photos are downscaled to APP_MAX_SIDE on load and
the result says so.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

import segcore
from segcore import compose, inference, visualize
from segcore.errors import ImageError, SegcoreError
from segcore.image import read_image, to_rgb_uint8, write_image_atomic
from segcore.metrics import ConfusionMatrix

log = logging.getLogger("segcore.app")

ROOT = Path(__file__).resolve().parent.parent
# Both folders can be moved (tests point them at temporary folders; a deployment may keep runs elsewhere).
WEIGHTS_DIR = Path(os.environ.get("SEGCORE_WEIGHTS_DIR", ROOT / "assets" / "weights"))
RUNS_DIR = Path(os.environ.get("SEGCORE_RUNS_DIR", ROOT / "runs"))
EXAMPLES_DIR = ROOT / "assets" / "examples"

APP_MAX_SIDE = 2048  # longer side, in pixels, of what the app processes; larger photos are downscaled on load
CRF_MAX_PIXELS = 1_000_000  # the CRF runs on a copy downscaled to this size (the result is resized back)
# Background removal and the webcam default to the first of these that is installed: person-fast is trained for
# people in any photo, portrait-sinet (the SINet paper's reproduction) for centred portraits only.
DEFAULT_BACKGROUND_MODELS = ("person-fast", "portrait-sinet")
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
    """The first installed of DEFAULT_BACKGROUND_MODELS, else the first model that can remove a background."""
    names = model_names(background_removal=True)
    for name in DEFAULT_BACKGROUND_MODELS:
        if name in names:
            return name
    portrait = [entry.name for entry in list_models("portrait", background_removal=True)]
    return (portrait or names or [None])[0]


def find_model(name: str | None) -> CatalogEntry:
    return segcore.zoo.find(name, weights_dir=WEIGHTS_DIR, runs_dir=RUNS_DIR)


def architectures() -> list[dict]:
    """Every registered architecture with its metadata."""
    return [segcore.model_info(name) for name in segcore.list_models()]


_segmenter_lock = threading.Lock()
_segmenters: dict[str, tuple[float, segcore.Segmenter]] = {}


RUNTIME_ENV = "SEGCORE_RUNTIME"  # torch, onnxruntime or auto (default: ONNX Runtime where the model exports)


def _runtime_for(model) -> str:
    requested = os.environ.get(RUNTIME_ENV, "auto").strip() or "auto"
    if requested == "auto":
        return inference.preferred_runtime(model.segcore_config)
    if requested not in inference.RUNTIMES:
        raise SegcoreError(f"{RUNTIME_ENV}={requested!r}: use auto, {' or '.join(inference.RUNTIMES)}")
    return requested


def _load_segmenter(path: Path) -> segcore.Segmenter:
    """The model at `path` in the runtime the policy picks; torch where its ONNX export fails."""
    inference.configure_for_serving()  # threads per call and calls at once that never oversubscribe the cores
    model = segcore.load_pretrained(path, device="cpu")
    runtime = _runtime_for(model)
    if runtime == "onnxruntime":
        try:
            return segcore.Segmenter(model, device="cpu", runtime=runtime)
        except SegcoreError as error:
            log.warning("%s: ONNX Runtime unavailable for this model (%s); running it with torch", path.name, error)
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


def load_image(source, max_side: int = APP_MAX_SIDE, what: str = "image") -> LoadedImage:
    """A file path, numpy array or PIL image -> RGB uint8, EXIF-rotated, downscaled to max_side when larger."""
    if source is None or (isinstance(source, str) and not source.strip()):
        raise ImageError(f"no {what} given; upload one (PNG, JPEG, BMP, TIFF or WebP)")
    if isinstance(source, (str, os.PathLike)):
        array = read_image(source)
    else:
        array = to_rgb_uint8(source)
    notes = []
    height, width = array.shape[:2]
    if max(height, width) > max_side:
        scale = max_side / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        array = cv2.resize(array, size, interpolation=cv2.INTER_AREA)
        notes.append(f"the {what} was {width}x{height} and was downscaled to {size[0]}x{size[1]} "
                     f"(the app's limit is {max_side} px on the longer side)")
    return LoadedImage(np.ascontiguousarray(array), notes)


def save_png(array: np.ndarray, folder: Path | None = None, stem: str = "result") -> Path:
    """Write an RGB or RGBA array as a PNG for download (atomic), in a fresh temporary folder by default."""
    folder = Path(folder or tempfile.mkdtemp(prefix="segcore-app-"))
    return write_image_atomic(Image.fromarray(array), folder / f"{stem}.png")


# ------------------------------------------------------------------------------------------ background removal
@dataclass
class BackgroundResult:
    image: np.ndarray  # RGBA for cutout, RGB for blur/replace
    alpha: np.ndarray  # (H, W) float32 in [0, 1]
    model: str
    latency_ms: float  # model time
    total_ms: float  # everything: model, refinement, compositing
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"{self.model}: model {self.latency_ms:.0f} ms, total {self.total_ms:.0f} ms"
        return "; ".join([text, *self.notes])


BACKGROUND_MODES = compose.BACKGROUND_MODES


def remove_background(image, *, model: str | None = None, mode: str = "cutout", blur_strength: float = 50.0,
                      background_color: str = "#ffffff", background_image=None, refine_edges: bool = True,
                      crf: bool = False, smoother: compose.TemporalSmoother | None = None) -> BackgroundResult:
    """Cut out, blur or replace the background of a portrait. `smoother` carries the mask across webcam frames."""
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
    prediction = get_segmenter(model).predict(picture)
    if crf:
        probabilities = segcore.refine.dense_crf(picture, prediction.probabilities, max_pixels=CRF_MAX_PIXELS)
        alpha = compose.foreground_alpha(probabilities)
    else:
        alpha = prediction.alpha  # the foreground probability, without a full softmax
    if refine_edges:
        alpha = compose.refine_alpha(picture, alpha)
    if smoother is not None:
        alpha = smoother.update(alpha)
    result = compose.apply_background(picture, alpha, mode, blur_strength=blur_strength,
                                      background=replacement if replacement is not None else background_color)
    total = (time.perf_counter() - started) * 1000.0
    return BackgroundResult(result, alpha, model, prediction.latency_ms, total, loaded.notes)


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

    def legend(self) -> list[tuple[str, str, float]]:
        """(class name, hex colour, fraction of pixels) for every class present, largest first."""
        counts = np.bincount(self.labels.ravel(), minlength=len(self.class_names)) / self.labels.size
        rows = [(name, visualize.hex_color(self.class_colors[index]), float(counts[index]))
                for index, name in enumerate(self.class_names) if counts[index] > 0]
        return sorted(rows, key=lambda row: -row[2])

    def annotations(self) -> list[tuple[np.ndarray, str]]:
        """(binary mask, class name) per class present, for gr.AnnotatedImage-style displays."""
        return [((self.labels == index).astype(np.float32), name) for index, name in enumerate(self.class_names)
                if (self.labels == index).any()]

    def summary(self) -> str:
        lines = [f"{self.model} ({self.task}): {self.latency_ms:.0f} ms"]
        if self.crf_ms is not None:
            changed = float((self.crf_labels != self.labels).mean()) * 100.0
            lines.append(f"CRF: {self.crf_ms:.0f} ms, {changed:.1f}% of pixels changed class")
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
            class_map=visualize.heatmap(saliency / max(float(saliency.max()), 1e-12), "jet", 0.0, 1.0, "relative"),
            class_shown="saliency", latency_ms=prediction.latency_ms,
            notes=loaded.notes + (["CRF refinement applies to class masks, not saliency maps"] if crf else []),
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
    )
    if crf:
        started = time.perf_counter()
        refined = segcore.refine.dense_crf(picture, probabilities, max_pixels=CRF_MAX_PIXELS)
        result.crf_ms = (time.perf_counter() - started) * 1000.0
        result.crf_labels = refined.argmax(axis=0)
        result.crf_overlay = visualize.overlay(picture, result.crf_labels, colors, 0.55, skip_index=skip)
    return result


def example_images() -> list[Path]:
    """Bundled example photos (assets/examples, each with its licence in the folder's README)."""
    if not EXAMPLES_DIR.is_dir():
        return []
    return sorted(path for path in EXAMPLES_DIR.iterdir()
                  if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp") and not path.name.startswith("."))


# ------------------------------------------------------------------------------------------------- compare
@dataclass
class CompareRow:
    model: str
    latency_ms: float
    labels: np.ndarray
    overlay: np.ndarray
    metrics: dict = field(default_factory=dict)  # with a ground truth: iou (foreground), miou, pixel_acc


@dataclass
class CompareResult:
    image: np.ndarray
    rows: list[CompareRow]
    disagreement: np.ndarray  # heatmap: share of model pairs that disagree at each pixel
    notes: list[str] = field(default_factory=list)

    def table(self) -> list[list]:
        """[model, latency ms, foreground IoU, mIoU, pixel accuracy] per model (metrics blank without a truth)."""
        def shown(value):
            return None if value is None else round(float(value), 4)

        return [[row.model, round(row.latency_ms, 1), shown(row.metrics.get("iou")), shown(row.metrics.get("miou")),
                 shown(row.metrics.get("pixel_acc"))] for row in self.rows]


def read_ground_truth(source, shape: tuple[int, int], class_names: list[str], class_colors: list[list[int]]) -> np.ndarray:
    """A ground-truth mask file -> (H, W) class indices. Accepts index masks (grey or palette PNG), 0/255 binary
    masks, and colour masks painted in the models' class colours. A mask of another size with the image's aspect
    ratio is resized (nearest neighbour)."""
    try:
        with Image.open(source) as opened:
            opened.load()
            mode = opened.mode
            mask = np.asarray(opened.convert("RGB") if mode not in ("L", "P", "1", "I;16", "I") else opened)
    except FileNotFoundError:
        raise ImageError(f"{source}: no such file; upload the mask again") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"{source}: the ground-truth mask is not a readable image ({error}); upload a PNG of "
                         "class indices") from None
    if mask.ndim == 3:
        palette = np.asarray(class_colors, dtype=np.int64)
        codes = mask.astype(np.int64) @ np.array([65536, 256, 1])
        lookup = {int(code): index for index, code in enumerate(palette @ np.array([65536, 256, 1]))}
        unknown = sorted(set(np.unique(codes).tolist()) - set(lookup))
        if unknown:
            colour = f"#{unknown[0]:06x}"
            raise SegcoreError(f"the ground-truth mask has colour {colour}, which is no class colour of the chosen "
                               f"models ({', '.join(visualize.hex_color(c) for c in class_colors)}); upload a mask of "
                               "class indices (greyscale PNG) instead")
        labels = np.vectorize(lookup.get, otypes=[np.int64])(codes)
    else:
        labels = mask.astype(np.int64)
        if mask.dtype == bool:
            labels = mask.astype(np.int64)
        elif set(np.unique(labels).tolist()) <= {0, 255} and len(class_names) == 2:
            labels = (labels > 0).astype(np.int64)
    if labels.shape != shape:
        height, width = shape
        if abs(labels.shape[1] / labels.shape[0] - width / height) > 0.02:
            raise SegcoreError(f"the ground-truth mask is {labels.shape[1]}x{labels.shape[0]} but the image is "
                               f"{width}x{height}; upload the mask made for this image")
        labels = cv2.resize(labels.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(np.int64)
    if labels.max() >= len(class_names) and labels.max() != 255:
        raise SegcoreError(f"the ground-truth mask holds class index {int(labels.max())} but the models know "
                           f"{len(class_names)} classes ({', '.join(class_names)}); use indices 0..{len(class_names) - 1} "
                           "(255 = ignore)")
    return labels


def compare(image, models: list[str], ground_truth=None) -> CompareResult:
    """Run 2-4 models on one image: overlays, latencies, and with a ground-truth mask IoU/mIoU per model."""
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
        rows.append(CompareRow(name, prediction.latency_ms, prediction.labels, shown))
    first = get_segmenter(models[0])
    same_classes = all(get_segmenter(name).class_names == first.class_names for name in models)
    if not same_classes:
        notes.append("the models predict different classes: disagreement compares foreground (class != 0) only")
    label_maps = [row.labels if same_classes else (row.labels != 0).astype(np.int64) for row in rows]
    disagreeing = np.zeros(picture.shape[:2], dtype=np.float32)
    pairs = 0
    for first_index in range(len(label_maps)):
        for second_index in range(first_index + 1, len(label_maps)):
            disagreeing += label_maps[first_index] != label_maps[second_index]
            pairs += 1
    disagreement = visualize.heatmap(disagreeing / pairs, "inferno", 0.0, 1.0, "disagree")
    if ground_truth is not None:
        if not same_classes:
            raise SegcoreError("a ground truth can score only models with the same classes; choose models trained "
                               "for the same task")
        truth = read_ground_truth(ground_truth, picture.shape[:2], first.class_names, first.class_colors)
        for row in rows:
            scores = ConfusionMatrix(len(first.class_names), ignore_index=255).update(row.labels, truth).compute()
            row.metrics = {"miou": scores["miou"], "pixel_acc": scores["pixel_acc"],
                           "iou": scores["iou"][1] if len(first.class_names) == 2 else None}
    return CompareResult(picture, rows, disagreement, notes)


# ---------------------------------------------------------------------------------------------- fine-tuning
_manager_lock = threading.Lock()
_manager = None


def job_manager():
    """The app's one JobManager (jobs persisted under RUNS_DIR/app-jobs; a restart resumes them)."""
    global _manager
    with _manager_lock:
        if _manager is None:
            from app.jobs import JobManager

            _manager = JobManager(RUNS_DIR / "app-jobs")
        return _manager


def reset_job_manager() -> None:
    """Stop the current manager (tests, or a new RUNS_DIR); the next call makes a fresh one."""
    global _manager
    with _manager_lock:
        if _manager is not None:
            _manager.shutdown()
        _manager = None


def prepare_dataset(upload=None, sample: str | None = None) -> tuple[Path, str]:
    """Unpack and validate an uploaded dataset zip, or generate a bundled sample. Returns (folder, report text).
    A dataset with errors raises SegcoreError listing the problems by file."""
    from segcore.data.ingest import unpack_upload
    from segcore.data.synthetic import write_shapes_dataset
    from segcore.data.validate import validate

    stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid() % 1000:03d}{threading.get_ident() % 1000:03d}"
    if upload is not None:
        target = RUNS_DIR / "app-data" / f"upload-{stamp}"
        folder, report = unpack_upload(upload, target)
        if not report.ok:
            shutil.rmtree(folder, ignore_errors=True)
            raise SegcoreError("the dataset has problems; fix them and upload again:\n" + report.summary())
        return folder, report.summary()
    if sample:
        kind = SAMPLE_DATASETS.get(sample, sample)
        if kind != "shapes":
            raise SegcoreError(f"unknown sample {sample!r}; choose one of {', '.join(SAMPLE_DATASETS)}")
        folder = RUNS_DIR / "app-data" / "sample-shapes"
        if not (folder / "split.txt").is_file():
            folder.parent.mkdir(parents=True, exist_ok=True)
            workspace = Path(tempfile.mkdtemp(prefix=".sample-", dir=folder.parent))
            write_shapes_dataset(workspace, count=96, size=96, val_fraction=0.25, seed=0)
            if not folder.exists():
                os.replace(workspace, folder)
            else:
                shutil.rmtree(workspace, ignore_errors=True)
        return folder, validate(folder).summary()
    raise SegcoreError("no dataset: upload a zip (images/ + masks/) or choose the bundled sample")


def finetune_base_choices() -> list[str]:
    """What a fine-tune can start from: a fresh architecture, or a trained model's weights."""
    # Fresh starts: the architectures that declare a light fine-tune (small enough to train in minutes on a CPU).
    fresh = [f"scratch: {name}" for name in segcore.registry.architectures_with("light_fine_tune")]
    return fresh + [f"from: {name}" for name in model_names()]


def finetune_config(dataset: Path, base: str, *, epochs: int, lr: float, batch_size: int, input_size: int,
                    freeze_encoder: bool) -> dict:
    """The TrainConfig (as a dict) for a fine-tune from the UI's choices."""
    if not base or ":" not in base:
        raise SegcoreError(f"unknown starting point {base!r}; choose one of {', '.join(finetune_base_choices())}")
    kind, name = (part.strip() for part in base.split(":", 1))
    config: dict = {"data": str(dataset), "dataset": "folder", "epochs": int(epochs), "lr": float(lr),
                    "batch_size": int(batch_size), "input_size": [int(input_size), int(input_size)],
                    "augmentation": "scene", "device": "auto", "workers": 0, "val_every": 1,
                    "dataset_kwargs": {"val_fraction": 0.2}}
    if kind == "scratch":
        offered = segcore.registry.architectures_with("light_fine_tune")
        if name not in offered:
            raise SegcoreError(f"unknown architecture {name!r} for a fresh fine-tune; choose one of "
                               f"{', '.join(offered)}")
        config.update(model=name, model_kwargs=dict(segcore.registry.capabilities(name).light_fine_tune))
    elif kind == "from":
        entry = find_model(name)
        saved = segcore.checkpoint.read_config(entry.path / "config.json")
        config.update(model=saved["architecture"], model_kwargs=saved.get("model_kwargs", {}), init_from=str(entry.path),
                      normalization=_normalization_name(saved.get("normalization")))
    else:
        raise SegcoreError(f"unknown starting point {base!r}; choose one of {', '.join(finetune_base_choices())}")
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


def finetune_start(*, upload=None, sample: str | None = None, base: str = "scratch: unet", epochs: int = 5,
                   lr: float = 1e-3, batch_size: int = 8, input_size: int = 128, freeze_encoder: bool = False,
                   name: str | None = None) -> dict:
    """Validate the data, queue a fine-tune job and return its status."""
    if not 1 <= int(epochs) <= 1000:
        raise SegcoreError(f"epochs must be between 1 and 1000, not {epochs}")
    if not 32 <= int(input_size) <= 1024:
        raise SegcoreError(f"input size must be between 32 and 1024 pixels, not {input_size}")
    dataset, report = prepare_dataset(upload, sample)
    config = finetune_config(dataset, base, epochs=epochs, lr=lr, batch_size=batch_size, input_size=input_size,
                             freeze_encoder=freeze_encoder)
    manager = job_manager()
    job_id = manager.submit(config, name=name or f"{config['model']}-{dataset.name}")
    status = manager.status(job_id)
    status["dataset_report"] = report
    return status


def finetune_status(job_id: str | None = None) -> dict:
    """A job's status (the newest job when no id is given); {} when there is none."""
    manager = job_manager()
    if not job_id:
        jobs = manager.jobs()
        return jobs[0] if jobs else {}
    return manager.status(job_id)


def finetune_cancel(job_id: str | None = None) -> dict:
    manager = job_manager()
    if not job_id:
        active = [job for job in manager.jobs() if job.get("state") in ("queued", "running")]
        if not active:
            raise SegcoreError("no job is queued or running; there is nothing to cancel")
        job_id = active[0]["id"]
    return manager.cancel(job_id)


def model_archive(name: str) -> Path:
    """A zip of a model folder (weights, config, card) for download."""
    entry = find_model(name)
    folder = Path(tempfile.mkdtemp(prefix="segcore-model-"))
    safe = entry.name.replace("/", "-")
    return Path(shutil.make_archive(str(folder / safe), "zip", root_dir=entry.path))
