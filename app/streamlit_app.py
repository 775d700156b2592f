"""The Streamlit app: background removal (upload or camera), explore one model, compare models, fine-tune.

Run it from the repository root: `streamlit run app/streamlit_app.py` (.streamlit/config.toml binds it to
127.0.0.1). Like app/gradio_ui.py it is a thin layer over app/services.py: every operation, caption, table and
status line comes from there; this file only lays them out. A SegcoreError is shown as it is (it names the problem
and the fix); anything else is logged with its trace and shown as one short line.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import sys
import traceback
from pathlib import Path

import streamlit as st

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # `streamlit run` puts only app/ on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app import services  # noqa: E402 - after the path fix above

log = logging.getLogger("segcore.app")

PAGES = ("Background removal", "Explore", "Compare", "Fine-tune")
IMAGE_TYPES = ["png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp"]
TERMINAL_STATES = ("finished", "failed", "cancelled")
STATUS_REFRESH_SECONDS = 2.0  # how often a running job's status redraws itself
OWNER_PARAMETER = "owner"  # the query parameter holding this browser's job owner token


@contextlib.contextmanager
def user_errors(what: str):
    """Show a SegcoreError's message on the page; log anything else and show a short line instead of a trace."""
    try:
        yield
    except services.SegcoreError as error:
        st.error(str(error))
    except Exception as error:  # noqa: BLE001 - the page gets a message, the log the trace
        log.error("unexpected error in %s:\n%s", what, traceback.format_exc())
        st.error(f"unexpected error while {what} ({type(error).__name__}: {error}); the server log has the details")


@st.cache_resource(show_spinner="starting the fine-tuning job manager")
def _job_manager_started() -> str | None:
    """Start (once per server) the job manager that resumes jobs interrupted by a restart."""
    return services.start_job_manager()


@st.cache_resource(show_spinner="loading the model", max_entries=8)
def _loaded(name: str, stamp: float):
    """Load a model once per server (keyed by its folder's modification time, so a re-saved model reloads); the
    services keep the same instance for every operation."""
    return services.get_segmenter(name)


def load_models(names: list[str]) -> None:
    for name in names:
        entry = services.find_model(name)
        _loaded(name, (entry.path / "model.safetensors").stat().st_mtime if (entry.path / "model.safetensors").exists()
                else 0.0)


def picker_index(choices: list[str], preferred: str | None) -> int:
    return choices.index(preferred) if preferred in choices else 0


def image_input(key: str, label: str, examples: list[Path], camera: bool = False):
    """The photo a page works on: an upload, a camera shot or a bundled example (UploadedFile or Path), or None."""
    kinds = ["Upload", *(["Camera"] if camera else []), *(["Example"] if examples else [])]
    kind = st.radio(f"{label} from", kinds, horizontal=True, key=f"{key}-kind")
    if kind == "Upload":
        return st.file_uploader(label, type=IMAGE_TYPES, key=f"{key}-upload")
    if kind == "Camera":
        return st.camera_input("Take a photo", key=f"{key}-camera")
    chosen = st.selectbox("Example", [path.name for path in examples], key=f"{key}-example")
    return next(path for path in examples if path.name == chosen)


def legend_markdown(rows: list[tuple[str, str, float]]) -> str:
    """Colour swatches with names and shares, one per line: what the colours of a mask mean."""
    return "  \n".join(f'<span style="display:inline-block;width:0.9em;height:0.9em;background:{colour};'
                       f'border:1px solid #555;margin-right:0.4em"></span>{name}: {share:.1%}'
                       for name, colour, share in rows)


# ------------------------------------------------------------------------------------------ background removal
def background_page() -> None:
    st.header("Remove the background of a photo of people")
    choices = services.model_names(background_removal=True)
    if not choices:
        st.error("no model that removes backgrounds is installed; ship person-fast or portrait-sinet, or fine-tune one")
        return
    settings, shown = st.columns([1, 3])
    with settings:
        model = st.selectbox("Model", choices, index=picker_index(choices, services.default_background_model()),
                             key="bg-model")
        mode = st.radio("Mode", services.BACKGROUND_MODES, horizontal=True, key="bg-mode")
        blur = st.slider("Blur strength", 5, 100, 50, key="bg-blur") if mode == "blur" else 50
        colour, replacement = "#ffffff", None
        if mode == "replace":
            colour = st.color_picker("Background colour", "#00b140", key="bg-colour")
            replacement = st.file_uploader("or a background photo", type=IMAGE_TYPES, key="bg-replacement")
        refine = st.checkbox("Refine edges (guided filter)", value=True, key="bg-refine")
        crf = st.checkbox("Dense CRF (slower)", value=False, key="bg-crf")
    with shown:
        source = image_input("bg", "Photo", services.background_examples(), camera=True)
        if source is None:
            st.info("Upload a photo of one or more people, take one with the camera, or pick an example.")
            return
        with user_errors("removing the background"):
            load_models([model])
            with st.spinner("removing the background"):
                result = services.remove_background(source, model=model, mode=mode, blur_strength=blur,
                                                    background_color=colour, background_image=replacement,
                                                    refine_edges=refine, crf=crf)
            before, after = st.columns(2)
            before.image(result.original, caption="photo", width="stretch")
            after.image(services.on_checkerboard(result.image), width="stretch",
                        caption=f"{mode} (transparent parts on a checkerboard)" if mode == "cutout" else mode)
            st.caption(result.summary())
            name = services.download_name(source, mode)
            st.download_button(f"Download {name}", services.png_bytes(result.image), file_name=name,
                               mime="image/png", key="bg-download")
            matte = (result.alpha * 255.0 + 0.5).astype("uint8")
            st.download_button(f"Download the matte ({services.download_name(source, 'matte')})",
                               services.png_bytes(matte), file_name=services.download_name(source, "matte"),
                               mime="image/png", key="bg-download-matte")


