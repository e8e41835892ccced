"""TrainConfig: every value that decides what a run computes, and its checks."""

import dataclasses
import os

OPTIMIZERS = ("rmsprop", "adamw", "sgd")
SCHEDULES = ("constant", "cosine")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
STRATEGIES = ("default", "mirrored")
BALANCES = ("none", "class_weight", "resample")
# Names only (trainer/models.py has the networks): checking flags must not load TensorFlow.
MODELS = ("seed_cnn", "resnet_small", "backbone")
BACKBONES = ("efficientnetv2b0", "efficientnetv2s", "convnext_tiny", "resnet50", "mobilenetv3small")


class ConfigError(ValueError):
    """A value or combination of values that cannot work; one line says which."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Defaults are the original recipe's; `configs/` holds the named recipes."""

    recipe: str = "original"
    # Data.
    dataset: str = "sample_paintings"
    data_dir: str | None = None
    image_size: int = 300
    resize_mode: str = "stretch"
    batch_size: int = 32
    cache: bool = False
    balance: str = "none"
    tf_data_service: str | None = None
    # Augmentation: the original recipe's five Keras layers, as one warp.
    augment: bool = True
    augment_on: str = "host"
    flip_horizontal: bool = True
    flip_vertical: bool = True
    rotation: float = 0.25
    zoom: float = 0.2
    translate_height: float = 0.3
    translate_width: float = 0.2
    contrast: float = 0.2
    # Model.
    model: str = "seed_cnn"
    backbone: str = "efficientnetv2b0"
    weights: str = "none"
    dropout: float = 0.2
    # Optimisation.
    epochs: int = 20
    optimizer: str = "rmsprop"
    learning_rate: float = 1e-3
    momentum: float = 0.1
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    freeze_epochs: int = 0
    fine_tune_learning_rate_factor: float = 0.1
    early_stopping_patience: int = 0
    cpu_budget_seconds: float = 0.0  # Stop before training CPU time exceeds this (0: no limit).
    # Execution.
    precision: str = "float32"
    jit_compile: bool = False
    strategy: str = "default"
    deterministic: bool = False
    seed: int = 0
    # Export.
    top_k: int = 5
    export_tflite: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def validate(config: TrainConfig) -> TrainConfig:
    """Fails fast, with one line, on values and combinations that cannot work."""
    _check(config.model in MODELS, f"--model={config.model}: choose one of {', '.join(MODELS)}")
    _check(config.optimizer in OPTIMIZERS,
           f"--optimizer={config.optimizer}: choose one of {', '.join(OPTIMIZERS)}")
    _check(config.schedule in SCHEDULES, f"--schedule={config.schedule}: choose one of {SCHEDULES}")
    _check(config.precision in PRECISIONS, f"--precision={config.precision}: choose one of {PRECISIONS}")
    _check(config.strategy in STRATEGIES, f"--strategy={config.strategy}: choose one of {STRATEGIES}")
    _check(config.balance in BALANCES, f"--balance={config.balance}: choose one of {BALANCES}")
    _check(config.augment_on in ("host", "device"), "--augment_on must be host or device")
    _check(config.resize_mode in ("stretch", "crop"), "--resize_mode must be stretch or crop")
    _check(16 <= config.image_size <= 1024, f"--image_size={config.image_size}: use 16..1024")
    _check(config.batch_size >= 1 and config.epochs >= 1, "--batch_size and --epochs must be >= 1")
    _check(0.0 < config.learning_rate <= 10.0, f"--learning_rate={config.learning_rate}: use (0, 10]")
    _check(0.0 <= config.momentum < 1.0, f"--momentum={config.momentum}: use [0, 1)")
    _check(0.0 <= config.weight_decay < 1.0, f"--weight_decay={config.weight_decay}: use [0, 1)")
    _check(0.0 <= config.label_smoothing < 1.0,
           f"--label_smoothing={config.label_smoothing}: use [0, 1)")
    _check(0.0 <= config.dropout < 1.0, f"--dropout={config.dropout}: use [0, 1)")
    _check(0 <= config.warmup_epochs < config.epochs,
           f"--warmup_epochs={config.warmup_epochs} must be below --epochs={config.epochs}")
    _check(config.warmup_epochs == 0 or config.schedule == "cosine",
           "--warmup_epochs needs --schedule=cosine")
    is_backbone = config.model == "backbone"
    _check(is_backbone or config.weights == "none",
           f"--weights={config.weights} needs --model=backbone (--model={config.model} trains from scratch)")
    _check(is_backbone or config.freeze_epochs == 0, "--freeze_epochs needs --model=backbone")
    if is_backbone:
        _check(config.backbone in BACKBONES,
               f"--backbone={config.backbone}: choose one of {', '.join(BACKBONES)}")
        _check(config.weights in ("imagenet", "none") or os.path.isfile(config.weights),
               f"--weights={config.weights}: not 'imagenet', 'none' or an existing weights file")
        _check(config.image_size >= 32, "--image_size must be >= 32 for a backbone")
    _check(0 <= config.freeze_epochs < config.epochs,
           f"--freeze_epochs={config.freeze_epochs} must be below --epochs={config.epochs}")
    _check(config.freeze_epochs == 0 or config.weights != "none",
           "--freeze_epochs with --weights=none would train a random, frozen backbone")
    _check(0.0 < config.fine_tune_learning_rate_factor <= 1.0,
           "--fine_tune_learning_rate_factor must be in (0, 1]")
    _check(config.early_stopping_patience >= 0, "--early_stopping_patience must be >= 0")
    _check(config.cpu_budget_seconds >= 0, "--cpu_budget_seconds must be >= 0")
    _check(config.top_k >= 1, "--top_k must be >= 1")
    _check(not (config.deterministic and config.tf_data_service),
           "--deterministic cannot hold with --tf_data_service (workers race)")
    for name in ("rotation", "zoom", "translate_height", "translate_width", "contrast"):
        value = getattr(config, name)
        _check(0.0 <= value <= (0.5 if name == "rotation" else 1.0),
               f"--{name}={value} is out of range")
    return config
