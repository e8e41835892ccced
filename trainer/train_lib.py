"""`train_and_evaluate`: fit, export, evaluate on the test split; all under one workdir."""

import contextlib
import csv
import dataclasses
import json
import os
import shutil
import time

import keras
import tensorflow as tf
from absl import logging

import pipeline
from pipeline import augment as augment_lib
from trainer import config as config_lib
from trainer import evaluation
from trainer import export as export_lib
from trainer import models
from trainer import report

TrainConfig = config_lib.TrainConfig
# Written last: their presence marks a run as finished.
TEST_METRICS = "test_metrics.json"
SAVED_MODEL = "saved_model"
BACKUP = "backup"
BEST_WEIGHTS = os.path.join("checkpoints", "best.weights.h5")
METRICS_CSV = "metrics.csv"


class WorkdirError(RuntimeError):
    """The work directory belongs to another run; the message says what to do."""


def prepare_workdir(config: TrainConfig, workdir: str, *, overwrite: bool) -> bool:
    """Claims `workdir` for `config`; True when it already holds this finished run."""
    config_path = os.path.join(workdir, "config.json")
    if os.path.exists(config_path) and overwrite:
        logging.info("--overwrite: removing the previous run in %s", workdir)
        shutil.rmtree(workdir)
    elif os.path.exists(config_path):
        with open(config_path, encoding="utf-8") as f:
            previous = json.load(f)
        current = config.to_dict()
        if previous != current:
            changed = sorted(k for k in previous.keys() | current.keys()
                             if previous.get(k) != current.get(k))
            raise WorkdirError(
                f"{workdir} holds a run with a different configuration "
                f"(differs in: {', '.join(changed)}); use another --workdir or pass --overwrite")
        if os.path.exists(os.path.join(workdir, TEST_METRICS)):
            return True
        logging.info("Resuming the run in %s", workdir)
    os.makedirs(workdir, exist_ok=True)
    with open(config_path, "w", encoding="utf-8") as f:
        json.dump(config.to_dict(), f, indent=2)
    return False


def load_run(workdir: str, *, data_dir: str | None = None) -> tuple[TrainConfig, keras.Model]:
    """A finished (or interrupted) run's config and model with its best weights.

    `data_dir` replaces the run's own when its dataset has moved.
    """
    with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
        values = json.load(f)
    # config.json is the run's TrainConfig.to_dict() (settings since removed are skipped).
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in values.items() if k in fields})
    if data_dir:
        config = dataclasses.replace(config, data_dir=data_dir)
    builder = pipeline.load_builder(config.dataset, data_dir=config.data_dir)
    model = build_model(config, pipeline.num_classes(builder))
    model.load_weights(os.path.join(workdir, BEST_WEIGHTS))
    return config, model


def augment_config(config: TrainConfig) -> augment_lib.AugmentConfig:
    if not config.augment:
        return augment_lib.NO_AUGMENTATION
    return augment_lib.AugmentConfig(
        flip_horizontal=config.flip_horizontal, flip_vertical=config.flip_vertical,
        rotation=config.rotation, zoom=config.zoom, translate_height=config.translate_height,
        translate_width=config.translate_width, contrast=config.contrast)


def create_learning_rate(config: TrainConfig, base: float, *, steps_per_epoch: int, epochs: int,
                         warmup_epochs: int):
    """A float (constant) or a cosine decay with linear warm-up, over `epochs`."""
    if config.schedule == "constant":
        return base
    warmup = warmup_epochs * steps_per_epoch
    total = max(1, epochs * steps_per_epoch)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=base / 100 if warmup else base, decay_steps=max(1, total - warmup),
        warmup_target=base if warmup else None, warmup_steps=warmup)


def create_optimizer(config: TrainConfig, learning_rate) -> keras.optimizers.Optimizer:
    decay = config.weight_decay or None
    if config.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate, momentum=config.momentum, weight_decay=decay)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=config.momentum, weight_decay=decay)
    return keras.optimizers.AdamW(learning_rate, weight_decay=config.weight_decay)


