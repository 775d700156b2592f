"""The trainer through its public faces: the CLI reaching a high mIoU, exact resume, schedules, cancellation,
recipes and their errors."""

from __future__ import annotations

import csv
import json
import threading

import pytest
import torch
from safetensors.torch import load_file

import segcore
from segcore.cli import main
from segcore.engine.config import TrainConfig, load_recipe
from segcore.engine.stages import run_recipe
from segcore.engine.trainer import Trainer
from segcore.errors import ConfigError, SegcoreError
from tests.engine.shapes import write_shapes_dataset


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    return write_shapes_dataset(tmp_path_factory.mktemp("shapes"), count=64, size=64)


def _settings(**extra) -> list[str]:
    base = {"model": "unet", "model_kwargs.width": 8, "input_size": "[64, 64]", "augmentation": "none",
            "batch_size": 8, "lr": 0.01, "threads": 2}
    base.update(extra)
    return [part for key, value in base.items() for part in ("--set", f"{key}={value}")]


def test_cli_trains_a_small_model_to_high_miou(shapes_root, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--data", str(shapes_root), "--out", str(run), *_settings(epochs=12, best_metric="miou")])
    assert code == 0, capsys.readouterr().err
    with open(run / "metrics.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 12
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    best = max(float(row["miou"]) for row in rows)
    assert best >= 0.9, f"validation mIoU only reached {best:.3f}"
    assert (run / "curves.png").stat().st_size > 1000
    config = json.loads((run / "best" / "config.json").read_text())
    assert config["class_names"] == ["background", "disc", "square"]
    assert config["meta"]["metrics"]["best_value"] == pytest.approx(best)
    # The CLI's eval on the saved best model reproduces the validation number it was chosen by.
    capsys.readouterr()
    assert main(["eval", "--model", str(run / "best"), "--data", str(shapes_root), "--split", "val", "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["miou"] == pytest.approx(best, abs=1e-6)
    assert evaluated["images"] == 16


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_resume_continues_exactly(shapes_root, tmp_path, ema_decay):
    """4 epochs straight equal 2 epochs, an interruption, and a resumed 2 (poly schedule, warm-up, augmentation,
    and the weights' moving average, which last/ holds when it is on)."""
    settings = [f"data={shapes_root}", "model=unet", "model_kwargs.width=4", "input_size=[48, 48]", "batch_size=8",
                "lr=0.005", "threads=2", "warmup_iterations=3", "augmentation=portrait", "epochs=4", "val_every=2",
                f"ema_decay={ema_decay}"]
    straight = run_recipe(load_recipe(None, settings), tmp_path / "straight")
    assert straight.status == "finished" and straight.epochs_done == 4
    stop = threading.Event()

    def stop_after_second_epoch(event):
        if event.kind == "epoch" and event.epoch == 2:
            stop.set()

    first = run_recipe(load_recipe(None, settings), tmp_path / "split", callbacks=[stop_after_second_epoch],
                       stop_event=stop)
    assert first.status == "cancelled" and first.epochs_done == 2
    resumed = run_recipe(load_recipe(tmp_path / "split" / "recipe.yaml"), tmp_path / "split", resume=True)
    assert resumed.status == "finished" and resumed.epochs_done == 4
    a = load_file(str(tmp_path / "straight" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "last" / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs after resume"
    assert [row["train_loss"] for row in straight.history] == [row["train_loss"] for row in resumed.history]
    # the moving average has a file of its own (each file of a committed run under 25 MB), stamped with its step
    state = torch.load(tmp_path / "split" / "trainer_state.pt", weights_only=True)
    assert "ema" not in state
    if ema_decay:
        average = torch.load(tmp_path / "split" / "trainer_ema.pt", weights_only=True)
        assert average["step"] == state["step"] and average["ema"]["n_averaged"] == state["step"]
    else:
        assert not (tmp_path / "split" / "trainer_ema.pt").exists()


def test_resume_reads_an_average_kept_inside_the_trainer_state_and_refuses_one_of_another_step(shapes_root,
                                                                                               tmp_path, caplog):
    """Runs saved before the average had its own file keep it inside trainer_state.pt (assets/training/camvid-enet
    at epoch 130): they resume exactly. An average file from another step than the trainer state (a crash between
    the two writes) is not used: the average starts again from the restored weights, with a warning."""
    settings = [f"data={shapes_root}", "model=unet", "model_kwargs.width=4", "input_size=[48, 48]", "batch_size=8",
                "lr=0.005", "threads=2", "augmentation=none", "epochs=2", "val_every=2", "ema_decay=0.9"]
    straight = run_recipe(load_recipe(None, settings), tmp_path / "straight")
    stop = threading.Event()
    run = tmp_path / "split"
    first = run_recipe(load_recipe(None, settings), run, stop_event=stop,
                       callbacks=[lambda event: stop.set() if event.kind == "epoch" and event.epoch == 1 else None])
    assert first.epochs_done == 1
    state = torch.load(run / "trainer_state.pt", weights_only=True)
    average = torch.load(run / "trainer_ema.pt", weights_only=True)
    torch.save({**state, "ema": average["ema"]}, run / "trainer_state.pt")  # the older layout
    (run / "trainer_ema.pt").unlink()
    assert run_recipe(load_recipe(run / "recipe.yaml"), run, resume=True).epochs_done == 2
    a = load_file(str(tmp_path / "straight" / "last" / "model.safetensors"))
    b = load_file(str(run / "last" / "model.safetensors"))
    assert straight.epochs_done == 2 and all(torch.equal(a[name], b[name]) for name in a)
    trainer = Trainer(load_recipe(run / "recipe.yaml"), run)
    state = torch.load(run / "trainer_state.pt", weights_only=True)
    assert "ema" not in state and trainer._saved_average(state) is not None  # resaved in the new layout
    stale = torch.load(run / "trainer_ema.pt", weights_only=True)
    torch.save({**stale, "step": state["step"] - 1}, run / "trainer_ema.pt")
    with caplog.at_level("WARNING", logger="segcore.engine.trainer"):
        assert trainer._saved_average(state) is None
    assert "the moving average starts again from the restored weights" in caplog.text


def test_ema_keeps_the_moving_average_of_every_step_and_validates_it(shapes_root, tmp_path):
    """With ema_decay d, last/ holds e_1 = w_1, e_t = d e_(t-1) + (1 - d) w_t over the weights and BN statistics
    after every step (computed here by hand from the raw model), and validation scores those averaged weights."""
    decay = 0.6
    config = load_recipe(None, [f"data={shapes_root}", "model=unet", "model_kwargs.width=4", "input_size=[48, 48]",
                                "batch_size=8", "lr=0.01", "threads=2", "augmentation=none", "epochs=2",
                                "val_every=2", f"ema_decay={decay}"])
    expected: dict[str, torch.Tensor] = {}
    trainer = None

    def average_by_hand(event):
        if event.kind != "step":
            return
        for name, tensor in trainer.model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            value = tensor.detach().double()
            expected[name] = value.clone() if name not in expected else decay * expected[name] + (1 - decay) * value

    trainer = Trainer(config, tmp_path / "run", callbacks=[average_by_hand])
    result = trainer.fit()
    assert result.status == "finished" and result.history[-1]["step"] >= 4
    saved = load_file(str(tmp_path / "run" / "last" / "model.safetensors"))
    raw = trainer.model.state_dict()
    moved = 0
    for name, value in expected.items():
        torch.testing.assert_close(saved[name].double(), value, rtol=0, atol=1e-5, msg=f"{name}: not the average")
        moved += not torch.allclose(saved[name], raw[name].float())
    assert moved > len(expected) // 2  # the average is not the raw weights
    from segcore.engine.evaluate import evaluate

    rescored = evaluate(segcore.Segmenter.from_pretrained(tmp_path / "run" / "last", device="cpu"), trainer.val_set)
    assert rescored["miou"] == pytest.approx(result.history[-1]["miou"], abs=1e-6)  # validation scored the average
    with pytest.raises(ConfigError, match="ema_decay must lie in"):
        load_recipe(None, [f"data={shapes_root}", "ema_decay=1.0"])


def test_a_recipes_threads_hold_through_validation_despite_segcore_threads(shapes_root, tmp_path, monkeypatch):
    """SEGCORE_THREADS is the default for predictions; a recipe's `threads` is this training's own choice, so the
    Segmenter that validates must not switch the rest of the run to the environment's count."""
    from segcore import inference

    monkeypatch.setattr(inference, "_threads", None)
    monkeypatch.setenv(inference.THREADS_ENV, "1")
    config = load_recipe(None, [f"data={shapes_root}", "model=unet", "model_kwargs.width=4", "input_size=[48, 48]",
                                "augmentation=none", "epochs=1", "threads=2"])
    trainer = Trainer(config, tmp_path / "run")
    trainer.validate()
    assert torch.get_num_threads() == 2 and inference.get_num_threads() == 2


def test_resume_equals_uninterrupted_through_the_cli(shapes_root, tmp_path, capsys):
    # A constant learning rate, so that extending a finished 2-epoch run to 4 keeps the schedule unchanged.
    args = ["--data", str(shapes_root), *_settings(**{"model_kwargs.width": 4, "input_size": "[48, 48]",
                                                      "lr_power": 0, "augmentation": "scene"})]
    assert main(["train", "--out", str(tmp_path / "a"), *args, "--set", "epochs=4"]) == 0
    assert main(["train", "--out", str(tmp_path / "b"), *args, "--set", "epochs=2"]) == 0
    assert main(["train", "--resume", str(tmp_path / "b"), "--set", "epochs=4"]) == 0
    a = load_file(str(tmp_path / "a" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "last" / "model.safetensors"))
    assert all(torch.equal(a[name], b[name]) for name in a)
    with open(tmp_path / "b" / "metrics.csv") as stream:
        assert [row["epoch"] for row in csv.DictReader(stream)] == ["1", "2", "3", "4"]


def test_encoder_only_phase_leaves_the_decoder_untouched(shapes_root, tmp_path):
    config = load_recipe(None, [f"data={shapes_root}", "model=sinet", "input_size=[64, 64]", "augmentation=none",
                                "epochs=1", "encoder_only_epochs=1", "threads=2", "val_split=null"])
    trainer = Trainer(config, tmp_path / "run")
    before = {name: tensor.clone() for name, tensor in trainer.model.decoder.state_dict().items()}
    encoder_before = {name: tensor.clone() for name, tensor in trainer.model.encoder.state_dict().items()}
    trainer.fit()
    after = trainer.model.decoder.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before if "running" not in name and "num_batches" not in name)
    assert any(not torch.equal(encoder_before[name], tensor) for name, tensor in trainer.model.encoder.state_dict().items())


def test_frozen_encoder_schedule(shapes_root, tmp_path):
    config = load_recipe(None, [f"data={shapes_root}", "model=unet_resnet50", "model_kwargs.encoder=resnet18",
                                "input_size=[64, 64]", "augmentation=none", "epochs=1", "frozen_encoder_epochs=-1",
                                "threads=2", "val_split=null", "train_fraction=0.25"])
    trainer = Trainer(config, tmp_path / "run")
    encoder_parameters = {name: p.clone() for name, p in trainer.model.named_parameters() if name.startswith("encoder")}
    assert encoder_parameters, "unet_resnet50 names its encoder parameters encoder.*"
    trainer.fit()
    for name, parameter in trainer.model.named_parameters():
        if name in encoder_parameters:
            assert torch.equal(parameter, encoder_parameters[name]), f"{name} changed while frozen"


def test_cancel_stops_without_writing_a_partial_epoch(shapes_root, tmp_path):
    stop = threading.Event()
    seen = []

    def cancel_after_three_steps(event):
        seen.append(event.kind)
        if event.kind == "step" and event.step == 3:
            stop.set()

    config = load_recipe(None, [f"data={shapes_root}", "model=unet", "model_kwargs.width=4", "input_size=[48, 48]",
                                "epochs=3", "threads=2"])
    result = run_recipe(config, tmp_path / "run", callbacks=[cancel_after_three_steps], stop_event=stop)
    assert result.status == "cancelled" and result.epochs_done == 0
    assert seen[0] == "start" and seen.count("step") == 3 and seen[-1] == "end"
    assert not (tmp_path / "run" / "last").exists()


def test_events_carry_eta_device_and_metrics(shapes_root, tmp_path):
    events = []
    config = load_recipe(None, [f"data={shapes_root}", "model=unet", "model_kwargs.width=4", "input_size=[48, 48]",
                                "epochs=2", "threads=2", "train_fraction=0.5"])
    result = run_recipe(config, tmp_path / "run", callbacks=[events.append])
    steps = [event for event in events if event.kind == "step"]
    assert steps and all(event.eta_seconds is not None and event.device == "cpu" for event in steps)
    assert steps[-1].eta_seconds == pytest.approx(0.0)
    validations = [event for event in events if event.kind == "validation"]
    assert len(validations) == 2 and "miou" in validations[0].metrics
    # The app's job list shows the metric best/ is chosen by from these events, not from its own guess.
    assert [event.best_metric for event in validations] == ["miou", "miou"] == [result.best_metric] * 2
    assert sum(event.kind == "epoch" for event in events) == 2


def test_fine_tuning_from_a_saved_model_with_other_classes(shapes_root, tmp_path):
    source = segcore.create_model("unet", num_classes=5, width=4)
    segcore.save_pretrained(source, tmp_path / "source")
    config = load_recipe(None, [f"data={shapes_root}", "model=unet", "model_kwargs.width=4", "input_size=[48, 48]",
                                "epochs=1", "threads=2", f"init_from={tmp_path / 'source'}", "lr=1e-9"])
    trainer = Trainer(config, tmp_path / "run")
    assert trainer.model.classifier.out_channels == 3
    assert torch.equal(trainer.model.stem[0][0].weight, source.stem[0][0].weight), "matching tensors are copied"


def test_recipe_errors_name_the_problem(tmp_path):
    with pytest.raises(SegcoreError, match="unknown setting.*epohcs.*known settings"):
        load_recipe(None, ["epohcs=3"])
    with pytest.raises(SegcoreError, match="optimizer must be adam, adamw or sgd"):
        load_recipe(None, ["optimizer=lbfgs"])
    with pytest.raises(SegcoreError, match="write key=value"):
        load_recipe(None, ["epochs"])
    (tmp_path / "bad.yaml").write_text("- a list\n")
    with pytest.raises(SegcoreError, match="must be a mapping"):
        load_recipe(tmp_path / "bad.yaml")
    with pytest.raises(SegcoreError, match="no training data"):
        Trainer(TrainConfig(), tmp_path / "run")


@pytest.mark.parametrize("override, message", [
    ("lr=1e9", r"lr must lie in \(0, 10\]"), ("lr=.nan", "lr must be a finite number"),
    ("input_size=[100000, 100000]", "input_size must be .* 32..4096"), ("batch_size=100000", "batch_size must lie"),
    ("weight_decay=-1", "weight_decay must be 0 or more"),
])
def test_recipe_settings_out_of_bounds_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        load_recipe(None, [override])


def test_an_exploding_loss_stops_the_run_with_a_message(shapes_root, tmp_path, monkeypatch):
    """A run whose loss blows up (here: scaled up from the 13th step on) stops, rather than training to the end
    and shipping a "best" model."""
    real = Trainer.compute_loss
    steps = []

    def blowing_up(self, network, batch, epoch):
        steps.append(epoch)
        loss = real(self, network, batch, epoch)
        return loss * 1e7 if len(steps) > 12 else loss

    monkeypatch.setattr(Trainer, "compute_loss", blowing_up)
    config = load_recipe(None, ["model=unet", "model_kwargs.width=4", "input_size=[64, 64]", "augmentation=none",
                                "batch_size=4", "epochs=3", "threads=1", f"data={shapes_root}"])
    with pytest.raises(SegcoreError, match=r"the loss exploded from about .* to .* at epoch \d; lower lr"):
        Trainer(config, tmp_path / "run").fit()
    assert len(steps) == 13


def test_train_cli_errors_exit_1(tmp_path, capsys):
    assert main(["train", "--set", "model=unet", "--data", str(tmp_path / "missing")]) == 1
    assert "error:" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path)]) == 1
    assert "not a run folder" in capsys.readouterr().err


def test_recipes_in_the_repository_parse():
    from pathlib import Path

    recipes = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))
    for recipe in recipes:
        config = load_recipe(recipe)
        for _, stage in config.stage_configs():
            assert stage.model in segcore.list_models()


