"""Every bad input of issue 17 sent to `python app.py` through gradio_client, with the app's exact answer.

    python -m tests.soak.bad_inputs --record docs/results/soak/bad-inputs.json --markdown /tmp/bad-inputs.md

The files are generated here (seeded): non-images, damaged and odd images, decompression bombs (a small PNG whose
header claims 900 megapixels), a 16-bit 10950x10950 PNG, huge and wrong ground-truth masks, tiny images, dataset
zips with `..` or absolute paths, links and bombs, null/NaN/infinite numbers, odd job names, an upload over the size
limit and a model name with a path. Each image goes to /remove_background, /segment and /compare; each answer is
recorded as the app gives it (the error message, the problems panel, or what came back), with the server's memory
peak during the case over its memory before it, and whether the app still serves afterwards. A markdown table (the
one in docs/reliability.md) is printed.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import stat
import struct
import sys
import tempfile
import threading
import time
import zipfile
import zlib
from pathlib import Path

import httpx
import numpy as np
from gradio_client import Client, handle_file
from PIL import Image

from tests.soak.server import memory_mb, start_server

SAMPLE = "shapes (generated: 96 images, 3 classes)"


# ----------------------------------------------------------------------------------------------- the files
def write_png(path: Path, width: int, height: int, bit_depth: int = 8, colour_type: int = 0) -> Path:
    """A valid all-zero PNG of any size, compressed row by row (a 900-megapixel one is ~1 MB and takes no memory)."""
    channels = {0: 1, 2: 3}[colour_type]
    row = b"\x00" * (1 + width * channels * bit_depth // 8)  # filter byte + pixels

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    parts = [compressor.compress(row * min(256, height - start)) for start in range(0, height, 256)]
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts))
                     + chunk(b"IEND", b""))
    return path


def photo(height: int = 120, width: int = 160, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def image_cases(folder: Path) -> list[tuple[str, Path]]:
    """(description, file) of every odd image."""
    picture = photo()
    files = []

    def add(description: str, name: str, write) -> None:
        path = folder / name
        write(path)
        files.append((description, path))

    add("text file named .png", "not-an-image.png", lambda p: p.write_text("just text\n"))
    add("empty file", "empty.png", lambda p: p.write_bytes(b""))
    Image.fromarray(picture).save(folder / "whole.jpg", quality=90)
    whole = (folder / "whole.jpg").read_bytes()
    add("truncated JPEG (first half)", "truncated.jpg", lambda p: p.write_bytes(whole[: len(whole) // 2]))
    add("SVG drawing", "drawing.svg", lambda p: p.write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="100" height="80"><rect width="100" height="80"/></svg>'))
    add("PNG bomb: 30000x30000 (900 MP) in a small file", "bomb-900mp.png", lambda p: write_png(p, 30000, 30000))
    add("16-bit greyscale PNG", "sixteen-bit.png",
        lambda p: Image.fromarray(picture.mean(axis=2).astype(np.uint16) * 257).save(p))
    add("16-bit 10950x10950 PNG (120 MP limit not reached; a few hundred KB)", "sixteen-bit-huge.png",
        lambda p: write_png(p, 10950, 10950, bit_depth=16))
    add("CMYK JPEG", "cmyk.jpg", lambda p: Image.fromarray(picture).convert("CMYK").save(p, quality=95))
    add("palette PNG", "palette.png", lambda p: Image.fromarray(picture).convert("P").save(p))
    add("GIF", "picture.gif", lambda p: Image.fromarray(picture).save(p))
    add("TIFF", "picture.tif", lambda p: Image.fromarray(picture).save(p))
    add("1x1 image", "one-pixel.png", lambda p: Image.fromarray(photo(1, 1)).save(p))
    add("1x9 image (1 px tall)", "strip-1x9.png", lambda p: Image.fromarray(photo(1, 9)).save(p))
    add("40x9 image (9 px tall)", "strip-9-tall.png", lambda p: Image.fromarray(photo(9, 40)).save(p))
    add("upload over 100 MB", "big.png", lambda p: p.write_bytes(np.random.default_rng(1).bytes(101 * 1024**2)))
    return files


def truth_cases(folder: Path) -> list[tuple[str, Path]]:
    """(description, ground-truth file) for /compare of the 300x400 (WxH) photo 'truth-photo.png'."""
    Image.fromarray(photo(400, 300, seed=2)).save(folder / "truth-photo.png")
    labels = np.zeros((400, 300), dtype=np.uint8)
    labels[100:200, 50:150] = 40
    Image.fromarray(labels).save(folder / "labels-40.png")
    colours = np.zeros((400, 300, 3), dtype=np.uint8)
    colours[:50] = (1, 2, 3)
    Image.fromarray(colours).save(folder / "odd-colour.png")
    Image.fromarray(np.zeros((100, 100), dtype=np.uint8)).save(folder / "square-mask.png")
    (folder / "mask.txt.png").write_text("not a mask")
    return [("huge ground-truth mask: 7500x10000 PNG (same aspect as the photo)",
             write_png(folder / "huge-truth.png", 7500, 10000)),
            ("ground-truth bomb: 30000x40000 PNG (1.2 GP)", write_png(folder / "truth-bomb.png", 30000, 40000)),
            ("ground truth with label 40 (models have 11 classes)", folder / "labels-40.png"),
            ("ground truth in a colour that is no class colour", folder / "odd-colour.png"),
            ("ground truth of another size and aspect", folder / "square-mask.png"),
            ("ground truth that is not an image", folder / "mask.txt.png")]


def encoded(array: np.ndarray, file_format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, file_format)
    return buffer.getvalue()


def dataset_entries(count: int = 4) -> dict[str, bytes]:
    entries = {}
    for index in range(count):
        image = photo(32, 32, seed=10 + index)
        entries[f"images/p{index}.png"] = encoded(image)
        entries[f"masks/p{index}.png"] = encoded((image[..., 0] > 127).astype(np.uint8))
    return entries


def write_zip(path: Path, entries: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target.encode())
    return path


def zip_cases(folder: Path) -> list[tuple[str, Path]]:
    good = dataset_entries()
    return [
        ("zip with a ../ path", write_zip(folder / "dot-dot.zip", {**good, "images/../../evil.png": b"x"})),
        ("zip with an absolute path", write_zip(folder / "absolute.zip", {**good, "/etc/evil.png": b"x"})),
        ("zip with a symbolic link", write_zip(folder / "link.zip", good, {"masks/p9.png": "/etc/passwd"})),
        ("zip bomb: one entry of 200 MB of zeros", write_zip(folder / "bomb.zip",
                                                             {**good, "images/bomb.png": bytes(200 * 1024**2)})),
        ("zip of 300 entries of 1 MiB of zeros", write_zip(folder / "many-zeros.zip",
                                                          {f"images/z{i}.png": bytes(1024**2) for i in range(300)})),
        ("zip without masks", write_zip(folder / "no-masks.zip",
                                        {name: data for name, data in good.items() if name.startswith("images/")})),
        ("file named .zip that is not a zip", _written(folder / "not-a-zip.zip", b"hello")),
    ]


def _written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------------------------------ sending
class PeakMemory:
    """The server's largest RSS while a case runs, sampled every 0.1 s."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()

    def __enter__(self):
        self.before = memory_mb(self.pid)[0] or 0.0
        self.peak = self.before
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, memory_mb(self.pid)[0] or 0.0)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.rise_mb = round(self.peak - self.before)


