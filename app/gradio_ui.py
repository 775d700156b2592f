"""The Gradio app: background removal (upload or live webcam), explore one model, compare models, fine-tune.

A thin layer over app/services.py: handlers convert between Gradio values and the services' arguments and turn
SegcoreError into a gr.Error whose message the page shows as it is. Stable API names (for gradio_client scripts):
remove_background, segment, compare, finetune_start, finetune_status, finetune_cancel, list_models.
"""

from __future__ import annotations

import functools
import logging
import re
import traceback

import gradio as gr
import pandas as pd

import segcore
from app import services
from segcore import compose, visualize
from segcore.errors import SegcoreError

log = logging.getLogger("segcore.app")

TERMINAL_STATES = ("finished", "failed", "cancelled")


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


# Uploads live in Gradio's cache as .../gradio/<hash>/<original name>; people know the file by its name only.
UPLOAD_CACHE_PATH = re.compile(r"\S*/gradio/[0-9a-f]{16,}/")


def shown_message(error: Exception) -> str:
    return UPLOAD_CACHE_PATH.sub("", str(error))


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
@user_errors
def remove_background(image, model, mode, blur_strength, background_color, background_image, refine_edges, crf):
    result = services.remove_background(image, model=model, mode=mode, blur_strength=blur_strength,
                                        background_color=background_color, background_image=background_image,
                                        refine_edges=refine_edges, crf=crf)
    download = services.save_png(result.image, stem="cutout" if mode == "cutout" else f"background-{mode}")
    return result.image, str(download), _notes(result.summary())


def remove_background_live(frame, model, mode, blur_strength, background_color, refine_edges, smoother):
    """One webcam frame: the mask is smoothed over time (per browser session) so edges do not flicker."""
    if frame is None:
        return None, "waiting for the webcam", smoother
    smoother = smoother or compose.TemporalSmoother()
    try:
        result = services.remove_background(frame, model=model, mode=mode, blur_strength=blur_strength,
                                            background_color=background_color, refine_edges=refine_edges,
                                            smoother=smoother)
    except SegcoreError as error:
        return None, shown_message(error), smoother
    return result.image, f"{result.total_ms:.0f} ms per frame (model {result.latency_ms:.0f} ms)", smoother


@user_errors
def segment(image, model, crf, class_name):
    result = services.segment(image, model, crf=crf, class_name=class_name or None)
    annotated = (result.image, result.annotations()) if result.task != "saliency" else (result.image, [])
    before_after = (result.overlay, result.crf_overlay) if result.crf_overlay is not None else (result.overlay,
                                                                                              result.overlay)
    legend = pd.DataFrame([{"class": name, "colour": colour, "share of pixels (%)": round(share * 100, 2)}
                           for name, colour, share in result.legend()])
    return (annotated, result.overlay, result.confidence_map, result.class_map,
            before_after, legend, _notes(result.summary()))


@user_errors
def compare(image, models, ground_truth):
    result = services.compare(image, models, ground_truth)
    gallery = [(row.overlay, f"{row.model}: {row.latency_ms:.0f} ms") for row in result.rows]
    table = pd.DataFrame(result.table(), columns=["model", "latency (ms)", "IoU (foreground)", "mIoU",
                                                  "pixel accuracy"])
    info = "  \n".join(result.notes) or "ok"
    return gallery, table, result.disagreement, info


@user_errors
def finetune_start(upload, sample, base, epochs, lr, batch_size, input_size, freeze_encoder, name):
    status = services.finetune_start(upload=upload, sample=sample or None, base=base, epochs=int(epochs), lr=float(lr),
                                     batch_size=int(batch_size), input_size=int(input_size),
                                     freeze_encoder=bool(freeze_encoder), name=name or None)
    return status["id"], _status_text(status)


@user_errors
def finetune_status(job_id):
    status = services.finetune_status(job_id or None)
    download = None
    if status.get("state") == "finished" and status.get("model_dir"):
        download = str(services.model_archive(f"fine-tuned/{status['name']}"))
    losses, metrics = _curves(status)
    return _status_text(status), losses, metrics, download, status


@user_errors
def finetune_cancel(job_id):
    return _status_text(services.finetune_cancel(job_id or None))


