"""Soak test: `python app.py` on a free loopback port, loaded through gradio_client for a while (issue 17 item 7).

    python -m tests.soak.run --clients 8 --seconds 60 --record docs/results/soak/concurrent.json
    python -m tests.soak.run --requests 1000 --max-seconds 600 --record docs/results/soak/sequential.json

Concurrent mode: N clients, each with its own gradio_client.Client, send requests back to back for T seconds
(requests in flight at the end finish and count). Sequential mode: one client, K requests one after another, stopped
early after --max-seconds. Requests cycle through /remove_background, /segment (every installed model in turn) and
/compare (two models with the same classes) on the bundled photos in assets/examples. Every file a response names
is downloaded by the client and checked: a complete PNG (signature, IEND last) or an image that decodes whole, of
the photo's size. A warm-up (every operation, model and photo once) comes first and is reported apart.

Reported: successes, errors (with their messages), p50/p95 latency (all and per operation), throughput, server RSS
over time (baseline after the warm-up, end, maximum; growth in %), its peak (VmHWM) over the idle server, and the
size of the server's temporary folders over time (Gradio's cache, the app's result folders, all of its TMPDIR);
also what else was using the CPU. The whole record goes to a JSON file; a summary is printed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from gradio_client import Client, handle_file
from PIL import Image

from tests.soak.server import ROOT, Sampler, Server, busy_processes, memory_mb, start_server

EXAMPLES_DIR = ROOT / "assets" / "examples"
OPERATIONS = ("remove_background", "segment", "compare")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk: length 0, type, CRC


@dataclass(frozen=True)
class Request:
    operation: str
    photo: Path
    models: tuple[str, ...]  # segment: one model; compare: two; remove_background: () (the app's default)


def photos() -> list[Path]:
    return sorted(path for path in EXAMPLES_DIR.iterdir() if path.suffix.lower() in (".jpg", ".jpeg", ".png"))


def request_plan(client: Client, pictures: list[Path]) -> list[Request]:
    """One cycle of requests covering every operation, installed model and photo; runs repeat it."""
    listed = client.predict(api_name="/list_models")
    names = [row["name"] for row in listed]
    by_classes: dict[tuple, list[str]] = {}
    for row in listed:
        by_classes.setdefault(tuple(row["classes"]), []).append(row["name"])
    pair = next((tuple(group[:2]) for group in by_classes.values() if len(group) >= 2), tuple(names[:2]))
    length = max(len(pictures), len(names))
    plan = []
    for index in range(length):
        photo = pictures[index % len(pictures)]
        plan += [Request("remove_background", photo, ()), Request("segment", photo, (names[index % len(names)],)),
                 Request("compare", photo, pair)]
    return plan


def check_image(path: str | None, size: tuple[int, int] | None = None, height: int | None = None) -> str:
    """'' when `path` is a complete image (a PNG must start with its signature and end with IEND) of `size`
    (width, height) or of `height`; else what is wrong."""
    if not path or not Path(path).is_file():
        return f"no file at {path!r}"
    data = Path(path).read_bytes()
    if data.startswith(PNG_SIGNATURE) and not data.endswith(PNG_END):
        return f"{Path(path).name}: PNG without its end ({len(data)} bytes): a broken download"
    try:
        with Image.open(path) as picture:
            picture.load()  # decodes every byte: a truncated file raises
            shown = picture.size
    except Exception as error:  # noqa: BLE001 - any failure to decode is a broken result
        return f"{Path(path).name}: does not decode ({type(error).__name__}: {error})"
    if size is not None and shown != size:
        return f"{Path(path).name}: {shown[0]}x{shown[1]}, expected {size[0]}x{size[1]}"
    if height is not None and shown[1] != height:
        return f"{Path(path).name}: {shown[1]} px high, expected {height}"
    return ""


def send(client: Client, request: Request, timeout: float) -> list[str]:
    """Run one request and check every file it returns; returns the problems found (empty: a success)."""
    with Image.open(request.photo) as picture:
        size = picture.size
    upload = handle_file(str(request.photo))
    if request.operation == "remove_background":
        job = client.submit(upload, api_name="/remove_background")
        result, download, _info = job.result(timeout=timeout)
        files = [(result, size, None), (download, size, None)]
    elif request.operation == "segment":
        job = client.submit(upload, request.models[0], False, "", api_name="/segment")
        annotated, overlay, confidence, class_map, _slider, _legend, _info = job.result(timeout=timeout)
        # a saliency model's overlay carries a colour bar, like the heatmaps: those are checked by their height
        files = [(annotated["image"], size, None), (overlay, None, size[1]), (confidence, None, size[1]),
                 (class_map, None, size[1])]
        files += [(item["image"], size, None) for item in annotated["annotations"]]
    else:
        job = client.submit(upload, list(request.models), None, api_name="/compare")
        gallery, _table, disagreement, _info = job.result(timeout=timeout)
        files = [(item["image"], size, None) for item in gallery] + [(disagreement, None, size[1])]
        if len(gallery) != len(request.models):
            return [f"{len(gallery)} pictures for {len(request.models)} models"]
    problems = [problem for path, wanted, height in files if (problem := check_image(path, wanted, height))]
    for path, _, _ in files:  # the client's copies are checked; keep its disk bounded
        if path:
            shutil.rmtree(Path(path).parent, ignore_errors=True)
    return problems


def timed(client: Client, request: Request, started: float, timeout: float, client_index: int) -> dict:
    begin = time.time()
    try:
        problems = send(client, request, timeout)
    except Exception as error:  # noqa: BLE001 - every failure is recorded with its message
        problems = [f"{type(error).__name__}: {str(error)[:300]}"]
    return {"client": client_index, "operation": request.operation, "photo": request.photo.name,
            "models": list(request.models), "start_s": round(begin - started, 3),
            "latency_s": round(time.time() - begin, 3), "ok": not problems, "problems": problems}


def new_client(url: str, folder: Path) -> Client:
    folder.mkdir(parents=True, exist_ok=True)
    return Client(url, verbose=False, analytics_enabled=False, download_files=str(folder))


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def latency_summary(records: list[dict]) -> dict:
    ok = [record["latency_s"] for record in records if record["ok"]]
    return {"requests": len(records), "successes": len(ok), "errors": len(records) - len(ok),
            "p50_s": percentile(ok, 0.5), "p95_s": percentile(ok, 0.95), "max_s": max(ok) if ok else None}


def memory_summary(samples: list[dict], load_start: float, baseline_after: float, idle_rss: float) -> dict:
    """RSS baseline: median over the 5 s from `baseline_after` seconds into the load; end: median over the last 5 s."""
    during = [row for row in samples if row["t"] >= load_start and row["rss_mb"] is not None]
    base_rows = [row["rss_mb"] for row in during if load_start + baseline_after <= row["t"] <= load_start
                 + baseline_after + 5] or [during[0]["rss_mb"]]
    end_time = during[-1]["t"]
    end_rows = [row["rss_mb"] for row in during if row["t"] >= end_time - 5]
    later = [row["rss_mb"] for row in during if row["t"] >= load_start + baseline_after]
    baseline, end, highest = statistics.median(base_rows), statistics.median(end_rows), max(later)
    peak = samples[-1]["peak_rss_mb"]
    return {"idle_rss_mb": round(idle_rss, 1), "baseline_rss_mb": round(baseline, 1), "end_rss_mb": round(end, 1),
            "max_rss_mb": highest,
            "end_vs_baseline_percent": round((end / baseline - 1) * 100, 1),
            "max_vs_baseline_percent": round((highest / baseline - 1) * 100, 1),
            "peak_rss_mb (VmHWM, whole run)": peak,
            "peak_over_idle_mb": None if peak is None else round(peak - idle_rss, 1),
            "peak_over_baseline_mb": None if peak is None else round(peak - baseline, 1)}


def folder_summary(samples: list[dict], load_start: float, requests: int) -> dict:
    during = [row for row in samples if row["t"] >= load_start]
    summary = {}
    for key in ("gradio_temp_mb", "results_mb", "server_tmp_mb"):
        summary[key] = {"start": during[0][key], "end": during[-1][key], "max": max(row[key] for row in during)}
    summary["server_tmp_mb_per_request"] = round((during[-1]["server_tmp_mb"] - during[0]["server_tmp_mb"])
                                                 / max(requests, 1), 3)
    summary["files_end"] = {"gradio_temp": during[-1]["gradio_temp_files"], "results": during[-1]["results_files"]}
    return summary


def run(arguments) -> dict:
    pictures = photos()
    scratch = Path(tempfile.mkdtemp(prefix="segcore-soak-clients-"))
    tempfile.tempdir = str(scratch)  # gradio_client stages each download in a folder of the temp dir: keep ours
    server = start_server(arguments.weights, arguments.result_max_age, keep=arguments.keep)
    records, warmup = [], []
    try:
        others = busy_processes(exclude=(server.process.pid,))
        sampler = Sampler(server, arguments.interval).start()
        idle_rss = memory_mb(server.process.pid)[0]
        main_client = new_client(server.url, scratch / "client-0")
        plan = request_plan(main_client, pictures)
        warmup_started = time.time()
        for request in plan:  # every operation, model and photo once: models load, ONNX sessions start
            warmup.append(timed(main_client, request, warmup_started, arguments.timeout, 0))
        load_start = time.time() - sampler.started
        started = time.time()
        if arguments.requests:
            cycle = itertools.cycle(plan)
            while len(records) < arguments.requests and time.time() - started < arguments.max_seconds:
                records.append(timed(main_client, next(cycle), started, arguments.timeout, 0))
            baseline_after = 0.0
        else:
            lock = threading.Lock()
            deadline = started + arguments.seconds

            def client_loop(index: int) -> None:
                client = main_client if index == 0 else new_client(server.url, scratch / f"client-{index}")
                for request in itertools.islice(itertools.cycle(plan), index, None):  # clients start apart
                    if time.time() >= deadline:
                        return
                    record = timed(client, request, started, arguments.timeout, index)
                    with lock:
                        records.append(record)

            threads = [threading.Thread(target=client_loop, args=(index,)) for index in range(arguments.clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            baseline_after = arguments.warmup_seconds
        elapsed = time.time() - started
        serving_after = server.serving()
        sampler.stop()
        others_end = busy_processes(exclude=(server.process.pid,))
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
        tempfile.tempdir = None
    errors: dict[str, int] = {}
    for record in records:
        for problem in record["problems"]:
            errors[problem] = errors.get(problem, 0) + 1
    return {
        "mode": "sequential" if arguments.requests else "concurrent",
        "settings": {"clients": 1 if arguments.requests else arguments.clients,
                     "seconds": None if arguments.requests else arguments.seconds,
                     "requests": arguments.requests or None, "max_seconds": arguments.max_seconds,
                     "result_max_age_s": arguments.result_max_age, "photos": [path.name for path in pictures],
                     "plan": [[request.operation, request.photo.name, *request.models] for request in plan]},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                    "busy_processes_at_start": others, "busy_processes_at_end": others_end,
                    "load_1min_mean": round(statistics.mean(row["load_1min"] for row in sampler.samples), 2)},
        "elapsed_s": round(elapsed, 1),
        "stopped_by_time_limit": bool(arguments.requests) and len(records) < arguments.requests,
        "throughput_per_s": round(len(records) / elapsed, 3),
        "summary": latency_summary(records),
        "per_operation": {name: latency_summary([r for r in records if r["operation"] == name])
                          for name in OPERATIONS},
        "errors": errors,
        "serving_after": serving_after,
        "memory": memory_summary(sampler.samples, load_start, baseline_after, idle_rss),
        "temp_folders": folder_summary(sampler.samples, load_start, len(records)),
        "warmup": latency_summary(warmup) | {"problems": [p for r in warmup for p in r["problems"]]},
        "samples": sampler.samples,
        "requests": records,
    }


def print_summary(record: dict) -> None:
    summary, memory, folders = record["summary"], record["memory"], record["temp_folders"]
    print(f"{record['mode']}: {summary['requests']} requests in {record['elapsed_s']} s "
          f"({record['throughput_per_s']}/s): {summary['successes']} ok, {summary['errors']} errors; "
          f"p50 {summary['p50_s']} s, p95 {summary['p95_s']} s")
    for name, row in record["per_operation"].items():
        print(f"  {name}: {row['requests']} requests, {row['errors']} errors, p50 {row['p50_s']} s, "
              f"p95 {row['p95_s']} s")
    for problem, count in record["errors"].items():
        print(f"  error x{count}: {problem}")
    print(f"RSS: idle {memory['idle_rss_mb']} MB, baseline {memory['baseline_rss_mb']} MB, "
          f"end {memory['end_rss_mb']} MB "
          f"({memory['end_vs_baseline_percent']:+} %), max {memory['max_rss_mb']} MB "
          f"({memory['max_vs_baseline_percent']:+} %), peak {memory['peak_rss_mb (VmHWM, whole run)']} MB "
          f"(+{memory['peak_over_idle_mb']} MB over idle, {memory['peak_over_baseline_mb']:+} MB over the baseline)")
    for key in ("gradio_temp_mb", "results_mb", "server_tmp_mb"):
        print(f"{key}: start {folders[key]['start']}, end {folders[key]['end']}, max {folders[key]['max']}")
    print(f"server temp growth per request: {folders['server_tmp_mb_per_request']} MB; "
          f"still serving: {record['serving_after']}; mean 1-min load {record['machine']['load_1min_mean']} "
          f"on {record['machine']['cpus']} CPUs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--seconds", type=float, default=60.0, help="concurrent mode: how long to load (default 60)")
    parser.add_argument("--requests", type=int, default=0,
                        help="sequential mode: this many requests one after another (default: concurrent mode)")
    parser.add_argument("--max-seconds", type=float, default=600.0,
                        help="sequential mode stops after this long even if requests remain (default 600)")
    parser.add_argument("--warmup-seconds", type=float, default=10.0,
                        help="concurrent mode: RSS baseline this long into the load (default 10)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one request may take (default 300)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples (default 1)")
    parser.add_argument("--weights", help="weights folder the app serves (default: assets/weights)")
    parser.add_argument("--result-max-age", type=float, default=None,
                        help="SEGCORE_RESULT_MAX_AGE for the server: seconds results and Gradio's cache are kept "
                             "(default: the app's 600)")
    parser.add_argument("--record", help="write the JSON record here")
    parser.add_argument("--keep", action="store_true", help="keep the server's folder (server.log, tmp/)")
    arguments = parser.parse_args(argv)
    if arguments.clients < 1 or arguments.seconds <= 0 or arguments.requests < 0:
        parser.error("--clients must be at least 1, --seconds above 0 and --requests 0 or more")
    record = run(arguments)
    if arguments.record:
        Path(arguments.record).parent.mkdir(parents=True, exist_ok=True)
        Path(arguments.record).write_text(json.dumps(record, indent=1) + "\n")
    print_summary(record)
    return 0 if record["summary"]["errors"] == 0 and record["serving_after"] else 1


if __name__ == "__main__":
    sys.exit(main())