def answer(call) -> tuple[str, str]:
    """('message', text) for an error, ('result', what came back) otherwise."""
    try:
        return "result", call()
    except Exception as error:  # noqa: BLE001 - the message is what we record
        text = str(error).strip() or type(error).__name__
        return "message", text if type(error).__name__ == "AppError" else f"{type(error).__name__}: {text}"


def image_result(client: Client, path: Path) -> dict[str, tuple[str, str]]:
    def size_of(file) -> str:
        with Image.open(file) as picture:
            return f"{picture.size[0]}x{picture.size[1]}"

    def background():
        result, _download, info = client.predict(handle_file(str(path)), api_name="/remove_background")
        return f"cutout {size_of(result)}" + (f" ({info.split('  ')[-1].strip()})" if "downscaled" in info else "")

    def segment():
        outputs = client.predict(handle_file(str(path)), api_name="/segment")
        return f"mask {size_of(outputs[0]['image'])}"

    def compare():
        gallery, *_ = client.predict(handle_file(str(path)), api_name="/compare")
        return f"{len(gallery)} masks {size_of(gallery[0]['image'])}"

    return {"remove_background": answer(background), "segment": answer(segment), "compare": answer(compare)}


def raw_upload(url: str, path: Path) -> tuple[str, str]:
    """What the server answers when the file is sent anyway, as a browser would (multipart POST to the upload route)."""
    with path.open("rb") as file:
        response = httpx.post(f"{url}gradio_api/upload", files={"files": (path.name, file)}, timeout=300)
    return ("message" if response.status_code >= 400 else "result", f"HTTP {response.status_code}: {response.text}")


