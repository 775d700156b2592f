"""Shipping a trained model: measured on a named split, written with a card, listed in the docs table."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import segcore
from segcore.cli import main
from segcore.engine.data import open_dataset
from segcore.engine.evaluate import evaluate
from segcore.inference import preferred_runtime
from segcore.reports import shipped_table
from segcore.zoo import shipped_models
from tests.conftest import make_square_scene


def test_ship_writes_weights_config_and_a_card_with_measured_metrics(trained_model_dir, square_dataset, tmp_path, capsys):
    weights = tmp_path / "weights"
    code = main(["ship", str(trained_model_dir), "--name", "tiny-squares", "--data", str(square_dataset),
                 "--split", "test", "--licence", "Generated data, public domain.", "--weights-dir", str(weights)])
    assert code == 0, capsys.readouterr().err
    folder = weights / "tiny-squares"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    shipped = json.loads((folder / "config.json").read_text())["meta"]["shipped"]
    assert shipped["split"] == "test" and shipped["metrics"]["images"] == 4
    assert shipped["weights_dtype"] == "float32", "a tiny model gains nothing from float16"
    capsys.readouterr()
    assert main(["eval", "--model", str(folder), "--data", str(square_dataset), "--split", "test", "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["fg_iou"] == pytest.approx(shipped["metrics"]["fg_iou"])
    assert evaluated["fg_iou"] > 0.8
    card = (folder / "README.md").read_text()
    assert "# tiny-squares" in card and "Generated data, public domain." in card
    assert f"{shipped['metrics']['fg_iou'] * 100:.2f} %" in card
    # what a user waits for (a photo of the split at full size, labels + alpha), beside the network alone
    # timed in both runtimes; the app leaves ONNX Runtime (its default) only for a clearly faster torch
    timings = shipped["end_to_end_ms_by_runtime"]
    assert set(timings) == {"torch", "onnxruntime"} and min(timings.values()) > 0
    chosen = "torch" if timings["onnxruntime"] >= 1.2 * timings["torch"] else "onnxruntime"
    other = ({"torch", "onnxruntime"} - {chosen}).pop()
    assert shipped["end_to_end_runtime"] == chosen and shipped["end_to_end_ms"] == timings[chosen]
    config = json.loads((folder / "config.json").read_text())
    assert config.get("runtime", "onnxruntime") == chosen and preferred_runtime(config) == chosen
    assert (f"| end to end, one photo of this split at full size (decoded RGB in, labels + alpha out), 1 thread, "
            f"{chosen} (median of 20; the runtime the app uses) | {timings[chosen]:.1f} ms |") in card
    assert f"| the same in {other} | {timings[other]:.1f} ms |" in card
    assert preferred_runtime({**config, "runtime": "torch"}) == "torch"
    assert preferred_runtime({key: value for key, value in config.items() if key != "runtime"}) == "onnxruntime"
    assert "runtime" not in config or config["runtime"] == "torch"  # written only where it changes the default
    assert "| network only, one image at the input size, 2 threads, torch |" in card
    table = shipped_table(weights)
    assert "| tiny-squares | semantic | unet |" in table and "(test)" in table
    assert [entry.name for entry in shipped_models(weights)] == ["tiny-squares"]


def test_ship_card_names_the_hardware_and_notes_given(trained_model_dir, square_dataset, tmp_path):
    weights = tmp_path / "weights"
    assert main(["ship", str(trained_model_dir), "--name", "tiny", "--data", str(square_dataset), "--split", "test",
                 "--licence", "x", "--weights-dir", str(weights), "--hardware", "NVIDIA H100 80GB HBM3 (lent)",
                 "--notes", "trained on a 0.4-scale copy", "--class-names", "background", "red square"]) == 0
    card = (weights / "tiny" / "README.md").read_text()
    assert "hardware: NVIDIA H100 80GB HBM3 (lent)" in card and "- notes: trained on a 0.4-scale copy" in card
    assert "classes: background, red square." in card
    config = json.loads((weights / "tiny" / "config.json").read_text())
    assert config["meta"]["shipped"]["hardware"].startswith("NVIDIA")
    assert config["class_names"] == ["background", "red square"]
    assert segcore.Segmenter.from_pretrained(weights / "tiny").class_names == ["background", "red square"]


def test_ship_with_test_time_augmentation_measures_with_it_and_records_it(trained_model_dir, square_dataset,
                                                                         tmp_path):
    weights = tmp_path / "weights"
    assert main(["ship", str(trained_model_dir), "--name", "flipped", "--data", str(square_dataset), "--split",
                 "test", "--licence", "x", "--weights-dir", str(weights), "--tta", "flip",
                 "--recipe", "recipes/flipped-stage3.yaml"]) == 0
    config = json.loads((weights / "flipped" / "config.json").read_text())
    assert config["tta"] == "flip"
    card = (weights / "flipped" / "README.md").read_text()
    assert "Runs with test-time augmentation `flip`" in card and "- recipe: `recipes/flipped-stage3.yaml`" in card
    # The card's metrics are those of the flipped predictions, which `eval` (the model's own setting) reproduces.
    segmenter = segcore.Segmenter.from_pretrained(weights / "flipped", device="cpu")
    assert segmenter.tta.spec == "flip"
    dataset = open_dataset("folder", str(square_dataset), "test", evaluation=True)
    assert evaluate(segmenter, dataset)["miou"] == pytest.approx(config["meta"]["shipped"]["metrics"]["miou"])
    assert "Runs with test-time" not in (_ship_plain(trained_model_dir, square_dataset, weights) / "README.md").read_text()


def _ship_plain(model_dir, data, weights):
    assert main(["ship", str(model_dir), "--name", "plain", "--data", str(data), "--split", "test", "--licence", "x",
                 "--weights-dir", str(weights)]) == 0
    return weights / "plain"


def test_ship_refuses_a_class_name_count_that_does_not_match(trained_model_dir, square_dataset, tmp_path, capsys):
    assert main(["ship", str(trained_model_dir), "--name", "tiny", "--data", str(square_dataset), "--split", "test",
                 "--licence", "x", "--weights-dir", str(tmp_path / "weights"), "--class-names", "person"]) == 1
    assert "1 class names given (person) for a model with 2 classes" in capsys.readouterr().err
    assert not (tmp_path / "weights").exists()


@pytest.mark.parametrize("name, kwargs, switch", [
    ("bisenet", {"backbone": "xception39"}, "aux_heads"),
    ("deeplabv3", {"backbone": "resnet50", "aux_head": True}, "aux_head"),
])
def test_shipping_leaves_out_training_only_heads_and_predicts_the_same(tmp_path, name, kwargs, switch):
    import torch

    import segcore
    from segcore.ship import without_training_heads

    torch.manual_seed(0)
    model = segcore.create_model(name, num_classes=3, **kwargs)
    with torch.no_grad():  # non-trivial batch-norm statistics, so eval mode is not the identity on them
        model.train()(torch.randn(4, 3, 64, 64))
    model.eval()
    slim = without_training_heads(model)
    assert slim is not model and slim.segcore_config["model_kwargs"][switch] is False
    dropped = set(model.state_dict()) - set(slim.state_dict())
    assert dropped and all(key.startswith(f"{switch}.") for key in dropped)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x)["out"], slim(x)["out"])
    segcore.save_pretrained(slim, tmp_path / "slim", input_size=(64, 64))
    loaded = segcore.load_pretrained(tmp_path / "slim").eval()
    with torch.no_grad():
        assert torch.equal(loaded(x)["out"], slim(x)["out"])
    assert without_training_heads(loaded) is loaded, "nothing left to remove"
    sinet = segcore.create_model("sinet", num_classes=2)
    assert without_training_heads(sinet) is sinet, "a model without the switch is shipped as it is"


def test_shipped_table_says_when_nothing_ships(tmp_path):
    assert "(none shipped yet)" in shipped_table(tmp_path)


def test_beating_the_baseline_means_lower_kld_and_higher_everything_else():
    from segcore.reports import beats_baseline

    baseline = {"name": "center-bias", "cc": 0.3, "kld": 1.3, "images": 100}
    assert beats_baseline({"cc": 0.4, "kld": 1.0}, baseline) == {"cc": True, "kld": True}
    assert beats_baseline({"cc": 0.3, "kld": 1.4}, baseline) == {"cc": False, "kld": False}


def test_ship_refuses_weights_over_25_mb_before_writing_anything(square_dataset, tmp_path):
    import segcore
    from segcore.checkpoint import save_pretrained
    from segcore.errors import SegcoreError
    from segcore.ship import ship_model

    torch_model = segcore.create_model("unet", num_classes=2)  # 31.0 M parameters: 59 MB even in float16
    save_pretrained(torch_model, tmp_path / "big", class_names=["background", "foreground"], input_size=(64, 64))
    weights = tmp_path / "weights"
    with pytest.raises(SegcoreError, match="over the 25 MB"):
        ship_model(tmp_path / "big", "big", data=str(square_dataset), split="test", licence="x", weights_dir=weights)
    assert not weights.exists() or not any(weights.iterdir())


def _fake_run(root, name, model_dir, recipe: dict, stage_rows: dict):
    """A run folder as `segcore train` leaves it: recipe.yaml, each stage's metrics.csv, the model in best/."""
    import shutil

    import yaml

    run = root / name
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    for stage, (epochs, seconds) in stage_rows.items():
        folder = run / stage if recipe.get("stages") else run
        folder.mkdir(exist_ok=True)
        if folder != run:  # the trainer writes each stage's own single-stage recipe too
            (folder / "recipe.yaml").write_text(yaml.safe_dump({"train_fraction": 0.1, "epochs": epochs}))
        rows = ["epoch,step,train_loss,lr,seconds"] + [f"{e},{e * 3},0.5,0.001,{seconds * e / epochs}"
                                                         for e in range(1, epochs + 1)]
        (folder / "metrics.csv").write_text("\n".join(rows) + "\n")
    final = run / list(stage_rows)[-1] if recipe.get("stages") else run
    shutil.copytree(model_dir, final / "best")
    return final / "best"


