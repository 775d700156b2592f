"""Normalisation presets and augmentation pipelines: image and label move together (torchvision.transforms.v2).

Mean and std are stored on the 0-1 scale of RGB inputs. "portraitnet" is PortraitNet/SINet's preprocessing
(subtract BGR mean 103.94/116.78/123.68, multiply by 0.017) rewritten for RGB channel order: the mean is reversed
and std = 1 / (0.017 * 255), so the network sees the same numbers as in the paper's code.
Augmentation presets by name ("portrait", "person", "scene", "saliency", "none") are built by build_transforms;
PortraitNet's texture group uses Gaussian blur only (the paper's code also draws median and box blurs, which v2 does
not offer). Resizing to the network follows the model's policy: "fixed" squashes to the input size, "letterbox"
keeps the aspect ratio and pads bottom/right (image 0, mask ignore), as Segmenter does at inference.
The person compositing operations (paste_people, zoom_out, edge_crop, PersonComposite) work on raw dataset samples
before this pipeline: they need a second image, which one sample's transform does not have.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from segcore.errors import ConfigError, InputError

NORMALIZATION_PRESETS: dict[str, dict[str, list[float]]] = {
    "imagenet": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    "portraitnet": {
        "mean": [123.68 / 255.0, 116.78 / 255.0, 103.94 / 255.0],
        "std": [1.0 / (0.017 * 255.0)] * 3,
    },
    "none": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
}


def resolve_normalization(preset: str | None = None, mean=None, std=None) -> dict[str, list[float]]:
    """Mean/std from a preset name or explicit values (explicit values win); default "imagenet"."""
    if preset is not None and preset not in NORMALIZATION_PRESETS:
        raise ConfigError(f"unknown normalisation preset {preset!r}; presets are: {', '.join(NORMALIZATION_PRESETS)}")
    base = NORMALIZATION_PRESETS[preset or "imagenet"]
    mean = list(map(float, mean)) if mean is not None else list(base["mean"])
    std = list(map(float, std)) if std is not None else list(base["std"])
    if len(mean) != len(std) or any(value <= 0 for value in std):
        raise ConfigError(f"normalisation needs one mean and one positive std per channel, got mean={mean} std={std}")
    return {"mean": mean, "std": std}


def _normalization(normalization) -> dict[str, list[float]]:
    """A preset name or a {"mean", "std"} dict (as saved in a model's config.json)."""
    if isinstance(normalization, dict):
        return resolve_normalization(mean=normalization["mean"], std=normalization["std"])
    return resolve_normalization(normalization)


# ----------------------------------------------------------------------------------------------------------------
# Augmentation presets. Probabilities follow PortraitNet's code: each texture group (colour, blur, noise) is applied
# with probability 0.5, the colour group draws all four factors; noise draws its sigma uniformly in [0, 10] (0-255).

AUGMENTATION_PRESETS: dict[str, dict] = {
    # PortraitNet (Zhang et al. 2019): resize to the input, then flip, rotate, scale and translate in one affine.
    "portrait": {
        "flip_probability": 0.5, "rotation": 45.0, "scale_range": (0.5, 1.5), "translate": 0.25,
        "photometric": "portrait", "photometric_probability": 0.5, "crop": False,
    },
    # People in any photo: PortraitNet's texture group, milder geometry (compositing supplies scale and position).
    "person": {
        "flip_probability": 0.5, "rotation": 15.0, "scale_range": (0.8, 1.2), "translate": 0.1,
        "photometric": "portrait", "photometric_probability": 0.5, "crop": False,
    },
    # Road scenes (BiSeNet, ENet style): random scale of the full image, crop (padded with ignore), flip, mild colour.
    "scene": {
        "flip_probability": 0.5, "rotation": 0.0, "scale_range": (0.5, 2.0), "translate": 0.0,
        "photometric": "color", "photometric_probability": 0.5, "crop": True,
    },
    # Saliency: gaze keeps a centre bias, so geometry stays mild; density maps move bilinearly and pad with 0.
    "saliency": {
        "flip_probability": 0.5, "rotation": 0.0, "scale_range": (0.9, 1.1), "translate": 0.05,
        "photometric": "color", "photometric_probability": 0.5, "crop": False,
    },
    "none": {
        "flip_probability": 0.0, "rotation": 0.0, "scale_range": (1.0, 1.0), "translate": 0.0,
        "photometric": None, "photometric_probability": 0.0, "crop": False,
    },
}

PORTRAIT_COLOR_RANGES = {"saturation": (0.4, 1.7), "brightness": (0.4, 1.7), "contrast": (0.6, 1.5),
                         "sharpness": (0.8, 1.3)}
MILD_COLOR_RANGES = {"saturation": (0.6, 1.4), "brightness": (0.6, 1.4), "contrast": (0.6, 1.4)}
PORTRAIT_NOISE_SIGMA = 10.0 / 255.0
# OpenCV's sigma for a Gaussian kernel given only its size (sigma = 0 there): 0.3 * ((k - 1) / 2 - 1) + 0.8.
BLUR_SIGMA_FOR_KERNEL = {3: 0.8, 5: 1.1}


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


class PortraitTexture:
    """PortraitNet's non-geometric augmentation on a float (3, H, W) image in [0, 1]: colour group, blur, noise."""

    def __init__(self, probability: float = 0.5, color_ranges: dict | None = None, blur: bool = True,
                 noise_sigma: float = PORTRAIT_NOISE_SIGMA):
        self.probability = probability
        self.color_ranges = PORTRAIT_COLOR_RANGES if color_ranges is None else color_ranges
        self.blur, self.noise_sigma = blur, noise_sigma

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.color_ranges and float(torch.rand(())) < self.probability:
            adjust = {"saturation": TF.adjust_saturation, "brightness": TF.adjust_brightness,
                      "contrast": TF.adjust_contrast, "sharpness": TF.adjust_sharpness}
            for name, (low, high) in self.color_ranges.items():
                image = adjust[name](image, _uniform(low, high))
        if self.blur and float(torch.rand(())) < self.probability:
            kernel = 3 if float(torch.rand(())) < 0.5 else 5
            sigma = BLUR_SIGMA_FOR_KERNEL[kernel]
            image = TF.gaussian_blur(image, kernel_size=[kernel, kernel], sigma=[sigma, sigma])
        if self.noise_sigma > 0 and float(torch.rand(())) < self.probability:
            image = TF.gaussian_noise(image, mean=0.0, sigma=_uniform(0.0, self.noise_sigma), clip=True)
        return image.clamp(0.0, 1.0)


def _resize(item, size: Sequence[int]):
    """Images bilinear with antialiasing; masks "nearest-exact", which samples pixel centres as bilinear does
    (plain "nearest" is off by half a pixel and would shift labels against the image at non-integer scales)."""
    if isinstance(item, tv_tensors.Mask):
        return TF.resize(item, list(size), interpolation=v2.InterpolationMode.NEAREST_EXACT)
    return TF.resize(item, list(size), antialias=True)


def fit_within(height: int, width: int, size: Sequence[int]) -> tuple[int, int]:
    """The largest (height, width) with the image's aspect ratio that fits inside size (H, W): letterbox content."""
    scale = min(size[0] / height, size[1] / width)
    return (max(1, min(int(size[0]), round(height * scale))), max(1, min(int(size[1]), round(width * scale))))


def letterbox(item, size: Sequence[int], fill: float = 0.0):
    """Resize keeping the aspect ratio to fit size, then pad bottom and right to exactly size with fill."""
    height, width = item.shape[-2:]
    content = fit_within(height, width, size)
    resized = _resize(item, content)
    padding = [0, 0, int(size[1]) - content[1], int(size[0]) - content[0]]  # left, top, right, bottom
    return TF.pad(resized, padding, fill=fill) if any(padding) else resized


class RandomScale(v2.Transform):
    """Resize every input by one random factor (images bilinear with antialiasing, masks nearest)."""

    def __init__(self, scale_range: Sequence[float]):
        super().__init__()
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))

    def make_params(self, flat_inputs):
        height, width = v2.query_size(flat_inputs)
        scale = _uniform(*self.scale_range)
        return {"size": [max(1, round(height * scale)), max(1, round(width * scale))]}

    def transform(self, inpt, params):
        return _resize(inpt, params["size"])


