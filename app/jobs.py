"""Background fine-tuning jobs for the app: one at a time, the rest queued, cancellable, persisted under runs/.

Each job is a folder ROOT/JOB_ID with job.json (written by the manager only), recipe.yaml, progress.json (written
by the training process only), log.txt and run/ (the trainer's outputs). A job trains in a child process
(`python -m app.jobs JOB_DIR`), so the UI keeps its GIL and cores and a cancel can always end it; on CPU the child
uses at most half the cores at a lower priority. Jobs found running by a fresh manager resume from trainer_state.pt,
and so does a job whose training process the kernel killed (SIGKILL, what the out-of-memory killer sends), a
bounded number of times. A job may carry an owner (an opaque key the app derives from a browser's or client's
token): status, cancel and the job list then act only on that owner's jobs, and queue caps count per owner.
A job that starts from a saved model first scores that model on the job's own validation split, so its status can
say when fine-tuning made the model worse. Messages and errors name files relative to the dataset and the job
folder, never by their server paths.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path
from collections.abc import Callable
from typing import Self

from segcore.engine.config import TrainConfig, load_recipe, write_recipe
from segcore.engine.events import TrainEvent
from segcore.errors import SegcoreError
from segcore.fileio import write_json_atomic
from segcore.runs import read_metrics_csv

log = logging.getLogger("segcore.app.jobs")

JOB_FILE = "job.json"
PROGRESS_FILE = "progress.json"
RECIPE_FILE = "recipe.yaml"
LOG_FILE = "log.txt"
CANCEL_FILE = "CANCEL"
RUN_FOLDER = "run"
LOCK_FILE = ".lock"
TERMINAL_STATES = ("finished", "failed", "cancelled")
KILL_SIGNAL = getattr(signal, "SIGKILL", 9)  # a child ended by it exits with -KILL_SIGNAL
REPO_ROOT = Path(__file__).resolve().parent.parent
PROGRESS_FIELDS = ("stage", "epoch", "epochs", "step", "steps", "device", "loss", "lr", "eta_seconds", "metrics",
                   "metric", "history", "resumed_from", "updated", "start_metric", "best_value", "worse_than_start")


class JobQueueFull(SegcoreError):
    """The queue cap (per owner or overall) is reached; the message says which and what to do."""


def default_cpu_threads() -> int:
    """Half the cores this process may use (its affinity mask, which containers narrow), at least one."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 2
    return max(1, cores // 2)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def model_folder(run_dir: Path) -> Path | None:
    """The folder a finished run offers as its model: best/ (chosen by validation) if present, else last/."""
    for name in ("best", "last"):
        if (run_dir / name / "config.json").is_file():
            return run_dir / name
    return None


def validate_job_config(config: TrainConfig | dict) -> TrainConfig:
    """Check what can be checked cheaply before queueing; dataset paths become absolute so the job runs anywhere."""
    import segcore
    from segcore.engine.trainer import resolve_device

    values = config.to_dict() if isinstance(config, TrainConfig) else dict(config)
    config = TrainConfig.from_dict(values, source="job settings")
    models = segcore.list_models()
    for stage_name, stage in config.stage_configs():
        where = "" if not config.stages else f" (stage {stage_name})"
        if stage.model not in models:
            raise SegcoreError(f"unknown model {stage.model!r}{where}; pick one of: {', '.join(models)}")
        if not stage.data:
            raise SegcoreError(f"no training data{where}: set data to a dataset folder (upload one first)")
        if not Path(stage.data).is_dir():
            raise SegcoreError(f"{stage.data}: no such dataset folder{where}; upload the dataset again or fix the path")
        resolve_device(stage.device)  # asking for CUDA without a GPU fails here, not minutes later
    config.data = str(Path(config.data).resolve()) if config.data else config.data
    if config.init_from and Path(config.init_from).exists():
        config.init_from = str(Path(config.init_from).resolve())
    for stage in config.stages or []:
        for key in ("data", "init_from"):
            if stage.get(key) and Path(stage[key]).exists():
                stage[key] = str(Path(stage[key]).resolve())
    return config


class JobManager:
    """Queues fine-tuning jobs under `root` and runs them one at a time, in submission order, in a child process.

    Only one manager may own a root at a time (a lock file); a new manager on the same root picks up every job:
    queued ones stay queued, ones a stopped or crashed app left running are resumed from their last finished epoch.
    """

    def __init__(self, root: str | os.PathLike = "runs/app-jobs", *, cpu_threads: int | None = None,
                 autostart: bool = True, cancel_grace_seconds: float = 10.0, poll_seconds: float = 0.2,
                 on_end: Callable[[dict], None] | None = None, max_active: int | None = None,
                 max_active_per_owner: int | None = None, max_kill_retries: int = 2):
        """`on_end(record)` is called once a job has ended (finished, failed or cancelled), e.g. to remove the
        data it was trained on; its errors are logged, never raised. `max_active` and `max_active_per_owner` cap
        the jobs queued or running at once (None: no cap); `max_kill_retries` is how often a job whose training
        process was SIGKILLed is resumed before it fails."""
        self.on_end = on_end
        self.max_active = max_active
        self.max_active_per_owner = max_active_per_owner
        self.max_kill_retries = max(0, int(max_kill_retries))
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.cpu_threads = max(1, int(cpu_threads or default_cpu_threads()))
        self.cancel_grace_seconds = cancel_grace_seconds
        self.poll_seconds = poll_seconds
        self._lock = threading.Condition(threading.RLock())
        self._jobs: dict[str, dict] = {}
        self._process: subprocess.Popen | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._progress_cache: dict[str, tuple[tuple[int, int], dict]] = {}
        self._lock_handle = self._acquire_root()
        self._recover()
        if autostart:
            self.start()

    # ------------------------------------------------------------------------------------------- public API
    def start(self) -> None:
        """Start the worker thread (done by the constructor unless autostart=False)."""
        with self._lock:
            if self._stopping:
                raise SegcoreError("this job manager was shut down; create a new JobManager")
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="segcore-jobs", daemon=True)
                self._thread.start()

    def submit(self, config: TrainConfig | dict, name: str | None = None, *, notes: list[str] | None = None,
               start_model: str | None = None, owner: str | None = None) -> str:
        """Validate `config` and queue it; returns the job id (sortable by submission time). `notes` are lines the
        job's status always shows (how its data was split ...); `start_model` names the model it fine-tunes;
        `owner` files the job under that key (None: no owner, seen only by callers that ask for every job).
        Raises JobQueueFull past the queue caps."""
        config = validate_job_config(config)
        with self._lock:
            if self._stopping:
                raise SegcoreError("the job manager is shut down; restart the app to queue jobs")
            self.check_capacity(owner)
            job_id = self._new_id()
            job_dir = self.root / job_id
            job_dir.mkdir()
            write_recipe(config, job_dir / RECIPE_FILE)
            record = {
                "id": job_id,
                "name": self._unique_name(name or f"{config.model}-{Path(config.data).name}"),
                "state": "queued",
                "created": time.time(),
                "started": None,
                "ended": None,
                "attempts": 0,
                "pid": None,
                "cancel_requested": False,
                "message": "queued",
                "error": None,
                "model_dir": None,
                "model": config.model,
                "data": config.data,
                "requested_device": config.device,
                "init_from": config.init_from,
                "start_model": start_model,
                "notes": [str(note) for note in notes or []],
                "owner": owner,
                "kills": 0,
            }
            self._jobs[job_id] = record
            self._save(record)
            self._lock.notify_all()
        return job_id

    def check_capacity(self, owner: str | None = None) -> None:
        """Raise JobQueueFull when one more job (of `owner`) would pass a queue cap: callers check before costly
        preparation (unpacking an upload), submit checks again."""
        with self._lock:
            active = [record for record in self._jobs.values() if record["state"] in ("queued", "running")]
            own = [record for record in active if record.get("owner") == owner]
            if owner is not None and self.max_active_per_owner is not None and len(own) >= self.max_active_per_owner:
                raise JobQueueFull(f"you already have {len(own)} fine-tuning job(s) queued or running, the most one "
                                   f"person may have; wait for one to end or cancel one, then start again")
            if self.max_active is not None and len(active) >= self.max_active:
                raise JobQueueFull(f"the app already has {len(active)} fine-tuning jobs queued or running, its "
                                   f"limit; wait a few minutes for some to end, then start again")

    def status(self, job_id: str, owner: str | None = None) -> dict:
        """Everything a UI shows about a job: state, queue position, progress, curves' history, error, folders.
        With `owner`, only that owner's jobs are found (another's is "no job", as an unknown id)."""
        with self._lock:
            record = dict(self._record(job_id, owner))
            queued = self._queued_ids()
        job_dir = self.root / job_id
        progress = self._read_progress(job_id)
        status = {field: progress.get(field) for field in PROGRESS_FIELDS}
        status["history"] = progress.get("history") or []
        status["metrics"] = progress.get("metrics") or {}
        status.update(record)
        status["queue_position"] = queued.index(job_id) + 1 if job_id in queued else None
        status["job_dir"] = str(job_dir)
        status["run_dir"] = str(job_dir / RUN_FOLDER)
        status["log_path"] = str(job_dir / LOG_FILE)
        if record["state"] != "finished":
            status["model_dir"] = None
        if (record["state"] == "running" and not record["cancel_requested"] and progress.get("message")
                and progress.get("attempt") == record["attempts"]):
            status["message"] = progress["message"]  # the child's own words: "training on cuda", ...
        return status

    def jobs(self, owner: str | None = None) -> list[dict]:
        """Every job's status (with `owner`: that owner's jobs only), newest first."""
        with self._lock:
            mine = [record for record in self._jobs.values() if owner is None or record.get("owner") == owner]
            ordered = sorted(mine, key=lambda record: (record["created"], record["id"]), reverse=True)
            ids = [record["id"] for record in ordered]
        return [self.status(job_id) for job_id in ids]

    def finished_models(self) -> list[tuple[str, Path]]:
        """(job name, model folder) of every finished job, newest first, for the app's model pickers."""
        with self._lock:
            finished = [record for record in self._jobs.values() if record["state"] == "finished"]
        finished.sort(key=lambda record: (record["created"], record["id"]), reverse=True)
        return [(record["name"], Path(record["model_dir"])) for record in finished
                if record.get("model_dir") and (Path(record["model_dir"]) / "config.json").is_file()]

    def cancel(self, job_id: str, owner: str | None = None) -> dict:
        """Cancel a job: a queued one at once, a running one after its current training step. Returns its status,
        whose message says what happened (cancelling a job that already ended changes nothing and says so). With
        `owner`, only that owner's jobs can be cancelled."""
        with self._lock:
            record = self._record(job_id, owner)
            state = record["state"]
            if state in TERMINAL_STATES:
                return {**self.status(job_id), "message": f"job {record['name']} has already {state}; "
                                                          f"there is nothing to cancel"}
            if state == "queued":
                self._end(record, "cancelled", message="cancelled before it started")
            elif not record["cancel_requested"]:
                record["cancel_requested"] = True
                record["cancel_requested_at"] = time.time()
                record["message"] = "cancelling: the job stops after its current training step"
                (self.root / job_id / CANCEL_FILE).write_text(f"{time.time()}\n")
                self._save(record)
            return self.status(job_id)

    def wait(self, job_id: str, timeout: float | None = None, poll_seconds: float = 0.1) -> dict:
        """Poll until the job reaches finished, failed or cancelled; returns its status (TimeoutError past timeout)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.status(job_id)
            if status["state"] in TERMINAL_STATES:
                return status
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {status['state']} after {timeout} s")
            time.sleep(poll_seconds)

    def shutdown(self, wait: bool = True, timeout: float | None = None) -> None:
        """Stop the worker. A running job is stopped after its current step and stays queued: the next manager on
        this root resumes it from its last finished epoch (an app restart loses nothing)."""
        with self._lock:
            self._stopping = True
            process = self._process
            self._lock.notify_all()
        if process is not None and process.poll() is None:
            try:
                process.send_signal(signal.SIGTERM)  # the child stops after its current step
            except ProcessLookupError:
                pass
        thread = self._thread
        if thread is None:
            self._release_root()
        elif wait:
            thread.join(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.shutdown(wait=True)

    # ------------------------------------------------------------------------------------------- bookkeeping
    def _acquire_root(self):
        handle = open(self.root / LOCK_FILE, "a+")  # noqa: SIM115 - held open for the manager's lifetime
        try:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # Windows: no advisory locks here; one app per root is then the user's job
            pass
        except OSError:
            handle.close()
            # named by its folder's name only: the message reaches web pages, which must not see server paths
            raise SegcoreError(f"another segcore app is already running these jobs (the jobs folder "
                               f"{self.root.name}); stop it first or give this one another runs folder") from None
        return handle

    def _release_root(self) -> None:
        handle, self._lock_handle = self._lock_handle, None
        if handle is not None:
            handle.close()  # closing drops the flock

    def _recover(self) -> None:
        """Read every job folder; jobs a previous app left running are re-queued to resume (or cancelled)."""
        for job_file in sorted(self.root.glob(f"*/{JOB_FILE}")):
            record = read_json(job_file)
            if not record or record.get("id") != job_file.parent.name:
                warnings.warn(f"{job_file}: unreadable job record, skipped", stacklevel=2)
                continue
            self._jobs[record["id"]] = record
            if record["state"] != "running":
                continue
            if (job_file.parent / CANCEL_FILE).exists():
                self._end(record, "cancelled", message="cancelled (the app stopped while it was stopping)")
                continue
            # The process of a crashed app may still be winding down; the worker waits for it before resuming.
            record["orphan_pid"] = record.get("pid")
            record.update(state="queued", pid=None, message="interrupted when the app stopped; it resumes from its "
                                                            "last finished epoch")
            self._save(record)

    def _save(self, record: dict) -> None:
        write_json_atomic(self.root / record["id"] / JOB_FILE, record)

    def _record(self, job_id: str, owner: str | None = None) -> dict:
        """The job's record; with `owner`, another owner's job is as unknown as a made-up id (job ids are
        timestamps, easy to guess), and the message lists only the owner's own jobs."""
        record = self._jobs.get(job_id)
        if record is None or (owner is not None and record.get("owner") != owner):
            known = ", ".join(sorted(key for key, value in self._jobs.items()
                                     if owner is None or value.get("owner") == owner)) or "none"
            raise SegcoreError(f"no job {job_id!r}{' of yours' if owner is not None else ''}; pick one of the "
                               f"known jobs: {known}")
        return record

    def _queued_ids(self) -> list[str]:
        queued = [record for record in self._jobs.values() if record["state"] == "queued"]
        return [record["id"] for record in sorted(queued, key=lambda record: (record["created"], record["id"]))]

    def _new_id(self) -> str:
        """DATE-TIME-NNNN: sorts in submission order, NNNN counting the jobs submitted within one second."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        number = 0
        while (job_id := f"{stamp}-{number:04d}") in self._jobs or (self.root / job_id).exists():
            number += 1
        return job_id

    def _unique_name(self, name: str) -> str:
        # printable characters only (a NUL or escape code in a name broke its status), and no "/": the model is
        # offered as fine-tuned/<name>, which must stay one name
        name = "".join(character if character.isprintable() else " " for character in str(name)).replace("/", "-")
        name = " ".join(name.split())[:80] or "job"
        taken = {record["name"] for record in self._jobs.values()}
        candidate, number = name, 1
        while candidate in taken:
            number += 1
            candidate = f"{name}-{number}"
        return candidate

    def _end(self, record: dict, state: str, *, message: str, error: str | None = None) -> None:
        record.update(state=state, ended=time.time(), message=message, error=error, pid=None)
        if self.on_end is not None:  # before the end is saved: whoever sees the job ended sees it cleaned up
            try:
                self.on_end(dict(record))
            except Exception:  # noqa: BLE001 - a cleanup problem must not break the queue
                log.exception("on_end of job %s failed", record.get("id"))
        self._save(record)

    def _read_progress(self, job_id: str) -> dict:
        path = self.root / job_id / PROGRESS_FILE
        try:
            stat = path.stat()
        except OSError:
            return {}
        key = (stat.st_mtime_ns, stat.st_size)
        cached = self._progress_cache.get(job_id)
        if cached and cached[0] == key:
            return cached[1]
        progress = read_json(path) or {}
        self._progress_cache[job_id] = (key, progress)
        return progress

    # ------------------------------------------------------------------------------------------- the worker
    def _work(self) -> None:
        try:
            while True:
                with self._lock:
                    while not self._stopping and not self._queued_ids():
                        self._lock.wait()
                    if self._stopping:
                        return
                    job_id = self._queued_ids()[0]
                self._run(job_id)
        finally:
            self._release_root()

    def _run(self, job_id: str) -> None:
        job_dir = self.root / job_id
        with self._lock:
            record = self._jobs[job_id]
            orphan = record.pop("orphan_pid", None)
        if orphan:
            stop_orphan(orphan, job_dir, self.cancel_grace_seconds)
        with self._lock:
            if record["state"] != "queued" or self._stopping:  # cancelled or shut down meanwhile
                return
            record["attempts"] += 1
            attempt = record["attempts"]
            resuming = (job_dir / RUN_FOLDER).exists()
            record.update(state="running", started=record["started"] or time.time(), error=None,
                          message="resuming from the last finished epoch" if resuming else "starting")
            with open(job_dir / LOG_FILE, "a", encoding="utf-8") as log:
                log.write(f"=== attempt {attempt} at {time.strftime('%Y-%m-%d %H:%M:%S')}"
                          f"{' (resuming)' if resuming else ''}\n")
            environment = dict(os.environ, OMP_NUM_THREADS=str(self.cpu_threads), MKL_NUM_THREADS=str(self.cpu_threads),
                               PYTHONUNBUFFERED="1",
                               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
            command = [sys.executable, "-m", "app.jobs", str(job_dir), "--threads", str(self.cpu_threads),
                       "--parent-pid", str(os.getpid()), "--attempt", str(attempt)]
            try:
                with open(job_dir / LOG_FILE, "ab") as log:
                    # A session of its own: Ctrl+C in the app's terminal must not kill the job mid-step.
                    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                               env=environment, start_new_session=True)
            except OSError as error:
                self._end(record, "failed", message="failed to start",
                          error=without_paths(f"could not start the training process: {error}", record, job_dir))
                return
            self._process = process
            record["pid"] = process.pid
            self._save(record)
        return_code = self._supervise(process, record)
        with self._lock:
            self._process = None
            self._finish(record, attempt, return_code)

    def _supervise(self, process: subprocess.Popen, record: dict) -> int:
        """Wait for the child; kill it when it outlives a cancel or a shutdown by more than the grace period."""
        stop_asked_at = None
        while True:
            try:
                return process.wait(timeout=self.poll_seconds)
            except subprocess.TimeoutExpired:
                pass
            with self._lock:
                if record["cancel_requested"] or self._stopping:
                    stop_asked_at = stop_asked_at or record.get("cancel_requested_at") or time.time()
            if stop_asked_at and time.time() - stop_asked_at > self.cancel_grace_seconds:
                process.kill()
                return process.wait()

    def _finish(self, record: dict, attempt: int, return_code: int) -> None:
        job_dir = self.root / record["id"]
        progress = read_json(job_dir / PROGRESS_FILE) or {}
        reported = progress.get("state") if progress.get("attempt") == attempt else None
        for key in ("start_metric", "best_value", "worse_than_start"):  # kept in job.json, beside the outcome
            if progress.get(key) is not None:
                record[key] = progress[key]
        if reported == "finished":
            record["model_dir"] = progress.get("model_dir")
            self._end(record, "finished", message=progress.get("message") or "finished")
        elif reported == "failed":
            self._end(record, "failed", message="failed",
                      error=without_paths(progress.get("error") or "training failed", record, job_dir))
        elif record["cancel_requested"]:
            self._end(record, "cancelled", message=progress.get("message") or "cancelled")
        elif self._stopping:
            record.update(state="queued", pid=None, message="interrupted when the app stopped; it resumes from its "
                                                            "last finished epoch")
            self._save(record)
        elif reported == "cancelled":
            self._end(record, "cancelled", message="stopped from outside the app")
        elif return_code == -KILL_SIGNAL:
            # The kernel's out-of-memory killer sends SIGKILL: nothing in the child could react, but its last
            # trainer_state.pt is intact, so the job resumes from there, a bounded number of times (memory that
            # ran out once may run out again).
            kills = record.get("kills", 0) + 1
            record["kills"] = kills
            if kills <= self.max_kill_retries:
                record["notes"] = [*record.get("notes", []),
                                   f"attempt {attempt}: the training process was killed (SIGKILL, what the "
                                   f"out-of-memory killer sends); resumed from its last finished epoch (retry "
                                   f"{kills} of {self.max_kill_retries})"]
                record.update(state="queued", pid=None, message="the training process was killed; it resumes from "
                                                                "its last finished epoch")
                self._save(record)
            else:
                self._end(record, "failed", message="failed",
                          error=f"the training process was killed {kills} time(s) (SIGKILL, what the out-of-memory "
                                f"killer sends) and resumed {self.max_kill_retries} time(s); use a smaller batch "
                                f"size or input size, or free memory on the server, then start again; the full log "
                                f"is {LOG_FILE} in job {record['id']}")
        else:
            last_line = last_log_line(job_dir / LOG_FILE)
            self._end(record, "failed", message="failed",
                      error=without_paths(f"the training process ended unexpectedly (exit code {return_code})"
                                          f"{': ' + last_line if last_line else ''}; the full log is {LOG_FILE} in "
                                          f"job {record['id']}", record, job_dir))


# An absolute POSIX path not inside a word, a URL or a relative path ("1/2" and "a / b" are no paths).
ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/-])(?:/[^\s/:'\"(),;]+)+/?")


def without_paths(text: str, record: dict, job_dir: Path) -> str:
    """`text` with the server's folders taken out: files inside the dataset by their names in the upload, the job's
    own folder and the starting model by name, and any other absolute path (a library's file in a traceback, the
    runs folder) by its last part."""
    replacements = [(record.get("data"), "the dataset"), (str(job_dir), f"job {record['id']}"),
                    (record.get("init_from"), record.get("start_model") or "the starting model")]
    for folder, name in replacements:
        if folder:
            text = text.replace(f"{folder}{os.sep}", "").replace(str(folder), name)
    return ABSOLUTE_PATH.sub(lambda match: Path(match.group()).name or "/", text)


def last_log_line(path: Path) -> str:
    try:
        with open(path, "rb") as stream:
            stream.seek(max(0, stream.seek(0, os.SEEK_END) - 4096))
            lines = stream.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def stop_orphan(pid: int, job_dir: Path, grace_seconds: float) -> None:
    """Wait for (then kill) a training process a crashed app left behind, but only if /proc shows it is ours:
    a recycled pid belongs to someone else and is left alone."""
    try:
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes().decode("utf-8", "replace").split("\0")
    except OSError:
        return
    if "app.jobs" not in command_line or str(job_dir) not in command_line:
        return
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while Path(f"/proc/{pid}").exists():  # a zombie until its parent (init) reaps it, which is immediate
        time.sleep(0.05)


# ----------------------------------------------------------------------------------------------- the child process
class ProgressReporter:
    """A TrainEvent callback that mirrors progress into JOB_DIR/progress.json (atomically, at most every
    `min_interval` seconds for steps, always for other events) and turns CANCEL or a dead parent into a stop."""

    def __init__(self, job_dir: Path, attempt: int, stop_event: threading.Event, stage_dirs: dict[str, Path],
                 parent_pid: int | None = None, min_interval: float = 0.5):
        self.path = job_dir / PROGRESS_FILE
        self.cancel_path = job_dir / CANCEL_FILE
        self.stop_event = stop_event
        self.stage_dirs = stage_dirs
        self.parent_pid = parent_pid
        self.min_interval = min_interval
        self._last_write = 0.0
        earlier = read_json(self.path) or {}
        self.progress = {field: earlier.get(field) for field in PROGRESS_FIELDS}
        self.progress.update(state="running", attempt=attempt, pid=os.getpid(), history=earlier.get("history") or [],
                             metrics=earlier.get("metrics") or {}, message="starting", error=None, model_dir=None)
        self.write()

    def should_stop(self) -> bool:
        if self.cancel_path.exists() or (self.parent_pid is not None and os.getppid() != self.parent_pid):
            self.stop_event.set()
        return self.stop_event.is_set()

    def __call__(self, event: TrainEvent) -> None:
        self.should_stop()
        progress = self.progress
        progress.update(stage=event.stage, epoch=event.epoch, step=event.step, device=event.device)
        if event.epochs:  # checkpoint events carry no totals
            progress.update(epochs=event.epochs, steps=event.steps)
        if event.kind == "start":
            progress.update(message=f"training on {event.device}", eta_seconds=None)
            if event.epoch > 0:
                progress["resumed_from"] = {"stage": event.stage, "epoch": event.epoch}
                self._restore_history(event.stage, event.epoch)
        elif event.kind == "step":
            progress.update(loss=event.loss, lr=event.lr, eta_seconds=event.eta_seconds)
        elif event.kind == "validation":
            progress["metrics"] = {key: value for key, value in event.metrics.items()
                                   if isinstance(value, (int, float)) and key != "images"}
            progress["metric"] = progress["metric"] or event.best_metric
        elif event.kind == "epoch":
            record = {"stage": event.stage, **event.metrics}
            progress["history"] = [item for item in progress["history"]
                                   if (item.get("stage"), item.get("epoch")) != (event.stage, event.epoch)] + [record]
            shown = ", ".join(f"{key}={value:.4f}" for key, value in event.metrics.items()
                              if isinstance(value, float) and key not in ("lr", "seconds"))
            print(f"[{event.stage}] epoch {event.epoch}/{event.epochs}: {shown}", flush=True)
        elif event.kind == "end":
            progress.update(metric=next(iter(event.metrics), None) or progress["metric"], eta_seconds=0.0)
        if event.kind != "step" or time.monotonic() - self._last_write >= self.min_interval:
            self.write()

    def _restore_history(self, stage: str, epoch: int) -> None:
        """A resumed stage's curve comes from its metrics.csv (written with each checkpoint), which a hard kill
        cannot leave behind trainer_state.pt the way progress.json can."""
        rows = read_metrics_csv(self.stage_dirs.get(stage, Path()) / "metrics.csv")
        kept = [item for item in self.progress["history"] if item.get("stage") != stage]
        if rows:
            kept += [{"stage": stage, **row} for row in rows if row.get("epoch", 0) <= epoch]
        else:
            kept += [item for item in self.progress["history"]
                     if item.get("stage") == stage and item.get("epoch", 0) <= epoch]
        self.progress["history"] = kept

    def finish(self, state: str, message: str, *, error: str | None = None, model_dir: Path | None = None) -> None:
        print(f"{state}: {error}" if error else message, flush=True)
        self.progress.update(state=state, message=message, error=error,
                             model_dir=str(model_dir) if model_dir else None)
        if state == "finished":
            self.progress["eta_seconds"] = 0.0
        self.write()

    def write(self) -> None:
        self.progress["updated"] = time.time()
        write_json_atomic(self.path, self.progress)
        self._last_write = time.monotonic()


def _die_with_parent() -> None:
    """Linux: the kernel sends SIGTERM when the thread that started us (the manager's worker, alive for the whole
    job) dies, even when the app is killed with SIGKILL; the handler then stops the trainer after its step."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _limit_resources(config: TrainConfig, cpu_threads: int) -> str:
    """At most `cpu_threads` threads and no loader processes on CPU, at a lower priority, so the app's own
    inference stays responsive. Returns the device type."""
    from segcore.engine.trainer import resolve_device

    device = resolve_device(config.device).type
    threads = min(config.threads or cpu_threads, cpu_threads)
    workers = 0 if device == "cpu" else min(config.workers, cpu_threads)
    config.threads, config.workers = threads, workers
    for stage in config.stages or []:
        stage.update(threads=threads, workers=workers)
    if device == "cpu" and hasattr(os, "nice"):
        os.nice(5)
    return device