def test_recorded_runs_make_the_comparison_table(trained_model_dir, square_dataset, tmp_path, capsys):
    from segcore.reports import comparison_table

    plain = _fake_run(tmp_path / "runs", "labels10-boundary", trained_model_dir,
                      {"train_fraction": 0.1, "epochs": 6}, {"train": (6, 360.0)})
    staged = _fake_run(tmp_path / "runs", "labels10-contrastive", trained_model_dir,
                       {"train_fraction": 0.1, "stages": [{"name": "contrastive", "epochs": 2},
                                                          {"name": "finetune", "epochs": 4}]},
                       {"contrastive": (2, 1800.0), "finetune": (4, 1800.0)})
    results = tmp_path / "results"
    for model in (plain, staged):
        assert main(["eval", "--model", str(model), "--data", str(square_dataset), "--split", "test",
                     "--record", str(results / f"{model.parent.name}.json")]) == 0
    capsys.readouterr()
    record = json.loads((results / "finetune.json").read_text())
    assert record["training"]["run"] == "labels10-contrastive" and record["training"]["epochs"] == 6
    assert [stage["name"] for stage in record["training"]["stages"]] == ["contrastive", "finetune"]
    assert record["training"]["wall_seconds"] == pytest.approx(3600.0) and record["images"] == 4
    table = comparison_table(results)
    assert "| labels10-contrastive | 10 % | contrastive 2 + finetune 4 | 6 | 1.00 h |" in table
    assert "| labels10-boundary | 10 % | train 6 | 6 | 0.10 h |" in table
    assert f"{record['fg_iou'] * 100:.2f}" in table
    assert "- 10 % of the labels, 6 epochs:" in table and "is better" in table  # same model in both: a tie names one
    assert list(results.glob(".*")) == []  # written through a temporary file that was renamed
    (results / "finetune.json").unlink()
    assert "- 10 % of the labels, 6 epochs: only labels10-boundary is recorded so far; no comparison yet." in \
        comparison_table(results)
    # Arms compare at equal total epochs: a longer run of the same labels forms a group of its own.
    longer = _fake_run(tmp_path / "runs", "labels10-longer", trained_model_dir,
                       {"train_fraction": 0.1, "epochs": 9}, {"train": (9, 90.0)})
    assert main(["eval", "--model", str(longer), "--data", str(square_dataset), "--split", "test",
                 "--record", str(results / "longer.json")]) == 0
    table = comparison_table(results)
    assert "- 10 % of the labels, 6 epochs: only labels10-boundary is recorded so far" in table
    assert "- 10 % of the labels, 9 epochs: only labels10-longer is recorded so far" in table


