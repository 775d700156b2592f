"""Segmenter: run a saved model on images — convert, resize by the model's policy, normalise, predict, restore size.

Resize policies (config "resize"): "fixed" resizes to the trained input size (as SINet's 224x224), "letterbox"
keeps the aspect ratio, fits the image inside the input size and pads bottom/right with black (the padded logits
are cropped off again), "max_side" downscales so the longer side is at most max(input_size) and never upscales,
"none" feeds the image as it is. The uint8 image is resized with OpenCV (area interpolation when shrinking); the
network's logits are resized back to the image bilinearly, once, and only what the caller reads is computed at
full size: labels always, probabilities and alpha on first access. Two-class and one-channel models need just
one logit margin per pixel (softmax over two classes is the sigmoid of their difference).

Test-time augmentation (`TestTimeAugmentation`, `Segmenter(tta=...)`): the network also sees the image mirrored
and/or at other scales of its network input, and the logits of every pass, mapped back onto the plain pass's grid,
are averaged before labels are taken (the multi-scale / flip inputs of DeepLab's and BiSeNet's evaluations;
averaging logits rather than probabilities keeps one code path for labels and lazy probabilities). A saved model
may carry its own setting (config "tta", chosen on validation when it was shipped); `tta=None` uses it, "none"
turns it off, and `predict(image, tta=...)` overrides it for one call (the webcam runs without it).

A runner executes the network: the torch module, or an ONNX Runtime session of its export
(`runtime="onnxruntime"`), or of the int8 graph `segcore quantize` saved beside the weights
(`runtime="onnxruntime-int8"`). One thread policy (`set_num_threads`, env SEGCORE_THREADS) sizes torch, OpenCV and
ONNX Runtime threads, and `inference_slots` says how many callers may run at once without oversubscribing cores.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
import time

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn as nn

from segcore.checkpoint import load_pretrained
from segcore.data.transforms import fit_within
from segcore.devices import resolve_device
from segcore.errors import ConfigError, SegcoreError
from segcore.image import read_image, to_rgb_uint8

RUNTIMES = ("torch", "onnxruntime", "onnxruntime-int8")
log = logging.getLogger(__name__)
# Resize policies whose network input is always the configured input size, whatever the photo's size.
FIXED_SIZE_POLICIES = ("fixed", "letterbox")
THREADS_ENV = "SEGCORE_THREADS"
_threads: int | None = None


# --------------------------------------------------------------------------------------------------------------
# Thread policy
# --------------------------------------------------------------------------------------------------------------


def _threads_from_env() -> int | None:
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return None
    try:
        threads = int(value)
    except ValueError:
        raise SegcoreError(f"{THREADS_ENV}={value!r} is not a whole number; set it to the threads per call, e.g. 1")
    if threads < 1:
        raise SegcoreError(f"{THREADS_ENV}={value!r} must be at least 1")
    return threads


def set_num_threads(threads: int) -> None:
    """Threads one prediction may use, in torch, OpenCV and ONNX Runtime sessions created from now on."""
    global _threads
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise SegcoreError(f"threads must be a whole number of at least 1, got {threads!r}")
    _threads = threads
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


def get_num_threads() -> int:
    """The threads per prediction: set_num_threads, else SEGCORE_THREADS, else torch's current setting."""
    return _threads or _threads_from_env() or torch.get_num_threads()