def is_worse(metric: str, value: float, start_value: float) -> bool:
    from segcore.engine.trainer import MINIMISED_METRICS

    return value > start_value if metric in MINIMISED_METRICS else value < start_value


def score_start_model(config: TrainConfig) -> dict | None:
    """{metric, value, images}: the model `config.init_from` names, as saved, on the validation split the job
    validates on, by the metric best/ is chosen by. None for multi-stage recipes, data without a validation split,
    or a model whose classes the data does not share (its score would mean nothing)."""
    import torch

    from segcore.engine.data import build_datasets
    from segcore.engine.evaluate import evaluate, evaluate_sources
    from segcore.engine.trainer import default_best_metric, resolve_device
    from segcore.inference import Segmenter

    if not config.init_from or config.stages:
        return None
    if config.threads:
        torch.set_num_threads(int(config.threads))
    _, val_set, info = build_datasets(config)
    segmenter = Segmenter.from_pretrained(config.init_from, device=resolve_device(config.device))
    if val_set is None or segmenter.num_classes != info["num_classes"]:
        return None
    metric = config.best_metric or default_best_metric(segmenter.config.get("task", "semantic"), segmenter.num_classes)
    options = {"boundary_tolerance": config.boundary_tolerance}
    scores = (evaluate_sources(segmenter, val_set, **options) if isinstance(val_set, dict)
              else evaluate(segmenter, val_set, **options))
    value = scores.get(metric)
    if not isinstance(value, (int, float)) or value != value:  # missing or NaN
        return None
    return {"metric": metric, "value": float(value), "images": int(scores.get("images", 0))}