def test_record_needs_a_trained_model(square_dataset, tmp_path, capsys):
    code = main(["eval", "--baseline", "center-bias", "--data", str(square_dataset), "--split", "test",
                 "--record", str(tmp_path / "x.json")])
    assert code != 0 and "give --model" in capsys.readouterr().err


def test_gpu_runs_are_set_against_the_shipped_models_of_the_same_data_and_split(trained_model_dir, square_dataset,
                                                                                tmp_path, capsys):
    import shutil

    from segcore.reports import against_shipped_table

    weights, results = tmp_path / "weights", tmp_path / "results"
    assert main(["ship", str(trained_model_dir), "--name", "cpu-model", "--data", str(square_dataset), "--split",
                 "test", "--licence", "x", "--weights-dir", str(weights)]) == 0
    gpu_run = _fake_run(tmp_path / "runs", "gpu-model", trained_model_dir, {"epochs": 6}, {"train": (6, 90.0)})
    assert main(["eval", "--model", str(gpu_run), "--data", str(square_dataset), "--split", "test",
                 "--record", str(results / "gpu-model-test.json")]) == 0
    capsys.readouterr()
    record = json.loads((results / "gpu-model-test.json").read_text())
    cpu = json.loads((weights / "cpu-model" / "config.json").read_text())["meta"]["shipped"]["metrics"]["fg_iou"]
    # The same weights measured twice: equal metrics, so not beaten.
    row = against_shipped_table(results, weights).splitlines()[2]
    assert row.startswith(f"| gpu-model | test (4 images) | 6 | 1.5 min | fg_iou {record['fg_iou'] * 100:.2f} |")
    assert row.endswith(f"| cpu-model: fg_iou {cpu * 100:.2f} (not beaten) | no |")
    # A weaker one is beaten; a shipped folder of the run's own name means it ships.
    config_path = weights / "cpu-model" / "config.json"
    config = json.loads(config_path.read_text())
    config["meta"]["shipped"]["metrics"]["fg_iou"] = cpu - 0.01
    config_path.write_text(json.dumps(config))
    shutil.copytree(weights / "cpu-model", weights / "gpu-model")
    row = against_shipped_table(results, weights).splitlines()[2]
    assert row.endswith(f"| cpu-model: fg_iou {(cpu - 0.01) * 100:.2f} (beaten) | yes, as gpu-model |")
    shutil.rmtree(weights / "gpu-model")
    # A stronger shipped model of the same data and split is named, and the run is not beaten by it.
    config["meta"]["shipped"]["metrics"]["fg_iou"] = cpu + 0.01
    config_path.write_text(json.dumps(config))
    row = against_shipped_table(results, weights).splitlines()[2]
    assert row.endswith(f"| cpu-model: fg_iou {(cpu + 0.01) * 100:.2f} (not beaten) | no |")
    # Another split is no comparison.
    config["meta"]["shipped"]["split"] = "val"
    config_path.write_text(json.dumps(config))
    assert against_shipped_table(results, weights).splitlines()[2].endswith("| none | no |")
    assert against_shipped_table(tmp_path / "nothing", weights) == "(no recorded runs yet)"