def list_models() -> list[dict]:
    """Every model the app can run: name, task, architecture, classes, source (shipped or fine-tuned)."""
    return [{"name": entry.name, "task": entry.task, "architecture": entry.architecture,
             "classes": list(entry.class_names), "source": entry.source,
             "removes_background": entry.removes_background} for entry in services.list_models()]


def _status_text(status: dict) -> str:
    if not status:
        return "no fine-tuning job yet"
    state = status.get("state", "?")
    lines = [f"**{status.get('name', status.get('id'))}** (`{status.get('id')}`): **{state}**"]
    if state == "queued" and status.get("queue_position"):
        lines.append(f"position in queue: {status['queue_position']}")
    if status.get("epochs"):
        lines.append(f"epoch {status.get('epoch', 0)}/{status['epochs']}, step {status.get('step', 0)}/"
                     f"{status.get('steps', '?')} on {status.get('device', '?')}")
    if status.get("loss") is not None:
        lines.append(f"loss {status['loss']:.4f}")
    if status.get("eta_seconds") is not None and state == "running":
        lines.append(f"about {status['eta_seconds'] / 60:.1f} min left")
    if status.get("error"):
        lines.append(f"error: {status['error']}")
    if status.get("message"):
        lines.append(str(status["message"]))
    if state == "finished":
        lines.append(f"the model is now in every model list as fine-tuned/{status.get('name')}")
    return "  \n".join(lines)


