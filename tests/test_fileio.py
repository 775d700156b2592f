import json
import math
import stat

import numpy as np
import pytest
import torch

from segcore.fileio import atomic_path, json_safe, write_json_atomic, write_text_atomic


def test_write_replaces_whole_file_readable_by_others(tmp_path):
    target = tmp_path / "deep" / "notes.txt"
    write_text_atomic(target, "first\n")
    write_text_atomic(target, "second\n")
    assert target.read_text() == "second\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(path.name for path in target.parent.iterdir()) == ["notes.txt"]


def test_failure_keeps_previous_version_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "record.json"
    write_json_atomic(target, {"fg_iou": 95.0})
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as temporary:
        temporary.write_text('{"fg_iou": 9')  # half written, then the writer fails
        raise RuntimeError("disk full")
    assert json.loads(target.read_text()) == {"fg_iou": 95.0}
    assert [path.name for path in tmp_path.iterdir()] == ["record.json"]


def test_temporary_keeps_suffix_so_format_sniffing_writers_work(tmp_path):
    target = tmp_path / "probabilities.npy"
    with atomic_path(target) as temporary:
        assert temporary.suffix == ".npy" and temporary.parent == tmp_path
        np.save(temporary, np.arange(3))
    assert np.load(target).tolist() == [0, 1, 2]


def test_json_is_strict_and_numbers_stay_numbers(tmp_path):
    values = {"miou": math.nan, "per_class": [1.5, math.inf, np.float32(0.25)], "steps": torch.tensor(7), 3: "x"}
    assert json_safe(values) == {"miou": None, "per_class": [1.5, None, 0.25], "steps": 7, "3": "x"}
    target = write_json_atomic(tmp_path / "metrics.json", values)
    text = target.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["per_class"] == [1.5, None, 0.25]


def test_unserialisable_value_fails_before_touching_the_file(tmp_path):
    target = tmp_path / "state.json"
    write_json_atomic(target, {"ok": True})

    class Opaque:
        def __str__(self):
            raise TypeError("cannot describe")

    with pytest.raises(TypeError):
        write_json_atomic(target, {"value": Opaque()})
    assert json.loads(target.read_text()) == {"ok": True}
    assert [path.name for path in tmp_path.iterdir()] == ["state.json"]
