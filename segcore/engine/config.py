"""TrainConfig: the one dataclass that configures training, mirrored field for field by the YAML recipes.

`load_recipe(path, overrides)` reads a recipe and applies `key=value` overrides (values parsed as YAML, nested
keys with dots: `model_kwargs.width=16`); unknown keys are errors that list the known ones.
A recipe with `stages:` describes a multi-stage run (contrastive pre-training, then fine-tuning); each stage is a
mapping of fields that override the top level for that stage.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from segcore.checkpoint import MAX_INPUT_SIDE, RESIZE_POLICIES
from segcore.errors import ConfigError
from segcore.fileio import write_text_atomic

# Bounds that catch typing slips (lr=1e9, input_size 100000) before anything is allocated or trained.
MAX_LR, MAX_BATCH_SIZE, MAX_EPOCHS = 10.0, 1024, 10_000
MIN_SIDE, MAX_SIDE = 32, MAX_INPUT_SIDE
SOURCE_KEYS = {"name", "data", "dataset", "train_split", "val_split", "dataset_kwargs", "weight"}


def source_problems(sources) -> list[str]:
    """What is wrong with a recipe's `sources` list (empty when nothing is)."""
    if sources is None:
        return []
    if not isinstance(sources, list) or not sources:
        return ["sources must be a non-empty list of {name, data, dataset, weight, ...} mappings"]
    problems, names = [], set()
    for index, entry in enumerate(sources, start=1):
        if not isinstance(entry, dict):
            problems.append(f"source {index} must be a mapping, not {entry!r}")
            continue
        unknown = sorted(set(entry) - SOURCE_KEYS)
        if unknown:
            problems.append(f"source {index}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(SOURCE_KEYS))}")
        if not entry.get("name") or not entry.get("data"):
            problems.append(f"source {index} needs a name and data (its dataset folder)")
        elif entry["name"] in names:
            problems.append(f"source name {entry['name']!r} appears twice")
        names.add(entry.get("name"))
        weight = entry.get("weight", 1.0)
        if not isinstance(weight, (int, float)) or weight < 0:
            problems.append(f"source {entry.get('name', index)}: weight must be a number >= 0, not {weight!r}")
    if not problems and sum(float(entry.get("weight", 1.0)) for entry in sources) <= 0:
        problems.append("the source weights add up to 0; give at least one a positive weight")
    return problems


