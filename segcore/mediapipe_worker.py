"""Worker process for the MediaPipe selfie-segmenter peer (segcore.peers), run by an interpreter that has mediapipe.

It needs only mediapipe and numpy, never segcore or torch: mediapipe 0.10.21 (the last release that ships the
selfie-segmentation models) pins numpy<2 and protobuf<5, which the project's environment cannot have, so
segcore.peers runs this file as a script in a separate venv (docs/benchmarks.md, "Peer: MediaPipe selfie segmenter").
Protocol: "ready VERSION\n" once the model is loaded; then per image "HEIGHT WIDTH\n" + RGB uint8 bytes in, and
"ok HEIGHT WIDTH\n" + little-endian float32 person confidence bytes (or "error MESSAGE\n") out, until stdin closes.
"""

from __future__ import annotations

import os
import sys

import numpy as np

VARIANTS = {0: "general (256x256 input)", 1: "landscape (144x256 input)"}


def load_selfie_segmenter(model_selection: int):
    """A function RGB uint8 (H, W, 3) -> float32 (H, W) person confidence in [0, 1], at the image's size.

    The legacy solution runs the .tflite files the wheel carries under mediapipe/modules/selfie_segmentation/, so
    nothing is downloaded; its graph has no temporal smoothing, so each image is segmented on its own.
    """
    if model_selection not in VARIANTS:
        raise ValueError(f"model_selection must be 0 (general) or 1 (landscape), got {model_selection!r}")
    from mediapipe.python.solutions.selfie_segmentation import SelfieSegmentation

    solution = SelfieSegmentation(model_selection=model_selection)

    def person_confidence(image: np.ndarray) -> np.ndarray:
        mask = solution.process(np.ascontiguousarray(image, dtype=np.uint8)).segmentation_mask
        return np.asarray(mask, dtype=np.float32)

    return person_confidence


def serve(person_confidence, requests, replies) -> int:
    """Answer requests until end of input; a failing image gets an error line and the worker keeps going."""
    while True:
        header = requests.readline()
        if not header:
            return 0
        height, width = (int(part) for part in header.split())
        expected = height * width * 3
        data = requests.read(expected)
        if len(data) != expected:
            print(f"mediapipe worker: input ended inside an image ({len(data)} of {expected} bytes)", file=sys.stderr)
            return 4
        # bytearray, not the bytes object: MediaPipe wraps the array and may want it writable.
        image = np.frombuffer(bytearray(data), dtype=np.uint8).reshape(height, width, 3)
        try:
            confidence = person_confidence(image)
            if confidence.shape != (height, width):
                raise ValueError(f"mask came back {confidence.shape}, expected {(height, width)}")
        except Exception as error:  # reported to the parent, which raises it with the image's context
            message = f"{type(error).__name__}: {error}".replace("\n", " ")
            replies.write(f"error {message}\n".encode())
            replies.flush()
            continue
        replies.write(f"ok {height} {width}\n".encode())
        replies.write(np.ascontiguousarray(confidence, dtype="<f4").tobytes())
        replies.flush()


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    model_selection = int(arguments[0]) if arguments else 0
    # Native code (TFLite, glog) may print to stdout, which would corrupt the replies: keep a private copy of
    # stdout for the protocol and point file descriptor 1 at stderr.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        import mediapipe

        person_confidence = load_selfie_segmenter(model_selection)
    except ImportError as error:
        print(f"mediapipe worker: cannot load the selfie segmenter with {sys.executable}: {error}", file=sys.stderr)
        return 3
    replies.write(f"ready {getattr(mediapipe, '__version__', 'unknown')}\n".encode())
    replies.flush()
    return serve(person_confidence, sys.stdin.buffer, replies)


if __name__ == "__main__":
    sys.exit(main())
