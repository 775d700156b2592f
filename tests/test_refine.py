"""Refinement: the dense CRF raises IoU on a sharp-edged scene, never raises its mean-field free energy, agrees with
pydensecrf2 on the same inputs and parameters, and its filters are what they claim; the guided filter equals a
pixel-by-pixel reference."""

import cv2
import numpy as np
import pydensecrf.densecrf  # noqa: F401  (requirements-dev.txt installs pydensecrf2; fail loudly if it is missing)
import pytest
import torch

from segcore.bench import make_crf_scene, pydensecrf_refine
from segcore.metrics import ConfusionMatrix
from segcore.refine import (
    DenseCRF,
    NormalizedKernel,
    PermutohedralLattice,
    SmoothnessKernel,
    _box_mean,
    dense_crf,
    fast_guided_filter,
    guided_filter,
)


def _miou(probs: np.ndarray, truth: np.ndarray) -> float:
    return ConfusionMatrix(probs.shape[0]).update(probs.argmax(axis=0), truth).compute()["miou"]


# ---------------------------------------------------------------- dense CRF behaviour


@pytest.mark.parametrize("labels", [2, 3])
def test_crf_raises_iou_on_sharp_edges(labels):
    image, truth, probs = make_crf_scene(128, 128, labels, seed=labels)
    refined = dense_crf(image, probs)
    assert refined.shape == probs.shape and refined.dtype == np.float32
    np.testing.assert_allclose(refined.sum(axis=0), 1.0, atol=1e-5)
    before, after = _miou(probs, truth), _miou(refined, truth)
    assert before < 0.93 and after > before + 0.05


def test_mean_field_free_energy_never_increases():
    rng = np.random.default_rng(0)
    image, _, _ = make_crf_scene(64, 80, 2, seed=0, noise=30.0)
    for labels in (2, 4):
        probs = rng.dirichlet([0.7] * labels, size=64 * 80).T.reshape(labels, 64, 80)
        probs = torch.from_numpy(probs.astype(np.float32))
        crf = DenseCRF(torch.from_numpy(image), theta_alpha=20.0, theta_beta=10.0, w1=10.0, w2=3.0)
        energies = []
        crf.infer(probs, iterations=10, energies=energies)
        assert len(energies) == 11
        steps = np.diff(energies)
        assert (steps <= 1e-6 * abs(energies[0])).all(), energies
        assert energies[-1] < energies[0] - 1.0  # and it does go down


def test_single_label_returns_the_input_and_types_follow_the_input():
    image = np.zeros((20, 30, 3), np.uint8)
    single = np.random.default_rng(0).random((1, 20, 30)).astype(np.float32)
    assert dense_crf(image, single) is single
    scene, _, probs = make_crf_scene(40, 50, 2)
    as_torch = dense_crf(torch.from_numpy(scene), torch.from_numpy(probs))
    assert isinstance(as_torch, torch.Tensor) and as_torch.shape == (2, 40, 50)
    np.testing.assert_allclose(as_torch.numpy(), dense_crf(scene, probs), atol=1e-6)
    assert np.allclose(dense_crf(scene, probs, iterations=0), probs, atol=1e-4)  # clipped at the floor only
    with pytest.raises(ValueError, match="differ in size"):
        dense_crf(scene, probs[:, :-1])