def apply_thread_policy() -> int:
    """Apply SEGCORE_THREADS once, if set and not overridden by set_num_threads; returns the threads per call."""
    if _threads is None and _threads_from_env() is not None:
        set_num_threads(_threads_from_env())
    return get_num_threads()


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def serving_threads(cores: int | None = None) -> int:
    """Threads per prediction when several callers share the machine (the app, `bench predict`): SEGCORE_THREADS,
    else a quarter of the cores, at least one."""
    return _threads_from_env() or max(1, (cores or available_cores()) // 4)


def configure_for_serving() -> tuple[int, int]:
    """Set the serving thread count (unless set_num_threads chose one); returns (threads per call, slots)."""
    if _threads is None:
        set_num_threads(serving_threads())
    return get_num_threads(), inference_slots()


def inference_slots(threads: int | None = None, cores: int | None = None) -> int:
    """How many predictions may run at once, each with `threads` threads, on `cores` cores without
    oversubscribing them (threads spinning against each other made a 17 ms forward pass take 300-600 ms)."""
    return max(1, (cores or available_cores()) // (threads or get_num_threads()))


class _Slots:
    """At most inference_slots() CPU predictions at once in this process; more callers wait their turn, first
    come first served, instead of making every thread spin (4 callers on 2 cores: two run, two queue). FIFO keeps
    the slowest caller's wait bounded: an unfair wake-up let one caller lose several races in a row."""

    def __init__(self):
        self._lock = threading.Lock()
        self._busy = 0
        self._waiting: collections.deque[threading.Event] = collections.deque()

    def __enter__(self) -> None:
        with self._lock:
            if self._busy < inference_slots() and not self._waiting:
                self._busy += 1
                return
            turn = threading.Event()
            self._waiting.append(turn)
        turn.wait()  # the slot is handed over by __exit__, already counted as busy

    def __exit__(self, *exc_info) -> None:
        with self._lock:
            self._busy -= 1
            while self._waiting and self._busy < inference_slots():  # the longest waiters go first
                self._busy += 1
                self._waiting.popleft().set()


_cpu_slots = _Slots()


# --------------------------------------------------------------------------------------------------------------
# Predictions
# --------------------------------------------------------------------------------------------------------------


def _sigmoid(values: np.ndarray) -> np.ndarray:
    result = np.negative(values, dtype=np.float32)
    np.exp(result, out=result)
    result += 1.0
    np.reciprocal(result, out=result)
    return result


class Prediction:
    """One image's result at the image's own size. `labels` come at once; `probabilities` (C, H, W) and `alpha`
    (H, W) are computed on first access from the upsampled logits, so callers that need labels only never pay for
    a full-resolution softmax."""

    def __init__(self, labels: np.ndarray, probabilities: np.ndarray | None = None, latency_ms: float = 0.0, *,
                 logits: np.ndarray | None = None, channels: int | None = None, alpha: np.ndarray | None = None):
        if probabilities is None and alpha is None and (logits is None or channels is None):
            raise ValueError("Prediction needs probabilities, a two-class alpha, or logits with their channel count")
        self.labels = labels  # (H, W) int64 class indices; one-channel (saliency) models: probability > 0.5
        self.latency_ms = latency_ms  # preprocess + forward + labels, excluding image decoding
        self._probabilities = probabilities
        # (H, W) margin (class 1 minus class 0 for two classes, the logit for one channel) or (H, W, C) logits
        self._logits = logits
        self._channels = probabilities.shape[0] if probabilities is not None else channels or 2  # alpha: 2 classes
        self._alpha = alpha

    @property
    def probabilities(self) -> np.ndarray:
        """(C, H, W) float32: softmax over classes, or the sigmoid of a one-channel model."""
        if self._probabilities is None:
            if self._logits is None:
                self._probabilities = np.stack([1.0 - self._alpha, self._alpha])
            elif self._channels == 1:
                self._probabilities = _sigmoid(self._logits)[None]
            elif self._channels == 2:  # softmax(l0, l1) = (1 - sigmoid(l1 - l0), sigmoid(l1 - l0))
                foreground = _sigmoid(self._logits)
                self._probabilities = np.stack([1.0 - foreground, foreground])
            else:
                exponentials = self._logits - self._logits.max(axis=2, keepdims=True)
                np.exp(exponentials, out=exponentials)
                exponentials /= exponentials.sum(axis=2, keepdims=True)
                self._probabilities = np.ascontiguousarray(exponentials.transpose(2, 0, 1))
        return self._probabilities

    @property
    def alpha(self) -> np.ndarray:
        """(H, W) float32 foreground probability: 1 - p(class 0, background), or a one-channel model's sigmoid."""
        if self._alpha is None:
            if self._probabilities is None and self._channels <= 2:
                self._alpha = _sigmoid(self._logits)
            elif self._channels == 1:
                self._alpha = self.probabilities[0]
            else:
                self._alpha = 1.0 - self.probabilities[0]
        return self._alpha

    @property
    def confidence(self) -> np.ndarray:
        """(H, W) probability of the predicted class: low values mark uncertain pixels."""
        if self.probabilities.shape[0] == 1:
            return np.maximum(self.probabilities[0], 1.0 - self.probabilities[0])
        return self.probabilities.max(axis=0)


# --------------------------------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------------------------------


def default_device() -> torch.device:
    return resolve_device("auto")


def network_input_size(height: int, width: int, input_size: tuple[int, int], policy: str) -> tuple[int, int]:
    """The (height, width) the network sees for an image of height x width under a resize policy."""
    if policy in FIXED_SIZE_POLICIES:
        return int(input_size[0]), int(input_size[1])
    if policy == "max_side":
        scale = min(1.0, max(input_size) / max(height, width))
        return max(1, round(height * scale)), max(1, round(width * scale))
    if policy == "none":
        return height, width
    raise ConfigError(f"unknown resize policy {policy!r}; use fixed, letterbox, max_side or none")


def content_size(height: int, width: int, input_size: tuple[int, int], policy: str) -> tuple[int, int]:
    """The part of the network input that holds the image (all of it, except under letterbox)."""
    if policy == "letterbox":
        return fit_within(height, width, input_size)
    return network_input_size(height, width, input_size, policy)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W, 3) -> (size[0], size[1], 3): area interpolation along shrinking axes (no aliasing of hair or
    thin limbs), bilinear along growing ones."""
    height, width = image.shape[:2]
    if (height, width) == tuple(size):
        return image
    shrunk = (min(height, size[0]), min(width, size[1]))
    if shrunk != (height, width):
        image = cv2.resize(image, (shrunk[1], shrunk[0]), interpolation=cv2.INTER_AREA)
    if shrunk != tuple(size):
        image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return image


def resize_logits(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) or (h, w, C) float32 logits -> size, bilinear with half-pixel centres (torch's align_corners=False)."""
    if logits.shape[:2] == tuple(size):
        return np.array(logits, dtype=np.float32)
    resized = cv2.resize(np.ascontiguousarray(logits, dtype=np.float32), (size[1], size[0]),
                         interpolation=cv2.INTER_LINEAR)
    return resized if resized.ndim == logits.ndim else resized[..., None]


@dataclass(frozen=True)
class TestTimeAugmentation:
    """Extra network passes per image: `flip` adds the horizontally mirrored image; `scales` are factors of the
    network input size (1.0 is the plain pass and is always run; 0.75 and 1.25 see the scene smaller and larger).
    Each pass's logits are cropped to the image's content, resized onto the plain pass's grid, un-mirrored, and
    averaged. The cost is one network run per pass (flip and scales multiply: flip with two extra scales is 6)."""

    __test__ = False  # not a pytest class, whatever its name says
    flip: bool = True
    scales: tuple[float, ...] = (1.0,)

    def __post_init__(self):
        scales = tuple(float(scale) for scale in self.scales)
        if not scales or any(not np.isfinite(scale) or not 0.25 <= scale <= 4.0 for scale in scales):
            raise ConfigError(f"test-time scales must be between 0.25 and 4, got {list(self.scales)}; e.g. 0.75 1 1.25")
        object.__setattr__(self, "scales", tuple(sorted(set(scales) | {1.0})))

    @property
    def passes(self) -> int:
        return len(self.scales) * (2 if self.flip else 1)

    @property
    def spec(self) -> str:
        """The setting as parse() reads it: "flip", "scales:0.75,1.25", "flip+scales:0.75,1.25"."""
        extra = [scale for scale in self.scales if scale != 1.0]
        parts = (["flip"] if self.flip else []) + ([f"scales:{','.join(f'{scale:g}' for scale in extra)}"]
                                                   if extra else [])
        return "+".join(parts) or "none"

    @classmethod
    def parse(cls, spec) -> "TestTimeAugmentation | None":
        """None, "none", "flip", "scales:0.75,1.25" or "flip+scales:0.75,1.25" (the CLI's --tta), or an instance."""
        if spec is None or isinstance(spec, cls):
            return spec
        text = str(spec).strip().lower()
        if text in ("", "none", "off"):
            return None
        flip, scales = False, (1.0,)
        for part in text.split("+"):
            if part == "flip":
                flip = True
            elif part.startswith("scales:"):
                try:
                    scales = tuple(float(value) for value in part[len("scales:"):].split(",") if value.strip())
                except ValueError:
                    raise ConfigError(f"--tta {spec}: scales must be numbers, e.g. flip+scales:0.75,1.25") from None
            else:
                raise ConfigError(f"unknown test-time augmentation {part!r} in {spec!r}; use flip, "
                                  "scales:0.75,1.25 or flip+scales:0.75,1.25 (or none)")
        return cls(flip=flip, scales=scales)


# --------------------------------------------------------------------------------------------------------------
# Runners
# --------------------------------------------------------------------------------------------------------------


def onnx_runnable(config: dict) -> bool:
    """Whether ONNX Runtime is installed here and the model's architecture exports at the sizes its resize policy
    feeds it (any size for a dynamic export, the input size under fixed/letterbox)."""
    from segcore.export import onnx_capability

    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    capability = onnx_capability(config["architecture"])
    return capability == "dynamic" or (capability == "fixed" and config.get("resize") in FIXED_SIZE_POLICIES)


def preferred_runtime(config: dict) -> str:
    """torch for a model shipped to run in it (config "runtime": `segcore ship` timed both runtimes end to end and
    torch was clearly the faster); onnxruntime-int8 where `segcore quantize` saved an int8 graph that kept the
    model's accuracy and was clearly the fastest; else onnxruntime where onnx_runnable (end to end 1.3-1.6x
    faster than torch for the smaller models on this CPU, docs/benchmarks.md); else torch."""
    if config.get("runtime") == "torch":
        return "torch"
    if not onnx_runnable(config):
        return "torch"
    return "onnxruntime-int8" if config.get("runtime") == "onnxruntime-int8" and config.get("int8") else "onnxruntime"


class TorchRunner:
    """(N, 3, H, W) float32 numpy in -> (N, C, H, W) float32 logits out, through the torch module."""

    runtime = "torch"

    def __init__(self, model: nn.Module, device: torch.device):
        self.model, self.device = model.to(device).eval(), device

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            logits = self.model(torch.from_numpy(batch).to(self.device))["out"]
            return logits.float().cpu().numpy()


class OnnxRunner:
    """The same contract through an ONNX Runtime CPU session of the model's ONNX export."""

    def __init__(self, onnx_model: bytes | str | os.PathLike, threads: int | None = None,
                 runtime: str = "onnxruntime"):
        self.runtime = runtime  # "onnxruntime-int8" for a quantised graph
        try:
            import onnxruntime
        except ImportError as error:
            raise SegcoreError("runtime 'onnxruntime' needs the onnxruntime package: pip install onnxruntime") from error
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or get_num_threads()
        options.inter_op_num_threads = 1
        model = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
        self.session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.input_shape = self.session.get_inputs()[0].shape  # [N, 3, H, W]; symbolic names where dynamic

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]


