"""`python app.py` on a free loopback port for the soak scripts, with its temporary files in a folder of its own,
and a sampler of the server's memory and temporary folders over time.

The server gets TMPDIR=<soak folder>/tmp, so everything it writes to the temporary folder is measurable and goes
with the run: Gradio's cache (GRADIO_TEMP_DIR defaults to <TMPDIR>/gradio), the app's result folders
(services.RESULTS_DIR, <TMPDIR>/segcore-app-results) and the per-upload folders. Memory comes from psutil when it
is installed, else /proc/PID/status (VmRSS; VmHWM, the peak, needs /proc).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

try:
    import psutil
except ImportError:  # /proc is enough on Linux
    psutil = None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def memory_mb(pid: int) -> tuple[float | None, float | None]:
    """(resident set size, its peak so far) of a process in MB; None where the platform does not tell."""
    rss = peak = None
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        try:
            for line in status.read_text().splitlines():
                if line.startswith(("VmRSS:", "VmHWM:")):
                    value = int(line.split()[1]) / 1024.0  # kB
                    rss, peak = (value, peak) if line.startswith("VmRSS") else (rss, value)
        except (OSError, ProcessLookupError):
            pass
    if psutil is not None:
        try:
            rss = psutil.Process(pid).memory_info().rss / 1024**2
        except psutil.Error:
            pass
    return rss, peak


def folder_mb(path: Path) -> tuple[float, int]:
    """(MB, files) under `path`; files that vanish while walking (pruned meanwhile) are skipped."""
    total, files = 0, 0
    for folder, _, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
                files += 1
            except FileNotFoundError:
                continue
    return total / 1024**2, files


def busy_processes(seconds: float = 1.0, threshold: float = 10.0, exclude: tuple[int, ...] = ()) -> list[dict]:
    """Processes using over `threshold` % of a core over `seconds` (what else loads the machine), from /proc."""
    def cpu_times() -> dict[int, float]:
        times = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                    times[int(entry.name)] = int(fields[11]) + int(fields[12])  # utime + stime, clock ticks
                except (OSError, IndexError, ValueError):
                    continue
        return times

    if not Path("/proc").is_dir():
        return []
    before = cpu_times()
    time.sleep(seconds)
    after = cpu_times()
    ticks = os.sysconf("SC_CLK_TCK")
    busy = []
    for pid, used in after.items():
        share = (used - before.get(pid, used)) / ticks / seconds * 100.0
        if share >= threshold and pid not in exclude and pid != os.getpid():
            try:
                command = (Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                           .strip())
            except OSError:
                continue
            busy.append({"pid": pid, "cpu_percent": round(share), "command": command[:160]})
    return sorted(busy, key=lambda row: -row["cpu_percent"])


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    folder: Path  # the soak run's own folder: tmp/ (the server's TMPDIR), runs/, server.log
    keep: bool = False

    @property
    def temp_dir(self) -> Path:
        return self.folder / "tmp"

    @property
    def gradio_dir(self) -> Path:
        return self.temp_dir / "gradio"

    @property
    def results_dir(self) -> Path:
        from app.services import RESULTS_DIR  # the app's own folder name, under this server's TMPDIR

        return self.temp_dir / RESULTS_DIR.name

    @property
    def log_path(self) -> Path:
        return self.folder / "server.log"

    def serving(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}config", timeout=10) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        if not self.keep:
            shutil.rmtree(self.folder, ignore_errors=True)


def start_server(weights_dir: str | None = None, result_max_age: float | None = None, keep: bool = False,
                 timeout: float = 300.0) -> Server:
    """`python app.py --port P` (127.0.0.1 only) with its own TMPDIR and runs/ folder; returns once it serves."""
    folder = Path(tempfile.mkdtemp(prefix="segcore-soak-"))
    (folder / "tmp").mkdir()
    env = {**os.environ, "TMPDIR": str(folder / "tmp"), "SEGCORE_RUNS_DIR": str(folder / "runs"),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("GRADIO_TEMP_DIR", None)  # <TMPDIR>/gradio, measured with the rest
    if weights_dir:
        env["SEGCORE_WEIGHTS_DIR"] = str(weights_dir)
    if result_max_age is not None:
        env["SEGCORE_RESULT_MAX_AGE"] = str(result_max_age)
    port = free_port()
    log = open(folder / "server.log", "w")  # noqa: SIM115 - the server writes to it until it stops
    process = subprocess.Popen([sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT,
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(process, f"http://127.0.0.1:{port}/", folder, keep)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            text = server.log_path.read_text()
            server.stop()
            raise RuntimeError(f"the app exited with code {process.returncode}:\n{text[-3000:]}")
        if server.serving():
            return server
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"the app did not serve within {timeout:.0f} s")


@dataclass
class Sampler:
    """Samples the server's memory and temporary folders every `interval` seconds in a thread."""

    server: Server
    interval: float = 1.0
    started: float = field(default_factory=time.time)
    samples: list[dict] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> dict:
        rss, peak = memory_mb(self.server.process.pid)
        gradio_mb, gradio_files = folder_mb(self.server.gradio_dir)
        results_mb, results_files = folder_mb(self.server.results_dir)
        temp_mb, temp_files = folder_mb(self.server.temp_dir)
        row = {"t": round(time.time() - self.started, 2), "rss_mb": rss and round(rss, 1),
               "peak_rss_mb": peak and round(peak, 1), "gradio_temp_mb": round(gradio_mb, 2),
               "gradio_temp_files": gradio_files, "results_mb": round(results_mb, 2), "results_files": results_files,
               "server_tmp_mb": round(temp_mb, 2), "server_tmp_files": temp_files,
               "load_1min": round(os.getloadavg()[0], 2)}
        self.samples.append(row)
        return row

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> Sampler:
        self.sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()
