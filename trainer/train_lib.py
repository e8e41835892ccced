"""`train_and_evaluate`: fit, evaluate on the test split, export; all under one workdir."""

import csv
import dataclasses
import json
import os
import shutil

import keras
import tensorflow as tf
from absl import logging

import pipeline
from pipeline import augment as augment_lib
from trainer import export as export_lib
from trainer import models

OPTIMIZERS = ("rmsprop", "adam", "sgd")
# Files that exist only once a run has finished: a rerun reuses them.
TEST_METRICS = "test_metrics.json"
SAVED_MODEL = "saved_model"
BACKUP = "backup"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a run computes (not where it writes)."""

    dataset: str = "sample_paintings"
    data_dir: str | None = None
    model: str = "seed_cnn"
    image_size: int = 300
    batch_size: int = 32
    epochs: int = 20
    optimizer: str = "rmsprop"
    learning_rate: float = 1e-3
    momentum: float = 0.1
    seed: int = 0
    augment: bool = True
    resize_mode: str = "stretch"
    cache: bool = False
    deterministic: bool = False
    top_k: int = 5


class WorkdirError(RuntimeError):
    """The work directory belongs to another run; the message says what to do."""


def create_optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    if config.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(config.learning_rate, momentum=config.momentum)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(config.learning_rate, momentum=config.momentum)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(config.learning_rate)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; choose one of {OPTIMIZERS}")


def prepare_workdir(config: TrainConfig, workdir: str, *, overwrite: bool) -> bool:
    """Claims `workdir` for `config`; True when it already holds this finished run."""
    config_path = os.path.join(workdir, "config.json")
    if os.path.exists(config_path) and overwrite:
        logging.info("--overwrite: removing the previous run in %s", workdir)
        shutil.rmtree(workdir)
    elif os.path.exists(config_path):
        with open(config_path, encoding="utf-8") as f:
            previous = json.load(f)
        if previous != dataclasses.asdict(config):
            changed = sorted(k for k in previous.keys() | dataclasses.asdict(config).keys()
                             if previous.get(k) != dataclasses.asdict(config).get(k))
            raise WorkdirError(
                f"{workdir} holds a run with a different configuration "
                f"(differs in: {', '.join(changed)}); use another --workdir or pass --overwrite"
            )
        if os.path.exists(os.path.join(workdir, TEST_METRICS)) and os.path.isdir(
            os.path.join(workdir, SAVED_MODEL)
        ):
            return True
        logging.info("Resuming the run in %s", workdir)
    os.makedirs(workdir, exist_ok=True)
    with open(config_path, "w", encoding="utf-8") as f:
        json.dump(dataclasses.asdict(config), f, indent=2)
    return False


def best_so_far(metrics_csv: str, monitor: str) -> float | None:
    """Best `monitor` value logged before an interruption, so resuming keeps it."""
    if not os.path.exists(metrics_csv):
        return None
    with open(metrics_csv, encoding="utf-8") as f:
        values = [float(row[monitor]) for row in csv.DictReader(f) if row.get(monitor)]
    return max(values, default=None)


def create_callbacks(workdir: str, *, monitor: str) -> list[keras.callbacks.Callback]:
    metrics_csv = os.path.join(workdir, "metrics.csv")
    return [
        # Restores weights, optimizer state and epoch after an interruption. Kept
        # after `fit` so a crash during evaluation or export does not retrain.
        keras.callbacks.BackupAndRestore(os.path.join(workdir, BACKUP), delete_checkpoint=False),
        keras.callbacks.ModelCheckpoint(
            os.path.join(workdir, "checkpoints", "best.keras"),
            monitor=monitor, mode="max", save_best_only=True,
            initial_value_threshold=best_so_far(metrics_csv, monitor),
        ),
        keras.callbacks.CSVLogger(metrics_csv, append=True),
        keras.callbacks.TensorBoard(os.path.join(workdir, "tensorboard")),
    ]


def train_and_evaluate(config: TrainConfig, workdir: str, *, overwrite: bool = False) -> dict:
    """Trains `config` in `workdir` (resuming if interrupted); returns test metrics."""
    if prepare_workdir(config, workdir, overwrite=overwrite):
        logging.info("%s already holds this finished run; reusing it", workdir)
        with open(os.path.join(workdir, TEST_METRICS), encoding="utf-8") as f:
            return json.load(f)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()

    builder = pipeline.load_builder(config.dataset, data_dir=config.data_dir)
    artists = pipeline.artist_names(builder)
    splits = builder.info.splits
    logging.info("%s: %d artists, %s", builder.info.full_name, len(artists),
                 ", ".join(f"{s} {splits[s].num_examples}" for s in splits))

    def split(name: str, training: bool) -> tf.data.Dataset:
        return pipeline.create_split(
            builder, name, batch_size=config.batch_size, image_size=config.image_size,
            training=training, seed=config.seed, resize_mode=config.resize_mode,
            augment=augment_lib.AugmentConfig() if config.augment else augment_lib.NO_AUGMENTATION,
            cache=config.cache, deterministic=config.deterministic,
        )

    model = models.create_model(config.model, num_classes=len(artists), image_size=config.image_size)
    model.compile(
        optimizer=create_optimizer(config),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    val_split = "validation" if "validation" in splits else None
    model.fit(
        split("train", training=True),
        validation_data=split(val_split, training=False) if val_split else None,
        epochs=config.epochs,
        callbacks=create_callbacks(workdir, monitor="val_accuracy" if val_split else "accuracy"),
        verbose=2,
    )

    best_path = os.path.join(workdir, "checkpoints", "best.keras")
    if os.path.exists(best_path):
        model = keras.models.load_model(best_path)
    results = model.evaluate(split("test", training=False), return_dict=True, verbose=0)
    metrics = {
        "test_accuracy": float(results["accuracy"]),
        "test_loss": float(results["loss"]),
        "test_examples": int(splits["test"].num_examples),
        "dataset": builder.info.full_name,
    }
    export_lib.export_model(
        model, os.path.join(workdir, SAVED_MODEL), artist_names=artists,
        image_size=config.image_size, resize_mode=config.resize_mode, top_k=config.top_k,
        metadata={"dataset": builder.info.full_name, "metrics": metrics},
    )
    # Written last: its presence marks the run as finished.
    with open(os.path.join(workdir, TEST_METRICS), "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2)
    shutil.rmtree(os.path.join(workdir, BACKUP), ignore_errors=True)
    return metrics
