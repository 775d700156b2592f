"""torchrun with two gloo processes on the CPU trains the same weights as one process with the same global batch."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.engine.shapes import write_shapes_dataset

ROOT = Path(__file__).resolve().parents[2]


def test_two_process_ddp_matches_one_process(tmp_path):
    data = write_shapes_dataset(tmp_path / "shapes", count=24, size=48)
    # GroupNorm: BatchNorm statistics of half-batches would differ from the whole batch's, by design of BN.
    settings = ["model=unet", "model_kwargs.width=4", "model_kwargs.norm=group", "input_size=[48, 48]",
                "augmentation=none", "batch_size=8", "optimizer=sgd", "lr=0.05", "epochs=2", "threads=1"]
    args = [arg for setting in settings for arg in ("--set", setting)] + ["--data", str(data)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    single = subprocess.run([sys.executable, "-m", "segcore", "train", "--out", str(tmp_path / "one"), *args],
                            cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    distributed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "segcore", "train", "--out", str(tmp_path / "two"), *args],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300)
    assert distributed.returncode == 0, distributed.stderr[-3000:]
    one = load_file(str(tmp_path / "one" / "last" / "model.safetensors"))
    two = load_file(str(tmp_path / "two" / "last" / "model.safetensors"))
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], atol=2e-5, rtol=1e-4, msg=f"{name} differs")
    with open(tmp_path / "one" / "metrics.csv") as a, open(tmp_path / "two" / "metrics.csv") as b:
        rows_one, rows_two = list(csv.DictReader(a)), list(csv.DictReader(b))
    assert len(rows_one) == len(rows_two) == 2
    for row_one, row_two in zip(rows_one, rows_two):
        # Losses are averaged over ranks; validation confusion matrices are summed over ranks' halves of val.
        assert abs(float(row_one["train_loss"]) - float(row_two["train_loss"])) < 1e-4
        assert abs(float(row_one["miou"]) - float(row_two["miou"])) < 1e-3
        assert row_one["images"] == row_two["images"] == "6"
    assert float(rows_one[1]["train_loss"]) < float(rows_one[0]["train_loss"])