@dataclass
class TrainConfig:
    # model
    model: str = "unet"
    model_kwargs: dict = field(default_factory=dict)
    init_from: str | None = None  # a saved model folder (or Hub id) to fine-tune; matching tensors are copied
    # {source prefix: target prefix}: copy init_from's tensors under renamed prefixes (only those), e.g. a BiSeNet's
    # ResNet into a DeepLab: {"context_path.backbone.": "backbone."}
    init_from_prefixes: dict = field(default_factory=dict)
    # data
    data: str | None = None  # dataset root
    dataset: str = "folder"  # folder | camvid | voc | saliency
    dataset_kwargs: dict = field(default_factory=dict)
    # several datasets as one: a list of {name, data, dataset, train_split, val_split, dataset_kwargs, weight};
    # when set it replaces data/dataset/splits, each epoch samples the sources by weight, validation is per source
    sources: list | None = None
    epoch_size: int | None = None  # samples per epoch of a multi-source run (default: all sources' sizes added)
    composite: dict | None = None  # PersonComposite settings (copy-paste, zoom-out, edge crops); {} = defaults
    train_split: str | None = "train"
    val_split: str | None = "val"
    train_fraction: float = 1.0  # use a seeded random fraction of the training images (label-efficiency runs)
    augmentation: str = "scene"  # portrait | scene | saliency | none
    normalization: str = "imagenet"  # imagenet | portraitnet
    input_size: list = field(default_factory=lambda: [256, 256])
    resize: str = "fixed"  # inference resize policy saved with the model
    # optimisation
    loss: str = "ce"
    loss_kwargs: dict = field(default_factory=dict)
    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    epochs: int = 10
    iterations: int | None = None  # when set, training stops after this many steps (epochs become an upper bound)
    batch_size: int = 8
    lr_power: float = 0.9  # poly decay
    warmup_iterations: int = 0
    grad_clip: float | None = None
    # Exponential moving average of the weights (and BN statistics) after every step, e.g. 0.999; 0 = off. When on,
    # validation, best/ and last/ use the averaged weights; the raw ones stay in trainer_state.pt for resuming.
    ema_decay: float = 0.0
    amp: bool = True  # bfloat16 autocast, CUDA only
    channels_last: bool = True  # CUDA only
    # schedules
    encoder_only_epochs: int = 0  # SINet phase 1: supervise only the encoder's own prediction (output["aux"][0])
    frozen_encoder_epochs: int = 0  # models with freeze_encoder(): frozen for this many epochs; -1 = always
    # validation and outputs
    val_every: int = 1
    best_metric: str | None = None  # default: fg_iou (2 classes), miou (semantic), cc (saliency)
    early_stopping_patience: int | None = None  # validations without improvement before stopping
    boundary_tolerance: int = 3  # pixels, for boundary F on binary tasks
    seed: int = 0
    workers: int = 0
    threads: int | None = None  # CPU threads for this process (the app uses half the cores)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    save_dtype: str = "float32"  # float16 halves shipped weights
    # multi-stage recipes (contrastive pre-training then fine-tuning)
    stages: list | None = None
    projection_dim: int = 256  # contrastive projection head width
    notes: str = ""

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict, source: str = "recipe") -> "TrainConfig":
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ConfigError(
                f"{source}: unknown setting(s) {', '.join(unknown)}; known settings: {', '.join(cls.field_names())}"
            )
        config = cls(**{key: _coerce(cls, key, value, source) for key, value in values.items()})
        config.validate(source)
        return config

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self, source: str = "recipe") -> None:
        """Every setting within sane bounds, checked before anything is allocated; all problems in one message."""
        problems = []
        if self.optimizer not in ("adam", "adamw", "sgd"):
            problems.append(f"optimizer must be adam, adamw or sgd, not {self.optimizer!r}")
        for name in ("lr", "weight_decay", "momentum", "lr_power", "train_fraction", "ema_decay"):
            value = getattr(self, name)
            if not math.isfinite(value):
                problems.append(f"{name} must be a finite number, not {value}")
        if not 0 < self.lr <= MAX_LR:
            problems.append(f"lr must lie in (0, {MAX_LR:g}], not {self.lr}; typical values are 1e-4 to 1e-2")
        if self.weight_decay < 0:
            problems.append(f"weight_decay must be 0 or more, not {self.weight_decay}")
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            problems.append(f"batch_size must lie in 1..{MAX_BATCH_SIZE}, not {self.batch_size}")
        if self.epochs < 1 and not self.iterations:
            problems.append("set epochs >= 1 or iterations >= 1")
        if self.epochs > MAX_EPOCHS:
            problems.append(f"epochs must be at most {MAX_EPOCHS}, not {self.epochs}")
        if len(self.input_size) != 2 or not all(MIN_SIDE <= side <= MAX_SIDE for side in self.input_size):
            problems.append(f"input_size must be [height, width] with both in {MIN_SIDE}..{MAX_SIDE}, "
                            f"not {self.input_size}")
        if not 0 <= self.ema_decay < 1:
            problems.append(f"ema_decay must lie in [0, 1) (0 turns the average off; 0.999 averages about the last "
                            f"1000 steps), not {self.ema_decay}")
        if not 0 < self.train_fraction <= 1:
            problems.append(f"train_fraction must lie in (0, 1], not {self.train_fraction}")
        if self.val_every < 1:
            problems.append(f"val_every must be at least 1, not {self.val_every}")
        if self.resize not in RESIZE_POLICIES:
            problems.append(f"resize must be one of {', '.join(RESIZE_POLICIES)}, not {self.resize!r}")
        if not isinstance(self.init_from_prefixes, dict) or not all(
                isinstance(key, str) and isinstance(value, str) for key, value in self.init_from_prefixes.items()):
            problems.append(f"init_from_prefixes must map source name prefixes to target ones "
                            f"({{\"context_path.backbone.\": \"backbone.\"}}), not {self.init_from_prefixes!r}")
        elif self.init_from_prefixes and not self.init_from:
            problems.append("init_from_prefixes renames the tensors of init_from, which is not set; set init_from "
                            "to a saved model folder or remove init_from_prefixes")
        problems += source_problems(self.sources)
        if problems:
            raise ConfigError(f"{source}: " + "; ".join(problems))

    def stage_configs(self) -> list[tuple[str, "TrainConfig"]]:
        """The stages to run in order: [(name, config)], or [("train", self)] for a single-stage recipe."""
        if not self.stages:
            return [("train", self)]
        base = {key: value for key, value in self.to_dict().items() if key != "stages"}
        result = []
        for index, stage in enumerate(self.stages):
            if not isinstance(stage, dict):
                raise ConfigError(f"stage {index + 1} must be a mapping of settings")
            stage = dict(stage)
            name = str(stage.pop("name", f"stage{index + 1}"))
            result.append((name, TrainConfig.from_dict({**base, **stage}, source=f"stage {name!r}")))
        return result


def _coerce(cls, key: str, value, source: str):
    """YAML reads `1e-4` as a string (YAML 1.1 wants `1.0e-4`); turn numeric strings into the field's number type."""
    annotation = next(f.type for f in dataclasses.fields(cls) if f.name == key)
    if isinstance(value, str) and annotation.split(" |")[0] in ("float", "int"):
        number_type = float if annotation.startswith("float") else int
        try:
            return number_type(float(value)) if number_type is int and float(value).is_integer() else number_type(value)
        except ValueError:
            raise ConfigError(f"{source}: {key} must be a number, not {value!r}") from None
    return value


def _set_dotted(values: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    target = values
    for key in keys[:-1]:
        target = target.setdefault(key, {})
        if not isinstance(target, dict):
            raise ConfigError(f"--set {dotted}: {key} is not a mapping")
    target[keys[-1]] = value


def apply_overrides(values: dict, overrides: list[str] | None) -> dict:
    values = dict(values)
    for override in overrides or []:
        if "=" not in override:
            raise ConfigError(f"--set {override!r}: write key=value, e.g. --set epochs=5")
        key, raw = override.split("=", 1)
        try:
            parsed = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as error:
            raise ConfigError(f"--set {override!r}: the value is not valid YAML ({error})") from None
        _set_dotted(values, key.strip(), parsed)
    return values


def load_recipe(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML recipe (or start from defaults when path is None) and apply `key=value` overrides."""
    values: dict = {}
    source = "settings"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such recipe file")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({error})") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a recipe must be a mapping of settings")
        values = loaded
    return TrainConfig.from_dict(apply_overrides(values, overrides), source=source)


def write_recipe(config: TrainConfig, path: Path) -> None:
    write_text_atomic(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