def resize_fixations(fixations: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize a binary fixation map (H, W) so every fixated pixel survives (nearest resizing would drop most)."""
    height, width = fixations.shape[-2:]
    output = torch.zeros(tuple(size), dtype=fixations.dtype)
    rows, columns = torch.nonzero(fixations, as_tuple=True)
    rows = (rows * size[0]) // height
    columns = (columns * size[1]) // width
    output[rows, columns] = 1
    return output


def _input_size(input_size) -> tuple[int, int] | None:
    if input_size is None:
        return None
    if isinstance(input_size, int):
        return (input_size, input_size)
    height, width = (int(value) for value in input_size)
    if height < 1 or width < 1:
        raise ConfigError(f"input_size must be positive, got {input_size}; give (height, width) in pixels")
    return (height, width)


class SegmentationTransform:
    """Turns a dataset sample (RGB uint8 (H, W, 3), target) into (normalised float (3, H, W), target tensor).

    Targets: int64 class masks (H, W) move with nearest interpolation and pad with ignore_index; float density maps
    move bilinearly and pad with 0; optional fixation maps keep every fixated pixel through the final resize.
    With contrastive=True the result is (image, distorted image, labels, distorted labels), see distort_pair.
    """

    def __init__(self, kind: str, input_size, normalization="imagenet", train: bool = True,
                 ignore_index: int = 255, contrastive: bool = False, resize: str = "fixed", **settings):
        if kind not in AUGMENTATION_PRESETS:
            raise ConfigError(f"unknown augmentation preset {kind!r}; presets are: {', '.join(AUGMENTATION_PRESETS)}")
        unknown = set(settings) - set(AUGMENTATION_PRESETS[kind])
        if unknown:
            raise ConfigError(f"unknown augmentation setting(s) {sorted(unknown)}; known: "
                             f"{', '.join(AUGMENTATION_PRESETS[kind])}")
        if resize not in ("fixed", "letterbox"):
            raise ConfigError(f"training resizes by 'fixed' or 'letterbox', not {resize!r}")
        self.kind, self.train, self.ignore_index, self.contrastive = kind, train, ignore_index, contrastive
        self.resize = resize
        self.settings = {**AUGMENTATION_PRESETS[kind], **settings}
        self.input_size = _input_size(input_size)
        self.normalization = _normalization(normalization)
        augment = train and kind != "none"
        if augment and self.settings["crop"] and self.input_size is None:
            raise ConfigError(f"the {kind!r} preset crops to input_size while training; give input_size=(H, W)")
        # Masks pad with ignore so padding never counts as a class; saliency pads maps and fixations with 0.
        mask_fill = 0 if kind == "saliency" else ignore_index
        self.mask_fill = mask_fill
        fill = {tv_tensors.Image: 0.0, tv_tensors.Mask: mask_fill}
        self.photometric = None
        self.geometric = None
        if augment:
            photometric_kind, probability = self.settings["photometric"], self.settings["photometric_probability"]
            if photometric_kind == "portrait" and probability > 0:
                self.photometric = PortraitTexture(probability)
            elif photometric_kind == "color" and probability > 0:
                self.photometric = PortraitTexture(probability, MILD_COLOR_RANGES, blur=False, noise_sigma=0.0)
            steps = []
            low, high = self.settings["scale_range"]
            if self.settings["crop"]:
                steps += [RandomScale((low, high)),
                          v2.RandomCrop(self.input_size, pad_if_needed=True, fill=fill)]
            elif self.settings["rotation"] or self.settings["translate"] or (low, high) != (1.0, 1.0):
                translate = self.settings["translate"]
                steps.append(v2.RandomAffine(degrees=self.settings["rotation"], translate=(translate, translate),
                                             scale=(low, high), interpolation=v2.InterpolationMode.BILINEAR,
                                             fill=fill))
            if self.settings["flip_probability"] > 0:
                steps.insert(0, v2.RandomHorizontalFlip(self.settings["flip_probability"]))
            self.geometric = v2.Compose(steps) if steps else None
        # Cropping pipelines work at the image's own scale; the others resize first (cheaper, as PortraitNet does).
        self.resize_first = self.input_size is not None and not (augment and self.settings["crop"])

    def _wrap_target(self, target):
        if isinstance(target, np.ndarray):
            target = torch.from_numpy(np.array(target, copy=True))
        if target.is_floating_point():
            return tv_tensors.Image(target.float()[None])  # density: moves and resizes like an image
        return tv_tensors.Mask(target.long())

    def __call__(self, image, target=None, fixations=None):
        if isinstance(image, np.ndarray):
            # Pillow-backed arrays are read-only; torch wants memory it may write to.
            image = np.array(image, copy=True) if not image.flags.writeable else np.ascontiguousarray(image)
            image = torch.from_numpy(image).permute(2, 0, 1)
        image = tv_tensors.Image(image)
        target = self._wrap_target(target) if target is not None else None
        fixations = torch.as_tensor(np.asarray(fixations)).to(torch.uint8) if fixations is not None else None
        inputs = [image] + ([target] if target is not None else [])

        if self.resize_first:
            if fixations is not None and self.resize == "letterbox":
                raise ConfigError("fixation maps are resized with resize='fixed'; letterbox is for class masks")
            if fixations is not None:
                fixations = resize_fixations(fixations, self.input_size)
            if self.resize == "letterbox":
                inputs = [letterbox(item, self.input_size, self.mask_fill if isinstance(item, tv_tensors.Mask) else 0)
                          for item in inputs]
            else:
                inputs = [_resize(item, self.input_size) for item in inputs]
        inputs[0] = tv_tensors.Image(TF.to_dtype(inputs[0], torch.float32, scale=True))
        if self.photometric is not None:
            inputs[0] = tv_tensors.Image(self.photometric(inputs[0].as_subclass(torch.Tensor)))
        if self.geometric is not None:
            extra = [tv_tensors.Mask(fixations)] if fixations is not None else []
            moved = self.geometric(*inputs, *extra)
            moved = list(moved) if isinstance(moved, (tuple, list)) else [moved]
            if fixations is not None:
                fixations = moved.pop().as_subclass(torch.Tensor)
            inputs = moved
        image = inputs[0].as_subclass(torch.Tensor).clamp(0.0, 1.0)
        outputs = [image]
        if target is not None:
            target = inputs[1].as_subclass(torch.Tensor)
            outputs.append(target[0].clamp(0.0, 1.0) if target.is_floating_point() else target.long())
        if self.contrastive:
            if target is None or outputs[1].is_floating_point():
                raise ConfigError("contrastive pairs need class masks (not saliency maps); train saliency data with a "
                                  "saliency loss")
            distorted, distorted_labels = distort_pair(image, outputs[1], ignore_index=self.ignore_index)
            outputs = [image, distorted, outputs[1], distorted_labels]
        mean, std = self.normalization["mean"], self.normalization["std"]
        outputs[0] = TF.normalize(outputs[0], mean, std)
        if self.contrastive:
            outputs[1] = TF.normalize(outputs[1], mean, std)
        if fixations is not None:
            outputs.append(fixations)
        return tuple(outputs) if len(outputs) > 1 else outputs[0]

    def __repr__(self) -> str:
        return (f"SegmentationTransform(kind={self.kind!r}, input_size={self.input_size}, train={self.train}, "
                f"ignore_index={self.ignore_index}, settings={self.settings})")


def build_transforms(kind: str, input_size, normalization="imagenet", train: bool = True, ignore_index: int = 255,
                     contrastive: bool = False, resize: str = "fixed", **settings) -> SegmentationTransform:
    """The augmentation preset `kind` ("portrait", "scene", "saliency", "none") as a callable on dataset samples.

    input_size: (H, W) or an int; the training crop size for "scene"; None keeps the image size (evaluation).
    train=False gives resize + normalisation only. Settings override a preset's values (see AUGMENTATION_PRESETS):
    flip_probability, rotation (degrees), scale_range, translate (fraction of the size), photometric
    ("portrait", "color" or None), photometric_probability, crop.
    """
    return SegmentationTransform(kind, input_size, normalization, train, ignore_index, contrastive, resize, **settings)


# ----------------------------------------------------------------------------------------------------------------
# Distorted views for pixel-contrastive learning, batched on any device.


def _per_sample(count: int, low: float, high: float, generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(count, generator=generator, device=device)


def distort_pair(images: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255, *, normalization=None,
                 rotation: float = 30.0, scale_range: Sequence[float] = (0.75, 1.25), translate: float = 0.1,
                 flip_probability: float = 0.5, color: float = 0.4, noise_sigma: float = 10.0 / 255.0,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A distorted view (I^) of images (N, 3, H, W) or (3, H, W) with its aligned labels (N, H, W) or (H, W).

    Each sample gets its own random flip, rotation, scale and translation (images bilinear with 0 fill, labels
    nearest with ignore_index fill), then brightness, contrast and saturation factors in [1 - color, 1 + color]
    and Gaussian noise (sigma drawn in [0, noise_sigma]). Images are taken in [0, 1] unless `normalization`
    (a preset name or {"mean", "std"}) says they are normalised; the result comes back in the same space.
    """
    single = images.dim() == 3
    if single:
        images, labels = images[None], labels[None]
    if images.dim() != 4 or labels.dim() != 3 or images.shape[0] != labels.shape[0] or \
            images.shape[-2:] != labels.shape[-2:]:
        raise InputError(f"expected images (N, C, H, W) and labels (N, H, W), got {tuple(images.shape)} and "
                         f"{tuple(labels.shape)}")
    count, channels, height, width = images.shape
    device = images.device
    images = images.float()
    if normalization is not None:
        stats = _normalization(normalization)
        mean = torch.tensor(stats["mean"], device=device).view(1, -1, 1, 1)
        std = torch.tensor(stats["std"], device=device).view(1, -1, 1, 1)
        images = images * std + mean

    angle = _per_sample(count, -rotation, rotation, generator, device) * (math.pi / 180.0)
    scale = _per_sample(count, scale_range[0], scale_range[1], generator, device)
    flip = torch.where(torch.rand(count, generator=generator, device=device) < flip_probability, -1.0, 1.0)
    shift_x = _per_sample(count, -translate, translate, generator, device) * width
    shift_y = _per_sample(count, -translate, translate, generator, device) * height
    # Output pixel p maps to input pixel M^-1 (p - t) with M = scale * rotation * flip, in centred pixel units;
    # affine_grid wants that map in [-1, 1] units, hence the conjugation by the half-size D.
    cos, sin = torch.cos(angle), torch.sin(angle)
    inverse = torch.stack([torch.stack([cos * flip, sin * flip], -1), torch.stack([-sin, cos], -1)], -2)
    inverse = inverse / scale.view(-1, 1, 1)
    half = torch.tensor([width / 2.0, height / 2.0], device=device)
    linear = inverse * half.view(1, 1, 2) / half.view(1, 2, 1)
    offset = -(inverse @ torch.stack([shift_x, shift_y], -1)[..., None])[..., 0] / half
    theta = torch.cat([linear, offset[..., None]], dim=-1)
    grid = F.affine_grid(theta, [count, channels, height, width], align_corners=False)
    distorted = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # Labels shifted by one so that the zero padding marks "outside" and becomes ignore.
    shifted = (labels.float() + 1.0)[:, None]
    moved = F.grid_sample(shifted, grid, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0]
    distorted_labels = torch.where(moved > 0, moved - 1.0, float(ignore_index)).round().long()

    factors = [_per_sample(count, 1.0 - color, 1.0 + color, generator, device).view(-1, 1, 1, 1) for _ in range(3)]
    brightness, contrast, saturation = factors
    distorted = distorted * brightness
    if channels == 3:
        grey = (0.299 * distorted[:, 0:1] + 0.587 * distorted[:, 1:2] + 0.114 * distorted[:, 2:3])
        distorted = grey + (distorted - grey) * saturation
        grey = (0.299 * distorted[:, 0:1] + 0.587 * distorted[:, 1:2] + 0.114 * distorted[:, 2:3])
    else:
        grey = distorted.mean(dim=1, keepdim=True)
    average = grey.mean(dim=(2, 3), keepdim=True)
    distorted = (distorted - average) * contrast + average
    sigma = _per_sample(count, 0.0, noise_sigma, generator, device).view(-1, 1, 1, 1)
    noise = torch.randn(distorted.shape, generator=generator, device=device)
    distorted = (distorted + noise * sigma).clamp(0.0, 1.0)

    if normalization is not None:
        distorted = (distorted - mean) / std
    if single:
        return distorted[0], distorted_labels[0]
    return distorted, distorted_labels


# ----------------------------------------------------------------------------------------------------------------
# Person compositing: new scenes, scales and crops from the training images themselves. Each operation takes raw
# samples (RGB uint8 (H, W, 3) or (3, H, W), class mask (H, W) with 1 = person) and returns (tv_tensors.Image uint8
# (3, H, W), tv_tensors.Mask int64 (H, W)); PersonComposite draws their parameters.


def _as_pair(image, mask) -> tuple[torch.Tensor, torch.Tensor]:
    # np.array copies: dataset arrays viewing a PIL image are read-only, torch wants memory it may write to.
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.array(image)).permute(2, 0, 1)
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(np.array(mask))
    return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor).long()


