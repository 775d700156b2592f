"""Disk stays bounded (issue 17): result folders are pruned by age, uploads over the limit are refused, the data
unpacked from an upload goes when its job ends, and what a killed app left in runs/app-data goes at start-up; odd
job names (NUL, escapes, "/") become plain names."""

from __future__ import annotations

import os
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from app import services
from tests.app.test_services import write_square_zip


@pytest.fixture
def results_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(services, "RESULTS_DIR", tmp_path / "results")
    return tmp_path / "results"


def test_result_folders_are_pruned_by_age(app_dirs, results_dir, square_photo):
    path, image, _ = square_photo
    first = services.download_file(image, str(path), "cutout")
    assert first.name == "square-cutout.png" and first.parent.parent == results_dir
    # a result older than the limit is removed when the next one is written; a fresh one is kept
    old = time.time() - services.RESULT_MAX_AGE_SECONDS - 5
    os.utime(first.parent, (old, old))
    second = services.download_file(image, str(path), "blur")
    kept = services.download_file(image, str(path), "replace")
    assert not first.parent.exists() and second.exists() and kept.exists()
    assert sorted(folder.name for folder in results_dir.iterdir()) == sorted([second.parent.name, kept.parent.name])
    # many requests leave at most the folders of the last RESULT_MAX_AGE_SECONDS
    for _ in range(20):
        services.download_file(image, str(path), "cutout")
    assert services.prune_results(max_age=services.RESULT_MAX_AGE_SECONDS, now=time.time() + 10_000) == 22
    assert list(results_dir.iterdir()) == []


def test_uploads_over_the_limit_are_refused(app_dirs, monkeypatch, square_photo):
    path, _, _ = square_photo
    monkeypatch.setattr(services, "MAX_UPLOAD_BYTES", 1000)
    with pytest.raises(services.SegcoreError, match=r"square.png: the image is 0 MB, over the app's limit of 0 MB"):
        services.load_image(open(path, "rb"))


def test_the_upload_goes_when_its_job_ends(app_dirs, tmp_path):
    upload = write_square_zip(tmp_path / "squares.zip", count=6)
    status = services.finetune_start(upload=upload.read_bytes(), base="scratch: unet", epochs=40, lr=1e-3,
                                     batch_size=2, input_size=64, name="goes")
    data = services.job_manager().status(status["id"])["data"]
    assert os.path.isdir(data)  # kept while the job is queued or running
    services.finetune_cancel(status["id"])
    final = services.job_manager().wait(status["id"], timeout=120)
    assert final["state"] == "cancelled" and not os.path.exists(data)
    assert [entry.name for entry in (services.RUNS_DIR / "app-data").iterdir()] == []


def test_what_a_killed_app_left_is_cleaned_at_start_up(app_dirs, tmp_path):
    app_data = services.RUNS_DIR / "app-data"
    for name in (".upload-1.unpacking-x", ".sample-y", "upload-20261203-000000-000000", "sample-shapes"):
        (app_data / name / "images").mkdir(parents=True)
    needed = app_data / "upload-20261203-000001-000000"
    (needed / "dataset" / "images").mkdir(parents=True)
    removed = services.clean_app_data([{"state": "queued", "data": str(needed / "dataset")},
                                       {"state": "finished", "data": str(app_data / "upload-gone")}])
    assert sorted(removed) == [".sample-y", ".upload-1.unpacking-x", "upload-20261203-000000-000000"]
    assert sorted(entry.name for entry in app_data.iterdir()) == ["sample-shapes", needed.name]
    # the job manager does this when it starts
    (app_data / ".upload-2.unpacking-z").mkdir()
    services.reset_job_manager()
    services.job_manager()
    assert not (app_data / ".upload-2.unpacking-z").exists()


def test_odd_job_names_become_plain_names(app_dirs):
    status = services.finetune_start(sample="shapes", base="scratch: unet", epochs=40, input_size=64,
                                     name="a\x00b/../c\x1b[31m  d")
    try:
        assert status["name"] == "a b-..-c [31m d"
        assert services.job_status_text(services.finetune_status(status["id"])).startswith("**a b-..-c [31m d**")
    finally:
        services.finetune_cancel(status["id"])
        services.job_manager().wait(status["id"], timeout=120)