def main(argv: list[str] | None = None) -> int:
    """The training process of one job: `python -m app.jobs JOB_DIR`."""
    parser = argparse.ArgumentParser(prog="python -m app.jobs", description="Run one segcore app job (internal).")
    parser.add_argument("job_dir", type=Path)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: half the cores)")
    parser.add_argument("--parent-pid", type=int, default=None, help="stop when this process (the app) dies")
    parser.add_argument("--attempt", type=int, default=1)
    args = parser.parse_args(argv)
    job_dir = args.job_dir.resolve()
    stop_event = threading.Event()

    def request_stop(signum, frame):
        stop_event.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    _die_with_parent()

    from segcore.engine.stages import run_recipe

    run_dir = job_dir / RUN_FOLDER
    reporter = None
    try:
        config = load_recipe(job_dir / RECIPE_FILE)
        stage_dirs = {name: run_dir if not config.stages else run_dir / name for name, _ in config.stage_configs()}
        reporter = ProgressReporter(job_dir, args.attempt, stop_event, stage_dirs, parent_pid=args.parent_pid)
        _limit_resources(config, args.threads or default_cpu_threads())
        if reporter.should_stop():
            reporter.finish("cancelled", "cancelled before training started")
            return 0
        start = reporter.progress.get("start_metric")
        if config.init_from and start is None:  # scored once: a resumed job keeps the first attempt's score
            reporter.progress["message"] = "scoring the starting model on the validation split"
            reporter.write()
            start = score_start_model(config)
            reporter.progress["start_metric"] = start
            reporter.write()
        if reporter.should_stop():
            reporter.finish("cancelled", "cancelled before training started")
            return 0
        # resume=True is harmless for a fresh run (nothing to resume) and continues an interrupted one exactly.
        result = run_recipe(config, run_dir, callbacks=[reporter], resume=True, stop_event=stop_event)
        if result.status == "cancelled":
            reporter.finish("cancelled", f"cancelled after {result.epochs_done} finished epoch(s)")
            return 0
        best = (f", best {result.best_metric} = {result.best_value:.4f}" if result.best_value is not None else "")
        message = f"{result.status.replace('_', ' ')}: {result.epochs_done} epoch(s){best}"
        reporter.progress["best_value"] = result.best_value
        if start and result.best_value is not None and start.get("metric") == result.best_metric:
            worse = is_worse(result.best_metric, result.best_value, start["value"])
            reporter.progress["worse_than_start"] = worse
            if worse:
                name = (read_json(job_dir / JOB_FILE) or {}).get("start_model") or Path(config.init_from).name
                message += (f"; WORSE than the starting model {name}: {result.best_metric} {result.best_value:.4f} "
                            f"after fine-tuning, {start['value']:.4f} before, on the same {start['images']} "
                            "validation image(s); keep using the starting model, or try a lower learning rate or "
                            "more data")
        reporter.finish("finished", message, model_dir=model_folder(Path(result.run_dir)))
        return 0
    except SegcoreError as error:
        failed_message, failed_error = "failed", str(error)
    except Exception as error:  # noqa: BLE001 - any other error is a bug or out of memory; the log gets the trace
        traceback.print_exc()
        failed_message, failed_error = "failed", f"{type(error).__name__}: {error}"
    if reporter is None:
        reporter = ProgressReporter(job_dir, args.attempt, stop_event, {}, parent_pid=args.parent_pid)
    reporter.finish("failed", failed_message, error=failed_error)
    return 1


if __name__ == "__main__":
    exit_code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Everything the job owes is on disk by now; skipping the interpreter's teardown (a second or more with
    # torch loaded) lets the app see the job end at once.
    os._exit(exit_code)
