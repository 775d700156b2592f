"""Metrics: the confusion matrix against a pixel-by-pixel reference, merging and all-reduce across processes,
boundary F on drawn shapes, and saliency metrics on inputs whose values are known by hand."""

import math
import socket
import time

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from segcore.metrics import ConfusionMatrix, all_reduce_confusion, boundary_f1, saliency_metrics

# ---------------------------------------------------------------- confusion matrix


def _naive_scores(preds, targets, num_classes, ignore_index):
    matrix = [[0] * num_classes for _ in range(num_classes)]
    for pred, target in zip(preds, targets):
        for p, t in zip(pred.ravel().tolist(), target.ravel().tolist()):
            if t != ignore_index:
                matrix[t][p] += 1
    total = sum(map(sum, matrix))
    ious, accuracies, weighted = [], [], 0.0
    for c in range(num_classes):
        tp = matrix[c][c]
        in_target = sum(matrix[c])
        in_pred = sum(row[c] for row in matrix)
        union = in_target + in_pred - tp
        ious.append(tp / union if union else math.nan)
        if in_target:
            accuracies.append(tp / in_target)
            weighted += in_target / total * ious[-1]
    defined = [v for v in ious if not math.isnan(v)]
    return matrix, {
        "pixel_acc": sum(matrix[c][c] for c in range(num_classes)) / total,
        "mean_acc": sum(accuracies) / len(accuracies),
        "iou": ious,
        "miou": sum(defined) / len(defined),
        "fwiou": weighted,
    }


@pytest.mark.parametrize("num_classes", [2, 6])
def test_confusion_matrix_equals_naive_reference(num_classes):
    rng = np.random.default_rng(num_classes)
    targets = [rng.integers(0, num_classes, size=(13, 17)) for _ in range(3)]
    preds = [np.where(rng.random(t.shape) < 0.6, t, rng.integers(0, num_classes, size=t.shape)) for t in targets]
    for t in targets:
        t[rng.random(t.shape) < 0.1] = 255
    if num_classes == 6:  # class 5 absent everywhere: its IoU is undefined and must not drag the mean
        for p, t in zip(preds, targets):
            p[p == 5] = 0
            t[t == 5] = 0
    confusion = ConfusionMatrix(num_classes, ignore_index=255)
    for index, (p, t) in enumerate(zip(preds, targets)):
        if index == 1:
            confusion.update(torch.from_numpy(p), torch.from_numpy(t))  # tensors and arrays mix
        else:
            confusion.update(p, t)
    matrix, expected = _naive_scores(preds, targets, num_classes, 255)
    assert confusion.matrix.tolist() == matrix
    scores = confusion.compute()
    for key in ("pixel_acc", "mean_acc", "miou", "fwiou"):
        assert scores[key] == pytest.approx(expected[key], rel=1e-12)
    np.testing.assert_allclose(scores["iou"], expected["iou"], rtol=1e-12)
    if num_classes == 6:
        assert math.isnan(scores["iou"][5]) and not math.isnan(scores["miou"])
    else:
        assert scores["fg_iou"] == pytest.approx(expected["iou"][1])