def _wrap(image: torch.Tensor, mask: torch.Tensor) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    return tv_tensors.Image(image.contiguous()), tv_tensors.Mask(mask.contiguous())


def person_box(mask, person: int = 1) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right), exclusive ends, of the person pixels; None when there are none."""
    mask = torch.as_tensor(np.asarray(mask)) if isinstance(mask, np.ndarray) else mask
    rows = torch.nonzero((mask == person).any(dim=1)).flatten()
    if rows.numel() == 0:
        return None
    columns = torch.nonzero((mask == person).any(dim=0)).flatten()
    return int(rows[0]), int(columns[0]), int(rows[-1]) + 1, int(columns[-1]) + 1


def paste_people(scene_image, scene_mask, donor_image, donor_mask, *, height: int, top: int, left: int,
                 person: int = 1):
    """Paste the person pixels of a donor sample onto a scene: the donor's person box is scaled to `height` pixels
    (aspect kept) and its top-left corner put at (top, left) of the scene, which may leave part of it outside.
    The image blends by the resized (soft-edged) person mask; the label is the scene's mask united with the pasted
    person. A donor without a person leaves the scene as it was."""
    scene_image, scene_mask = _as_pair(scene_image, scene_mask)
    donor_image, donor_mask = _as_pair(donor_image, donor_mask)
    box = person_box(donor_mask, person)
    if box is None or height < 1:
        return _wrap(scene_image.clone(), scene_mask.clone())
    box_top, box_left, box_bottom, box_right = box
    width = max(1, round((box_right - box_left) * height / (box_bottom - box_top)))
    crop = donor_image[:, box_top:box_bottom, box_left:box_right].float()
    alpha = (donor_mask[box_top:box_bottom, box_left:box_right] == person).float()
    crop = TF.resize(crop, [height, width], antialias=True)
    alpha = TF.resize(alpha[None], [height, width], antialias=True)[0].clamp(0.0, 1.0)
    scene_height, scene_width = scene_mask.shape
    # The part of the pasted rectangle that lies inside the scene, in scene and in paste coordinates.
    y0, x0 = max(0, top), max(0, left)
    y1, x1 = min(scene_height, top + height), min(scene_width, left + width)
    image, mask = scene_image.clone(), scene_mask.clone()
    if y0 >= y1 or x0 >= x1:
        return _wrap(image, mask)
    inside = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
    weight = alpha[inside]
    region = image[:, y0:y1, x0:x1].float()
    image[:, y0:y1, x0:x1] = (region * (1.0 - weight) + crop[:, inside[0], inside[1]] * weight).round().clamp(
        0, 255).to(image.dtype)
    pasted = weight > 0.5
    mask[y0:y1, x0:x1][pasted] = person
    return _wrap(image, mask)


def _cover(image: torch.Tensor, mask: torch.Tensor, size: tuple[int, int]):
    """Scale to cover size (aspect kept) and crop the centre: a canvas without stretching its scene."""
    height, width = mask.shape
    scale = max(size[0] / height, size[1] / width)
    scaled = (max(size[0], round(height * scale)), max(size[1], round(width * scale)))
    image = TF.resize(image, list(scaled), antialias=True)
    mask = TF.resize(mask[None], list(scaled), interpolation=v2.InterpolationMode.NEAREST_EXACT)[0]
    top, left = (scaled[0] - size[0]) // 2, (scaled[1] - size[1]) // 2
    return image[:, top:top + size[0], left:left + size[1]], mask[top:top + size[0], left:left + size[1]]


def zoom_out(image, mask, canvas_image, canvas_mask, *, factor: float, top: int, left: int):
    """Shrink a sample by `factor` (< 1) and place it at (top, left) of another scene, the canvas, scaled to cover
    the sample's size: the person becomes small in a large frame whose surroundings are real scene content. Labels
    outside the placed sample are the canvas's own (people in the canvas stay people)."""
    image, mask = _as_pair(image, mask)
    canvas_image, canvas_mask = _as_pair(canvas_image, canvas_mask)
    height, width = mask.shape
    small = (max(1, round(height * factor)), max(1, round(width * factor)))
    if not (0 <= top <= height - small[0] and 0 <= left <= width - small[1]):
        raise ValueError(f"a {small[1]}x{small[0]} sample placed at ({top}, {left}) leaves the {width}x{height} frame")
    canvas_image, canvas_mask = _cover(canvas_image, canvas_mask, (height, width))
    canvas_image, canvas_mask = canvas_image.clone(), canvas_mask.clone()
    canvas_image[:, top:top + small[0], left:left + small[1]] = TF.resize(image, list(small), antialias=True)
    canvas_mask[top:top + small[0], left:left + small[1]] = TF.resize(
        mask[None], list(small), interpolation=v2.InterpolationMode.NEAREST_EXACT)[0]
    return _wrap(canvas_image, canvas_mask)


