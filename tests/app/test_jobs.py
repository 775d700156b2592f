"""app/jobs.py: jobs run one at a time in child processes, report curves, cancel, fail clearly and survive a crash
(of the app, or of the training process killed by SIGKILL), belong to their owner and queue up to a cap.

Training jobs are width-8 U-Nets on generated shapes (tests/engine/shapes.py), on CPU with one thread; the
bookkeeping tests use a manager whose worker never starts, so they spawn nothing.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

import segcore
from app.jobs import CANCEL_FILE, JobManager, JobQueueFull
from segcore.errors import SegcoreError
from tests.engine.shapes import write_shapes_dataset


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    return write_shapes_dataset(tmp_path_factory.mktemp("shapes"), count=32, size=64)


def job_config(data: Path, epochs: int, **extra) -> dict:
    return {"data": str(data), "model": "unet", "model_kwargs": {"width": 8}, "input_size": [64, 64],
            "augmentation": "none", "epochs": epochs, "batch_size": 8, "lr": 0.01, "device": "cpu", **extra}


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def process_exists(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def test_jobs_run_one_at_a_time_and_finish_with_curves_and_a_loadable_model(shapes_root, tmp_path):
    with JobManager(tmp_path / "jobs", cpu_threads=1) as manager:
        first = manager.submit(job_config(shapes_root, epochs=2, threads=8), name="shapes")
        second = manager.submit(job_config(shapes_root, epochs=1), name="shapes")
        wait_until(lambda: manager.status(first)["state"] == "running", 10, "the first job to start")
        queued = manager.status(second)
        assert (queued["state"], queued["queue_position"], queued["name"]) == ("queued", 1, "shapes-2")
        finished = manager.wait(first, timeout=60)
        later = manager.wait(second, timeout=60)

        assert finished["state"] == later["state"] == "finished", (finished["error"], later["error"])
        assert finished["ended"] <= later["started"], "the second job started before the first ended"
        assert [record["epoch"] for record in finished["history"]] == [1, 2]
        assert all(record["train_loss"] > 0 and 0 <= record["miou"] <= 1 for record in finished["history"])
        assert finished["metric"] == "miou" and set(finished["metrics"]) >= {"miou", "pixel_acc"}
        assert (finished["device"], finished["epoch"], finished["epochs"], finished["eta_seconds"]) == ("cpu", 2, 2, 0)
        assert finished["step"] == finished["steps"] == 6  # 24 training images, batch 8, 2 epochs
        assert finished["queue_position"] is None and finished["error"] is None
        # On CPU the child is capped at the manager's threads (asked for 8) and loads data in-process.
        trained_with = yaml.safe_load((Path(finished["run_dir"]) / "recipe.yaml").read_text())
        assert (trained_with["threads"], trained_with["workers"]) == (1, 0)

        model_dir = Path(finished["model_dir"])
        assert model_dir == Path(finished["run_dir"]) / "best"
        prediction = segcore.Segmenter(segcore.load_pretrained(model_dir)).predict(np.zeros((40, 50, 3), np.uint8))
        assert prediction.labels.shape == (40, 50)
        assert manager.finished_models() == [("shapes-2", Path(later["model_dir"])), ("shapes", model_dir)]
        assert [status["id"] for status in manager.jobs()] == [second, first]
        assert "epoch 2/2" in Path(finished["log_path"]).read_text()


def test_cancel_a_queued_job_at_once_and_a_running_job_within_seconds(shapes_root, tmp_path):
    with JobManager(tmp_path / "jobs", cpu_threads=1) as manager:
        running = manager.submit(job_config(shapes_root, epochs=500))
        waiting = manager.submit(job_config(shapes_root, epochs=1))
        reply = manager.cancel(waiting)
        assert (reply["state"], reply["message"]) == ("cancelled", "cancelled before it started")

        live = wait_until(lambda: (status := manager.status(running))["step"] and status, 60, "a training step")
        assert live["state"] == "running" and live["device"] == "cpu"
        assert live["loss"] > 0 and live["lr"] > 0 and live["eta_seconds"] > 0 and live["steps"] == 500 * 3
        pid = live["pid"]
        assert process_exists(pid)
        asked = time.monotonic()
        reply = manager.cancel(running)
        assert reply["state"] == "running" and "stops after its current training step" in reply["message"]
        cancelled = manager.wait(running, timeout=15)
        assert cancelled["state"] == "cancelled"
        assert time.monotonic() - asked < 5
        assert not process_exists(pid)
        assert cancelled["model_dir"] is None and manager.finished_models() == []
        reply = manager.cancel(running)  # a no-op that says so
        assert reply["state"] == "cancelled" and "has already cancelled; there is nothing to cancel" in reply["message"]
        # The cancelled queued job never ran.
        never_ran = manager.status(waiting)
        assert never_ran["started"] is None and not Path(never_ran["run_dir"]).exists()


def test_a_job_that_fails_in_training_reports_the_error(tmp_path):
    empty = tmp_path / "empty-dataset"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    with JobManager(tmp_path / "jobs", cpu_threads=1) as manager:
        failed = manager.wait(manager.submit(job_config(empty, epochs=1)), timeout=60)
    assert failed["state"] == "failed"
    # the error names the dataset's files as the upload does, never by their server path (the log keeps that)
    assert failed["error"].startswith("the data in the dataset cannot be trained on")
    assert str(tmp_path) not in failed["error"]
    assert f"the data in {empty} cannot be trained on" in Path(failed["log_path"]).read_text()
    assert failed["ended"] >= failed["started"] and failed["model_dir"] is None


def test_invalid_settings_raise_before_anything_is_queued(shapes_root, tmp_path):
    manager = JobManager(tmp_path / "jobs", autostart=False)
    try:
        with pytest.raises(SegcoreError, match="unknown model 'no-such-net'; pick one of: .*unet"):
            manager.submit(job_config(shapes_root, epochs=1, model="no-such-net"))
        with pytest.raises(SegcoreError, match="no such dataset folder"):
            manager.submit(job_config(tmp_path / "missing", epochs=1))
        with pytest.raises(SegcoreError, match="unknown setting.*epochz"):
            manager.submit({**job_config(shapes_root, epochs=1), "epochz": 3})
        with pytest.raises(SegcoreError, match="no job 'nope'"):
            manager.status("nope")
        assert manager.jobs() == [] and [path.name for path in (tmp_path / "jobs").iterdir()] == [".lock"]
    finally:
        manager.shutdown()


def test_queue_order_and_states_persist_across_managers(shapes_root, tmp_path):
    root = tmp_path / "jobs"
    manager = JobManager(root, autostart=False)
    ids = [manager.submit(job_config(shapes_root, epochs=1), name=f"job {index}") for index in range(3)]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert [manager.status(job_id)["queue_position"] for job_id in ids] == [1, 2, 3]
    manager.cancel(ids[1])
    assert [manager.status(job_id)["queue_position"] for job_id in ids] == [1, None, 2]
    with pytest.raises(SegcoreError, match="another segcore app is already running these jobs"):
        JobManager(root, autostart=False)
    manager.shutdown()

    # A job the previous app left running (its process gone) is re-queued; one it was cancelling is cancelled.
    record = json.loads((root / ids[0] / "job.json").read_text())
    (root / ids[0] / "job.json").write_text(json.dumps({**record, "state": "running", "pid": 2**22 + 1}))
    record = json.loads((root / ids[2] / "job.json").read_text())
    (root / ids[2] / "job.json").write_text(json.dumps({**record, "state": "running"}))
    (root / ids[2] / CANCEL_FILE).write_text("")
    reopened = JobManager(root, autostart=False)
    try:
        states = [(status["name"], status["state"], status["queue_position"]) for status in reopened.jobs()]
        assert states == [("job 2", "cancelled", None), ("job 1", "cancelled", None), ("job 0", "queued", 1)]
        assert "resumes" in reopened.status(ids[0])["message"]
    finally:
        reopened.shutdown()


def test_every_job_on_disk_is_listed_by_a_new_manager_after_a_restart(shapes_root, tmp_path):
    root = tmp_path / "jobs"
    manager = JobManager(root, autostart=False)
    first = manager.submit(job_config(shapes_root, epochs=1), name="first", notes=["held out 3 pairs"],
                           start_model="squares-a")
    second = manager.submit(job_config(shapes_root, epochs=1), name="second")
    manager.cancel(second)
    manager.shutdown()

    restarted = JobManager(root, autostart=False)  # the app restarted: a new manager on the same folder
    try:
        listed = restarted.jobs()
        assert [(job["id"], job["name"], job["state"]) for job in listed] == [
            (second, "second", "cancelled"), (first, "first", "queued")]
        assert listed[1]["notes"] == ["held out 3 pairs"] and listed[1]["start_model"] == "squares-a"
        assert listed[1]["queue_position"] == 1
    finally:
        restarted.shutdown()


def test_messages_name_files_inside_the_dataset_and_job_without_server_paths(tmp_path):
    from app.jobs import without_paths

    record = {"id": "20250101-000000-0000", "data": str(tmp_path / "upload-1"), "init_from": "/srv/weights/sinet",
              "start_model": "portrait-sinet"}
    text = (f"{tmp_path / 'upload-1' / 'masks' / 'a.png'}: damaged; init_from /srv/weights/sinet: no tensor; "
            f"see {tmp_path / 'jobs' / record['id'] / 'log.txt'}")
    cleaned = without_paths(text, record, tmp_path / "jobs" / record["id"])
    assert cleaned == "masks/a.png: damaged; init_from portrait-sinet: no tensor; see log.txt"


def _run_app_until_killed(root: Path, config: dict, replies) -> None:
    """The app in a forked process: it queues one job, then idles until the test kills it."""
    replies.send(JobManager(root, cpu_threads=1).submit(config))
    time.sleep(300)


def test_a_job_survives_an_app_crash_and_resumes_without_losing_epochs(shapes_root, tmp_path):
    root = tmp_path / "jobs"
    # Forked rather than spawned: the app process starts with torch already imported, saving seconds.
    context = multiprocessing.get_context("fork")
    replies, reply_end = context.Pipe(duplex=False)
    app = context.Process(target=_run_app_until_killed, args=(root, job_config(shapes_root, epochs=5), reply_end))
    app.start()
    try:
        assert replies.poll(30), "the app process never queued its job"
        job_id = replies.recv()
        progress_path = root / job_id / "progress.json"

        def epochs_reported():
            try:
                return json.loads(progress_path.read_text())["history"]
            except (OSError, ValueError, KeyError):
                return None

        before_crash = wait_until(epochs_reported, 90, "the first epoch")
        app.kill()  # the app dies without a word, as a crashed one would
        app.join()
    finally:
        if app.is_alive():
            app.kill()
            app.join()
    left_behind = json.loads((root / job_id / "job.json").read_text())
    assert left_behind["state"] == "running"
    orphan = left_behind["pid"]

    with JobManager(root, cpu_threads=1) as manager:
        resumed = manager.wait(job_id, timeout=90)
    assert resumed["state"] == "finished", resumed["error"]
    assert not process_exists(orphan), "the crashed app's training process outlived it"
    assert resumed["attempts"] == 2
    assert 1 <= resumed["resumed_from"]["epoch"] < 5, "the job restarted from scratch instead of resuming"
    assert [record["epoch"] for record in resumed["history"]] == [1, 2, 3, 4, 5]
    assert resumed["history"][0]["train_loss"] == pytest.approx(before_crash[0]["train_loss"])
    log = Path(resumed["log_path"]).read_text()
    # The orphaned training process stopped itself when the app died (after a step, cleanly), before the resume.
    assert log.index("cancelled after") < log.index("=== attempt 2") < log.index("(resuming)")
    assert resumed["model_dir"] and os.path.isdir(resumed["model_dir"])


def test_jobs_belong_to_their_owner_and_the_queue_is_capped_per_owner_and_overall(shapes_root, tmp_path):
    root = tmp_path / "jobs"
    manager = JobManager(root, autostart=False, max_active=3, max_active_per_owner=2)
    config = job_config(shapes_root, epochs=1)
    try:
        alice = [manager.submit(config, name="alice", owner="alice-key") for _ in range(2)]
        with pytest.raises(JobQueueFull, match=r"^you already have 2 fine-tuning job\(s\) queued or running, the "
                                               r"most one person may have; wait for one to end or cancel one"):
            manager.submit(config, owner="alice-key")
        bob = manager.submit(config, name="bob", owner="bob-key")
        with pytest.raises(JobQueueFull, match=r"^the app already has 3 fine-tuning jobs queued or running, its "
                                               r"limit; wait"):
            manager.submit(config, owner="carol-key")
        assert len(os.listdir(root)) == 4  # three job folders and the lock: nothing of the refused ones

        assert [job["id"] for job in manager.jobs(owner="alice-key")] == alice[::-1]
        assert [job["id"] for job in manager.jobs(owner="bob-key")] == [bob]
        assert manager.jobs(owner="carol-key") == [] and len(manager.jobs()) == 3  # no owner: every job
        # another owner's job is "no job", and the message lists only the asker's own jobs
        with pytest.raises(SegcoreError, match=f"^no job '{alice[0]}' of yours; pick one of the known jobs: {bob}$"):
            manager.status(alice[0], owner="bob-key")
        with pytest.raises(SegcoreError, match="of yours"):
            manager.cancel(alice[0], owner="bob-key")
        assert manager.status(alice[0])["state"] == "queued"
        assert manager.cancel(alice[0], owner="alice-key")["state"] == "cancelled"
        manager.submit(config, name="alice", owner="alice-key")  # an ended job frees its owner's place
    finally:
        manager.shutdown()
    reopened = JobManager(root, autostart=False)  # owners survive a restart
    try:
        assert [job["name"] for job in reopened.jobs(owner="bob-key")] == ["bob"]
        assert len(reopened.jobs(owner="alice-key")) == 3
    finally:
        reopened.shutdown()


def test_a_sigkilled_training_process_resumes_from_its_last_epoch_and_says_so(shapes_root, tmp_path):
    with JobManager(tmp_path / "jobs", cpu_threads=1, max_kill_retries=2) as manager:
        job_id = manager.submit(job_config(shapes_root, epochs=4), name="oom")
        first = wait_until(lambda: (status := manager.status(job_id))["history"] and status, 90, "the first epoch")
        os.kill(first["pid"], signal.SIGKILL)  # what the kernel's out-of-memory killer sends
        requeued = wait_until(lambda: (status := manager.status(job_id))["attempts"] == 2 and status, 30, "a retry")
        resumed = manager.wait(job_id, timeout=120)
    assert any("killed (SIGKILL" in note and "retry 1 of 2" in note for note in requeued["notes"])
    assert resumed["state"] == "finished", resumed["error"]
    assert (resumed["attempts"], resumed["kills"]) == (2, 1)
    assert 1 <= resumed["resumed_from"]["epoch"] < 4, "the job restarted from scratch instead of resuming"
    assert [record["epoch"] for record in resumed["history"]] == [1, 2, 3, 4]
    assert resumed["history"][0]["train_loss"] == pytest.approx(first["history"][0]["train_loss"])
    assert resumed["notes"] == [f"attempt 1: the training process was killed (SIGKILL, what the out-of-memory killer "
                                f"sends); resumed from its last finished epoch (retry 1 of 2)"]


def test_a_job_killed_more_often_than_it_may_be_retried_fails_with_a_clear_message(shapes_root, tmp_path):
    with JobManager(tmp_path / "jobs", cpu_threads=1, max_kill_retries=1) as manager:
        job_id = manager.submit(job_config(shapes_root, epochs=50))
        for attempt in (1, 2):
            pid = wait_until(lambda: (status := manager.status(job_id))["attempts"] == attempt and status["pid"], 60,
                             f"attempt {attempt} to start")
            os.kill(pid, signal.SIGKILL)
        failed = manager.wait(job_id, timeout=60)
    assert (failed["state"], failed["attempts"], failed["kills"]) == ("failed", 2, 2)
    assert failed["error"] == ("the training process was killed 2 time(s) (SIGKILL, what the out-of-memory killer "
                               "sends) and resumed 1 time(s); use a smaller batch size or input size, or free memory "
                               f"on the server, then start again; the full log is log.txt in job {job_id}")


def test_job_errors_name_no_server_path(tmp_path):
    from app.jobs import without_paths

    record = {"id": "20250101-000000-0000", "data": "/srv/runs/app-data/upload-1"}
    text = ("Traceback: File \"/usr/lib/python3/site-packages/torch/nn/functional.py\", line 3; cannot write "
            "/srv/runs/app-jobs/other/run/best (disk full); epoch 1/2; see https://pytorch.org/docs")
    cleaned = without_paths(text, record, Path("/srv/runs/app-jobs") / record["id"])
    assert cleaned == ("Traceback: File \"functional.py\", line 3; cannot write best (disk full); epoch 1/2; see "
                       "https://pytorch.org/docs")