# ------------------------------------------------------------------------------------------------- explore
def explore_page() -> None:
    st.header("Explore one model: mask, heatmaps and CRF refinement")
    choices = services.model_names()
    if not choices:
        st.error("no model is installed; train one (python -m segcore train) or fine-tune one on the Fine-tune page")
        return
    settings, shown = st.columns([1, 3])
    with settings:
        model = st.selectbox("Model", choices, index=picker_index(choices, services.default_explore_model()),
                             key="ex-model")
        classes = services.class_choices(model)
        class_name = st.selectbox("Heatmap of class", ["(largest foreground class)", *classes], key="ex-class")
        crf = st.checkbox("Dense CRF refinement (before/after)", value=False, key="ex-crf")
    with shown:
        source = image_input("ex", "Image", services.example_images())
        if source is None:
            st.info("Upload an image or pick an example.")
            return
        with user_errors("running the model"):
            load_models([model])
            with st.spinner("running the model"):
                result = services.segment(source, model, crf=crf,
                                          class_name=None if class_name.startswith("(") else class_name)
            mask, legend = st.columns([3, 1])
            mask.image(result.overlay, caption=result.overlay_caption, width="stretch")
            legend.markdown("**Legend**  \n" + legend_markdown(result.legend()), unsafe_allow_html=True)
            confidence, class_map = st.columns(2)
            confidence.image(result.confidence_map, caption=result.confidence_caption, width="stretch")
            class_map.image(result.class_map, caption=result.class_map_caption, width="stretch")
            pair = result.crf_before_after()
            if pair is not None:
                before, after = st.columns(2)
                before.image(pair[0], caption="before the CRF", width="stretch")
                after.image(pair[1], caption="after the CRF", width="stretch")
            st.caption(result.summary())


# ------------------------------------------------------------------------------------------------- compare
def compare_page() -> None:
    st.header("Compare 2-4 models on one image")
    choices = services.model_names()
    models = st.multiselect("Models (2 to 4)", choices, default=choices[:2], max_selections=4, key="cmp-models")
    source = image_input("cmp", "Image", services.example_images())
    truth = st.file_uploader("Ground-truth mask (optional: PNG of class indices, or 0/255 for two-class models)",
                             type=["png", "bmp", "tif", "tiff"], key="cmp-truth")
    if source is None:
        st.info("Upload an image or pick an example.")
        return
    with user_errors("comparing the models"):
        if 2 <= len(models) <= 4:
            load_models(models)
        with st.spinner("running the models"):
            result = services.compare(source, models, truth)
        for column, row in zip(st.columns(len(result.rows)), result.rows):
            column.image(row.overlay, caption=f"{row.model}: {row.latency_ms:.0f} ms", width="stretch")
        st.dataframe([dict(zip(result.COLUMNS, row)) for row in result.table()], hide_index=True)
        st.image(result.disagreement, caption="where the models disagree (share of model pairs)", width=480)
        for note in result.notes:
            st.caption(note)


# ---------------------------------------------------------------------------------------------- fine-tuning
def job_owner() -> str:
    """The token this browser's fine-tuning jobs are filed under (services.owner_key), kept in the page's URL as
    ?owner=TOKEN.

    Streamlit's session (and st.session_state) ends at every reload, and a script can neither read localStorage
    nor set cookies, while the query string survives reloads and app restarts, so the Fine-tune page keeps listing
    a person's jobs. The URL is then the key: whoever has it owns the jobs (share a link without ?owner=...).
    SEGCORE_ADMIN=1 shows every job to everyone.
    """
    token = st.query_params.get(OWNER_PARAMETER)
    if not isinstance(token, str) or not 16 <= len(token) <= 256:
        token = secrets.token_urlsafe(24)
        st.query_params[OWNER_PARAMETER] = token
    return token


