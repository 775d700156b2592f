"""Run folders (segcore.runs): metrics.csv parsed once for the app's curves and for the training summary."""

from __future__ import annotations

import yaml

from segcore.runs import read_metrics_csv, run_training_summary


def test_metrics_csv_rows_come_back_as_numbers(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,train_loss,lr,seconds,val_miou,note\n"
                    "1,10,0.75,0.001,12.5,,warm-up\n2,20,0.5,0.001,25,0.61,\n")
    rows = read_metrics_csv(path)
    assert rows == [{"epoch": 1, "step": 10, "train_loss": 0.75, "lr": 0.001, "seconds": 12.5, "note": "warm-up"},
                    {"epoch": 2, "step": 20, "train_loss": 0.5, "lr": 0.001, "seconds": 25.0, "val_miou": 0.61}]
    assert isinstance(rows[0]["epoch"], int) and isinstance(rows[1]["seconds"], float)
    assert read_metrics_csv(tmp_path / "missing.csv") == [], "a run before its first epoch has no rows yet"


def test_training_summary_adds_up_every_stage(tmp_path):
    run = tmp_path / "two-stage"
    (run / "pretrain").mkdir(parents=True)
    (run / "finetune" / "best").mkdir(parents=True)
    (run / "recipe.yaml").write_text(yaml.safe_dump({"train_fraction": 0.25, "stages": [{"name": "pretrain"},
                                                                                         {"name": "finetune"}]}))
    (run / "pretrain" / "metrics.csv").write_text("epoch,seconds\n1,30\n2,60\n")
    (run / "finetune" / "metrics.csv").write_text("epoch,seconds\n1,40\n")
    summary = run_training_summary(run / "finetune" / "best")
    assert summary == {"run": "two-stage", "train_fraction": 0.25, "epochs": 3, "wall_seconds": 100.0,
                       "stages": [{"name": "pretrain", "epochs": 2, "wall_seconds": 60.0},
                                  {"name": "finetune", "epochs": 1, "wall_seconds": 40.0}]}
    single = run_training_summary(tmp_path / "nothing" / "best")
    assert single["stages"] == [{"name": "train", "epochs": 0, "wall_seconds": 0.0}] and single["epochs"] == 0