def edge_crop(image, mask, *, top: int, left: int, height: int, width: int):
    """A crop window of the sample (PersonComposite places it so that its border runs through a person)."""
    image, mask = _as_pair(image, mask)
    return _wrap(image[:, top:top + height, left:left + width], mask[top:top + height, left:left + width])


def _randint(low: int, high: int) -> int:
    """An integer in [low, high] (inclusive) from torch's generator, so DataLoader workers stay seeded."""
    return low + int(torch.randint(0, max(1, high - low + 1), ()))


class PersonComposite:
    """Random compositing for person training data, applied to raw samples before the augmentation pipeline.

    zoom-out (probability zoom_probability): the sample shrinks by a factor in zoom_range onto another scene;
    copy-paste (paste_probability): 1..max_pasted people from other samples, each scaled to paste_heights (a
    fraction of the frame's height), at random positions that may cut them at the frame edge;
    edge crop (edge_crop_probability): a window of edge_crop_fraction of each side whose border runs through a
    person pixel, so limbs and bodies leave the frame. `draw()` returns another raw (image, mask) sample.
    """

    def __init__(self, paste_probability: float = 0.5, zoom_probability: float = 0.3,
                 edge_crop_probability: float = 0.3, paste_heights: Sequence[float] = (0.2, 0.9),
                 zoom_range: Sequence[float] = (0.3, 0.8), max_pasted: int = 2,
                 edge_crop_fraction: Sequence[float] = (0.5, 0.85), person: int = 1):
        for name, value in (("paste_probability", paste_probability), ("zoom_probability", zoom_probability),
                            ("edge_crop_probability", edge_crop_probability)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must lie in [0, 1], not {value}")
        if not 0.0 < zoom_range[0] <= zoom_range[1] < 1.0:
            raise ConfigError(f"zoom_range must lie in (0, 1) with low <= high, not {zoom_range}")
        self.paste_probability, self.zoom_probability = paste_probability, zoom_probability
        self.edge_crop_probability = edge_crop_probability
        self.paste_heights, self.zoom_range = tuple(paste_heights), tuple(zoom_range)
        self.max_pasted, self.edge_crop_fraction, self.person = max_pasted, tuple(edge_crop_fraction), person

    def __call__(self, image, mask, draw):
        image, mask = _wrap(*_as_pair(image, mask))
        if float(torch.rand(())) < self.zoom_probability:
            factor = _uniform(*self.zoom_range)
            height, width = mask.shape
            small = (max(1, round(height * factor)), max(1, round(width * factor)))
            canvas_image, canvas_mask = draw()
            image, mask = zoom_out(image, mask, canvas_image, canvas_mask, factor=factor,
                                   top=_randint(0, height - small[0]), left=_randint(0, width - small[1]))
        if float(torch.rand(())) < self.paste_probability:
            for _ in range(_randint(1, self.max_pasted)):
                donor_image, donor_mask = draw()
                height, width = mask.shape
                pasted_height = max(8, round(_uniform(*self.paste_heights) * height))
                image, mask = paste_people(image, mask, donor_image, donor_mask, height=pasted_height,
                                           top=_randint(-pasted_height // 4, height - 3 * pasted_height // 4),
                                           left=_randint(-pasted_height // 4, width - pasted_height // 4),
                                           person=self.person)
        if float(torch.rand(())) < self.edge_crop_probability:
            window = self._edge_window(mask)
            if window is not None:
                image, mask = edge_crop(image, mask, **window)
        return image, mask

    def _edge_window(self, mask: torch.Tensor) -> dict | None:
        people = torch.nonzero(mask == self.person)
        if people.numel() == 0:
            return None
        height, width = mask.shape
        fraction = _uniform(*self.edge_crop_fraction)
        crop_height, crop_width = max(2, round(height * fraction)), max(2, round(width * fraction))
        for _ in range(8):  # a pixel deep inside a central person leaves no room for a window edge: try others
            row, column = (int(value) for value in people[_randint(0, len(people) - 1)])
            window = self._window_through(row, column, height, width, crop_height, crop_width)
            if window is not None:
                return window
        return None

    @staticmethod
    def _window_through(row, column, height, width, crop_height, crop_width) -> dict | None:
        # One side of the window lies on the chosen person pixel (sides the frame has room for), the pixel inside it.
        sides = [side for side, fits in (("top", row <= height - crop_height), ("bottom", row >= crop_height - 1),
                                         ("left", column <= width - crop_width), ("right", column >= crop_width - 1))
                 if fits]
        if not sides:
            return None
        side = sides[_randint(0, len(sides) - 1)]
        top = _randint(max(0, row - crop_height + 1), min(row, height - crop_height))
        left = _randint(max(0, column - crop_width + 1), min(column, width - crop_width))
        if side == "top":
            top = row
        elif side == "bottom":
            top = row - crop_height + 1
        elif side == "left":
            left = column
        else:
            left = column - crop_width + 1
        return {"top": top, "left": left, "height": crop_height, "width": crop_width}