def test_large_images_are_refined_on_a_downscaled_copy():
    image, truth, probs = make_crf_scene(120, 160, 2, seed=1)
    full = dense_crf(image, probs)
    reduced = dense_crf(image, probs, max_pixels=120 * 160 // 4)
    assert reduced.shape == probs.shape
    np.testing.assert_allclose(reduced.sum(axis=0), 1.0, atol=1e-5)
    assert (reduced.argmax(0) == full.argmax(0)).mean() > 0.97
    assert _miou(reduced, truth) > _miou(probs, truth)


# ---------------------------------------------------------------- peer check: pydensecrf2


@pytest.mark.parametrize(
    "size, labels, noise, params",
    [
        (160, 2, 8.0, {}),
        (160, 3, 40.0, {}),
        (128, 2, 25.0, {"theta_alpha": 30.0, "theta_beta": 20.0, "theta_gamma": 2.0, "w1": 5.0, "w2": 2.0}),
    ],
)
def test_agrees_with_pydensecrf(size, labels, noise, params):
    image, truth, probs = make_crf_scene(size, size, labels, seed=size + labels, noise=noise)
    ours = dense_crf(image, probs, **params)
    peer = pydensecrf_refine(image, probs, **params)
    agreement = (ours.argmax(0) == peer.argmax(0)).mean()
    assert agreement >= 0.97
    before = _miou(probs, truth)
    ours_change, peer_change = _miou(ours, truth) - before, _miou(peer, truth) - before
    assert abs(ours_change - peer_change) <= 0.02 + 0.1 * abs(peer_change)
    # The probabilities themselves stay close, after one sweep as after five.
    assert np.abs(ours - peer).mean() < 0.01
    one_sweep = np.abs(dense_crf(image, probs, iterations=1, **params) - pydensecrf_refine(image, probs, 1, **params))
    assert one_sweep.mean() < 0.01


# ---------------------------------------------------------------- the filters


def test_lattice_operator_is_symmetric_psd_and_close_to_a_gaussian():
    torch.manual_seed(0)
    features = torch.rand(400, 3) * 4.0
    lattice = PermutohedralLattice(features)
    matrix = lattice.filter(torch.eye(400)).double()
    assert torch.allclose(matrix, matrix.t(), atol=1e-6)
    assert torch.linalg.eigvalsh((matrix + matrix.t()) / 2).min() > -1e-6
    # Normalised like the CRF uses it, the lattice blur approximates the exact Gaussian exp(-|f_i - f_j|^2 / 2).
    exact = torch.exp(-0.5 * torch.cdist(features.double(), features.double()) ** 2)
    normalise = lambda k: k / k.sum(dim=1, keepdim=True)
    values = torch.rand(400, 1, dtype=torch.float64)
    ours, reference = normalise(matrix) @ values, normalise(exact) @ values
    assert torch.corrcoef(torch.cat([ours, reference], 1).t())[0, 1] > 0.9


def test_lattice_code_paths_agree(monkeypatch):
    torch.manual_seed(1)
    features = torch.rand(3000, 5) * 3.0
    values = torch.rand(3, 3000)
    sparse = PermutohedralLattice(features)
    gathered = PermutohedralLattice(features)
    gathered.sparse = False  # the index_add / gather path other devices take
    torch.testing.assert_close(sparse.filter(values), gathered.filter(values), atol=1e-5, rtol=1e-5)
    monkeypatch.setattr(PermutohedralLattice, "dense_pair_table_factor", 0)  # vertices by sorting all pairs
    sorted_pairs = PermutohedralLattice(features)
    assert sorted_pairs.num_vertices == sparse.num_vertices
    torch.testing.assert_close(sorted_pairs.filter(values), sparse.filter(values), atol=1e-6, rtol=1e-6)


def test_smoothness_kernel_is_the_gaussian_away_from_borders():
    kernel = SmoothnessKernel(41, 41, theta_gamma=3.0, device=torch.device("cpu"))
    impulse = torch.zeros(1, 41 * 41)
    impulse[0, 20 * 41 + 20] = 1.0
    response = kernel.filter(impulse).reshape(41, 41).double()
    rows, cols = torch.meshgrid(torch.arange(41.0), torch.arange(41.0), indexing="ij")
    gaussian = torch.exp(-((rows - 20) ** 2 + (cols - 20) ** 2) / (2 * 3.0**2)).double()
    torch.testing.assert_close(response / response.sum(), gaussian / gaussian.sum(), atol=2e-4, rtol=0)
    # Normalised rows sum to one away from the borders (D^-1/2 K D^-1/2 is only about stochastic near them).
    wide = NormalizedKernel(SmoothnessKernel(81, 81, theta_gamma=3.0, device=torch.device("cpu")))
    row_sums = wide.filter(torch.ones(1, 81 * 81)).reshape(81, 81)
    np.testing.assert_allclose(row_sums[20:61, 20:61], 1.0, atol=1e-4)
    assert 0.5 < float(row_sums.min()) and float(row_sums.max()) < 1.5


# ---------------------------------------------------------------- guided filter


def _naive_guided_filter(guide: np.ndarray, mask: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s definition, one clipped window at a time."""
    height, width = mask.shape
    colour = guide.ndim == 3
    guide = guide if colour else guide[..., None]
    a = np.zeros((height, width, guide.shape[2]))
    b = np.zeros((height, width))
    window = lambda y, x: (slice(max(0, y - radius), y + radius + 1), slice(max(0, x - radius), x + radius + 1))
    for y in range(height):
        for x in range(width):
            rows, cols = window(y, x)
            patch = guide[rows, cols].reshape(-1, guide.shape[2])
            values = mask[rows, cols].reshape(-1)
            mean_i, mean_p = patch.mean(axis=0), values.mean()
            covariance = (patch * values[:, None]).mean(axis=0) - mean_i * mean_p
            sigma = np.atleast_2d(np.cov(patch.T, bias=True))
            a[y, x] = np.linalg.solve(sigma + eps * np.eye(guide.shape[2]), covariance)
            b[y, x] = mean_p - a[y, x] @ mean_i
    output = np.zeros((height, width))
    for y in range(height):
        for x in range(width):
            rows, cols = window(y, x)
            output[y, x] = a[rows, cols].reshape(-1, guide.shape[2]).mean(axis=0) @ guide[y, x] + b[rows, cols].mean()
    return np.clip(output, 0, 1)


@pytest.mark.parametrize("colour", [True, False])
def test_guided_filter_equals_reference(colour):
    rng = np.random.default_rng(3)
    guide = rng.integers(0, 256, size=(14, 11, 3) if colour else (14, 11), dtype=np.uint8)
    mask = rng.random((14, 11))
    ours = guided_filter(guide, mask, radius=2, eps=1e-2)
    reference = _naive_guided_filter(guide / 255.0, mask, 2, 1e-2)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    # the fast variant at full resolution is the same filter, to float32 rounding
    fast = fast_guided_filter(guide, mask, radius=2, eps=1e-2)
    assert fast.dtype == np.float32
    np.testing.assert_allclose(fast, reference, atol=1e-4)
    as_torch = guided_filter(torch.from_numpy(guide), torch.from_numpy(mask), radius=2, eps=1e-2)
    assert isinstance(as_torch, torch.Tensor)
    np.testing.assert_allclose(as_torch.numpy(), ours, atol=1e-6)


def test_guided_filter_follows_the_guide_edge():
    guide = np.zeros((40, 40, 3), np.uint8)
    guide[:, 20:] = (200, 180, 40)
    soft = np.clip((np.arange(40)[None, :] - 14) / 12.0, 0, 1).repeat(40, axis=0)  # a ramp across the edge
    refined = guided_filter(guide, soft, radius=6, eps=1e-4)
    jump = lambda mask: float(mask[:, 20].mean() - mask[:, 19].mean())
    assert jump(soft) < 0.1 and jump(refined) > 0.4  # the soft ramp gains a step where the image has its edge
    # A flat guide has no edge to follow: the result is a plain (double) box smoothing, with no step.
    flat = guided_filter(np.full((40, 40), 128, np.uint8), soft, radius=6, eps=1e-4)
    assert jump(flat) < 0.1
    np.testing.assert_allclose(refined[:, :3], 0.0, atol=1e-6)  # beyond the double window's reach


def test_fast_guided_filter_subsampled_stays_close_and_keeps_the_full_resolution_edge():
    """Coefficients solved at half resolution, applied to the full-resolution guide: the edge still lands on the
    guide's own column (an odd column, which the half-resolution grid cannot hold), close to the exact filter."""
    guide = np.zeros((120, 160, 3), np.uint8)
    guide[:, 81:] = (200, 180, 40)
    soft = np.clip((np.arange(160)[None, :] - 70) / 22.0, 0, 1).repeat(120, axis=0).astype(np.float32)
    exact = guided_filter(guide, soft, radius=8, eps=1e-4)
    fast = fast_guided_filter(guide, soft, radius=8, eps=1e-4, subsample=2)
    assert np.abs(fast - exact).mean() < 0.01
    jump = lambda mask: float(mask[:, 81].mean() - mask[:, 80].mean())
    assert jump(soft) < 0.05 and jump(exact) > 0.3 and jump(fast) > 0.3
    assert int(np.diff(fast.mean(axis=0)).argmax()) + 1 == 81  # the steepest step is the guide's edge
    with pytest.raises(ValueError, match="subsample must be >= 1"):
        fast_guided_filter(guide, soft, subsample=0)


def _reference_fast_guided_filter(image, mask, radius, eps, subsample):
    """He & Sun's fast guided filter in float64, channels last, with a batched np.linalg.solve: the guide (uint8)
    and mask shrunk by area averaging, box means with windows cut at the border, coefficients enlarged bilinearly
    and applied to the full-resolution guide."""
    image = image[..., None] if image.ndim == 2 else image
    scale = 1 / 255.0 if image.dtype == np.uint8 else 1.0
    height, width = mask.shape
    small = (max(1, round(width / subsample)), max(1, round(height / subsample)))
    low_radius = max(1, round(radius / subsample))
    low_image = cv2.resize(image, small, interpolation=cv2.INTER_AREA).reshape(small[1], small[0], -1) * scale
    low_mask = cv2.resize(mask.astype(np.float32), small, interpolation=cv2.INTER_AREA).astype(np.float64)
    box = lambda values: cv2.boxFilter(values, -1, (2 * low_radius + 1,) * 2, normalize=True,
                                       borderType=cv2.BORDER_CONSTANT)
    counts = box(np.ones(low_mask.shape))
    mean = lambda values: box(values).reshape(values.shape) / counts.reshape(counts.shape + (1,) * (values.ndim - 2))
    channels = low_image.shape[2]
    mean_i, mean_p = mean(low_image), mean(low_mask)
    covariance_ip = mean(low_image * low_mask[..., None]) - mean_i * mean_p[..., None]
    outer = low_image[..., :, None] * low_image[..., None, :]
    covariance = mean(outer.reshape(*low_mask.shape, -1)).reshape(outer.shape) - mean_i[..., :, None] * mean_i[..., None, :]
    a = np.linalg.solve(covariance + eps * np.eye(channels), covariance_ip[..., None])[..., 0]
    b = mean_p - (a * mean_i).sum(axis=2)
    mean_a = cv2.resize(mean(a), (width, height), interpolation=cv2.INTER_LINEAR).reshape(height, width, channels)
    mean_b = cv2.resize(mean(b), (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip((mean_a * image * scale).sum(axis=2) + mean_b, 0, 1)


@pytest.mark.parametrize("guide_kind", ["rgb", "grey", "float"])
@pytest.mark.parametrize("subsample, radius", [(4, 5), (2, 8), (3, 4), (1, 2)])  # (4, 5): a 640x480 frame
def test_fast_guided_filter_equals_a_plain_reference(guide_kind, subsample, radius):
    rng = np.random.default_rng(7)
    rows, cols = np.mgrid[:96, :128]
    photo = cv2.GaussianBlur(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8), (0, 0), 1.0)
    photo[np.hypot(rows - 50, cols - 60) < 30] //= 3  # a dark disc: an edge to follow
    mask = np.clip((32 - np.hypot(rows - 48, cols - 62)) / 10 + 0.5 + rng.normal(0, 0.05, rows.shape), 0, 1)
    mask = mask.astype(np.float32)
    guide = {"rgb": photo, "grey": photo[..., 1], "float": photo.astype(np.float32) / 255}[guide_kind]
    for eps in (1e-4, 1e-2):
        ours = fast_guided_filter(guide, mask, radius=radius, eps=eps, subsample=subsample)
        assert ours.dtype == np.float32 and ours.shape == mask.shape
        reference = _reference_fast_guided_filter(guide, mask, radius, eps, subsample)
        # float32 against float64: E[I I] - E[I] E[I] cancels; measured up to 1.4e-5 at eps 1e-4 (the previous,
        # channels-last implementation likewise), 5e-7 at 1e-2
        np.testing.assert_allclose(ours, reference, rtol=0, atol=5e-5 if eps < 1e-3 else 2e-6)


def test_box_mean_paths_agree():
    values = torch.rand(2, 13, 9, dtype=torch.float64)
    expected = torch.stack(
        [
            torch.stack([values[k, max(0, y - 3) : y + 4, max(0, x - 3) : x + 4].mean() for x in range(9)])
            for k in range(2)
            for y in range(13)
        ]
    ).reshape(2, 13, 9)
    torch.testing.assert_close(_box_mean(values, 3, use_opencv=True), expected)
    torch.testing.assert_close(_box_mean(values, 3, use_opencv=False), expected)  # the GPU path