def test_person_table_sets_each_model_against_the_peer_on_every_set(tmp_path):
    from segcore.reports import person_table

    def record(name, model, **sets):
        sources = {key: {"fg_iou": value, "images": 10} for key, value in sets.items()}
        (tmp_path / f"{name}.json").write_text(json.dumps({"model": model, "split": "val", "sources": sources}))

    record("peer", "mediapipe (general)", coco=0.80, davis=0.90)
    record("fast", "person-fast", coco=0.85, davis=0.70)
    (tmp_path / "fast-test.json").write_text(json.dumps(
        {"model": "person-fast", "data": "/data/portrait-shen2016", "split": "test", "fg_iou": 0.95, "images": 264}))
    table = person_table(tmp_path)
    lines = table.splitlines()
    assert lines[0] == "| model | coco val | davis val | portrait-shen2016 test |"
    assert "| mediapipe (general) | 80.00 | 90.00 |  |" in lines
    assert "| person-fast | 85.00 | 70.00 | 95.00 |" in lines
    assert "- person-fast against mediapipe (general): at or above on 1 of 2 sets; below on davis val." in lines
    assert person_table(tmp_path / "nothing") == "(no recorded evaluations yet)"


def test_tta_table_puts_each_setting_beside_the_models_plain_pass(trained_model_dir, square_dataset, tmp_path,
                                                                  capsys):
    from segcore.reports import tta_table

    weights, results = tmp_path / "weights", tmp_path / "results"
    assert main(["ship", str(trained_model_dir), "--name", "street", "--data", str(square_dataset), "--split",
                 "test", "--licence", "x", "--weights-dir", str(weights)]) == 0
    model = str(weights / "street")
    for tta, name in ((None, "plain"), ("flip", "flip")):
        assert main(["eval", "--model", model, "--data", str(square_dataset), "--split", "test",
                     *(["--tta", tta] if tta else []), "--record", str(results / f"{name}.json")]) == 0
    capsys.readouterr()
    plain, flip = (json.loads((results / f"{name}.json").read_text()) for name in ("plain", "flip"))
    assert "tta" not in plain and flip["tta"] == "flip"
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"results": [{"predictor": model, "callers": 1, "median_ms": 10.0},
                                             {"predictor": f"{model} (tta flip)", "callers": 1, "median_ms": 18.0},
                                             {"predictor": model, "callers": 4, "median_ms": 99.0}]}))
    config_path = weights / "street" / "config.json"
    config = json.loads(config_path.read_text())
    config["meta"]["shipped"].update(epochs=3, wall_seconds=5400.0, hardware="CPU (2 cores)")
    config_path.write_text(json.dumps(config))
    training = "3 epochs, 1.50 h, CPU (2 cores)"
    lines = tta_table(results, weights, bench).splitlines()
    change = (flip["fg_iou"] - plain["fg_iou"]) * 100
    assert lines[2] == (f"| {model} | none | test (4 images) | fg_iou {plain['fg_iou'] * 100:.2f} |  | 10.0 | 1.00x | "
                        f"{training} |")
    assert lines[3] == (f"| {model} | flip | test (4 images) | fg_iou {flip['fg_iou'] * 100:.2f} | {change:+.2f} | "
                        f"18.0 | 1.80x |  |")
    # Without timings the ms cells stay empty; a model that is not shipped says so.
    assert tta_table(results, tmp_path / "no-weights").splitlines()[2].endswith("|  |  | not shipped |")
    assert tta_table(tmp_path / "nothing", weights) == "(no recorded evaluations yet)"