def test_confusion_matrix_logits_merge_reset_and_errors():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # argmax over dim 1 -> [[0, 1]]
    target = torch.tensor([[[0, 0]]])
    first = ConfusionMatrix(2).update(logits, target)
    assert first.matrix.tolist() == [[1, 1], [0, 0]]
    second = ConfusionMatrix(2).update(np.array([[1, 1]]), np.array([[1, 1]]))
    both = first + second
    assert both.matrix.tolist() == [[1, 1], [0, 2]] and first.matrix.tolist() == [[1, 1], [0, 0]]
    first.merge(second)
    assert first.matrix.tolist() == both.matrix.tolist()
    first.reset()
    assert first.matrix.sum() == 0 and math.isnan(first.compute()["miou"])
    with pytest.raises(ValueError, match="outside 0..1"):
        ConfusionMatrix(2).update(np.array([0, 2]), np.array([0, 1]))
    with pytest.raises(ValueError, match="outside 0..1.*ignore_index"):
        ConfusionMatrix(2).update(np.array([0, 1]), np.array([0, 255]))
    with pytest.raises(ValueError, match="cannot merge"):
        ConfusionMatrix(2).merge(ConfusionMatrix(3))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _distributed_worker(rank: int, world_size: int, port: int, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        confusion = ConfusionMatrix(3)
        confusion.update(np.full(4, rank), np.full(4, rank))  # each process sees only its own class
        all_reduce_confusion(confusion)
        results[rank] = confusion.matrix.tolist()
    finally:
        dist.destroy_process_group()


def test_all_reduce_sums_matrices_across_processes():
    assert ConfusionMatrix(2).update(np.array([1]), np.array([1])).all_reduce().matrix.tolist() == [[0, 0], [0, 1]]
    with mp.Manager() as manager:
        results = manager.dict()
        # fork, not spawn: the children need not import torch again (seconds on a busy machine)
        context = mp.start_processes(
            _distributed_worker, args=(2, _free_port(), results), nprocs=2, join=False, start_method="fork"
        )
        deadline = time.monotonic() + 60
        while not context.join(timeout=5):  # returns once per exited process, True when all are done
            if time.monotonic() > deadline:
                for process in context.processes:
                    process.kill()
                pytest.fail("the two gloo processes did not finish within 60 s")
        expected = [[4, 0, 0], [0, 4, 0], [0, 0, 0]]
        assert results[0] == expected and results[1] == expected


# ---------------------------------------------------------------- boundary F


def _disc(radius: int, centre=(32, 32), size=64, label=1) -> np.ndarray:
    rows, cols = np.mgrid[:size, :size]
    return np.where((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2, label, 0)


def test_boundary_f1_known_cases():
    disc = _disc(15)
    assert boundary_f1(disc, disc, 0) == 1.0
    assert boundary_f1(np.zeros((8, 8)), np.zeros((8, 8)), 2) == 1.0
    assert boundary_f1(np.zeros((64, 64)), disc, 2) == 0.0
    # A disc 3 px too large: every boundary pixel is ~3 px off (two-pixel-wide boundaries: 2..4 px).
    larger = _disc(18)
    assert boundary_f1(larger, disc, 1) == 0.0
    assert boundary_f1(larger, disc, 5) == 1.0
    middle = boundary_f1(larger, disc, 3)
    assert 0.0 < middle < 1.0
    # Multi-class: a label change between two objects is a boundary even where both are foreground.
    two = disc.copy()
    two[:, 32:][two[:, 32:] == 1] = 2
    assert boundary_f1(disc, two, 1) < 1.0 and boundary_f1(two, two, 0) == 1.0
    # Void pixels in the target: a ring of 255 around the object hides its edge in both maps.
    target = np.where(_disc(17) - disc == 1, 255, disc)
    assert boundary_f1(disc, target, 0, ignore_index=255) == 1.0
    assert boundary_f1(disc, target, 0) < 1.0


def test_boundary_f1_accepts_tensors():
    disc = _disc(10)
    assert boundary_f1(torch.from_numpy(disc), torch.from_numpy(_disc(10)), 0) == 1.0


# ---------------------------------------------------------------- saliency metrics


def test_identical_maps_are_perfect():
    rng = np.random.default_rng(0)
    density = rng.random((24, 32)) ** 3
    fixations = np.zeros((24, 32), bool)
    fixations[rng.integers(0, 24, 15), rng.integers(0, 32, 15)] = True
    scores = saliency_metrics(density, density, fixations)
    assert scores["CC"] == pytest.approx(1.0)
    assert scores["SIM"] == pytest.approx(1.0)
    assert scores["KLD"] == pytest.approx(0.0, abs=1e-9)
    flipped = saliency_metrics(density.max() - density, density, fixations)
    assert flipped["CC"] == pytest.approx(-1.0) and flipped["SIM"] < 1.0 and flipped["KLD"] > 0.1


def test_nss_and_auc_judd_by_hand():
    pred = np.array([[4.0, 3.0], [2.0, 1.0]])
    density = np.ones((2, 2))
    fixate = lambda r, c: np.pad(np.ones((1, 1)), ((r, 1 - r), (c, 1 - c)))
    # One fixation on the highest value: TP rate 1 at FP rate 0 -> AUC 1. On the lowest: the diagonal -> 0.5.
    assert saliency_metrics(pred, density, fixate(0, 0))["AUC_Judd"] == pytest.approx(1.0)
    assert saliency_metrics(pred, density, fixate(1, 1))["AUC_Judd"] == pytest.approx(0.5)
    # On the second value: one other pixel is above -> FP rate 1/3: area 1/3 * 1/2 + 2/3 = 5/6.
    assert saliency_metrics(pred, density, fixate(0, 1))["AUC_Judd"] == pytest.approx(5 / 6)
    # NSS: [1, 0, 0, 0] has mean 0.25 and sample std 0.5 -> (1 - 0.25) / 0.5 = 1.5 at the fixated pixel.
    spike = np.array([[1.0, 0.0], [0.0, 0.0]])
    assert saliency_metrics(spike, density, fixate(0, 0))["NSS"] == pytest.approx(1.5)
    assert saliency_metrics(spike, density, fixate(1, 0))["NSS"] == pytest.approx(-0.5)


def test_saliency_prediction_is_resized_to_the_density():
    density = np.kron(np.array([[1.0, 0.0], [0.0, 0.0]]), np.ones((8, 8)))
    small = np.array([[1.0, 0.0], [0.0, 0.0]])
    fixations = density > 0
    scores = saliency_metrics(small, density, fixations)
    assert scores["CC"] > 0.5 and scores["AUC_Judd"] > 0.9
    with pytest.raises(ValueError, match="must be"):
        saliency_metrics(density, density, np.zeros((3, 3)))
