"""Peers: other segmenters beside a model, scored by our metric code on the same images in the same run.

An installed segcore model (e.g. camvid-bisenet beside camvid-enet) is a peer as the app runs it. MediaPipe's
selfie segmenter (Google, 2021; MobileNetV3-like encoder-decoder, person confidence per pixel) is the
outside peer, in two variants: "general" (256x256 input, model_selection=0) and "landscape" (144x256, 1).
mediapipe 0.10.21 cannot share the project's environment (it pins numpy<2 and protobuf<5; streamlit needs
protobuf>=5.26), so it normally runs as a worker process in its own venv, named by SEGCORE_MEDIAPIPE_PYTHON.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path

import numpy as np

from segcore.errors import SegcoreError
from segcore.image import read_image, to_rgb_uint8
from segcore.inference import ConfigClasses, Prediction

MEDIAPIPE_VERSION = "0.10.21"  # the newest release on PyPI that still ships the selfie-segmentation .tflite files
PYTHON_VARIABLE = "SEGCORE_MEDIAPIPE_PYTHON"
WORKER_SCRIPT = Path(__file__).with_name("mediapipe_worker.py")
SETUP_COMMANDS = (
    f"python3.11 -m venv ~/.venvs/mediapipe && ~/.venvs/mediapipe/bin/pip install mediapipe=={MEDIAPIPE_VERSION} "
    f"&& export {PYTHON_VARIABLE}=~/.venvs/mediapipe/bin/python"
)
SETUP_HINT = (
    f"set it up in its own environment (mediapipe {MEDIAPIPE_VERSION} pins numpy<2 and protobuf<5, which this "
    f"project's environment cannot have): {SETUP_COMMANDS} (docs/benchmarks.md, 'Peer: MediaPipe selfie segmenter')"
)

# peer name -> (variant, MediaPipe model_selection, network input (height, width))
PEERS = {
    "mediapipe": ("general", 0, (256, 256)),
    "mediapipe-landscape": ("landscape", 1, (144, 256)),
}
PEER_NAMES = tuple(PEERS)


def open_peer(name: str, backend=None):
    """The peer called `name`, ready to `predict`; close() it (or use `with`) to stop its worker. `name` is one of
    PEER_NAMES or an installed model's name (`segcore list`), which runs as the app runs it (its preferred runtime
    and its own test-time setting)."""
    if name in PEERS:
        return MediaPipeSelfieSegmenter(PEERS[name][0], backend=backend)
    from segcore.checkpoint import load_pretrained
    from segcore.inference import Segmenter, preferred_runtime
    from segcore.zoo import ModelNotFoundError, find

    try:
        saved = find(name)
    except ModelNotFoundError as error:
        raise SegcoreError(f"unknown peer {name!r}: not one of {', '.join(PEER_NAMES)}, and {error}") from None
    model = load_pretrained(saved.path, device="cpu")
    return Segmenter(model, device="cpu", runtime=preferred_runtime(model.segcore_config))


class MediaPipeSelfieSegmenter(ConfigClasses):
    """MediaPipe's selfie segmenter as a two-class portrait Segmenter: probabilities (1 - p, p), labels p > 0.5.

    `backend` (for tests) is any callable RGB uint8 (H, W, 3) -> person confidence (H, W); by default the worker in
    SEGCORE_MEDIAPIPE_PYTHON's interpreter, or mediapipe in this interpreter when it is importable here.
    """

    def __init__(self, variant: str = "general", backend=None):
        by_variant = {variant_name: (name, selection, size) for name, (variant_name, selection, size) in PEERS.items()}
        if variant not in by_variant:
            raise SegcoreError(f"unknown MediaPipe selfie-segmenter variant {variant!r}; use general or landscape")
        name, model_selection, input_size = by_variant[variant]
        if backend is None:
            backend = open_mediapipe_backend(model_selection)
        self._backend = backend
        self._latencies_ms: list[float] = []
        self.variant = variant
        self.config = {
            "task": "portrait",
            "num_classes": 2,
            "class_names": ["background", "person"],
            "class_colors": [[0, 0, 0], [255, 255, 255]],
            "architecture": f"mediapipe-selfie-segmentation-{variant}",
            "peer": name,
            "input_size": list(input_size),
            "resize": "fixed",  # MediaPipe resizes to the model's input and the mask back to the image itself
            "runtime": getattr(backend, "description", "injected backend"),
        }

    def predict(self, image) -> Prediction:
        """`image`: RGB uint8 (H, W, 3) array (or what Segmenter.predict accepts); latency covers RGB in to labels out."""
        rgb = read_image(image) if isinstance(image, (str, os.PathLike)) else to_rgb_uint8(image)
        start = time.perf_counter()
        confidence = np.asarray(self._backend(rgb), dtype=np.float32)
        if confidence.shape != rgb.shape[:2]:
            raise RuntimeError(f"MediaPipe returned a {confidence.shape} mask for a {rgb.shape[:2]} image")
        person = np.clip(confidence, 0.0, 1.0)
        labels = (person > 0.5).astype(np.int64)
        latency_ms = (time.perf_counter() - start) * 1000
        self._latencies_ms.append(latency_ms)
        return Prediction(labels=labels, alpha=person, latency_ms=latency_ms)  # probabilities on first access

    @property
    def runtime(self) -> str:
        """What runs the network, without the worker's local interpreter path (as Segmenter.runtime)."""
        return self.config["runtime"].split(" (")[0]

    def latency_summary(self) -> dict:
        """Median and mean latency of every predict so far (the median ignores the slow first, warm-up image)."""
        if not self._latencies_ms:
            return {"median_ms": float("nan"), "mean_ms": float("nan")}
        return {"median_ms": float(np.median(self._latencies_ms)),
                "mean_ms": float(np.mean(self._latencies_ms))}

    def predict_batch(self, images) -> list[Prediction]:
        return [self.predict(image) for image in images]

    def close(self) -> None:
        close = getattr(self._backend, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> "MediaPipeSelfieSegmenter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def open_mediapipe_backend(model_selection: int):
    """The worker in SEGCORE_MEDIAPIPE_PYTHON when set; otherwise mediapipe in this interpreter; else a SegcoreError."""
    python = os.environ.get(PYTHON_VARIABLE)
    if python:
        return MediaPipeWorker(python, model_selection)
    if importlib.util.find_spec("mediapipe") is None:
        raise SegcoreError(f"the MediaPipe peer needs mediapipe, which is not installed here, and {PYTHON_VARIABLE} "
                           f"is not set; {SETUP_HINT}")
    return _in_process_backend(model_selection)


def _in_process_backend(model_selection: int):
    from segcore.mediapipe_worker import load_selfie_segmenter

    try:
        person_confidence = load_selfie_segmenter(model_selection)
    except ImportError as error:  # mediapipe >= 0.10.30 dropped mediapipe.solutions and the selfie models
        import mediapipe

        raise SegcoreError(f"mediapipe {getattr(mediapipe, '__version__', '?')} in {sys.executable} has no selfie "
                           f"segmenter ({error}); {SETUP_HINT}") from error
    person_confidence.description = f"mediapipe in-process ({sys.executable})"
    return person_confidence


class MediaPipeWorker:
    """One long-lived segcore/mediapipe_worker.py process in another interpreter; calling it segments one image."""

    def __init__(self, python: str | os.PathLike, model_selection: int):
        self.python = str(Path(python).expanduser())
        if not (os.path.isfile(self.python) and os.access(self.python, os.X_OK)):
            raise SegcoreError(f"{PYTHON_VARIABLE}={python}: no Python interpreter there; {SETUP_HINT}")
        self._stderr = tempfile.TemporaryFile()
        # -I: the script's folder (segcore/, with modules named like common packages) stays off sys.path, and the
        # caller's PYTHONPATH cannot mix this project's packages into mediapipe's environment.
        environment = {**os.environ, "GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "2"}
        self._process = subprocess.Popen(
            [self.python, "-I", str(WORKER_SCRIPT), str(int(model_selection))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=environment,
        )
        self._finalizer = weakref.finalize(self, _stop_worker, self._process, self._stderr)
        ready = self._process.stdout.readline()
        if not ready.startswith(b"ready "):
            message = self._stderr_tail() or "no message"
            self.close()
            raise SegcoreError(f"{PYTHON_VARIABLE}={python} could not run the MediaPipe worker ({message}); "
                               f"{SETUP_HINT}")
        self.version = ready.split()[1].decode()
        self.description = f"mediapipe {self.version} worker ({self.python})"

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = np.ascontiguousarray(image, dtype=np.uint8)
        height, width = image.shape[:2]
        try:
            self._process.stdin.write(f"{height} {width}\n".encode())
            self._process.stdin.write(image.tobytes())
            self._process.stdin.flush()
            reply = self._process.stdout.readline().decode().rstrip("\n")
        except (BrokenPipeError, OSError, ValueError) as error:
            raise RuntimeError(f"the MediaPipe worker stopped: {self._stderr_tail() or error}") from error
        if reply.startswith("error "):
            raise RuntimeError(f"MediaPipe failed on a {height}x{width} image: {reply[len('error '):]}")
        if reply != f"ok {height} {width}":
            raise RuntimeError(f"the MediaPipe worker stopped: {self._stderr_tail() or repr(reply)}")
        data = self._process.stdout.read(height * width * 4)
        if len(data) != height * width * 4:
            raise RuntimeError(f"the MediaPipe worker stopped mid-reply: {self._stderr_tail()}")
        return np.frombuffer(data, dtype="<f4").reshape(height, width)

    def _stderr_tail(self, lines: int = 5) -> str:
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:])

    def close(self) -> None:
        self._finalizer()


def _stop_worker(process: subprocess.Popen, stderr) -> None:
    """Close the worker's input (it exits at end of input); kill it if it does not within a few seconds."""
    try:
        process.stdin.close()
    except OSError:
        pass
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    process.stdout.close()
    stderr.close()