# --------------------------------------------------------------------------------------------------------------
# Segmenter
# --------------------------------------------------------------------------------------------------------------


class ConfigClasses:
    """Class names, colours and count read from `self.config`: Segmenter and the peers that stand in for it."""

    config: dict

    @property
    def class_names(self) -> list[str]:
        return list(self.config["class_names"])

    @property
    def class_colors(self) -> list[list[int]]:
        return [list(color) for color in self.config["class_colors"]]

    @property
    def num_classes(self) -> int:
        return int(self.config["num_classes"])


class Segmenter(ConfigClasses):
    """A loaded model plus its config; `predict(image)` returns labels and probabilities at the image's size.

    runtime "torch" runs the module on `device`; "onnxruntime" exports it to ONNX (checked against the module, kept
    in segcore.export.cache_dir() for the next load of the same weights) and runs that on the CPU;
    "onnxruntime-int8" runs the int8 graph saved beside the weights by `segcore quantize`."""

    def __init__(self, model: nn.Module, config: dict | None = None, device: str | torch.device | None = None,
                 runtime: str = "torch", tta: TestTimeAugmentation | str | None = None):
        config = config if config is not None else getattr(model, "segcore_config", None)
        if not config or "normalization" not in config:
            raise ConfigError(
                "Segmenter needs the model's config (normalisation, input size); load the model with "
                "segcore.load_pretrained or pass config="
            )
        if runtime not in RUNTIMES:
            raise SegcoreError(f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
        apply_thread_policy()
        self.config = config
        self.device = resolve_device(device)
        self.model = model.eval()
        self._runtime_requested = runtime
        self.tta = self._checked_tta(config.get("tta") if tta is None else tta)
        if runtime != "torch" and self.device.type != "cpu":
            raise SegcoreError(f"runtime {runtime!r} runs on the CPU here; use runtime='torch' for a GPU")
        if runtime == "onnxruntime-int8":
            from segcore.export import int8_graph_path

            self.runner = OnnxRunner(int8_graph_path(model), runtime=runtime)
        elif runtime == "onnxruntime":
            from segcore.export import cached_onnx_bytes

            try:
                self.runner = OnnxRunner(cached_onnx_bytes(model, self._onnx_input_size()))
            except SegcoreError:
                raise
            except Exception as error:  # a cached file ONNX Runtime cannot read (damaged on disk): export afresh
                log.warning("cached ONNX export unreadable (%s); exporting again", error)
                self.runner = OnnxRunner(cached_onnx_bytes(model, self._onnx_input_size(), refresh=True))
        else:
            self.runner = TorchRunner(model, self.device)
        norm = config["normalization"]
        std = np.asarray(norm["std"], dtype=np.float32)
        # uint8 x -> (x / 255 - mean) / std as one multiply-add; letterbox padding is black: x = 0
        self._scale = (1.0 / (255.0 * std)).astype(np.float32)
        self._offset = (-np.asarray(norm["mean"], dtype=np.float32) / std).astype(np.float32)

    @property
    def runtime(self) -> str:
        return self.runner.runtime

    def close(self) -> None:
        """Nothing to stop (a peer's worker process has one): a Segmenter can stand where a peer is opened."""

    def __enter__(self) -> "Segmenter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _checked_tta(self, spec) -> TestTimeAugmentation | None:
        tta = TestTimeAugmentation.parse(spec)
        if (tta is not None and tta.scales != (1.0,) and self._runtime_requested != "torch"
                and self._onnx_input_size() is not None):
            raise ConfigError(f"test-time scales need a network that takes any input size; "
                              f"{self.config['architecture']} under resize '{self.config['resize']}' runs in ONNX "
                              "Runtime at one size only: use runtime='torch' for scales, or flip alone")
        return tta

    def _onnx_input_size(self) -> tuple[int, int] | None:
        """The fixed size to export at, or None where the network input follows the image (a dynamic export)."""
        if self.config["resize"] in FIXED_SIZE_POLICIES:
            return tuple(int(value) for value in self.config["input_size"])
        return None

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, device: str | torch.device | None = None,
                        runtime: str = "torch", tta: TestTimeAugmentation | str | None = None) -> "Segmenter":
        """A segmenter for an installed model's name (segcore.zoo), a saved model folder or a Hub repo id."""
        model = load_pretrained(name_or_path, device=None if runtime == "torch" else "cpu")
        return cls(model, device=device, runtime=runtime, tta=tta)

    def _prepare(self, image) -> np.ndarray:
        if isinstance(image, (str, os.PathLike)):
            return read_image(image)
        return to_rgb_uint8(image)

    def predict(self, image, tta=None) -> Prediction:
        """`image`: RGB uint8 (H, W, 3) array, or grey/RGBA/float array, PIL image, or a file path.
        `tta`: this call's test-time augmentation ("none", "flip", ...); None keeps the segmenter's."""
        return self.predict_batch([image], tta=tta)[0]

    def predict_batch(self, images, tta=None) -> list[Prediction]:
        """Predict several images; those sharing a network input size run as one batch."""
        augmentation = self.tta if tta is None else self._checked_tta(tta)
        arrays = [self._prepare(image) for image in images]
        input_size = tuple(self.config["input_size"])
        results: list[Prediction | None] = [None] * len(arrays)
        groups: dict[tuple[int, int], list[int]] = {}
        for index, array in enumerate(arrays):
            size = network_input_size(array.shape[0], array.shape[1], input_size, self.config["resize"])
            groups.setdefault(size, []).append(index)
        slots = _cpu_slots if self.device.type == "cpu" else contextlib.nullcontext()
        for size, indices in groups.items():
            with slots:
                self._predict_group(arrays, indices, size, input_size, results, augmentation)
        return results  # type: ignore[return-value]

    def _predict_group(self, arrays, indices, size, input_size, results, augmentation) -> None:
        """Predict the images at `indices`, which share the network input `size`, as one batch."""
        start = time.perf_counter()
        contents = [content_size(*arrays[index].shape[:2], input_size, self.config["resize"]) for index in indices]
        batch = np.stack([self.network_input(arrays[index], size, content)
                          for index, content in zip(indices, contents)])
        logits = self.runner(batch)
        if augmentation is not None:
            logits = self._augmented_logits(logits, [arrays[index] for index in indices], size, contents,
                                            augmentation)
        for position, index in enumerate(indices):
            results[index] = self._postprocess(logits[position], contents[position], arrays[index].shape[:2])
        elapsed = (time.perf_counter() - start) * 1000.0 / len(indices)
        for index in indices:
            results[index].latency_ms = elapsed

    def _augmented_logits(self, plain: np.ndarray, arrays: list[np.ndarray], size: tuple[int, int],
                          contents: list[tuple[int, int]], augmentation: TestTimeAugmentation) -> np.ndarray:
        """The mean of the plain pass's logits (N, C, H, W) and those of every test-time pass, each cropped to its
        content, resized to the plain pass's content, un-mirrored and laid on the plain pass's grid."""
        total = np.array(plain, dtype=np.float32)
        for scale in augmentation.scales:
            for flip in (False, True) if augmentation.flip else (False,):
                if scale == 1.0 and not flip:
                    continue  # the plain pass
                scaled = (max(8, round(size[0] * scale)), max(8, round(size[1] * scale)))
                scaled_contents = [(min(scaled[0], max(1, round(height * scale))),
                                    min(scaled[1], max(1, round(width * scale)))) for height, width in contents]
                batch = np.stack([self.network_input(np.ascontiguousarray(array[:, ::-1]) if flip else array,
                                                     scaled, content)
                                  for array, content in zip(arrays, scaled_contents)])
                logits = self.runner(batch)
                for position, ((height, width), (scaled_height, scaled_width)) in enumerate(
                        zip(contents, scaled_contents)):
                    crop = logits[position, :, :scaled_height, :scaled_width].transpose(1, 2, 0)
                    crop = resize_logits(crop, (height, width))
                    if flip:
                        crop = crop[:, ::-1]
                    total[position, :, :height, :width] += crop.transpose(2, 0, 1)
        return total / augmentation.passes

    def network_input(self, array: np.ndarray, size: tuple[int, int], content: tuple[int, int]) -> np.ndarray:
        """uint8 (H, W, 3) -> normalised float32 (3, size) with the image resized to `content`, black below/right."""
        resized = resize_image(array, content)
        normalised = np.empty((size[0], size[1], 3), dtype=np.float32)
        if tuple(content) != tuple(size):  # letterbox: black below and to the right, as in training
            normalised[...] = self._offset
        np.multiply(resized, self._scale, out=normalised[: content[0], : content[1]])
        normalised[: content[0], : content[1]] += self._offset
        return normalised.transpose(2, 0, 1)

    def _postprocess(self, logits: np.ndarray, content: tuple[int, int], shape: tuple[int, int]) -> Prediction:
        """(C, h, w) network logits -> labels at `shape`; probabilities wait until they are read."""
        logits = logits[:, : content[0], : content[1]]
        channels = logits.shape[0]
        if channels <= 2:
            margin = logits[0] if channels == 1 else logits[1] - logits[0]
            margin = resize_logits(margin, shape)
            labels = (margin > 0).astype(np.int64)  # sigmoid > 0.5; the larger of two softmax scores
            return Prediction(labels, logits=margin, channels=channels)
        upsampled = resize_logits(np.ascontiguousarray(logits.transpose(1, 2, 0)), shape)
        return Prediction(upsampled.argmax(axis=2), logits=upsampled, channels=channels)