def _curves(status: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    history = status.get("history") or []
    losses = pd.DataFrame([{"epoch": record["epoch"], "value": record["train_loss"], "series": "train loss"}
                           for record in history if record.get("train_loss") is not None],
                          columns=["epoch", "value", "series"])
    metric_rows = []
    for record in history:
        for key in ("miou", "fg_iou", "pixel_acc", "cc"):
            if isinstance(record.get(key), (int, float)):
                metric_rows.append({"epoch": record["epoch"], "value": record[key], "series": key})
    return losses, pd.DataFrame(metric_rows, columns=["epoch", "value", "series"])


# -------------------------------------------------------------------------------------------------- layout
def _model_updates() -> tuple:
    """Fresh choices for every model picker (after a fine-tune finishes), keeping each picker's value valid."""
    background = services.model_names(background_removal=True)
    everything = services.model_names()
    return (gr.update(choices=background), gr.update(choices=everything), gr.update(choices=everything),
            gr.update(choices=services.finetune_base_choices()))


def build_app() -> gr.Blocks:
    examples = [str(path) for path in services.example_images()]
    background_models = services.model_names(background_removal=True)
    all_models = services.model_names()
    with gr.Blocks(title="segcore") as demo:
        gr.Markdown("# segcore\nSemantic segmentation: remove backgrounds, explore and compare models, fine-tune "
                    f"your own. Images larger than {services.APP_MAX_SIDE} px on the longer side are downscaled.")
        with gr.Tabs():
            with gr.Tab("Background removal", id="background"):
                with gr.Row():
                    with gr.Column():
                        bg_input = uploaded_image(label="Portrait", sources=["upload", "webcam"], elem_id="bg-input")
                        bg_model = gr.Dropdown(background_models, value=services.default_background_model(),
                                               label="Model", elem_id="bg-model")
                        bg_mode = gr.Radio(list(services.BACKGROUND_MODES), value="cutout", label="Mode")
                        bg_strength = gr.Slider(0, 100, value=50, step=1, label="Blur strength")
                        bg_color = gr.ColorPicker(value="#00b140", label="Replacement colour")
                        bg_image = uploaded_image(label="Replacement background (optional)", sources=["upload"])
                        with gr.Row():
                            bg_refine = gr.Checkbox(True, label="Refine edges (guided filter)")
                            bg_crf = gr.Checkbox(False, label="Dense CRF")
                        bg_button = gr.Button("Remove background", variant="primary", elem_id="bg-run")
                    with gr.Column():
                        bg_output = gr.Image(label="Result", type="numpy", format="png", image_mode=None,
                                             elem_id="bg-output", interactive=False)
                        bg_download = gr.File(label="Download PNG", interactive=False)
                        bg_info = gr.Markdown(elem_id="bg-info")
                with gr.Accordion("Live webcam", open=False):
                    with gr.Row():
                        live_input = gr.Image(label="Webcam", sources=["webcam"], streaming=True, type="numpy")
                        live_output = gr.Image(label="Live result", type="numpy", format="png", interactive=False)
                    live_info = gr.Markdown()
                    live_state = gr.State(None)
                if examples:
                    gr.Examples(examples, inputs=[bg_input], label="Examples")
                bg_button.click(remove_background,
                                [bg_input, bg_model, bg_mode, bg_strength, bg_color, bg_image, bg_refine, bg_crf],
                                [bg_output, bg_download, bg_info], api_name="remove_background")
                live_input.stream(remove_background_live,
                                  [live_input, bg_model, bg_mode, bg_strength, bg_color, bg_refine, live_state],
                                  [live_output, live_info, live_state], stream_every=0.1, time_limit=600,
                                  concurrency_limit=4, api_visibility="undocumented",
                                  api_name="remove_background_stream")

            with gr.Tab("Explore", id="explore"):
                with gr.Row():
                    with gr.Column():
                        ex_input = uploaded_image(label="Image", sources=["upload", "webcam"], elem_id="ex-input")
                        ex_model = gr.Dropdown(all_models, value=services.default_background_model() or
                                               (all_models or [None])[0], label="Model",
                                               elem_id="ex-model")
                        ex_class = gr.Dropdown([], value=None, label="Probability heatmap of class (blank: the "
                                               "largest foreground class)", allow_custom_value=True)
                        ex_crf = gr.Checkbox(False, label="Dense CRF refinement (before/after)")
                        ex_button = gr.Button("Segment", variant="primary", elem_id="ex-run")
                        ex_info = gr.Markdown()
                    with gr.Column():
                        ex_annotated = gr.AnnotatedImage(label="Mask and legend", color_map=_class_color_map())
                        ex_legend = gr.Dataframe(label="Classes", interactive=False)
                with gr.Row():
                    ex_overlay = gr.Image(label="Overlay (saliency: JET)", interactive=False)
                    ex_confidence = gr.Image(label="Confidence", interactive=False)
                    ex_class_map = gr.Image(label="Class probability", interactive=False)
                ex_slider = gr.ImageSlider(label="CRF: before | after", interactive=False)
                if examples:
                    gr.Examples(examples, inputs=[ex_input], label="Examples")
                ex_button.click(segment, [ex_input, ex_model, ex_crf, ex_class],
                                [ex_annotated, ex_overlay, ex_confidence, ex_class_map, ex_slider, ex_legend, ex_info],
                                api_name="segment")
                ex_model.change(_class_choices, [ex_model], [ex_class], api_visibility="private")

            with gr.Tab("Compare", id="compare"):
                with gr.Row():
                    with gr.Column():
                        cmp_input = uploaded_image(label="Image", sources=["upload", "webcam"], elem_id="cmp-input")
                        cmp_models = gr.Dropdown(all_models, value=_comparable_pair(), multiselect=True, max_choices=4,
                                                 label="Models (2-4)")
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
                        ft_upload = gr.File(label="Dataset zip (images/ + masks/, optional classes.json)",
                                            file_types=[".zip"], type="filepath", elem_id="ft-upload")
                        ft_sample = gr.Dropdown([""] + list(services.SAMPLE_DATASETS), value="",
                                                label="…or a bundled sample", elem_id="ft-sample")
                        ft_base = gr.Dropdown(services.finetune_base_choices(), value="scratch: unet",
                                              label="Start from", elem_id="ft-base")
                        with gr.Row():
                            ft_epochs = gr.Number(5, label="Epochs", precision=0, minimum=1, maximum=1000,
                                                  elem_id="ft-epochs")
                            ft_lr = gr.Number(1e-3, label="Learning rate", minimum=1e-6, maximum=1.0)
                            ft_batch = gr.Number(8, label="Batch", precision=0, minimum=1, maximum=256)
                            ft_size = gr.Number(128, label="Input size (px)", precision=0, minimum=32, maximum=1024,
                                                elem_id="ft-size")
                        ft_freeze = gr.Checkbox(False, label="Freeze encoder (unet_resnet50)")
                        ft_name = gr.Textbox(label="Name (optional)")
                        with gr.Row():
                            ft_start = gr.Button("Start", variant="primary", elem_id="ft-start")
                            ft_cancel = gr.Button("Cancel", variant="stop", elem_id="ft-cancel")
                        ft_job = gr.Textbox(label="Job id", interactive=False, elem_id="ft-job")
                    with gr.Column():
                        ft_status = gr.Markdown("no fine-tuning job yet", elem_id="ft-status")
                        ft_losses = gr.LinePlot(x="epoch", y="value", color="series", title="Training loss")
                        ft_metrics = gr.LinePlot(x="epoch", y="value", color="series", title="Validation metrics")
                        ft_download = gr.File(label="Model folder (zip)", interactive=False)
                        ft_json = gr.JSON(label="Status", visible=False)
                ft_timer = gr.Timer(1.0)
                ft_start.click(finetune_start, [ft_upload, ft_sample, ft_base, ft_epochs, ft_lr, ft_batch, ft_size,
                                                ft_freeze, ft_name], [ft_job, ft_status], api_name="finetune_start")
                ft_cancel.click(finetune_cancel, [ft_job], [ft_status], api_name="finetune_cancel")
                status_outputs = [ft_status, ft_losses, ft_metrics, ft_download, ft_json]
                status_event = gr.Button(visible=False)
                status_event.click(finetune_status, [ft_job], status_outputs, api_name="finetune_status")
                ft_timer.tick(_poll_status, [ft_job, ft_json],
                              status_outputs + [bg_model, ex_model, cmp_models, ft_base], api_visibility="private",
                              show_progress="hidden")
        gr.api(list_models, api_name="list_models")
        demo.load(lambda: _model_updates(), None, [bg_model, ex_model, cmp_models, ft_base], api_visibility="private")
    return demo


def _comparable_pair() -> list[str]:
    """Two models predicting the same classes (the Compare tab's starting choice), shipped ones first."""
    by_classes: dict[tuple, list[str]] = {}
    for entry in services.list_models():
        by_classes.setdefault(entry.class_names, []).append(entry.name)
    pairs = [names[:2] for names in by_classes.values() if len(names) >= 2]
    return pairs[0] if pairs else services.model_names()[:2]


def _class_color_map() -> dict[str, str]:
    """Class name -> colour over all installed models (the first model naming a class sets its colour)."""
    colors: dict[str, str] = {}
    for entry in services.list_models():
        config = segcore.checkpoint.read_config(entry.path / "config.json")
        for name, color in zip(config.get("class_names", []), config.get("class_colors", [])):
            colors.setdefault(name, visualize.hex_color(color))
    return colors


def _class_choices(model):
    try:
        entry = services.find_model(model)
    except SegcoreError:
        return gr.update(choices=[], value=None)
    return gr.update(choices=list(entry.class_names), value=None)


def _poll_status(job_id, previous):
    """Timer tick: refresh the job's progress; refresh model pickers when a job has just finished. A job that had
    already ended at the previous tick is left alone (no new curves, no new download zip every second)."""
    if not job_id:
        return (gr.skip(),) * 9
    previous = previous or {}
    try:
        state = services.finetune_status(job_id).get("state")
        if previous.get("id") == job_id and previous.get("state") in TERMINAL_STATES and previous["state"] == state:
            return (gr.skip(),) * 9
        text, losses, metrics, download, status = finetune_status(job_id)
    except (gr.Error, SegcoreError) as error:
        return (shown_message(error),) + (gr.skip(),) * 8
    finished_now = status.get("state") == "finished" and previous.get("state") != "finished"
    pickers = _model_updates() if finished_now else (gr.skip(),) * 4
    return (text, losses, metrics, download, status) + tuple(pickers)


def launch(host: str = "127.0.0.1", port: int = 7860, share: bool = False, block: bool = True) -> gr.Blocks:
    demo = build_app()
    demo.queue(default_concurrency_limit=2)
    demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block,
                allowed_paths=[str(services.EXAMPLES_DIR)], show_error=True, quiet=not block)
    return demo
