"""A real browser on the Streamlit app: `streamlit run app/streamlit_app.py` on a free loopback port with the tiny
models of tests/app/conftest.py, driven by Playwright in Debian's headless Chromium. It removes the background of an
uploaded photo and downloads the cutout (and looks at its alpha), sees a clear message for a file that is not an
image, explores a model and starts and cancels a fine-tune; a screenshot of each page is saved under the test's tmp
dir. When Chromium cannot start the test fails (CI installs it with apt-get; see DEVELOPERS.md).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from app import services
from tests.app.conftest import free_port
from tests.app.test_browser import CHROMIUM, CHROMIUM_FLAGS
from tests.conftest import make_square_scene

START_SECONDS = 90  # a busy 2-core machine starts Streamlit and imports torch slowly


@pytest.fixture(scope="module")
def streamlit_url(app_weights_dir, tmp_path_factory):
    port = free_port()
    runs = tmp_path_factory.mktemp("streamlit-runs")
    env = {**os.environ, "SEGCORE_WEIGHTS_DIR": str(app_weights_dir), "SEGCORE_RUNS_DIR": str(runs),
           "SEGCORE_THREADS": "1"}
    log = (runs / "streamlit.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app/streamlit_app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=services.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not start: {(runs / 'streamlit.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def page(streamlit_url):
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium) or set "
                    "SEGCORE_CHROMIUM to a Chromium binary")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
            page.set_default_timeout(90_000)
            expect.set_options(timeout=90_000)
            page.goto(streamlit_url)
            expect(page.get_by_role("heading", name="Remove the background")).to_be_visible()
            yield page
        finally:
            browser.close()


def upload(page, label: str, path) -> None:
    """Upload through the file uploader labelled `label` (a page that has just changed may still hold the last
    page's uploader for a moment, so the first uploader on the page is not enough)."""
    uploader = page.locator("[data-testid=stFileUploader]").filter(has=page.get_by_text(label, exact=True))
    expect(uploader).to_have_count(1)
    uploader.locator("input[type=file]").set_input_files(str(path))


def go_to(page, name: str) -> None:
    page.locator("[data-testid=stSidebar]").get_by_text(name, exact=True).click()


def test_streamlit_background_removal_in_the_browser(page, tmp_path):
    image, mask = make_square_scene(160, 200, np.random.default_rng(7))
    photo = tmp_path / "photo.png"
    Image.fromarray(image).save(photo)
    upload(page, "Photo", photo)
    button = page.get_by_role("button", name="Download photo-cutout.png")
    expect(button).to_be_visible()
    expect(page.get_by_text("squares-a: model")).to_be_visible()
    # the photo and the cutout (on a checkerboard) side by side
    pictures = page.locator("[data-testid=stImage] img")
    expect(pictures).to_have_count(2)
    first, second = pictures.nth(0).bounding_box(), pictures.nth(1).bounding_box()
    assert second["x"] > first["x"] + first["width"] - 1
    page.screenshot(path=str(tmp_path / "streamlit-background-removal.png"), full_page=True)
    with page.expect_download() as download:
        button.click()
    assert download.value.suggested_filename == "photo-cutout.png"
    cutout = np.asarray(Image.open(download.value.path()))
    assert cutout.shape == (160, 200, 4)
    alpha = cutout[..., 3] / 255.0
    assert alpha[mask == 1].mean() > 0.8 and alpha[mask == 0].mean() < 0.2

    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not a picture at all")
    upload(page, "Photo", not_an_image)
    message = page.locator("[data-testid=stAlertContentError]").first
    expect(message).to_contain_text("notes.png")
    assert "Traceback" not in message.inner_text() and "segcore-upload" not in message.inner_text()
    page.screenshot(path=str(tmp_path / "streamlit-background-removal-error.png"), full_page=True)


def test_streamlit_explore_in_the_browser(page, tmp_path):
    image, _ = make_square_scene(120, 160, np.random.default_rng(8))
    photo = tmp_path / "scene.png"
    Image.fromarray(image).save(photo)
    go_to(page, "Explore")
    expect(page.get_by_role("heading", name="Explore one model")).to_be_visible()
    upload(page, "Image", photo)
    expect(page.get_by_text("Legend")).to_be_visible()
    expect(page.get_by_text("probability of").first).to_be_visible()
    expect(page.locator("[data-testid=stImage] img")).to_have_count(3)
    page.screenshot(path=str(tmp_path / "streamlit-explore.png"), full_page=True)


def test_streamlit_fine_tune_start_and_cancel(page, tmp_path):
    go_to(page, "Fine-tune")
    expect(page.get_by_role("heading", name="Fine-tune a model")).to_be_visible()
    page.get_by_role("combobox", name="or a bundled sample").click()
    page.get_by_role("option", name="shapes (generated").click()
    epochs = page.get_by_label("Epochs")
    epochs.fill("40")
    page.get_by_label("Input size").fill("64")
    page.get_by_role("button", name="Start").click()
    expect(page.get_by_text("Dataset checked")).to_be_visible()
    expect(page.get_by_text("running").first).to_be_visible()
    page.screenshot(path=str(tmp_path / "streamlit-fine-tune-running.png"), full_page=True)
    page.get_by_role("button", name="Cancel this job").click()
    expect(page.get_by_text("cancelled").first).to_be_visible()
    # the job picker follows (the table is drawn on a canvas)
    expect(page.get_by_role("combobox", name="Job")).to_have_value(re.compile(r"\(cancelled, "))
    page.screenshot(path=str(tmp_path / "streamlit-fine-tune-cancelled.png"), full_page=True)