def create_loss_and_metrics(config: TrainConfig, num_classes: int):
    """Sparse labels, or one-hot when label smoothing needs them."""
    k = min(report.TOP_K, num_classes)
    if config.label_smoothing:
        return (keras.losses.CategoricalCrossentropy(from_logits=True,
                                                     label_smoothing=config.label_smoothing),
                [keras.metrics.CategoricalAccuracy(name="accuracy"),
                 keras.metrics.TopKCategoricalAccuracy(k, name=f"top{k}_accuracy")])
    return (keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            [keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
             keras.metrics.SparseTopKCategoricalAccuracy(k, name=f"top{k}_accuracy")])


def _csv_rows(metrics_csv: str) -> list[dict]:
    if not os.path.exists(metrics_csv):
        return []
    with open(metrics_csv, encoding="utf-8") as f:
        return list(csv.DictReader(f))


def best_so_far(metrics_csv: str, monitor: str) -> float | None:
    """Best `monitor` value logged before an interruption, so resuming keeps it."""
    values = [v for row in _csv_rows(metrics_csv)
              if (v := report.csv_number(row.get(monitor))) is not None]
    return max(values, default=None)


class EpochTimer(keras.callbacks.Callback):
    """Adds `epoch_seconds` and `epoch_cpu_seconds` to the logs: metrics.csv says what each
    epoch cost, and a resumed run still knows what the epochs before the interruption cost.

    CPU time counts all threads of this process; an epoch includes its validation pass.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._cpu_start = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._start
            logs["epoch_cpu_seconds"] = time.process_time() - self._cpu_start


def epoch_costs(metrics_csv: str) -> dict:
    """Seconds and CPU seconds of every epoch logged so far, across interruptions."""
    rows = _csv_rows(metrics_csv)

    def total(column: str) -> float:
        return round(sum(report.csv_number(row.get(column)) or 0.0 for row in rows), 1)

    return {"train_seconds": total("epoch_seconds"),
            "train_cpu_seconds": total("epoch_cpu_seconds")}


class CpuBudget(keras.callbacks.Callback):
    """Stops at an epoch end when one more epoch would overrun a CPU-time budget.

    CPU time (all threads of this process, as `EpochTimer` logs it, which must
    run first), not wall time: on a shared machine it measures the work done,
    not how busy the neighbours are. `used` is what earlier runs of this work
    directory spent (a resumed run keeps its budget).
    """

    def __init__(self, budget_seconds: float, *, used: float = 0.0, epochs: int = 0):
        super().__init__()
        self.budget, self.used, self.epochs = budget_seconds, used, epochs

    def on_epoch_end(self, epoch, logs=None):
        self.epochs += 1
        self.used += (logs or {}).get("epoch_cpu_seconds", 0.0)
        if self.used + self.used / self.epochs > self.budget:
            logging.info("CPU budget: %.0f s used of %.0f s; stopping", self.used, self.budget)
            self.model.stop_training = True


def create_callbacks(config: TrainConfig, workdir: str, *, phase: int, monitor: str):
    metrics_csv = os.path.join(workdir, METRICS_CSV)
    callbacks = [
        # Restores weights, optimizer state and epoch after an interruption (even
        # SIGKILL: a half-written backup falls back to the previous one). Kept
        # after `fit`, so a crash during export or evaluation does not retrain.
        keras.callbacks.BackupAndRestore(os.path.join(workdir, BACKUP, f"phase{phase}"),
                                         delete_checkpoint=False, double_checkpoint=True),
        EpochTimer(),
        keras.callbacks.ModelCheckpoint(
            os.path.join(workdir, BEST_WEIGHTS), monitor=monitor, mode="max",
            save_best_only=True, save_weights_only=True,
            initial_value_threshold=best_so_far(metrics_csv, monitor)),
        keras.callbacks.CSVLogger(metrics_csv, append=True),
        keras.callbacks.TensorBoard(os.path.join(workdir, "tensorboard")),
    ]
    if config.cpu_budget_seconds:
        callbacks.append(CpuBudget(config.cpu_budget_seconds,
                                   used=epoch_costs(metrics_csv)["train_cpu_seconds"],
                                   epochs=len(_csv_rows(metrics_csv))))
    if config.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=monitor, mode="max", patience=config.early_stopping_patience))
    return callbacks


def create_strategy(name: str) -> tf.distribute.Strategy:
    # MirroredStrategy splits each global batch over the local devices; Keras
    # shards the tf.data input per replica.
    return tf.distribute.MirroredStrategy() if name == "mirrored" else tf.distribute.get_strategy()


@contextlib.contextmanager
def precision_policy(name: str):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def build_model(config: TrainConfig, num_classes: int) -> keras.Model:
    try:
        return models.create_model(
            config.model, num_classes=num_classes, image_size=config.image_size,
            backbone=config.backbone, weights=config.weights, dropout=config.dropout)
    except Exception as e:  # Offline imagenet download, or weights of another backbone.
        if config.model == "backbone" and config.weights != "none":
            raise config_lib.ConfigError(
                f"could not load --weights={config.weights} into {config.backbone}: "
                f"{str(e).splitlines()[0]}") from e
        raise


def fit_phases(config: TrainConfig, workdir: str, model: keras.Model, fit_model: keras.Model,
               train_ds, val_ds, *, steps_per_epoch: int, num_classes: int, class_weight):
    """Head first (frozen backbone) when asked, then everything; resumable per phase."""
    base = config.learning_rate
    phases = [(0, config.epochs, True, base)]
    if config.freeze_epochs:
        phases = [(0, config.freeze_epochs, False, base),
                  (config.freeze_epochs, config.epochs, True,
                   base * config.fine_tune_learning_rate_factor)]
    monitor = "val_accuracy" if val_ds is not None else "accuracy"
    loss, metrics = create_loss_and_metrics(config, num_classes)
    for phase, (start, end, backbone_trainable, lr) in enumerate(phases):
        models.set_backbone_trainable(model, backbone_trainable)
        fit_model.compile(
            optimizer=create_optimizer(config, create_learning_rate(
                config, lr, steps_per_epoch=steps_per_epoch, epochs=end - start,
                warmup_epochs=config.warmup_epochs if phase == 0 else 0)),
            loss=loss, metrics=metrics, jit_compile=config.jit_compile)
        fit_model.fit(
            train_ds, validation_data=val_ds, initial_epoch=start, epochs=end,
            callbacks=create_callbacks(config, workdir, phase=phase, monitor=monitor),
            class_weight=class_weight, shuffle=False, verbose=2)  # tf.data shuffles.
        if fit_model.stop_training:  # Early stopping or budget: no later phase either.
            break


def train_and_evaluate(config: TrainConfig, workdir: str, *, overwrite: bool = False) -> dict:
    """Trains `config` in `workdir` (resuming if interrupted); returns test metrics."""
    config_lib.validate(config)
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
    with precision_policy(config.precision), create_strategy(config.strategy).scope():
        model = build_model(config, len(artists))
        train_ds, val_ds, fit_model, class_weight = create_inputs(config, builder, model)
        fit_phases(config, workdir, model, fit_model, train_ds, val_ds,
                   steps_per_epoch=splits["train"].num_examples // config.batch_size,
                   num_classes=len(artists), class_weight=class_weight)
        if os.path.exists(os.path.join(workdir, BEST_WEIGHTS)):
            fit_model.load_weights(os.path.join(workdir, BEST_WEIGHTS))
    # Summed over metrics.csv: a resumed run counts the epochs before the interruption.
    timing = epoch_costs(os.path.join(workdir, METRICS_CSV))
    return finish(config, workdir, builder, model, timing=timing)


def create_inputs(config: TrainConfig, builder, model: keras.Model):
    """Training and validation batches, the model `fit` trains, and class weights."""
    options = dict(batch_size=config.batch_size, image_size=config.image_size,
                   seed=config.seed, resize_mode=config.resize_mode,
                   one_hot=bool(config.label_smoothing), deterministic=config.deterministic)
    train_ds = pipeline.create_split(
        builder, "train", training=True, augment=augment_config(config),
        augment_on=config.augment_on, balance=config.balance, cache=config.cache,
        tf_data_service=config.tf_data_service, **options)
    val_ds = None
    if "validation" in builder.info.splits:
        val_ds = pipeline.create_split(builder, "validation", training=False,
                                       cache=config.cache, **options)
    fit_model = model
    if config.augment and config.augment_on == "device":
        # The same augmentation inside the training step; export keeps `model` alone.
        inputs = keras.Input(model.input_shape[1:])
        layer = augment_lib.DeviceAugmentation(augment_config(config), seed=config.seed)
        fit_model = keras.Model(inputs, model(layer(inputs)), name=f"{model.name}_train")
    class_weight = None
    if config.balance == "class_weight":
        class_weight = pipeline.class_weights(builder, "train")
    return train_ds, val_ds, fit_model, class_weight


def finish(config: TrainConfig, workdir: str, builder, model: keras.Model, *,
           timing: dict) -> dict:
    """Test-split report, curves, SavedModel; then the marker of a finished run."""
    artists = pipeline.artist_names(builder)
    predict_fn = keras_predict_fn(model, config)
    metrics = {"dataset": builder.info.full_name, **timing,
               "epochs_run": len(_csv_rows(os.path.join(workdir, METRICS_CSV)))}
    if "test" in builder.info.splits:
        test = evaluation.evaluate_split(builder, "test", predict_fn, workdir)
        metrics.update({
            "test_accuracy": test["accuracy"],
            "test_balanced_accuracy": test["balanced_accuracy"],
            "test_macro_f1": test["macro_f1"],
            "test_examples": test["examples"],
            **{f"test_{k}": v for k, v in test.items() if k.startswith("top")},
        })
    if os.path.exists(os.path.join(workdir, METRICS_CSV)):
        report.plot_curves(os.path.join(workdir, METRICS_CSV), os.path.join(workdir, "curves.png"))
    export_lib.export_model(
        model, os.path.join(workdir, SAVED_MODEL), artist_names=artists,
        artist_metadata=artist_metadata(builder),
        image_size=config.image_size, resize_mode=config.resize_mode, top_k=config.top_k,
        metadata={"dataset": builder.info.full_name, "metrics": metrics,
                  "config": config.to_dict()})
    if config.export_tflite:
        export_lib.export_tflite(model, os.path.join(workdir, "tflite"),
                                 image_size=config.image_size, artist_names=artists)
    with open(os.path.join(workdir, TEST_METRICS), "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2)
    shutil.rmtree(os.path.join(workdir, BACKUP), ignore_errors=True)
    return metrics


def artist_metadata(builder) -> dict[str, dict]:
    """{artist: {years, genre, ...}} from the dataset's `artist` feature, if it has one."""
    if "artist" not in builder.info.features:
        return {}
    import tensorflow_datasets as tfds

    names = pipeline.artist_names(builder)
    found: dict[str, dict] = {}
    ds = builder.as_dataset(split="train", decoders={"image": tfds.decode.SkipDecoding()})
    for example in ds.map(lambda f: (f["label"], f["artist"])).as_numpy_iterator():
        label, fields = example
        found.setdefault(names[label], {k: v.decode() if isinstance(v, bytes) else v
                                        for k, v in fields.items()})
        if len(found) == len(names):
            break
    return found


def keras_predict_fn(model: keras.Model, config: TrainConfig) -> evaluation.PredictFn:
    """Encoded images -> probabilities, through the serving signature's own preprocessing."""
    from pipeline import ops

    @tf.function
    def predict(encoded):
        pixels = export_lib.decode_batch(encoded, image_size=config.image_size,
                                         resize_mode=config.resize_mode)
        return tf.nn.softmax(tf.cast(model(ops.rescale(pixels), training=False), tf.float32))

    return lambda encoded: predict(encoded).numpy()