def finetune_page() -> None:
    st.header("Fine-tune a model on your own images")
    _job_manager_started()
    owner = job_owner()
    with st.form("ft-form"):
        upload = st.file_uploader("Dataset zip (images/ + masks/, or name.jpg + name_mask.png; split.txt optional)",
                                  type=["zip"], key="ft-upload")
        sample = st.selectbox("or a bundled sample", ["(none)", *services.SAMPLE_DATASETS], key="ft-sample")
        bases = services.finetune_base_choices()
        base = st.selectbox("Start from", bases, key="ft-base")
        left, right = st.columns(2)
        epochs = left.number_input("Epochs", min_value=1, max_value=1000, value=5, step=1, key="ft-epochs")
        lr = right.number_input("Learning rate", min_value=1e-6, max_value=1.0, value=1e-3, format="%.6f",
                                key="ft-lr")
        batch = left.number_input("Batch size", min_value=1, max_value=256, value=8, step=1, key="ft-batch")
        size = right.number_input("Input size", min_value=32, max_value=1024, value=128, step=32, key="ft-size")
        freeze = st.checkbox("Freeze the encoder", value=False, key="ft-freeze")
        name = st.text_input("Name of the new model (optional)", key="ft-name")
        started = st.form_submit_button("Start")
    if started:
        try:
            status = services.finetune_start(
                upload=upload, sample=services.SAMPLE_DATASETS.get(sample), base=base, epochs=epochs, lr=lr,
                batch_size=batch, input_size=size, freeze_encoder=freeze, name=name.strip() or None, owner=owner)
        except services.FinetuneProblems as error:
            st.error("**The fine-tune cannot start; fix these and press Start again:**\n\n" +
                     "\n".join(f"- {problem}" for problem in error.problems))
        except services.SegcoreError as error:
            st.error(f"**The fine-tune cannot start:** {error}")
        else:
            st.session_state["ft-job"] = status["id"]
            st.success("**Dataset checked:**\n\n" + "\n".join(
                f"- {line}" for line in status.get("dataset_report", "").splitlines()))
    jobs_panel(owner)


def jobs_panel(owner: str) -> None:
    """The job picker, the picked job's status and the jobs table, of `owner`'s jobs (every job with
    SEGCORE_ADMIN=1). While any of them is queued or running they redraw together every STATUS_REFRESH_SECONDS (a
    Streamlit fragment, not the whole page)."""
    with user_errors("listing the fine-tuning jobs"):
        live = any(row["state"] not in TERMINAL_STATES for row in services.finetune_jobs(owner))
        st.fragment(_jobs, run_every=STATUS_REFRESH_SECONDS if live else None)(owner)


def _jobs(owner: str) -> None:
    with user_errors("listing the fine-tuning jobs"):
        rows = services.finetune_jobs(owner)
        if not rows:
            st.info("no fine-tuning job yet")
            return
        ids = [row["id"] for row in rows]
        labels = {row["id"]: services.job_label(row) for row in rows}
        wanted = st.session_state.get("ft-job")
        job_id = st.selectbox("Job", ids, index=ids.index(wanted) if wanted in ids else 0,
                              format_func=labels.get, key=f"ft-picker-{len(ids)}")
        st.session_state["ft-job"] = job_id
        status = services.finetune_status(job_id, owner=owner)
        if status.get("state") not in TERMINAL_STATES and st.button("Cancel this job", key="ft-cancel"):
            status = services.finetune_cancel(job_id, owner=owner)
        st.markdown(services.job_status_text(status))
        st.progress(services.job_progress(status))
        losses, metrics = services.job_curves(status)
        left, right = st.columns(2)
        if not losses.empty:
            left.caption("Training loss")
            left.line_chart(losses, x="epoch", y="value", color="series")
        if not metrics.empty:
            right.caption("Validation metrics")
            right.line_chart(metrics, x="epoch", y="value", color="series")
        archive = _model_archive(job_id, owner, status.get("updated"), status.get("state"))
        if archive is not None:
            name, data = archive
            st.download_button(f"Download the model ({name})", data, file_name=name, mime="application/zip",
                               key="ft-download")
        st.dataframe(services.job_table(rows), hide_index=True, column_order=services.JOB_TABLE_COLUMNS)


@st.cache_resource(max_entries=4, show_spinner=False)
def _model_archive(job_id: str, owner: str, updated, state) -> tuple[str, bytes] | None:
    """(file name, bytes) of a finished job's model zip, made once per job (not at every redraw; the bytes, because
    the services prune result files after a while); None before it finishes. Cached per owner too: the cache is
    shared by every session."""
    path = services.finished_model_archive(services.finetune_status(job_id, owner=owner))
    return None if path is None else (path.name, path.read_bytes())


def main() -> None:
    st.set_page_config(page_title="segcore", layout="wide")
    page = st.sidebar.radio("Page", PAGES, key="page")
    st.sidebar.caption("segcore: segmentation models from five papers, as an app. Models: " +
                       ", ".join(services.model_names()) if services.model_names() else "segcore: no model installed")
    {"Background removal": background_page, "Explore": explore_page, "Compare": compare_page,
     "Fine-tune": finetune_page}[page]()


main()
