"""The Gradio app: background removal (upload or live webcam), explore one model, compare models, fine-tune.

A thin layer over app/services.py: handlers convert between Gradio values and the services' arguments and turn
SegcoreError into a gr.Error whose message the page shows as it is. Stable API names (for gradio_client scripts):
remove_background, segment, compare, finetune_start, finetune_status, finetune_cancel, list_models.
Fine-tuning jobs belong to whoever started them (see job_owner); model pickers follow the catalogue while the app
runs, so a model fine-tuned a minute ago is offered, and accepted by the API, without a restart.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import secrets
import tempfile
import traceback
from pathlib import Path

import gradio as gr
import pandas as pd
from gradio import processing_utils
from gradio.utils import get_upload_folder

from app import services

SegcoreError = services.SegcoreError  # the UI imports app.services only; services re-exports the error type

log = logging.getLogger("segcore.app")

TERMINAL_STATES = ("finished", "failed", "cancelled")
CACHE_MAX_AGE_SECONDS = int(services.RESULT_MAX_AGE_SECONDS)
MODEL_REFRESH_SECONDS = 5.0  # how often an open page checks the catalogue for models fine-tuned meanwhile
# localStorage key of the browser's owner token. Gradio sends BrowserState's secret to the page (it only obscures
# the stored value), and a secret that changed at each launch would make every browser lose its token, and so its
# jobs, when the app restarts: it is fixed.
OWNER_STORAGE_KEY = "segcore-job-owner"
OWNER_STORAGE_SECRET = "segcore-job-owner-v1"


def uploaded_image(**kwargs) -> gr.Image:
    """A gr.Image (type="filepath") that hands an uploaded file to segcore unopened.

    Gradio's own preprocessing opens every upload with Pillow first, so a damaged or non-image file would fail
    there with a generic error; segcore.image reads it instead and names the problem (empty file, truncated JPEG,
    not an image) and handles EXIF rotation, 16-bit and CMYK. Webcam frames (data URLs) go through Gradio as usual.
    The preprocess method is replaced on the instance rather than in a subclass because Gradio writes a .pyi stub
    beside the source file of every component subclass.
    """
    component = gr.Image(type="filepath", **kwargs)
    gradio_preprocess = component.preprocess

    def preprocess(payload):
        if payload is None:
            return None
        if payload.path and not (payload.url or "").startswith("data:"):
            return str(payload.path)
        return gradio_preprocess(payload)

    component.preprocess = preprocess
    return component


# Uploads live in Gradio's cache as <upload folder>/<content hash>/<original name>; people know the file by its
# name only. The upload folder is GRADIO_TEMP_DIR (any path, spaces included) or <temp>/gradio, so it is stripped
# as Gradio names it; the pattern catches a cache path however its folder was spelled (relative, via a symlink):
# a path whose last folder is a hex digest.
UPLOAD_CACHE_PATH = re.compile(r"[^\s'\"]*/[0-9a-f]{16,}/")


def _upload_folder_spellings() -> list[str]:
    """Gradio's upload folder as configured, absolute and resolved; longest first, so none is left half-stripped."""
    folder = get_upload_folder()
    spellings = {spelling.rstrip("/") for spelling in (folder, os.path.abspath(folder), os.path.realpath(folder))}
    return sorted((spelling for spelling in spellings if spelling), key=len, reverse=True)


def shown_message(error: Exception) -> str:
    text = str(error)
    for folder in _upload_folder_spellings():
        text = re.sub(re.escape(folder) + r"/(?:[0-9a-f]{16,}/)?", "", text)
    return UPLOAD_CACHE_PATH.sub("", text)