def finetune(client: Client, upload: Path | None, **settings) -> tuple[str, str]:
    """The answer of /finetune_start: its problems panel, or the job it started (cancelled at once)."""
    values = {"upload": handle_file(str(upload)) if upload else None, "sample": "" if upload else SAMPLE,
              "base": "scratch: unet", "epochs": 1, "lr": 0.003, "batch_size": 8, "input_size": 32,
              "freeze_encoder": False, "name": ""}
    values.update(settings)

    def call():
        job_id, status, problems = client.predict(*values.values(), api_name="/finetune_start")
        if not job_id:
            return ("message", " / ".join(line[2:] for line in problems.splitlines() if line.startswith("- ")))
        client.predict(job_id, api_name="/finetune_cancel")
        deadline = time.time() + 120
        while True:  # the job's process ends before the server stops, so nothing writes to its folder afterwards
            state = client.predict(job_id, api_name="/finetune_status")[-1].get("state")
            if state in ("cancelled", "finished", "failed") or time.time() > deadline:
                break
            time.sleep(0.5)
        first = status.splitlines()[0] if status else ""
        return ("result", f"job started: {first}; cancelled at once, then {state}")

    kind, text = answer(call)
    return text if kind == "result" else ("message", text)


def run(arguments) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="segcore-bad-inputs-"))
    server = start_server(arguments.weights, keep=arguments.keep)
    rows = []
    try:
        client = Client(server.url, verbose=False, analytics_enabled=False, download_files=str(folder / "downloads"))
        models = [row["name"] for row in client.predict(api_name="/list_models")]

        def record(case: str, api: str, outcome: dict[str, tuple[str, str]], memory: PeakMemory):
            serving = server.serving() and bool(client.predict(api_name="/list_models"))
            rows.append({"case": case, "api": api, "answers": outcome, "rss_rise_mb": memory.rise_mb,
                         "serving_after": serving})
            print(f"{case}: {outcome} (+{memory.rise_mb} MB, serving {serving})", flush=True)

        cases = image_cases(folder)
        Image.fromarray(photo(400, 300, seed=3)).save(folder / "warm-up.png")
        image_result(client, folder / "warm-up.png")  # models load first: memory rises below are the cases' own
        for case, path in cases:
            with PeakMemory(server.process.pid) as memory:
                outcome = image_result(client, path)
                if path.stat().st_size > 100 * 1024**2:  # gradio_client refuses it unsent: send it by hand
                    outcome["POST /gradio_api/upload"] = raw_upload(server.url, path)
            record(f"{case} (`{path.name}`)", "/remove_background, /segment, /compare", outcome, memory)
        truths = truth_cases(folder)
        truth_photo = handle_file(str(folder / "truth-photo.png"))
        pair = ["camvid-bisenet", "camvid-enet"] if {"camvid-bisenet", "camvid-enet"} <= set(models) else models[:2]
        for case, path in truths:
            with PeakMemory(server.process.pid) as memory:
                kind, text = answer(lambda path=path: client.predict(truth_photo, pair, handle_file(str(path)),
                                                                     api_name="/compare"))
                if kind == "result":
                    text = f"scored: {text[1]['data']}"
            record(f"{case} (`{path.name}`)", f"/compare {' + '.join(pair)}", {"compare": (kind, text)}, memory)
        for case, path in zip_cases(folder):
            with PeakMemory(server.process.pid) as memory:
                outcome = finetune(client, path)
            record(f"{case} (`{path.name}`)", "/finetune_start", {"finetune_start": outcome}, memory)
        numbers = [("epochs null", {"epochs": None}), ("learning rate NaN (a float)", {"lr": float("nan")}),
                   ("learning rate infinite (a float)", {"lr": float("inf")}),
                   ("learning rate 'NaN' (text)", {"lr": "NaN"}), ("learning rate '-inf' (text)", {"lr": "-inf"}),
                   ("batch size null", {"batch_size": None}),
                   ("input size 100000", {"input_size": 100000}), ("epochs 1e9", {"epochs": 1e9})]
        for case, settings in numbers:
            with PeakMemory(server.process.pid) as memory:
                outcome = finetune(client, None, **settings)
            record(case, "/finetune_start (bundled sample)", {"finetune_start": outcome}, memory)
        names = [("job name with a NUL byte", "a\x00b"), ("job name ../../etc", "../../etc"),
                 ("job name of 300 characters", "x" * 300), ("job name of spaces only", "   "),
                 ("job name with a slash and emoji", "my/job 🚀")]
        for case, name in names:
            with PeakMemory(server.process.pid) as memory:
                outcome = finetune(client, None, name=name)
            record(case, "/finetune_start (bundled sample)", {"finetune_start": outcome}, memory)
        small = handle_file(str(folder / "truth-photo.png"))
        for case, call, api in [
            ("model name with a path", lambda: client.predict(small, "../../etc/passwd", api_name="/segment"),
             "/segment"),
            ("one model to compare", lambda: client.predict(small, models[:1], api_name="/compare"), "/compare"),
            ("unknown background mode", lambda: client.predict(small, None, "sepia", api_name="/remove_background"),
             "/remove_background"),
            ("no image", lambda: client.predict(None, api_name="/segment"), "/segment"),
        ]:
            with PeakMemory(server.process.pid) as memory:
                kind, text = answer(call)
            record(case, api, {api.strip("/"): (kind, "answered" if kind == "result" else text)}, memory)
    finally:
        server.stop()
        if not arguments.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return {"rows": rows, "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def markdown(record: dict) -> str:
    lines = ["| bad input | API | the app's answer | server RSS rise (MB) | serving after |", "|---|---|---|---|---|"]
    for row in record["rows"]:
        answers = row["answers"]
        texts = {f"{kind}: {text}" if kind == "result" else text for kind, text in answers.values()}
        if len(texts) == 1:
            shown = next(iter(texts))
        else:
            shown = "<br>".join(f"{api}: {text if kind == 'message' else 'result: ' + text}"
                                for api, (kind, text) in answers.items())
        shown = shown.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {row['case']} | {row['api']} | {shown} | {row['rss_rise_mb']} | "
                     f"{'yes' if row['serving_after'] else 'NO'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", help="weights folder the app serves (default: assets/weights)")
    parser.add_argument("--record", help="write the JSON record here")
    parser.add_argument("--markdown", help="write the markdown table here")
    parser.add_argument("--keep", action="store_true", help="keep the server's folder (server.log, tmp/)")
    arguments = parser.parse_args(argv)
    record = run(arguments)
    table = markdown(record)
    if arguments.record:
        Path(arguments.record).parent.mkdir(parents=True, exist_ok=True)
        Path(arguments.record).write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    if arguments.markdown:
        Path(arguments.markdown).write_text(table + "\n")
    print(table)
    return 0 if all(row["serving_after"] for row in record["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