def test_a_card_says_when_the_measured_split_was_trained_on():
    from segcore.ship import model_card

    config = {"architecture": "enet", "task": "semantic", "input_size": [360, 480], "resize": "fixed",
              "class_names": ["road", "sky"]}

    def card(train_split: str, split: str, data: str = "../shared/data/camvid") -> str:
        training = {"recipe": {"data": "../shared/data/camvid", "train_split": train_split}, "epochs": 1}
        return model_card("camvid-enet", config, {"miou": 0.5, "images": 101}, split, data, "x", training, 1.0,
                          1000, "CPU", "python -m segcore ship ...")

    assert "these numbers are not held out" in card("train+val", "val")
    assert "not held out" not in card("train+val", "test")  # the test split stays clean
    assert "not held out" not in card("train", "val")
    assert "not held out" not in card("train", "train")  # a plain run's own training split: nothing joined
    assert "not held out" not in card("train+val", "val", data="/data/other")  # another dataset's val


def test_hard_examples_lists_the_images_whose_background_the_model_marks(trained_model_dir, tmp_path, capsys):
    """Two of four scenes hold a second red rectangle labelled background: the tiny model marks it, so mining
    lists exactly those two, worst first, in a file a recipe source reads back as its names_file."""
    from segcore.data import FolderDataset

    rng = np.random.default_rng(4)
    root = tmp_path / "mined"
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
    decoy_sizes = {"b": 30, "d": 22}  # side of the unlabelled red rectangle in the bottom-right corner
    for name in "abcd":
        image, mask = make_square_scene(80, 100, rng)
        mask[60:, 70:] = 0
        image[60:, 70:] = rng.integers(0, 90, size=(20, 30, 3), dtype=np.uint8)
        if name in decoy_sizes:
            side = decoy_sizes[name]
            image[80 - side // 2:, 100 - side:] = (230, 40, 40)
        Image.fromarray(image).save(root / "images" / f"{name}.png")
        Image.fromarray((mask * 255).astype(np.uint8)).save(root / "masks" / f"{name}.png")
    (root / "split.txt").write_text("a train\nb train\nc train\nd train\n")
    out = tmp_path / "hard.txt"
    assert main(["hard-examples", "--model", str(trained_model_dir), "--data", str(root), "--min-share", "0.02",
                 "--out", str(out)]) == 0, capsys.readouterr().err
    lines = [line for line in out.read_text().splitlines() if not line.startswith("#")]
    assert [line.split()[0] for line in lines] == ["b", "d"]
    shares = [float(line.split("#")[1]) for line in lines]
    assert shares[0] > shares[1] > 0.02
    assert "2 of 4 images above 0.02" in capsys.readouterr().out
    assert [name for name, _, _ in FolderDataset(root, split="train", names_file=out).samples] == ["b", "d"]
    assert main(["hard-examples", "--model", str(trained_model_dir), "--data", str(root), "--min-share", "1.5",
                 "--out", str(out)]) == 1
    assert "--min-share 1.5: give a share of background pixels in [0, 1)" in capsys.readouterr().err


def _square_folder(root, count: int, seed: int):
    rng = np.random.default_rng(seed)
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
    for index in range(count):
        image, mask = make_square_scene(60, 80, rng)
        Image.fromarray(image).save(root / "images" / f"{index}.png")
        Image.fromarray((mask * 255).astype(np.uint8)).save(root / "masks" / f"{index}.png")
    (root / "split.txt").write_text("".join(f"{index} {'val' if index % 2 else 'train'}\n" for index in range(count)))
    return root


def test_ship_measures_every_validation_source_and_the_peer_in_the_same_run(trained_model_dir, square_dataset,
                                                                           tmp_path, monkeypatch):
    """A multi-source recipe's validation sets get one row each on the card, beside a peer scored on the same
    images and timed on the same photos in the same run; the numbers are what `evaluate` gives for each."""
    from segcore import peers
    from segcore.engine.evaluate import evaluate_recipe_sources

    recipe = tmp_path / "two.yaml"
    recipe.write_text(json.dumps({
        "model": "unet", "input_size": [64, 64], "augmentation": "none",
        "sources": [{"name": "near", "data": str(_square_folder(tmp_path / "near", 6, 1))},
                    {"name": "far", "data": str(_square_folder(tmp_path / "far", 8, 2))}]}))
    opened = peers.open_peer
    monkeypatch.setattr(peers, "open_peer", lambda name: opened(name, backend=lambda image: (
        image[..., 0].astype(np.float32) / 255)))  # a red detector in the peer's place
    weights = tmp_path / "weights"
    assert main(["ship", str(trained_model_dir), "--name", "beside", "--data", str(square_dataset), "--split", "test",
                 "--licence", "x", "--weights-dir", str(weights), "--recipe", str(recipe), "--peer", "mediapipe"]) == 0
    shipped = json.loads((weights / "beside" / "config.json").read_text())["meta"]["shipped"]
    card = (weights / "beside" / "README.md").read_text()
    model_sets = evaluate_recipe_sources(segcore.Segmenter.from_pretrained(weights / "beside", device="cpu"), recipe)
    peer_sets = evaluate_recipe_sources(opened("mediapipe", backend=lambda image: (
        image[..., 0].astype(np.float32) / 255)), recipe)
    assert set(shipped["validation"]["sources"]) == {"near", "far"}
    for source, images in (("near", 3), ("far", 4)):
        model_value = model_sets["sources"][source]["fg_iou"]
        peer_value = peer_sets["sources"][source]["fg_iou"]
        assert shipped["validation"]["sources"][source]["fg_iou"] == pytest.approx(model_value)
        assert f"| {source} | {images} | {model_value * 100:.2f} % | {peer_value * 100:.2f} % |" in card
    peer = shipped["peer"]
    assert peer["end_to_end_ms"] > 0 and peer["metrics"]["images"] == 4
    assert f"| fg_iou, this split | {shipped['metrics']['fg_iou'] * 100:.2f} % | " \
           f"{peer['metrics']['fg_iou'] * 100:.2f} % |" in card
    assert f"{peer['end_to_end_ms']:.1f} ms (" in card and "same images, same run" in card


def test_an_installed_model_is_a_peer_on_the_same_images(trained_model_dir, square_dataset, tmp_path, monkeypatch):
    """`--peer NAME` of an installed model (e.g. camvid-bisenet beside camvid-enet): scored by the same metric code on
    the same split in the same run, named with the runtime it ran in; an unknown name lists what is installed."""
    from segcore import zoo

    weights = tmp_path / "weights"
    monkeypatch.setenv(zoo.WEIGHTS_ENV, str(weights))
    monkeypatch.setenv(zoo.RUNS_ENV, str(tmp_path / "no-runs"))
    common = ["--data", str(square_dataset), "--split", "test", "--licence", "x", "--weights-dir", str(weights)]
    assert main(["ship", str(trained_model_dir), "--name", "first", *common]) == 0
    assert main(["ship", str(trained_model_dir), "--name", "second", *common, "--peer", "first"]) == 0
    shipped = json.loads((weights / "second" / "config.json").read_text())["meta"]["shipped"]
    first_config = json.loads((weights / "first" / "config.json").read_text())
    first = first_config["meta"]["shipped"]
    peer = shipped["peer"]
    runtime = segcore.inference.preferred_runtime(first_config)  # the app's runtime for it, which its ship chose
    assert peer["name"] == f"first ({runtime})"
    assert peer["metrics"]["images"] == 4 and peer["metrics"]["fg_iou"] > 0.5
    assert peer["metrics"]["fg_iou"] == pytest.approx(first["metrics"]["fg_iou"], abs=1e-4)  # same weights, same images
    card = (weights / "second" / "README.md").read_text()
    assert f"### Beside first ({runtime}), same images, same run" in card
    assert main(["ship", str(trained_model_dir), "--name", "third", *common, "--peer", "nobody"]) == 1
    assert not (weights / "third").exists()