def test_early_stopping_after_patience_validations_without_improvement(shapes_root, tmp_path):
    # lr 0 cannot improve anything after the first validation: two stale validations stop the run.
    config = load_recipe(None, [f"data={shapes_root}", "model=unet", "model_kwargs.width=4", "input_size=[48, 48]",
                                "epochs=10", "threads=2", "lr=1.0e-12", "early_stopping_patience=2",
                                "train_fraction=0.25"])
    result = run_recipe(config, tmp_path / "run")
    assert result.status == "stopped_early" and result.epochs_done == 3


def test_saliency_training_and_eval_report_saliency_metrics(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "osie-like"
    for folder in ("images", "masks", "fixations"):
        (root / folder).mkdir(parents=True)
    rows, columns = np.mgrid[:48, :64]
    for number in range(1001, 1013):
        image = rng.integers(0, 60, size=(48, 64, 3), dtype=np.uint8)
        cy, cx = rng.integers(10, 38), rng.integers(10, 54)
        image[cy - 4 : cy + 4, cx - 4 : cx + 4] = 255  # people look at the bright patch
        density = np.exp(-((rows - cy) ** 2 + (columns - cx) ** 2) / (2 * 6.0**2))
        fixations = np.zeros((48, 64), dtype=np.uint8)
        fixations[cy, cx] = fixations[cy + 1, cx - 1] = 255
        Image.fromarray(image).save(root / "images" / f"{number}.png")
        Image.fromarray((density * 255).astype(np.uint8)).save(root / "masks" / f"{number}.png")
        Image.fromarray(fixations).save(root / "fixations" / f"{number}.png")
    (root / "split.txt").write_text("".join(f"{n} {'val' if n > 1009 else 'train'}\n" for n in range(1001, 1013)))
    run = tmp_path / "run"
    code = main(["train", "--data", str(root), "--out", str(run), "--set", "model=unet_resnet50",
                 "--set", "model_kwargs.encoder=resnet18", "--set", "model_kwargs.decoder_scale=0.5", "--set", "dataset=saliency", "--set", "loss=saliency",
                 "--set", "augmentation=saliency", "--set", "input_size=[48, 64]", "--set", "epochs=2",
                 "--set", "batch_size=3", "--set", "threads=2"])
    assert code == 0, capsys.readouterr().err
    config = json.loads((run / "best" / "config.json").read_text())
    assert config["task"] == "saliency" and config["num_classes"] == 1
    capsys.readouterr()
    assert main(["eval", "--model", str(run / "best"), "--data", str(root), "--split", "val", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert {"cc", "nss", "kld", "sim", "auc_judd"} <= set(metrics) and metrics["images"] == 3
    assert all(np.isfinite(metrics[key]) for key in ("cc", "nss", "kld", "sim", "auc_judd"))
    # Shipping a saliency model measures the centre-bias baseline on the same images and puts both in the card.
    assert main(["eval", "--baseline", "center-bias", "--data", str(root), "--split", "val", "--json"]) == 0
    center_bias = json.loads(capsys.readouterr().out)
    assert main(["ship", str(run / "best"), "--name", "tiny-saliency", "--data", str(root), "--split", "val",
                 "--licence", "Generated data.", "--weights-dir", str(tmp_path / "weights")]) == 0
    shipped = json.loads((tmp_path / "weights" / "tiny-saliency" / "config.json").read_text())["meta"]["shipped"]
    for key in ("cc", "nss", "kld", "sim", "auc_judd"):
        assert shipped["metrics"][key] == pytest.approx(metrics[key])
        assert shipped["baseline"][key] == pytest.approx(center_bias[key])
    card = (tmp_path / "weights" / "tiny-saliency" / "README.md").read_text()
    assert "center-bias (sigma 0.25 of each side) baseline" in card
    assert f"| kld (lower is better) | {metrics['kld']:.4f} | {center_bias['kld']:.4f} |" in card


def test_training_refuses_data_that_validate_rejects(shapes_root, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(shapes_root, broken)
    (broken / "images" / "0005.png").write_bytes(b"")  # an empty upload
    code = main(["train", "--data", str(broken), "--out", str(tmp_path / "run"), *_settings(epochs=1)])
    err = capsys.readouterr().err
    assert code == 1 and "cannot be trained on" in err and "0005.png" in err
    assert not (tmp_path / "run").exists()


def test_center_bias_baseline_scores_a_centred_gaze_dataset(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from segcore.engine.evaluate import CenterBias

    root = tmp_path / "centred"
    for folder in ("images", "masks", "fixations"):
        (root / folder).mkdir(parents=True)
    rows, columns = np.mgrid[:40, :60]
    for number in (1601, 1602):
        density = np.exp(-(((rows - 19.5) / 10) ** 2 + ((columns - 29.5) / 15) ** 2) / 2)
        fixations = np.zeros((40, 60), dtype=np.uint8)
        fixations[20, 30] = 255
        Image.fromarray(np.zeros((40, 60, 3), dtype=np.uint8)).save(root / "images" / f"{number}.png")
        Image.fromarray((density * 255).astype(np.uint8)).save(root / "masks" / f"{number}.png")
        Image.fromarray(fixations).save(root / "fixations" / f"{number}.png")
    gaussian = CenterBias(0.25).predict(np.zeros((40, 60, 3), dtype=np.uint8)).probabilities[0]
    assert gaussian.shape == (40, 60) and np.unravel_index(gaussian.argmax(), gaussian.shape) in [(19, 29), (20, 30), (19, 30), (20, 29)]
    assert main(["eval", "--baseline", "center-bias", "--data", str(root), "--split", "test", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["images"] == 2 and metrics["cc"] > 0.99 and metrics["auc_judd"] > 0.99
    assert main(["eval", "--data", str(root), "--split", "test"]) == 1
    assert "--baseline center-bias" in capsys.readouterr().err


def test_encoder_phase_validates_the_encoder_prediction_without_choosing_best(shapes_root, tmp_path):
    config = load_recipe(None, [f"data={shapes_root}", "model=sinet", "input_size=[64, 64]", "augmentation=none",
                                "epochs=2", "encoder_only_epochs=1", "threads=2", "train_fraction=0.5"])
    events = []
    result = run_recipe(config, tmp_path / "run", callbacks=[events.append])
    first, second = result.history
    assert "encoder_miou" in first and "miou" not in first
    # The encoder phase chooses no best/, so its validation names no metric to choose by.
    assert [event.best_metric for event in events if event.kind == "validation"] == [None, "miou"]
    assert "miou" in second and result.best_value == pytest.approx(second["miou"])
    best = json.loads((tmp_path / "run" / "best" / "config.json").read_text())
    assert best["meta"]["training"]["epochs_done"] == 2


def test_multi_source_training_validates_each_source_and_chooses_best_on_their_mean(shapes_root, tmp_path):
    other = write_shapes_dataset(tmp_path / "other", count=24, size=48, seed=7)
    sources = [{"name": "big", "data": str(shapes_root), "weight": 0.75},
               {"name": "small", "data": str(other), "weight": 0.25}]
    config = TrainConfig.from_dict({"model": "unet", "model_kwargs": {"width": 4}, "input_size": [48, 48],
                                    "sources": sources, "epoch_size": 40, "epochs": 2, "batch_size": 8,
                                    "threads": 2, "augmentation": "none", "resize": "letterbox", "composite": {},
                                    "best_metric": "miou"})
    trainer = Trainer(config, tmp_path / "run")
    assert len(trainer.train_set) == 40 and set(trainer.val_set) == {"big", "small"}
    counts = [sum(trainer.train_set.source_of(p) == name for p in range(40)) for name in ("big", "small")]
    assert counts == [30, 10]
    result = trainer.fit()
    with open(tmp_path / "run" / "metrics.csv") as stream:
        rows = list(csv.DictReader(stream))
    for row in rows:
        assert float(row["miou"]) == pytest.approx((float(row["big/miou"]) + float(row["small/miou"])) / 2)
    assert result.best_value == pytest.approx(max(float(row["miou"]) for row in rows))
    config_json = json.loads((tmp_path / "run" / "best" / "config.json").read_text())
    assert config_json["resize"] == "letterbox"
    assert "big=folder" in config_json["meta"]["training"]["data"]


def test_source_list_errors_name_the_problem():
    with pytest.raises(SegcoreError, match="source 1 needs a name and data"):
        load_recipe(None, ["sources=[{weight: 1}]"])
    with pytest.raises(SegcoreError, match="unknown key.*wieght"):
        load_recipe(None, ["sources=[{name: a, data: x, wieght: 2}]"])
    with pytest.raises(SegcoreError, match="appears twice"):
        load_recipe(None, ["sources=[{name: a, data: x}, {name: a, data: y}]"])
    with pytest.raises(SegcoreError, match="add up to 0"):
        load_recipe(None, ["sources=[{name: a, data: x, weight: 0}]"])
    with pytest.raises(SegcoreError, match="resize must be one of"):
        load_recipe(None, ["resize=squash"])
    with pytest.raises(SegcoreError, match="source 'a'.*no such dataset folder"):
        Trainer(load_recipe(None, ["sources=[{name: a, data: /nonexistent/folder}]"]), "/tmp/unused-run")


def test_eval_on_a_recipes_sources_reproduces_validation_and_records_each_source(shapes_root, tmp_path, capsys):
    other = write_shapes_dataset(tmp_path / "other", count=24, size=48, seed=7)
    recipe = tmp_path / "two.yaml"
    recipe.write_text(json.dumps({
        "model": "unet", "model_kwargs": {"width": 4}, "input_size": [48, 48], "augmentation": "none",
        "sources": [{"name": "a", "data": str(shapes_root)}, {"name": "b", "data": str(other)}],
        "epoch_size": 24, "epochs": 1, "batch_size": 8, "threads": 2, "best_metric": "miou"}))
    run = tmp_path / "run"
    assert main(["train", "--recipe", str(recipe), "--out", str(run)]) == 0, capsys.readouterr().err
    with open(run / "metrics.csv") as stream:
        row = list(csv.DictReader(stream))[-1]
    record = tmp_path / "record.json"
    capsys.readouterr()
    assert main(["eval", "--model", str(run / "best"), "--recipe", str(recipe), "--name", "tiny",
                 "--record", str(record)]) == 0, capsys.readouterr().err
    assert "a miou" in capsys.readouterr().out
    saved = json.loads(record.read_text())
    assert saved["model"] == "tiny" and saved["split"] == "val" and set(saved["sources"]) == {"a", "b"}
    assert saved["sources"]["a"]["miou"] == pytest.approx(float(row["a/miou"]), abs=1e-6)
    assert saved["miou"] == pytest.approx(float(row["miou"]), abs=1e-6)
    assert saved["sources"]["b"]["images"] == 6
    # Under another resize policy the same model scores differently, and the record says which policy it was.
    assert main(["eval", "--model", str(run / "best"), "--recipe", str(recipe), "--resize", "fixed", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["resize"] == "fixed"
    assert main(["eval", "--model", str(run / "best"), "--recipe", str(recipe), "--data", str(other)]) == 1
    assert "not both" in capsys.readouterr().err


def test_bad_composite_settings_name_the_problem(shapes_root, tmp_path):
    settings = [f"sources=[{{name: a, data: {shapes_root}}}]", "model=unet", "input_size=[48, 48]"]
    with pytest.raises(SegcoreError, match="composite: .*zoom_range"):
        Trainer(load_recipe(None, settings + ["composite={zoom_range: [0.5, 2.0]}"]), tmp_path / "run")
    with pytest.raises(SegcoreError, match="composite: .*paste_chance"):
        Trainer(load_recipe(None, settings + ["composite={paste_chance: 1}"]), tmp_path / "run")


@pytest.mark.parametrize("setting, model, able", [("encoder_only_epochs=1", "unet", "sinet"),
                                                  ("frozen_encoder_epochs=-1", "unet", "unet_resnet50")])
def test_schedules_need_the_declared_capability(shapes_root, tmp_path, setting, model, able):
    config = load_recipe(None, [f"data={shapes_root}", f"model={model}", "model_kwargs.width=4", "input_size=[48, 48]",
                                "epochs=1", "threads=2", setting])
    with pytest.raises(ConfigError, match=rf"needs a model with the \w+ capability \({able}\), not {model}; set"):
        Trainer(config, tmp_path / "run")


def test_held_out_validation_images_are_the_same_whatever_the_runs_seed(shapes_root):
    """Stages that start from one another must hold out the same images: a split that followed the run's seed let
    a later stage validate on images an earlier one trained on."""
    from segcore.engine.data import build_datasets

    def held_out(seed: int, **extra) -> tuple[list[str], list[str]]:
        kwargs = {"val_fraction": 0.25, **extra}
        config = TrainConfig.from_dict({
            "model": "unet", "model_kwargs": {"width": 4}, "input_size": [48, 48], "epoch_size": 8,
            "sources": [{"name": "shapes", "data": str(shapes_root), "val_split": None, "dataset_kwargs": kwargs}],
            "augmentation": "none", "composite": {}, "seed": seed})
        train_set, val_sets, _ = build_datasets(config)
        validation = val_sets["shapes"]
        names = [validation.dataset.names[index] for index in validation.indices]
        source = train_set.sources[0].dataset
        trained = [source.dataset.names[index] for index in source.indices]
        return names, trained

    first, trained = held_out(seed=0)
    assert len(first) == 12 and not set(first) & set(trained)
    assert held_out(seed=9)[0] == first  # another run seed: the same held-out images
    assert held_out(seed=0, val_seed=3)[0] != first  # a dataset's own val_seed picks another split


def test_train_plus_val_trains_on_both_splits(shapes_root, tmp_path):
    """The papers' final protocol: once settings are fixed on val, the shipped model trains on train and val."""
    from segcore.engine.data import build_datasets, open_dataset

    train, val = (open_dataset("folder", str(shapes_root), split) for split in ("train", "val"))
    joined = open_dataset("folder", str(shapes_root), "train+val")
    assert joined.names == train.names + val.names and len(joined) == len(train) + len(val)
    assert joined.class_names == train.class_names
    index = len(train)  # the first val pair, read through the joined set
    assert (joined.load(index)[1] == val.load(0)[1]).all()
    config = TrainConfig.from_dict({"model": "unet", "model_kwargs": {"width": 4}, "data": str(shapes_root),
                                    "train_split": "train+val", "val_split": "val", "input_size": [48, 48],
                                    "augmentation": "none"})
    train_set, val_set, info = build_datasets(config)
    assert info["train_images"] == len(joined) and len(val_set) == len(val)
    assert "split=train+val" in info["description"]
    for bad in ("train+", "train+train", "+val"):
        with pytest.raises(ConfigError, match="join distinct split names"):
            open_dataset("folder", str(shapes_root), bad)
