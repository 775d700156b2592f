"""A real browser: Playwright drives Debian's headless Chromium through every tab of the served app.

It uploads a photo in the background-removal tab and sees the result image, sees a clear message for a file that is
not an image, switches tabs, and starts and cancels a tiny fine-tune job; a screenshot of each tab is saved under the
test's tmp dir. When Chromium cannot start the test fails (CI installs it with apt-get; see DEVELOPERS.md).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from tests.app.bad_inputs import scene

CHROMIUM = os.environ.get("SEGCORE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def page(served_app):
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium) or set "
                    "SEGCORE_CHROMIUM to a Chromium binary")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            expect.set_options(timeout=60_000)  # a busy 2-core CI machine runs the models slowly
            page.goto(served_app)
            expect(page.get_by_role("tab", name="Background removal")).to_be_visible()
            yield page
        finally:
            browser.close()


def upload(page, input_id: str, path) -> None:
    page.locator(f"#{input_id} input[type=file]").set_input_files(str(path))
    expect(page.locator(f"#{input_id} img")).to_be_visible()


def inside_viewport(locator, width: int, height: int) -> bool:
    box = locator.bounding_box()
    return box is not None and box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= width and (
        box["y"] + box["height"] <= height)


def test_background_removal_in_the_browser(page, tmp_path):
    image, _ = scene(160, 200, seed=21)
    photo = tmp_path / "photo.png"
    Image.fromarray(image).save(photo)
    page.set_viewport_size({"width": 1366, "height": 900})  # a common laptop screen
    page.get_by_role("tab", name="Background removal").click()
    upload(page, "bg-input", photo)
    # A person sees the page from its top. Playwright's own scroll-into-view (tab click, upload) left the page
    # 101 px down on a loaded machine while the app was still laying out; start from the top, click as a person
    # does (no scroll-into-view), and check below that nothing moved and everything is on that first screen.
    page.evaluate("window.scrollTo(0, 0)")
    page.locator("#bg-run").dispatch_event("click")
    result = page.locator("#bg-output img")
    expect(result).to_be_visible()
    expect(page.locator("#bg-info")).to_contain_text("squares-a: model")
    source = result.get_attribute("src")
    assert source and ("png" in source or source.startswith("data:image"))
    # photo, button and result side by side on one screen, without scrolling
    assert page.evaluate("window.scrollY") == 0
    for shown in (page.locator("#bg-input img"), page.locator("#bg-run"), result):
        assert inside_viewport(shown, 1366, 900), shown.bounding_box()
    input_box, result_box = page.locator("#bg-input img").bounding_box(), result.bounding_box()
    assert result_box["x"] > input_box["x"] + input_box["width"] - 1  # beside the photo, not below it
    # transparency is drawn on a checkerboard, not on white
    assert "conic-gradient" in result.evaluate("element => getComputedStyle(element).backgroundImage")
    # the before/after slider appears, and the download is named after the upload
    expect(page.locator("#bg-slider")).to_be_visible()
    expect(page.locator("#bg-slider img").first).to_be_visible()
    link = page.locator("#bg-download a").first
    expect(link).to_be_visible()
    assert link.get_attribute("href").endswith("/photo-cutout.png")
    assert link.get_attribute("download") in (None, "", "photo-cutout.png")
    page.screenshot(path=str(tmp_path / "tab-background-removal-1366x900.png"))
    page.screenshot(path=str(tmp_path / "tab-background-removal.png"), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 1000})

    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not a picture at all")
    page.locator("#bg-input button[aria-label='Remove Image']").click()
    page.locator("#bg-input input[type=file]").set_input_files(str(not_an_image))
    page.locator("#bg-run").click()
    expect(page.get_by_text("notes.png: not an image Pillow can read").first).to_be_visible()
    assert "/gradio/" not in page.get_by_text("not an image Pillow can read").first.inner_text()
    page.screenshot(path=str(tmp_path / "tab-background-removal-error.png"), full_page=True)
    assert (tmp_path / "tab-background-removal.png").stat().st_size > 10_000


def test_explore_and_compare_tabs(page, tmp_path):
    image, _ = scene(160, 200, seed=22)
    photo = tmp_path / "photo.png"
    Image.fromarray(image).save(photo)
    page.get_by_role("tab", name="Explore").click()
    upload(page, "ex-input", photo)
    page.locator("#ex-run").click()
    expect(page.get_by_text("mean confidence")).to_be_visible()
    # each picture is captioned with what it shows; without the CRF there is no slider of two equal pictures
    expect(page.get_by_text("squares-a: semantic mask over the photo: square")).to_be_visible()
    expect(page.locator("#ex-slider")).to_be_hidden()
    expect(page.get_by_text("dense CRF off")).to_be_visible()
    page.screenshot(path=str(tmp_path / "tab-explore.png"), full_page=True)

    page.get_by_role("tab", name="Compare").click()
    upload(page, "cmp-input", photo)
    page.locator("#cmp-run").click()
    expect(page.get_by_text("squares-b:").first).to_be_visible()
    page.screenshot(path=str(tmp_path / "tab-compare.png"), full_page=True)


def test_start_and_cancel_a_fine_tune(page, tmp_path):
    page.get_by_role("tab", name="Fine-tune").click()
    page.locator("#ft-sample input").click()
    page.get_by_role("option", name="shapes (generated").click()
    page.locator("#ft-epochs input").fill("40")
    page.locator("#ft-size input").fill("64")
    page.locator("#ft-start").click()
    status = page.locator("#ft-status")
    expect(status).to_contain_text("running", timeout=90_000)
    page.screenshot(path=str(tmp_path / "tab-fine-tune-running.png"), full_page=True)
    page.locator("#ft-cancel").click()
    expect(status).to_contain_text("cancelled", timeout=90_000)
    page.screenshot(path=str(tmp_path / "tab-fine-tune-cancelled.png"), full_page=True)
    job_id = page.locator("#ft-job textarea, #ft-job input").first.input_value()
    assert job_id and np.char.isnumeric(job_id[:8])
    expect(page.locator("#ft-problems")).to_contain_text("Dataset checked")

    # after a reload the tab lists the job on disk and shows it (the page starts empty, demo.load fills it)
    page.reload()
    page.get_by_role("tab", name="Fine-tune").click()
    expect(page.locator("#ft-table")).to_contain_text("cancelled", timeout=30_000)
    expect(page.locator("#ft-status")).to_contain_text("cancelled", timeout=30_000)
    assert page.locator("#ft-job textarea, #ft-job input").first.input_value() == job_id
    # another browser (its own localStorage, so its own owner token) does not see this browser's job
    other = page.context.browser.new_page()
    try:
        other.goto(page.url)
        other.get_by_role("tab", name="Fine-tune").click()
        other.wait_for_function("localStorage.getItem('segcore-job-owner') !== null")  # its token is made
        other.wait_for_timeout(3_000)  # then its job list is filled
        expect(other.locator("#ft-table")).not_to_contain_text("cancelled")
        assert other.locator("#ft-job textarea, #ft-job input").first.input_value() == ""
    finally:
        other.close()

    # a bad number is listed in the panel, which stays
    page.locator("#ft-sample input").click()
    page.get_by_role("option", name="shapes (generated").click()
    page.locator("#ft-epochs input").fill("0")
    page.locator("#ft-start").click()
    problems = page.locator("#ft-problems")
    expect(problems).to_contain_text("epochs must be between 1 and 1000, not 0", timeout=30_000)
    page.wait_for_timeout(6_000)  # longer than a toast stays
    expect(problems).to_contain_text("epochs must be between 1 and 1000, not 0")
