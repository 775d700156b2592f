"""Segmenter: input conversion, resize policies, output shapes, and a real model segmenting what it learnt."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import segcore
from segcore.inference import Segmenter, network_input_size
from tests.conftest import make_square_scene


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1))


def test_trained_model_segments_at_any_input_size(trained_model_dir):
    segmenter = segcore.Segmenter.from_pretrained(trained_model_dir, device="cpu")
    assert segmenter.class_names == ["background", "square"]
    rng = np.random.default_rng(123)  # scenes the model never saw
    for height, width in [(64, 64), (97, 131), (150, 90)]:
        image, mask = make_square_scene(height, width, rng)
        prediction = segmenter.predict(image)
        assert prediction.labels.shape == (height, width)
        assert prediction.probabilities.shape == (2, height, width)
        np.testing.assert_allclose(prediction.probabilities.sum(axis=0), 1.0, atol=1e-5)
        assert _iou(prediction.labels == 1, mask == 1) > 0.8
        assert prediction.latency_ms > 0
        assert prediction.confidence.shape == (height, width) and prediction.confidence.min() >= 0.5 - 1e-6


def test_grey_rgba_pil_and_path_inputs_match_rgb(trained_model_dir, tmp_path):
    segmenter = segcore.Segmenter.from_pretrained(trained_model_dir, device="cpu")
    image, _ = make_square_scene(64, 64, np.random.default_rng(5))
    reference = segmenter.predict(image)
    rgba = np.concatenate([image, np.full((64, 64, 1), 255, dtype=np.uint8)], axis=2)
    assert np.array_equal(segmenter.predict(rgba).labels, reference.labels)
    assert np.array_equal(segmenter.predict(Image.fromarray(image)).labels, reference.labels)
    Image.fromarray(image).save(tmp_path / "scene.png")
    assert np.array_equal(segmenter.predict(tmp_path / "scene.png").labels, reference.labels)
    grey = segmenter.predict(image.mean(axis=2).astype(np.uint8))
    assert grey.labels.shape == (64, 64)


def test_batch_matches_single_predictions(trained_model_dir):
    segmenter = segcore.Segmenter.from_pretrained(trained_model_dir, device="cpu")
    rng = np.random.default_rng(9)
    images = [make_square_scene(h, w, rng)[0] for h, w in [(64, 64), (80, 50), (64, 64)]]
    batch = segmenter.predict_batch(images)
    for image, result in zip(images, batch):
        np.testing.assert_allclose(result.probabilities, segmenter.predict(image).probabilities, atol=1e-5)


def test_one_channel_models_give_sigmoid_probabilities(tmp_path):
    model = segcore.create_model("unet", num_classes=1, width=4)
    segcore.save_pretrained(model, tmp_path / "sal", input_size=(32, 32), resize="max_side")
    segmenter = segcore.Segmenter.from_pretrained(tmp_path / "sal", device="cpu")
    prediction = segmenter.predict(np.zeros((45, 70, 3), dtype=np.uint8))
    assert prediction.probabilities.shape == (1, 45, 70)
    assert ((prediction.probabilities >= 0) & (prediction.probabilities <= 1)).all()
    assert np.array_equal(prediction.labels, (prediction.probabilities[0] > 0.5).astype(np.int64))


def test_resize_policies():
    assert network_input_size(600, 800, (224, 224), "fixed") == (224, 224)
    assert network_input_size(600, 800, (512, 512), "max_side") == (384, 512)
    assert network_input_size(100, 80, (512, 512), "max_side") == (100, 80), "never upscales"
    assert network_input_size(33, 44, (512, 512), "none") == (33, 44)
    with pytest.raises(ValueError, match="resize policy"):
        network_input_size(1, 1, (1, 1), "stretch")


def test_segmenter_needs_a_config_and_a_real_device():
    with pytest.raises(segcore.errors.ConfigError, match="needs the model's config"):
        segcore.Segmenter(torch.nn.Conv2d(3, 2, 1))
    if not torch.cuda.is_available():
        model = segcore.create_model("unet", num_classes=2, width=4)
        model.segcore_config["normalization"] = {"mean": [0, 0, 0], "std": [1, 1, 1]}
        with pytest.raises(segcore.errors.SegcoreError, match="no CUDA GPU"):
            segcore.Segmenter(model, device="cuda")
        with pytest.raises(segcore.errors.SegcoreError, match="unknown device"):
            segcore.Segmenter(model, device="tpu")


class _RedDetector(torch.nn.Module):
    """Logits (0, red - 0.5): a pixel is class 1 where the network input is red. Remembers what it was fed."""

    def forward(self, x):
        self.seen = x.clone()
        return {"out": torch.stack([torch.zeros_like(x[:, 0]), x[:, 0] - 0.5], dim=1) * 20}


def _red_detector(policy: str, input_size=(64, 64)):
    config = {"architecture": "probe", "num_classes": 2, "class_names": ["background", "red"],
              "class_colors": [[0, 0, 0], [255, 0, 0]], "normalization": {"mean": [0, 0, 0], "std": [1, 1, 1]},
              "input_size": list(input_size), "resize": policy, "task": "semantic"}
    return segcore.Segmenter(_RedDetector(), config, device="cpu")


@pytest.mark.parametrize("height, width", [(37, 91), (91, 37), (64, 64), (5, 201), (333, 17)])
def test_letterbox_keeps_the_aspect_ratio_and_round_trips_odd_sizes(height, width):
    from segcore.data.transforms import fit_within
    from segcore.inference import content_size

    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[:, : width // 3, 0] = 255  # a red band on the left third
    segmenter = _red_detector("letterbox")
    prediction = segmenter.predict(image)
    assert prediction.labels.shape == (height, width) and prediction.probabilities.shape == (2, height, width)
    content = content_size(height, width, (64, 64), "letterbox")
    assert content == fit_within(height, width, (64, 64)) and max(content) == 64
    scale = min(64 / height, 64 / width)  # each side is the exactly scaled side, rounded
    assert abs(content[0] - height * scale) <= 0.5 and abs(content[1] - width * scale) <= 0.5
    seen = segmenter.model.seen[0]
    assert seen.shape == (3, 64, 64)
    assert (seen[:, content[0]:, :] == 0).all() and (seen[:, :, content[1]:] == 0).all(), "pads are black"
    # The band comes back where it was: padding is cropped off before resizing to the image.
    expected = np.zeros((height, width), dtype=np.int64)
    expected[:, : width // 3] = 1
    edge = max(2, round(width / content[1]) + 1)  # pixels within one network pixel of the band's edge may differ
    columns = np.r_[: max(0, width // 3 - edge), width // 3 + edge : width]
    assert np.array_equal(prediction.labels[:, columns], expected[:, columns])


def test_letterbox_and_fixed_differ_only_in_geometry():
    image = np.zeros((30, 90, 3), dtype=np.uint8)
    image[:, 30:60, 0] = 255
    fixed, letterbox = _red_detector("fixed"), _red_detector("letterbox")
    assert np.array_equal(fixed.predict(image).labels, letterbox.predict(image).labels)
    assert fixed.model.seen.shape == letterbox.model.seen.shape == (1, 3, 64, 64)
    assert (fixed.model.seen[0, 0, 60:] > 0.5).any(), "fixed squashes the image over the whole input"
    assert (letterbox.model.seen[0, :, 21:] == 0).all(), "letterbox leaves the bottom two thirds black"
    # A batch of letterboxed images of different shapes shares one network size and still round-trips each.
    images = [image, image[:, :45], np.ascontiguousarray(image.transpose(1, 0, 2))]
    for single, batched in zip(images, letterbox.predict_batch(images)):
        assert np.array_equal(batched.labels, letterbox.predict(single).labels)


# ---------------------------------------------------------------------------------------------- fast pipeline


def _reference_postprocess(logits, content, shape):
    """The pipeline before it was made fast: crop, upsample every class with torch, softmax/sigmoid, argmax."""
    import torch.nn.functional as F

    one = torch.from_numpy(logits)[None, :, : content[0], : content[1]]
    one = F.interpolate(one, size=shape, mode="bilinear", align_corners=False)[0]
    if one.shape[0] == 1:
        probabilities = torch.sigmoid(one)
        return (probabilities[0] > 0.5).long().numpy(), probabilities.numpy()
    probabilities = torch.softmax(one, dim=0)
    return probabilities.argmax(dim=0).numpy(), probabilities.numpy()


@pytest.mark.parametrize("channels", [1, 2, 5])
@pytest.mark.parametrize("content, shape", [((56, 64), (97, 131)), ((64, 64), (600, 480)), ((64, 48), (31, 20))])
def test_fast_postprocess_matches_the_full_resolution_softmax(channels, content, shape):
    """Labels from one upsampled logit margin (or logits, for more classes) equal the argmax of the upsampled
    softmax; probabilities and alpha, computed only when read, agree within 1e-4."""
    from segcore.compose import foreground_alpha

    rng = np.random.default_rng(channels)
    logits = (rng.normal(size=(channels, 64, 64)) * 3).astype(np.float32)
    segmenter = Segmenter(segcore.create_model("unet", num_classes=channels, width=8),
                          config={"normalization": {"mean": [0.5] * 3, "std": [0.5] * 3}, "input_size": [64, 64],
                                  "resize": "letterbox"}, device="cpu")
    prediction = segmenter._postprocess(logits, content, shape)
    labels, probabilities = _reference_postprocess(logits, content, shape)
    assert prediction._probabilities is None  # nothing at full size but the labels yet
    if channels == 2:
        margin = np.abs(probabilities[1] - probabilities[0])
    else:
        top = np.sort(probabilities, axis=0)
        margin = top[-1] - top[-2] if channels > 1 else np.abs(probabilities[0] - 0.5)
    decided = margin > 1e-4  # OpenCV and torch round the interpolation weights differently
    assert decided.mean() > 0.999
    np.testing.assert_array_equal(prediction.labels[decided], labels[decided])
    assert prediction.labels.dtype == np.int64 and prediction.labels.shape == shape
    np.testing.assert_allclose(prediction.probabilities, probabilities, atol=1e-4)
    np.testing.assert_allclose(prediction.alpha, foreground_alpha(probabilities), atol=1e-4)


def test_input_is_resized_with_area_interpolation_and_letterboxed_black():
    segmenter = Segmenter(segcore.create_model("unet", num_classes=2, width=8),
                          config={"normalization": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.5]},
                                  "input_size": [64, 64], "resize": "letterbox"}, device="cpu")
    image = np.zeros((120, 240, 3), dtype=np.uint8)
    image[:, ::2] = 255  # one-pixel stripes: area interpolation averages them to grey instead of aliasing
    network_input = segmenter.network_input(image, (64, 64), (32, 64))
    assert network_input.shape == (3, 64, 64) and network_input.dtype == np.float32
    mean, std = np.array([0.5, 0.4, 0.3])[:, None, None], np.array([0.2, 0.25, 0.5])[:, None, None]
    recovered = network_input * std + mean  # back to 0..1
    # every output pixel averages 3.75 columns of alternating stripes: 0.47..0.53, never 0 or 1 as sampling gives
    assert np.abs(recovered[:, :32] - 0.5).max() < 0.04
    black = -np.array([0.5, 0.4, 0.3]) / np.array([0.2, 0.25, 0.5])
    np.testing.assert_allclose(network_input[:, 32:], np.broadcast_to(black[:, None, None], (3, 32, 64)), atol=1e-6)


def test_onnxruntime_segmenter_equals_torch(tmp_path):
    """The same saved model through ONNX Runtime: identical labels (off exact ties), probabilities within 1e-4."""
    torch.manual_seed(0)
    model = segcore.create_model("sinet", num_classes=2).eval()
    segcore.save_pretrained(model, tmp_path / "m", class_names=["background", "person"], input_size=(96, 96),
                            normalization="imagenet", resize="letterbox")
    torch_segmenter = Segmenter.from_pretrained(tmp_path / "m", device="cpu")
    onnx_segmenter = Segmenter.from_pretrained(tmp_path / "m", runtime="onnxruntime")
    assert onnx_segmenter.runtime == "onnxruntime" and torch_segmenter.runtime == "torch"
    image = np.random.default_rng(0).integers(0, 256, (131, 97, 3), dtype=np.uint8)
    expected, got = torch_segmenter.predict(image), onnx_segmenter.predict(image)
    np.testing.assert_allclose(got.probabilities, expected.probabilities, atol=1e-4)
    decided = np.abs(expected.probabilities[1] - 0.5) > 1e-4
    np.testing.assert_array_equal(got.labels[decided], expected.labels[decided])
    with pytest.raises(segcore.SegcoreError, match="unknown runtime 'tensorrt'"):
        Segmenter(torch_segmenter.model, config=torch_segmenter.config, runtime="tensorrt")


def test_onnx_export_is_cached_per_weights(tmp_path, monkeypatch):
    """The second ONNX Runtime load of the same weights reads the checked export from the cache instead of
    exporting again; other weights get their own file; a damaged cache file is replaced by a fresh export."""
    from segcore import export

    monkeypatch.setenv("SEGCORE_CACHE_DIR", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = segcore.create_model("sinet", num_classes=2).eval()
    segcore.save_pretrained(model, tmp_path / "m", class_names=["background", "person"], input_size=(64, 64),
                            normalization="imagenet", resize="letterbox")
    exports = []
    real_export = export._onnx_export
    monkeypatch.setattr(export, "_onnx_export", lambda *args: exports.append(args) or real_export(*args))
    image = np.random.default_rng(1).integers(0, 256, (80, 70, 3), dtype=np.uint8)
    first = Segmenter.from_pretrained(tmp_path / "m", runtime="onnxruntime").predict(image)
    files = sorted((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(exports) == 1 and len(files) == 1 and files[0].stat().st_size > 10_000
    second = Segmenter.from_pretrained(tmp_path / "m", runtime="onnxruntime").predict(image)
    assert len(exports) == 1  # read back, not exported again
    np.testing.assert_array_equal(second.probabilities, first.probabilities)

    changed = segcore.load_pretrained(tmp_path / "m")
    with torch.no_grad():
        next(changed.parameters()).add_(0.5)
    Segmenter(changed, runtime="onnxruntime")
    assert len(exports) == 2 and len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 2

    files[0].write_bytes(b"not an onnx graph")
    again = Segmenter.from_pretrained(tmp_path / "m", runtime="onnxruntime").predict(image)
    assert len(exports) == 3 and files[0].stat().st_size > 10_000  # replaced by a good export
    np.testing.assert_allclose(again.probabilities, first.probabilities, atol=1e-6)


def test_thread_policy_sets_threads_and_slots(monkeypatch):
    from segcore import inference

    assert segcore.set_num_threads is inference.set_num_threads  # the public API, as README shows it
    previous = torch.get_num_threads()
    monkeypatch.setattr(inference, "_threads", None)
    try:
        monkeypatch.setenv("SEGCORE_THREADS", "1")
        assert inference.serving_threads(cores=16) == 1
        assert inference.apply_thread_policy() == 1 and torch.get_num_threads() == 1
        assert inference.inference_slots(threads=1, cores=2) == 2
        assert inference.inference_slots(threads=4, cores=2) == 1
        monkeypatch.delenv("SEGCORE_THREADS")
        assert inference.serving_threads(cores=16) == 4 and inference.serving_threads(cores=2) == 1
        monkeypatch.setenv("SEGCORE_THREADS", "two")
        with pytest.raises(segcore.SegcoreError, match="SEGCORE_THREADS='two' is not a whole number"):
            inference.serving_threads()
        with pytest.raises(segcore.SegcoreError, match="at least 1"):
            inference.set_num_threads(0)
    finally:
        torch.set_num_threads(previous)


def test_concurrent_callers_never_run_more_predictions_than_slots(monkeypatch):
    """Six threads calling one Segmenter: at most inference_slots() predictions run at once, all finish."""
    import threading
    import time

    from segcore import inference

    monkeypatch.setattr(inference, "inference_slots", lambda threads=None, cores=None: 2)
    segmenter = Segmenter(segcore.create_model("unet", num_classes=2, width=8),
                          config={"normalization": {"mean": [0.5] * 3, "std": [0.5] * 3}, "input_size": [64, 64],
                                  "resize": "fixed"}, device="cpu")
    running, most, lock = [0], [0], threading.Lock()
    real_runner = segmenter.runner

    def counting_runner(batch):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        try:
            return real_runner(batch)
        finally:
            with lock:
                running[0] -= 1

    segmenter.runner = counting_runner
    image = np.zeros((40, 50, 3), dtype=np.uint8)
    results = []
    threads = [threading.Thread(target=lambda: results.append(segmenter.predict(image).labels.shape)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [(40, 50)] * 6
    assert most[0] == 2


def test_waiting_callers_are_served_first_come_first_served(monkeypatch):
    """One slot, callers queued in a known order: they run in that order (an unfair wake-up starved some)."""
    import threading
    import time

    from segcore import inference

    monkeypatch.setattr(inference, "inference_slots", lambda threads=None, cores=None: 1)
    slots = inference._Slots()
    order, started = [], []
    slots.__enter__()  # hold the only slot while the callers line up

    def caller(index):
        started.append(index)
        with slots:
            order.append(index)

    threads = []
    for index in range(5):
        threads.append(threading.Thread(target=caller, args=(index,)))
        threads[-1].start()
        while len(slots._waiting) < index + 1:  # wait until this caller is queued before starting the next
            time.sleep(0.001)
    slots.__exit__(None, None, None)
    for thread in threads:
        thread.join()
    assert order == [0, 1, 2, 3, 4] and slots._busy == 0


class _RightwardRamp(torch.nn.Module):
    """Class-1 margin x / width - 0.3 whatever the input: marks the right 70 % of any network input."""

    def forward(self, x):
        ramp = torch.linspace(0, 1, x.shape[-1]).expand(x.shape[0], x.shape[-2], -1) - 0.3
        return {"out": torch.stack([torch.zeros_like(ramp), ramp], dim=1)}


def test_flip_augmentation_averages_the_mirrored_pass_mapped_back():
    config = {"architecture": "probe", "num_classes": 2, "class_names": ["background", "right"],
              "class_colors": [[0, 0, 0], [255, 0, 0]], "normalization": {"mean": [0, 0, 0], "std": [1, 1, 1]},
              "input_size": [48, 64], "resize": "fixed", "task": "semantic"}
    image = np.zeros((48, 64, 3), np.uint8)
    plain = segcore.Segmenter(_RightwardRamp(), config, device="cpu").predict(image)
    assert plain.labels[:, :15].max() == 0 and plain.labels[:, 25:].min() == 1
    flipped = segcore.Segmenter(_RightwardRamp(), config, device="cpu", tta="flip").predict(image)
    # the mirrored pass marks the left 70 %, un-mirrored; the mean margin (x - 0.3 + 1 - x - 0.3) / 2 = 0.2
    np.testing.assert_allclose(flipped.alpha, 1 / (1 + np.exp(-0.2)), atol=1e-5)
    assert flipped.labels.min() == 1


def test_a_models_own_test_time_setting_is_its_default_and_can_be_turned_off(tmp_path):
    """config "tta" (written by `segcore ship --tta`) is what Segmenter runs unless the caller says otherwise, for
    the whole segmenter (tta="none") or one call (predict(image, tta="none"), as the webcam does); it survives
    save_pretrained / load_pretrained."""
    config = {"architecture": "probe", "num_classes": 2, "class_names": ["background", "right"],
              "class_colors": [[0, 0, 0], [255, 0, 0]], "normalization": {"mean": [0, 0, 0], "std": [1, 1, 1]},
              "input_size": [48, 64], "resize": "fixed", "task": "semantic", "tta": "flip"}
    image = np.zeros((48, 64, 3), np.uint8)
    mirrored_mean = 1 / (1 + np.exp(-0.2))  # see the test above: both passes averaged
    shipped = segcore.Segmenter(_RightwardRamp(), config, device="cpu")
    assert shipped.tta.spec == "flip"
    np.testing.assert_allclose(shipped.predict(image).alpha, mirrored_mean, atol=1e-5)
    assert shipped.predict(image, tta="none").labels[:, :15].max() == 0  # one plain pass for this call
    np.testing.assert_allclose(shipped.predict(image).alpha, mirrored_mean, atol=1e-5)  # and the default again
    assert segcore.Segmenter(_RightwardRamp(), config, device="cpu", tta="none").tta is None
    from segcore.inference import TestTimeAugmentation
    assert TestTimeAugmentation.parse("flip+scales:1.25,0.75").spec == "flip+scales:0.75,1.25"
    assert TestTimeAugmentation.parse("scales:1.5").spec == "scales:1.5"

    model = segcore.create_model("unet", num_classes=2, width=4)
    model.segcore_config = {**model.segcore_config, "tta": "flip"}
    segcore.save_pretrained(model, tmp_path / "saved")
    assert segcore.Segmenter.from_pretrained(tmp_path / "saved", device="cpu").tta.spec == "flip"


@pytest.mark.parametrize("policy", ["letterbox", "fixed", "max_side", "none"])
def test_flip_and_scales_keep_an_equivariant_models_answer(policy):
    """A per-pixel red detector answers the same for the mirrored and rescaled image: test-time augmentation must
    map each pass back exactly onto the image (letterbox padding, odd sizes) and change little."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 100, (57, 91, 3), dtype=np.uint8)
    image[10:40, 5:30, 0] = 255  # a red block near the left edge
    truth = np.zeros((57, 91), bool)
    truth[10:40, 5:30] = True
    plain = _red_detector(policy).predict(image)
    assert _iou(plain.labels == 1, truth) > 0.9
    flipped = segcore.Segmenter(_RedDetector(), _red_detector(policy).config, device="cpu", tta="flip")
    assert np.array_equal(flipped.predict(image).labels, plain.labels)
    augmented = segcore.Segmenter(_RedDetector(), _red_detector(policy).config, device="cpu",
                                  tta="flip+scales:0.75,1.25")
    assert augmented.tta.passes == 6 and augmented.tta.scales == (0.75, 1.0, 1.25)
    result = augmented.predict(image)
    assert result.labels.shape == (57, 91) and _iou(result.labels == 1, plain.labels == 1) > 0.9


def test_test_time_augmentation_settings_are_checked(capsys):
    from segcore.cli import main
    from segcore.errors import ConfigError
    from segcore.inference import TestTimeAugmentation

    assert TestTimeAugmentation.parse("none") is None and TestTimeAugmentation.parse(None) is None
    assert TestTimeAugmentation.parse("scales:1.5").passes == 2
    for bad, message in [("mirror", "unknown test-time augmentation 'mirror'"), ("scales:big", "scales must be"),
                         ("scales:0.1", "between 0.25 and 4")]:
        with pytest.raises(ConfigError, match=message):
            TestTimeAugmentation.parse(bad)
    config = _red_detector("fixed").config
    with pytest.raises(ConfigError, match="runs in ONNX Runtime at one size only"):
        segcore.Segmenter(segcore.create_model("unet", num_classes=2, width=4), config, device="cpu",
                          runtime="onnxruntime", tta="scales:0.75")
    assert main(["eval", "--peer", "mediapipe", "--tta", "flip", "--data", "x"]) == 1
    assert "--tta augments a trained model's predictions" in capsys.readouterr().err