def _save_pil_to_cache_atomically(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:
    """Gradio's processing_utils.save_pil_to_cache, writing each file once, whole.

    Gradio stores every picture a handler returns as <cache>/<hash of its bytes>/image.<format> and rewrites that
    file in place each time. Requests with the same result (the same photo and model) share the file, so a client
    still downloading it for one request read it while another request truncated it: broken downloads under load
    (issue 17, 8 clients for 60 s). Here a new file is written under a temporary name and renamed into place (as
    Gradio's save_file_to_cache already does for uploads); an existing one is only touched, so the cache's
    age-based cleanup (delete_cache, by ctime) keeps it for its new user.
    """
    data = processing_utils.encode_pil_to_bytes(img, format)
    folder = Path(cache_dir) / processing_utils.hash_bytes(data)
    folder.mkdir(exist_ok=True, parents=True)
    path = (folder / f"{name}.{format}").resolve()
    try:
        os.utime(path)
        return str(path)
    except FileNotFoundError:
        pass
    handle, staging = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return str(path)


# every component that returns pictures (Image, AnnotatedImage and its masks, Gallery, ImageSlider) calls it
# through the module, and save_img_array_to_cache through its module globals; a Gradio without the helpers this
# relies on keeps its own function (tests/app/test_concurrent_results.py then shows the race again)
if all(hasattr(processing_utils, helper) for helper in ("save_pil_to_cache", "encode_pil_to_bytes", "hash_bytes")):
    processing_utils.save_pil_to_cache = _save_pil_to_cache_atomically


def user_errors(function):
    """Show SegcoreError messages in the page; log anything else and show a short message instead of a trace."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except gr.Error:
            raise
        except SegcoreError as error:
            raise gr.Error(shown_message(error), print_exception=False) from None
        except Exception as error:  # noqa: BLE001 - the page must get a message, the log gets the trace
            log.error("unexpected error in %s:\n%s", function.__name__, traceback.format_exc())
            raise gr.Error(f"unexpected error ({type(error).__name__}: {error}); the server log has the details",
                           print_exception=False) from None

    return wrapper


def _notes(text: str) -> str:
    return text.replace("; ", "  \n")


# --------------------------------------------------------------------------------------------------- handlers
# Every API handler takes only its image (or job) as required: the rest default as in the page, so
# client.predict(handle_file("me.jpg"), api_name="/remove_background") works.
@user_errors
def remove_background(image, model=None, mode="cutout", blur_strength=50, background_color="#00b140",
                      background_image=None, refine_edges=True, crf=False):
    """(result, download NAME-MODE.png, notes) and, for the page only (a gr.State), the before/after pair."""
    result = services.remove_background(image, model=model or None, mode=mode, blur_strength=blur_strength,
                                        background_color=background_color, background_image=background_image,
                                        refine_edges=refine_edges, crf=crf)
    download = services.download_file(result.image, image, mode)
    return result.image, str(download), _notes(result.summary()), result.before_after()


def remove_background_live(frame, model, mode, blur_strength, background_color, refine_edges, session):
    """One webcam frame through this browser session's services.WebcamSession (its own smoothing history)."""
    session = session or services.WebcamSession()
    shown = session.process(frame, model=model, mode=mode, blur_strength=blur_strength,
                            background_color=background_color, refine_edges=refine_edges)
    return shown.image, shown_message(ValueError(shown.message)), session


@user_errors
def segment(image, model=None, crf=False, class_name=None):
    result = services.segment(image, model or services.default_explore_model(), crf=crf,
                              class_name=class_name or None)
    """The pictures as plain values (what API scripts get) and, for the page only (a gr.State), their captions."""
    before_after = result.crf_before_after()
    legend = pd.DataFrame([{"saliency band" if result.task == "saliency" else "class": name, "colour": colour,
                            "share of pixels (%)": round(share * 100, 2)} for name, colour, share in result.legend()])
    view = {"mask": result.mask_caption, "overlay": result.overlay_caption, "confidence": result.confidence_caption,
            "class_map": result.class_map_caption, "color_map": result.color_map(), "crf": before_after is not None}
    return ((result.image, result.annotations()), result.overlay, result.confidence_map, result.class_map,
            before_after, legend, _notes(result.summary()), view)


def _caption_explore(view):
    """Caption each Explore picture with what it shows; the CRF slider only when there is a before and after."""
    if not view:
        return (gr.skip(),) * 5
    return (gr.update(label=view["mask"], color_map=view["color_map"]), gr.update(label=view["overlay"]),
            gr.update(label=view["confidence"]), gr.update(label=view["class_map"]), gr.update(visible=view["crf"]))


@user_errors
def compare(image, models=None, ground_truth=None):
    result = services.compare(image, models, ground_truth)
    gallery = [(row.overlay, f"{row.model}: {row.latency_ms:.0f} ms") for row in result.rows]
    table = pd.DataFrame(result.table(), columns=list(result.COLUMNS))
    info = "  \n".join(result.notes) or "ok"
    return gallery, table, result.disagreement, info


def job_owner(owner_token=None, request: gr.Request | None = None) -> str:
    """Whose fine-tuning jobs a request may see and act on: its owner token, else its Gradio session.

    The page passes a random token kept in the browser's localStorage (gr.BrowserState, made at the first visit by
    _browser_owner), because Gradio's session changes at every reload and the Fine-tune tab must list a person's
    jobs after reloads and app restarts. A gradio_client script is one session for the Client's lifetime (its
    session_hash), so two Clients never see each other's jobs; a script that must find its jobs again from a new
    Client passes the same owner_token. A token is a bearer secret: whoever has it owns the jobs (services stores
    only its digest). With --admin (SEGCORE_ADMIN=1) every caller sees every job.
    """
    if owner_token is not None and str(owner_token).strip():
        return str(owner_token)
    session = getattr(request, "session_hash", None)
    if not session:
        raise SegcoreError("this request has no session and no owner_token; pass owner_token (any string only you "
                           "know) to find your jobs")
    return f"session:{session}"


def _browser_owner(stored):
    """The page's owner token: the one this browser stored at an earlier visit, else a new random one."""
    return stored if isinstance(stored, str) and len(stored) >= 16 else secrets.token_urlsafe(24)


@user_errors
def finetune_start(upload=None, sample=None, base="scratch: unet", epochs=5, lr=1e-3, batch_size=8, input_size=128,
                   freeze_encoder=False, name=None, owner_token=None, request: gr.Request = None):
    """(job id, status, problems). What keeps the job from starting goes to the problems panel, one line each, and
    stays there (a toast would vanish); the job id is then empty. The numbers go to services unconverted: it
    checks them (NaN, infinity, out of range) with the rest. The job belongs to job_owner(owner_token, request)."""
    try:
        status = services.finetune_start(upload=upload, sample=sample or None, base=base, epochs=epochs, lr=lr,
                                         batch_size=batch_size, input_size=input_size,
                                         freeze_encoder=bool(freeze_encoder), name=name or None,
                                         owner=job_owner(owner_token, request))
    except services.FinetuneProblems as error:
        shown = [shown_message(ValueError(problem)) for problem in error.problems]
        return "", gr.skip(), "**The fine-tune cannot start; fix these and press Start again:**\n\n" + "\n".join(
            f"- {problem}" for problem in shown)
    except SegcoreError as error:
        return "", gr.skip(), f"**The fine-tune cannot start:**\n\n- {shown_message(error)}"
    report = "\n".join(f"- {line}" for line in status.get("dataset_report", "").splitlines())
    return status["id"], services.job_status_text(status), f"**Dataset checked:**\n\n{report}"


@user_errors
def finetune_status(job_id=None, owner_token=None, request: gr.Request = None):
    """(status text, loss curve, metric curves, model zip, status) of one of the caller's jobs (job_owner), the
    newest without an id."""
    status = services.finetune_status(job_id or None, owner=job_owner(owner_token, request))
    archive = services.finished_model_archive(status)
    download = None if archive is None else str(archive)
    losses, metrics = services.job_curves(status)
    return services.job_status_text(status), losses, metrics, download, status


def _job_list(selected=None, owner=None):
    """The job picker (the jobs of `owner`, a job_owner token, newest first; every job in admin mode or without
    an owner) and the jobs table, from services; `selected` (a job id) is picked, else the newest job."""
    try:
        rows = services.finetune_jobs(owner)
    except SegcoreError as error:  # another app runs this jobs folder
        return gr.update(choices=[], value=None, info=shown_message(error)), pd.DataFrame()
    choices = [(services.job_label(row), row["id"]) for row in rows]
    ids = [row["id"] for row in rows]
    value = selected if selected in ids else (ids[0] if ids else None)
    table = pd.DataFrame(services.job_table(rows), columns=services.JOB_TABLE_COLUMNS)
    return gr.update(choices=choices, value=value), table


@user_errors
def finetune_cancel(job_id=None, owner_token=None, request: gr.Request = None):
    """Cancel one of the caller's jobs (job_owner); the newest queued or running one without an id."""
    return services.job_status_text(services.finetune_cancel(job_id or None, owner=job_owner(owner_token, request)))


def list_models() -> list[dict]:
    """Every model the app can run: name, task, architecture, classes, source (shipped or fine-tuned)."""
    return services.model_summaries()


# -------------------------------------------------------------------------------------------------- layout
def _model_updates() -> tuple:
    """Fresh choices for every model picker (after a fine-tune finishes), keeping each picker's value valid."""
    background = services.model_names(background_removal=True)
    everything = services.model_names()
    return (gr.update(choices=background), gr.update(choices=everything), gr.update(choices=everything),
            gr.update(choices=services.finetune_base_choices()))


def _refresh_models(known):
    """The pickers' choices and the names they now hold, when the catalogue differs from `known` (the names the
    page last got): a model fine-tuned by anyone meanwhile is offered without a reload."""
    names = services.model_names()
    if names == known:
        return (gr.skip(),) * 5
    return (*_model_updates(), names)


# Photo and result sit side by side at this height, with the settings beside them, so a 1366x900 screen shows
# the photo, the button and the result without scrolling.
IMAGE_HEIGHT = 420
# Transparent parts of a cutout show a checkerboard, as in image editors (white would hide white clothes).
CSS = """
#bg-output img { background: repeating-conic-gradient(#cccccc 0% 25%, #ffffff 0% 50%) 50% / 20px 20px;
                 width: auto; height: auto; max-width: 100%; max-height: 100%; }
"""


def _show_pair(pair):
    """The before/after slider: shown with a pair, hidden without one (never two identical pictures)."""
    return gr.update(value=pair, visible=pair is not None)


def build_app() -> gr.Blocks:
    examples = [str(path) for path in services.example_images()]
    people = [str(path) for path in services.background_examples()]
    background_models = services.model_names(background_removal=True)
    all_models = services.model_names()
    # Gradio copies every result and upload into its cache: files older than CACHE_MAX_AGE_SECONDS are deleted
    # (checked as often), so the cache stays bounded.
    with gr.Blocks(title="segcore", delete_cache=(CACHE_MAX_AGE_SECONDS, CACHE_MAX_AGE_SECONDS)) as demo:
        gr.Markdown("# segcore\nSemantic segmentation: remove backgrounds, explore and compare models, fine-tune "
                    f"your own. Images larger than {services.APP_MAX_SIDE} px on the longer side are downscaled.")
        # This browser's owner token (job_owner), also the owner_token parameter of the job APIs. Outside the
        # tabs: a component in a tab not yet opened is not mounted, and would hand the page's load event no value.
        owner = gr.BrowserState(None, storage_key=OWNER_STORAGE_KEY, secret=OWNER_STORAGE_SECRET)
        with gr.Tabs():
            with gr.Tab("Background removal", id="background"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=1, min_width=240):
                        # allow_custom_value: Gradio would refuse an API call naming a model fine-tuned after
                        # the page was built ("not in the list of choices"); services checks every name
                        bg_model = gr.Dropdown(background_models, value=services.default_background_model(),
                                               label="Model", elem_id="bg-model", allow_custom_value=True)
                        bg_mode = gr.Radio(list(services.BACKGROUND_MODES), value="cutout", label="Mode")
                        bg_strength = gr.Slider(0, 100, value=50, step=1, label="Blur strength")
                        bg_color = gr.ColorPicker(value="#00b140", label="Replacement colour")
                        bg_image = uploaded_image(label="Replacement background (optional)", sources=["upload"],
                                                  height=120)
                        bg_refine = gr.Checkbox(True, label="Refine edges (guided filter)")
                        bg_crf = gr.Checkbox(False, label="Dense CRF")
                    with gr.Column(scale=2):
                        bg_input = uploaded_image(label="Photo", sources=["upload", "webcam"], elem_id="bg-input",
                                                  height=IMAGE_HEIGHT)
                        bg_button = gr.Button("Remove background", variant="primary", elem_id="bg-run")
                    with gr.Column(scale=2):
                        bg_output = gr.Image(label="Result (transparent parts on a checkerboard)", type="numpy",
                                             format="png", image_mode=None, elem_id="bg-output", interactive=False,
                                             height=IMAGE_HEIGHT)
                        bg_download = gr.File(label="Download PNG", interactive=False, elem_id="bg-download")
                        bg_info = gr.Markdown(elem_id="bg-info")
                with gr.Row(equal_height=False):
                    with gr.Column(scale=1, min_width=240):
                        if people:
                            gr.Examples(people, inputs=[bg_input], label="Examples (photos of people)")
                    with gr.Column(scale=4):
                        bg_slider = gr.ImageSlider(label="Before | after (drag the handle)", interactive=False,
                                                   visible=False, elem_id="bg-slider", max_height=IMAGE_HEIGHT)
                bg_pair = gr.State(None)
                with gr.Accordion("Live webcam", open=False):
                    with gr.Row():
                        live_input = gr.Image(label="Webcam", sources=["webcam"], streaming=True, type="numpy")
                        live_output = gr.Image(label="Live result", type="numpy", format="png", interactive=False,
                                               elem_id="live-output")
                    live_info = gr.Markdown(elem_id="live-info")
                    live_state = gr.State(None)  # this browser session's services.WebcamSession
                bg_button.click(remove_background,
                                [bg_input, bg_model, bg_mode, bg_strength, bg_color, bg_image, bg_refine, bg_crf],
                                [bg_output, bg_download, bg_info, bg_pair], api_name="remove_background"
                                ).success(_show_pair, [bg_pair], [bg_slider], api_visibility="private")
                live_input.stream(remove_background_live,
                                  [live_input, bg_model, bg_mode, bg_strength, bg_color, bg_refine, live_state],
                                  [live_output, live_info, live_state], stream_every=0.1, time_limit=600,
                                  concurrency_limit=4, api_visibility="undocumented",
                                  api_name="remove_background_stream")

            with gr.Tab("Explore", id="explore"):
                with gr.Row():
                    with gr.Column():
                        ex_input = uploaded_image(label="Image", sources=["upload", "webcam"], elem_id="ex-input")
                        ex_model = gr.Dropdown(all_models, value=services.default_explore_model(), label="Model",
                                               elem_id="ex-model", allow_custom_value=True)
                        ex_class = gr.Dropdown([], value=None, label="Probability heatmap of class (blank: the "
                                               "largest foreground class)", allow_custom_value=True)
                        ex_crf = gr.Checkbox(False, label="Dense CRF refinement (before/after)")
                        ex_button = gr.Button("Segment", variant="primary", elem_id="ex-run")
                        ex_info = gr.Markdown()
                    with gr.Column():
                        ex_annotated = gr.AnnotatedImage(label="Mask and legend", color_map=services.class_colors(),
                                                         elem_id="ex-annotated")
                        ex_legend = gr.Dataframe(label="Legend", interactive=False, elem_id="ex-legend")
                with gr.Row():
                    ex_overlay = gr.Image(label="Overlay", interactive=False, elem_id="ex-overlay")
                    ex_confidence = gr.Image(label="Confidence", interactive=False, elem_id="ex-confidence")
                    ex_class_map = gr.Image(label="Class probability", interactive=False, elem_id="ex-class-map")
                ex_slider = gr.ImageSlider(label="Dense CRF: before | after", interactive=False, visible=False,
                                           elem_id="ex-slider")
                if examples:
                    gr.Examples(examples, inputs=[ex_input], label="Examples")
                ex_view = gr.State(None)
                ex_button.click(segment, [ex_input, ex_model, ex_crf, ex_class],
                                [ex_annotated, ex_overlay, ex_confidence, ex_class_map, ex_slider, ex_legend, ex_info,
                                 ex_view], api_name="segment"
                                ).success(_caption_explore, [ex_view],
                                          [ex_annotated, ex_overlay, ex_confidence, ex_class_map, ex_slider],
                                          api_visibility="private", show_progress="hidden")
                ex_model.change(_class_choices, [ex_model], [ex_class], api_visibility="private")

            with gr.Tab("Compare", id="compare"):
                with gr.Row():
                    with gr.Column():
                        cmp_input = uploaded_image(label="Image", sources=["upload", "webcam"], elem_id="cmp-input")
                        cmp_models = gr.Dropdown(all_models, value=_comparable_pair(), multiselect=True, max_choices=4,
                                                 label="Models (2-4)", allow_custom_value=True)
                        cmp_truth = gr.File(label="Ground-truth mask (optional: PNG of class indices)",
                                            file_types=["image"], type="filepath")
                        cmp_button = gr.Button("Compare", variant="primary", elem_id="cmp-run")
                        cmp_info = gr.Markdown()
                    with gr.Column():
                        cmp_gallery = gr.Gallery(label="Masks", columns=2, height="auto")
                        cmp_table = gr.Dataframe(label="Latency and scores", interactive=False)
                        cmp_disagreement = gr.Image(label="Disagreement between models", interactive=False)
                cmp_button.click(compare, [cmp_input, cmp_models, cmp_truth],
                                 [cmp_gallery, cmp_table, cmp_disagreement, cmp_info], api_name="compare")

            with gr.Tab("Fine-tune", id="finetune"):
                with gr.Row():
                    with gr.Column():
                        ft_upload = gr.File(label="Dataset zip (images/ + masks/, optional classes.json and "
                                                  "split.txt; without it 10 % are held out for validation)",
                                            file_types=[".zip"], type="filepath", elem_id="ft-upload")
                        ft_sample = gr.Dropdown([""] + list(services.SAMPLE_DATASETS), value="",
                                                label="…or a bundled sample", elem_id="ft-sample")
                        ft_base = gr.Dropdown(services.finetune_base_choices(), value="scratch: unet",
                                              label="Start from", elem_id="ft-base")
                        with gr.Row():
                            # No minimum/maximum here: services checks the numbers at Start with the rest and
                            # the problems panel lists them (Gradio's own check would only flash a toast).
                            ft_epochs = gr.Number(5, label="Epochs (1-1000)", precision=0, elem_id="ft-epochs")
                            ft_lr = gr.Number(1e-3, label="Learning rate (1e-6 - 1)")
                            ft_batch = gr.Number(8, label="Batch (1-256)", precision=0)
                            ft_size = gr.Number(128, label="Input size (32-1024 px)", precision=0, elem_id="ft-size")
                        ft_freeze = gr.Checkbox(False, label="Freeze encoder (unet_resnet50)")
                        ft_name = gr.Textbox(label="Name (optional)")
                        with gr.Row():
                            ft_start = gr.Button("Start", variant="primary", elem_id="ft-start")
                            ft_cancel = gr.Button("Cancel", variant="stop", elem_id="ft-cancel")
                        ft_problems = gr.Markdown(elem_id="ft-problems")
                        ft_job = gr.Textbox(label="Job id", interactive=False, elem_id="ft-job")
                        whose = "every job on disk (admin)" if services.admin_mode() else "yours"
                        ft_pick = gr.Dropdown([], value=None, label=f"Jobs ({whose}, newest first)",
                                              elem_id="ft-jobs")
                        ft_table = gr.Dataframe(label=f"Jobs: {whose}", interactive=False, elem_id="ft-table")
                    with gr.Column():
                        ft_status = gr.Markdown("no fine-tuning job yet", elem_id="ft-status")
                        ft_losses = gr.LinePlot(x="epoch", y="value", color="series", title="Training loss")
                        ft_metrics = gr.LinePlot(x="epoch", y="value", color="series", title="Validation metrics")
                        ft_download = gr.File(label="Model folder (zip)", interactive=False)
                        ft_json = gr.JSON(label="Status", visible=False)
                ft_timer = gr.Timer(1.0)
                ft_start.click(finetune_start, [ft_upload, ft_sample, ft_base, ft_epochs, ft_lr, ft_batch, ft_size,
                                                ft_freeze, ft_name, owner], [ft_job, ft_status, ft_problems],
                               api_name="finetune_start").then(
                    _owned_job_list, [owner, ft_job], [ft_pick, ft_table], api_visibility="private")
                ft_pick.change(lambda job_id: job_id or gr.skip(), [ft_pick], [ft_job], api_visibility="private",
                               show_progress="hidden")
                ft_cancel.click(finetune_cancel, [ft_job, owner], [ft_status], api_name="finetune_cancel")
                status_outputs = [ft_status, ft_losses, ft_metrics, ft_download, ft_json]
                status_event = gr.Button(visible=False)
                status_event.click(finetune_status, [ft_job, owner], status_outputs, api_name="finetune_status")
                ft_timer.tick(_poll_status, [ft_job, ft_json, owner],
                              status_outputs + [bg_model, ex_model, cmp_models, ft_base, ft_pick, ft_table],
                              api_visibility="private",
                              show_progress="hidden")
        gr.api(list_models, api_name="list_models")
        known_models = gr.State(None)  # the model names this page's pickers hold
        pickers = [bg_model, ex_model, cmp_models, ft_base, known_models]
        demo.load(_refresh_models, [known_models], pickers, api_visibility="private")
        gr.Timer(MODEL_REFRESH_SECONDS).tick(_refresh_models, [known_models], pickers, api_visibility="private",
                                             show_progress="hidden")
        demo.load(_browser_owner, [owner], [owner], api_visibility="private").then(
            _owned_job_list, [owner], [ft_pick, ft_table], api_visibility="private")
    return demo


def _comparable_pair() -> list[str]:
    """Two models predicting the same classes (the Compare tab's starting choice), shipped ones first."""
    by_classes: dict[tuple, list[str]] = {}
    for entry in services.list_models():
        by_classes.setdefault(entry.class_names, []).append(entry.name)
    pairs = [names[:2] for names in by_classes.values() if len(names) >= 2]
    return pairs[0] if pairs else services.model_names()[:2]


def _class_choices(model):
    return gr.update(choices=services.class_choices(model), value=None)


def _owned_job_list(owner_token, selected=None, request: gr.Request = None):
    """_job_list for the page's owner (job_owner), `selected` picked."""
    try:
        owner = job_owner(owner_token, request)
    except SegcoreError as error:
        return gr.update(choices=[], value=None, info=shown_message(error)), pd.DataFrame()
    return _job_list(selected or None, owner)


def _poll_status(job_id, previous, owner_token, request: gr.Request):
    """Timer tick: refresh the job's progress; refresh model pickers when a job has just finished. A job that had
    already ended at the previous tick is left alone (no new curves, no new download zip every second). The job
    list is refreshed when the job changes state."""
    if not job_id:
        return (gr.skip(),) * 11
    previous = previous or {}
    try:
        owner = job_owner(owner_token, request)
        state = services.finetune_status(job_id, owner=owner).get("state")
        if previous.get("id") == job_id and previous.get("state") in TERMINAL_STATES and previous["state"] == state:
            return (gr.skip(),) * 11
        text, losses, metrics, download, status = finetune_status(job_id, owner_token, request)
    except (gr.Error, SegcoreError) as error:
        return (shown_message(error),) + (gr.skip(),) * 10
    finished_now = status.get("state") == "finished" and previous.get("state") != "finished"
    pickers = _model_updates() if finished_now else (gr.skip(),) * 4
    changed = previous.get("id") != job_id or previous.get("state") != status.get("state")
    jobs = _job_list(job_id, owner) if changed else (gr.skip(),) * 2
    return (text, losses, metrics, download, status) + tuple(pickers) + tuple(jobs)


def launch(host: str = "127.0.0.1", port: int = 7860, share: bool = False, block: bool = True,
           admin: bool = False) -> gr.Blocks:
    """Serve the app; `admin`: every caller sees and may cancel every fine-tuning job (as SEGCORE_ADMIN=1)."""
    if admin:
        services.set_admin(True)
    services.start_job_manager()  # jobs a stopped app left queued or running resume now, not when the tab opens
    demo = build_app()
    demo.queue(default_concurrency_limit=2)
    demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block, css=CSS,
                allowed_paths=[str(services.EXAMPLES_DIR)], show_error=True, quiet=not block,
                max_file_size=services.MAX_UPLOAD_BYTES)
    return demo
