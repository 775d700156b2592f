"""Fine-tuning jobs belong to whoever started them: two gradio_client Clients (two sessions) cannot see or cancel
each other's jobs, admin mode sees all, the queue caps refuse a Start with one line, statuses carry no server
paths; and a model fine-tuned while the app runs is accepted by /segment and /compare without a restart.
The Streamlit page keeps its owner in the URL (?owner=...).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from streamlit.testing.v1 import AppTest

from app import gradio_ui, services
from tests.app.bad_inputs import scene

SAMPLE = next(iter(services.SAMPLE_DATASETS))


@pytest.fixture(scope="module")
def clients(served_app, tmp_path_factory):
    """Two API clients of the same app: two sessions, so two owners."""
    return [Client(served_app, verbose=False, analytics_enabled=False,
                   download_files=str(tmp_path_factory.mktemp(f"downloads-{who}"))) for who in ("alice", "bob")]


def start(client, name: str, epochs, lr=0.003, **extra):
    """/finetune_start on the bundled sample at 64 px: (job id, status text, problems panel)."""
    return client.predict(None, SAMPLE, "scratch: unet", epochs, lr, 8, 64, False, name, api_name="/finetune_start",
                          **extra)


def status_of(client, job_id=None, **extra) -> dict:
    return client.predict(job_id, api_name="/finetune_status", **extra)[-1]


def no_server_path(value) -> bool:
    shown = json.dumps(value)
    return str(services.RUNS_DIR) not in shown and "/tmp/" not in shown


def test_clients_see_and_cancel_only_their_own_jobs_and_the_queue_is_capped(clients, monkeypatch):
    alice, bob = clients
    first, text, _ = start(alice, "alice-1", 200)
    second, _, _ = start(alice, "alice-2", 200)
    assert first and second and "alice-1" in text
    refused, _, problems = start(alice, "alice-3", 1)
    assert refused == "" and problems == ("**The fine-tune cannot start:**\n\n- you already have 2 fine-tuning job(s) "
                                          "queued or running, the most one person may have; wait for one to end or "
                                          "cancel one, then start again")

    # bob: none of alice's jobs, by listing, by id or by cancelling
    assert status_of(bob) == {}
    assert bob.predict(api_name="/finetune_status")[0] == "no fine-tuning job yet"
    with pytest.raises(AppError, match=f"no job '{first}' of yours; pick one of the known jobs: none"):
        status_of(bob, first)
    with pytest.raises(AppError, match=f"no job '{second}' of yours"):
        bob.predict(second, api_name="/finetune_cancel")
    with pytest.raises(AppError, match="nothing to cancel"):
        bob.predict(api_name="/finetune_cancel")
    assert services.finetune_status(second)["state"] == "queued"  # untouched

    # alice: her own jobs, newest first, without server paths, process ids or owner keys
    own = status_of(alice)
    assert own["id"] == second and status_of(alice, first)["name"] == "alice-1"
    assert not {"job_dir", "run_dir", "log_path", "data", "init_from", "model_dir", "pid", "owner"} & set(own)
    assert no_server_path(own)

    # a token passed as owner_token is an owner of its own, whichever Client passes it
    token = "bob-scripts-token-0123456789"
    bad, _, problems = start(bob, "bob-none", None, lr=None, owner_token=token)  # null numbers: a line each
    assert bad == "" and "- epochs must be a number, not None\n- learning rate must be a number, not None" in problems

    # the app-wide cap: one line too
    monkeypatch.setattr(services.job_manager(), "max_active", 2)
    refused, _, problems = start(bob, "bob-1", 1, owner_token=token)
    assert refused == "" and problems.endswith("- the app already has 2 fine-tuning jobs queued or running, its "
                                               "limit; wait a few minutes for some to end, then start again")
    monkeypatch.undo()

    # admin mode: every caller sees and may cancel every job
    monkeypatch.setattr(services, "_admin", True)
    assert status_of(bob)["id"] == second and status_of(bob, first)["id"] == first
    assert "cancelled" in bob.predict(second, api_name="/finetune_cancel")
    monkeypatch.setattr(services, "_admin", False)
    with pytest.raises(AppError, match="of yours"):
        status_of(bob, second)
    alice.predict(first, api_name="/finetune_cancel")
    for job_id in (first, second):
        assert services.job_manager().wait(job_id, timeout=90)["state"] == "cancelled"


def test_a_model_fine_tuned_while_the_app_runs_is_accepted_by_the_api(clients, tmp_path):
    alice, _ = clients
    before = services.model_names()
    job_id, _, _ = start(alice, "fresh", 1)
    assert services.job_manager().wait(job_id, timeout=180)["state"] == "finished"
    finished = status_of(alice, job_id)
    assert finished["fine_tuned_model"] == "fine-tuned/fresh" and no_server_path(finished)

    image, _ = scene(96, 96, seed=31)
    Image.fromarray(image).save(tmp_path / "photo.png")
    # the page was built before the model existed; its pickers do not refuse the new name
    outputs = alice.predict(handle_file(str(tmp_path / "photo.png")), "fine-tuned/fresh", False, "",
                            api_name="/segment")
    assert outputs[-1].startswith("fine-tuned/fresh (semantic)")
    gallery, *_ = alice.predict(handle_file(str(tmp_path / "photo.png")), ["fine-tuned/fresh", "squares-a"], None,
                                api_name="/compare")
    assert [item["caption"].split(":")[0] for item in gallery] == ["fine-tuned/fresh", "squares-a"]
    # an open page's pickers get the new model at the next refresh, and only when the catalogue changed
    updates = gradio_ui._refresh_models(before)
    assert "fine-tuned/fresh" in updates[1]["choices"] and updates[-1] == services.model_names()
    assert gradio_ui._refresh_models(services.model_names()) == (gradio_ui.gr.skip(),) * 5
    # an unknown name is refused by services, naming the installed models but no server folder
    with pytest.raises(AppError, match="unknown model 'nope'; available models: .*fine-tuned/fresh") as refused:
        alice.predict(handle_file(str(tmp_path / "photo.png")), "nope", False, "", api_name="/segment")
    assert "/tmp" not in str(refused.value) and "the app's weights folder" in str(refused.value)


def test_the_streamlit_page_lists_only_the_jobs_of_the_owner_in_its_url(app_dirs, monkeypatch):
    script = str(services.ROOT / "app" / "streamlit_app.py")
    alice_token, bob_token = "alice-browser-token-0123", "bob-browser-token-456789"
    job_id = services.finetune_start(sample=SAMPLE, base="scratch: unet", epochs=50, input_size=64, name="alice-job",
                                     owner=alice_token)["id"]
    services.finetune_cancel(job_id, owner=alice_token)
    services.job_manager().wait(job_id, timeout=90)

    def fine_tune_page(token: str | None) -> AppTest:
        app = AppTest.from_file(script, default_timeout=120)
        if token:
            app.query_params["owner"] = token
        app.run()
        app.sidebar.radio(key="page").set_value("Fine-tune").run()
        assert not app.exception, app.exception
        return app

    alice = fine_tune_page(alice_token)  # a reload keeps the URL, so the same token
    assert alice.dataframe[0].value["name"].tolist() == ["alice-job"]
    assert alice.query_params["owner"] == alice_token
    bob = fine_tune_page(bob_token)
    assert not bob.dataframe and "no fine-tuning job yet" in bob.info[0].value
    newcomer = fine_tune_page(None)  # a first visit gets a token of its own in its URL
    token = newcomer.query_params["owner"]
    assert len(token) >= 16 and token not in (alice_token, bob_token) and not newcomer.dataframe
    monkeypatch.setenv(services.ADMIN_ENV, "1")
    assert fine_tune_page(bob_token).dataframe[0].value["name"].tolist() == ["alice-job"]
