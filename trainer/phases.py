"""The plan both training paths follow (`train_lib` with Keras `fit`, `loop` on a cluster):
the phases, each phase's optimizer and callbacks, the input's options, an epoch's steps."""

import dataclasses
from collections.abc import Callable

import keras

from trainer import callbacks as callbacks_lib
from trainer import models, optim


@dataclasses.dataclass(frozen=True)
class Phase:
    """Epochs `start` to `end` (exclusive) with a fresh optimizer peaking at `learning_rate`."""

    index: int
    start: int
    end: int
    backbone_trainable: bool
    learning_rate: float


def plan(config) -> list[Phase]:
    """Head first (frozen backbone) when asked, then everything at a lower rate."""
    training, base = config.training, config.optimizer.learning_rate
    if not training.freeze_epochs:
        return [Phase(0, 0, training.epochs, True, base)]
    return [Phase(0, 0, training.freeze_epochs, False, base),
            Phase(1, training.freeze_epochs, training.epochs, True,
                  base * training.fine_tune_learning_rate_factor)]


def steps_per_epoch(config, builder) -> int:
    """Full global batches in the training split (training drops the partial one)."""
    return builder.info.splits["train"].num_examples // config.data.batch_size


def create_optimizer(config, phase: Phase, *, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The phase's optimizer; only the first phase warms up."""
    schedule = optim.create_learning_rate(
        config.optimizer, phase.learning_rate, steps_per_epoch=steps_per_epoch,
        epochs=phase.end - phase.start,
        warmup_epochs=config.optimizer.warmup_epochs if phase.index == 0 else 0)
    return optim.create_optimizer(config.optimizer, schedule, steps_per_epoch=steps_per_epoch)


def create_callbacks(config, directory: str, phase: Phase, *, validation: bool,
                     ema: bool = False) -> list[keras.callbacks.Callback]:
    """`callbacks_lib.create_callbacks` for `config`'s settings, writing into `directory`."""
    training = config.training
    return callbacks_lib.create_callbacks(
        directory, phase=phase.index, select_by=training.select_by, validation=validation,
        cpu_budget_seconds=training.cpu_budget_seconds,
        early_stopping_patience=training.early_stopping_patience, ema=ema)


def input_options(config) -> dict:
    """`pipeline.create_split` options every split of a run shares."""
    return dict(seed=config.run.seed, deterministic=config.run.deterministic,
                one_hot=optim.uses_one_hot(config))


def run(config, model: keras.Model, fit_model: keras.Model,
        fit_phase: Callable[[Phase], None]) -> None:
    """`fit_phase` for each phase of `plan`, the backbone frozen or not as it says;
    `fit_model` (`model`, maybe behind device augmentation) stopping stops them all."""
    for phase in plan(config):
        models.set_backbone_trainable(model, phase.backbone_trainable)
        fit_phase(phase)
        if fit_model.stop_training:  # Early stopping or budget: no later phase either.
            break
