"""Optimizer, learning-rate schedule, loss and metrics: what a training step needs."""

import dataclasses

import keras

from pipeline import settings
from pipeline.settings import setting
from trainer import models, report

OPTIMIZERS = ("rmsprop", "adamw", "sgd")
SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig(settings.Section):
    """How weights move: optimizer, learning-rate schedule, regularisation of the loss."""

    name: str = setting("adamw", "Optimizer.", choices=OPTIMIZERS, flag="optimizer")
    learning_rate: float = setting(1e-3, "Peak learning rate.", bounds=(1e-8, 10.0))
    momentum: float = setting(0.0, "Momentum (rmsprop, sgd).", bounds=(0.0, 0.999))
    weight_decay: float = setting(0.05, "Decoupled weight decay.", bounds=(0.0, 0.99))
    schedule: str = setting("cosine", "Learning-rate schedule.", choices=SCHEDULES)
    warmup_epochs: int = setting(1, "Linear warm-up epochs (cosine schedule).", bounds=(0, None))
    label_smoothing: float = setting(0.1, "Label smoothing.", bounds=(0.0, 0.99))
    logit_norm: float = setting(
        0.0, "LogitNorm (Wei et al. 2022): the loss sees the logits scaled to length 1 / this "
        "temperature, so training cannot lower it by growing them, and confidence tells known "
        "artists from unknown ones better (0: off; the paper's 0.04). Calibration refits the "
        "served temperature afterwards.", bounds=(0.0, 10.0))
    margin: float = setting(
        0.0, "Additive cosine margin (CosFace, Wang et al. 2018; needs --head=cosine): the loss "
        "lowers the true artist's cosine by this much, so a painting must sit closer to its "
        "artist's direction than to any other's by the margin (0: off; the paper's 0.35).",
        bounds=(0.0, 1.0))
    ema_epochs: float = setting(
        0.0, "Validate, keep and export an exponential moving average of the weights that "
        "spans about this many epochs (momentum 1 - 1 / (epochs x steps per epoch); 0: off).",
        bounds=(0.0, None))

    def __post_init__(self):
        super().__post_init__()
        settings.check_that(self.warmup_epochs == 0 or self.schedule == "cosine",
                            "--warmup_epochs needs --schedule=cosine")


def create_learning_rate(config: OptimizerConfig, base: float, *, steps_per_epoch: int,
                         epochs: int, warmup_epochs: int):
    """A float (constant) or a cosine decay with linear warm-up, over `epochs`."""
    if config.schedule == "constant":
        return base
    warmup = warmup_epochs * steps_per_epoch
    total = max(1, epochs * steps_per_epoch)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=base / 100 if warmup else base, decay_steps=max(1, total - warmup),
        warmup_target=base if warmup else None, warmup_steps=warmup)


def ema_momentum(config: OptimizerConfig, steps_per_epoch: int) -> float | None:
    """The weight average's momentum for `--ema_epochs` (None: no average). In epochs, so
    the average spans the same share of training on any collection's size."""
    if not config.ema_epochs:
        return None
    return 1.0 - 1.0 / max(1.0, config.ema_epochs * steps_per_epoch)


def create_optimizer(config: OptimizerConfig, learning_rate, *,
                     steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The optimizer; with `--ema_epochs`, it also keeps the weights' moving average
    (`callbacks.create_callbacks(ema=True)` swaps it in to validate and save)."""
    momentum = ema_momentum(config, steps_per_epoch)
    common = dict(weight_decay=config.weight_decay or None, use_ema=momentum is not None,
                  ema_momentum=momentum or 0.99)
    if config.name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate, momentum=config.momentum, **common)
    if config.name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=config.momentum, **common)
    return keras.optimizers.AdamW(learning_rate, **{**common,
                                                    "weight_decay": config.weight_decay})


def uses_one_hot(config) -> bool:
    """Label smoothing, mixup and CutMix need one-hot labels (`config`: a TrainConfig);
    otherwise sparse ones are cheaper."""
    return bool(config.optimizer.label_smoothing) or config.augment.mixes


@keras.saving.register_keras_serializable(package="artist_id")
class LogitNormCrossentropy(keras.losses.Loss):
    """Cross-entropy of logits / (temperature x their L2 norm): LogitNorm (Wei et al.
    2022, "Mitigating neural network overconfidence with logit normalization").
    `sparse`: labels as integers, else one-hot (label smoothing then applies)."""

    def __init__(self, temperature: float, *, sparse: bool = False,
                 label_smoothing: float = 0.0, reduction="sum_over_batch_size",
                 name="logit_norm_crossentropy", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature, self.sparse = float(temperature), bool(sparse)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        y_pred = keras.ops.cast(y_pred, "float32")
        norm = keras.ops.sqrt(keras.ops.sum(keras.ops.square(y_pred), axis=-1, keepdims=True))
        scaled = y_pred / ((norm + 1e-7) * self.temperature)
        if self.sparse:
            return keras.losses.sparse_categorical_crossentropy(y_true, scaled, from_logits=True)
        return keras.losses.categorical_crossentropy(
            y_true, scaled, from_logits=True, label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature,
                "sparse": self.sparse, "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="artist_id")
class MarginCrossentropy(keras.losses.Loss):
    """Cross-entropy of the logits with `margin` taken off the true class's (CosFace, Wang
    et al. 2018, "Large margin cosine loss", with `margin` = scale x the cosine margin).
    One-hot labels (mixed ones too) take off `margin` x their weight; label smoothing
    applies to the target, not to the margin. `sparse`: labels as integers."""

    def __init__(self, margin: float, *, sparse: bool = False, label_smoothing: float = 0.0,
                 reduction="sum_over_batch_size", name="margin_crossentropy", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.margin, self.sparse = float(margin), bool(sparse)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        y_pred = keras.ops.cast(y_pred, "float32")
        if self.sparse:
            target = keras.ops.one_hot(keras.ops.cast(y_true, "int32"), keras.ops.shape(y_pred)[-1])
            return keras.losses.sparse_categorical_crossentropy(
                y_true, y_pred - self.margin * target, from_logits=True)
        y_true = keras.ops.cast(y_true, "float32")
        return keras.losses.categorical_crossentropy(
            y_true, y_pred - self.margin * y_true, from_logits=True,
            label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "sparse": self.sparse,
                "label_smoothing": self.label_smoothing}


def create_loss_and_metrics(config, num_classes: int):
    """Cross-entropy on logits (on normalised ones with `--logit_norm`, with a margin with
    `--margin`), accuracy and top-k accuracy (k as in the report), for `config` (a
    TrainConfig)."""
    k = min(report.TOP_K, num_classes)
    one_hot = uses_one_hot(config)
    if config.optimizer.margin:
        loss = MarginCrossentropy(config.optimizer.margin * models.COSINE_SCALE,
                                  sparse=not one_hot,
                                  label_smoothing=config.optimizer.label_smoothing)
    elif config.optimizer.logit_norm:
        loss = LogitNormCrossentropy(config.optimizer.logit_norm, sparse=not one_hot,
                                     label_smoothing=config.optimizer.label_smoothing)
    elif one_hot:
        loss = keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=config.optimizer.label_smoothing)
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if one_hot:
        return (loss,
                [keras.metrics.CategoricalAccuracy(name="accuracy"),
                 keras.metrics.TopKCategoricalAccuracy(k, name=f"top{k}_accuracy")])
    return (loss,
            [keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
             keras.metrics.SparseTopKCategoricalAccuracy(k, name=f"top{k}_accuracy")])
