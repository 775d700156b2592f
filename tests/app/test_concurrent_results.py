"""Identical results requested at once never reach a client half written (issue 17 item 6).

Gradio caches each picture a handler returns by the hash of its bytes, so identical results share one file; the app
makes Gradio write that file once, whole (app.gradio_ui._save_pil_to_cache_atomically), where Gradio rewrote it in
place for every request while earlier clients could still be downloading it.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from gradio import processing_utils
from PIL import Image

from app import gradio_ui


def test_identical_pictures_saved_while_being_read_are_always_read_whole(tmp_path):
    assert processing_utils.save_pil_to_cache is gradio_ui._save_pil_to_cache_atomically  # what components call
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8))
    expected = processing_utils.encode_pil_to_bytes(picture, "png")
    path = processing_utils.save_pil_to_cache(picture, str(tmp_path), format="png")
    broken, stop = [], threading.Event()

    def download() -> None:  # what Gradio's file route does for each client fetching the result
        while not stop.is_set():
            data = Path(path).read_bytes()
            if data != expected:
                broken.append(len(data))

    readers = [threading.Thread(target=download) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        saved = [processing_utils.save_pil_to_cache(picture, str(tmp_path), format="png") for _ in range(200)]
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert set(saved) == {path} and not broken, f"{len(broken)} partial reads, sizes {sorted(set(broken))[:5]}"
    assert [item.name for item in Path(path).parent.iterdir()] == ["image.png"]  # no staging file left behind


def test_a_new_picture_is_written_whole_under_its_hash(tmp_path):
    first = Image.fromarray(np.zeros((3, 5, 3), dtype=np.uint8))
    second = Image.fromarray(np.full((3, 5, 3), 200, dtype=np.uint8))
    paths = [processing_utils.save_pil_to_cache(image, str(tmp_path), format="png") for image in (first, second)]
    assert paths[0] != paths[1]
    for path, image in zip(paths, (first, second)):
        assert Path(path).parent.name == processing_utils.hash_bytes(processing_utils.encode_pil_to_bytes(image, "png"))
        with Image.open(path) as saved:
            assert np.array_equal(np.asarray(saved), np.asarray(image))
