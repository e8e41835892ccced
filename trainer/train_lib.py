"""`train_and_evaluate`: fit, evaluate on the test split, export; all under one workdir."""

import contextlib
import dataclasses
import json
import os
import shutil

import keras
import tensorflow as tf
from absl import logging

import pipeline
from artist_tfds import features
from pipeline import augment as augment_lib
from serving import explain, export
from serving import head as head_lib
from serving import gallery as gallery_lib
from trainer import callbacks as callbacks_lib
from trainer import config as config_lib
from trainer import evaluation, loop, models, optim, phases, report

TrainConfig = config_lib.TrainConfig
CONFIG_FILE = "config.json"
# Written last: its presence marks a run as finished.
TEST_METRICS = "test_metrics.json"
SAVED_MODEL = "saved_model"
TFLITE = "tflite"


class WorkdirError(RuntimeError):
    """The work directory belongs to another run; the message says what to do."""


def read_config(workdir: str) -> TrainConfig:
    """The TrainConfig a work directory's config.json records (any version since 0.1)."""
    path = os.path.join(workdir, CONFIG_FILE)
    with open(path, encoding="utf-8") as f:
        document = json.load(f)
    try:
        return config_lib.from_dict(document)
    except (config_lib.ConfigError, TypeError) as e:
        raise WorkdirError(f"{path} cannot be read by this version ({e}); retrain with "
                           "--overwrite, or use the version that wrote it") from e


# What `prepare_workdir` finds: a run to train (new, or interrupted: resumed), this run
# finished, or this run finished with other settings that act only after training
# (`config_lib.after_training_settings`): its kept weights re-evaluated and re-exported.
TRAIN, FINISHED, REFINISH = "train", "finished", "refinish"


def prepare_workdir(config: TrainConfig, workdir: str, *, overwrite: bool) -> str:
    """Claims `workdir` for `config`; says what it holds (TRAIN, FINISHED or REFINISH)."""
    config_path = os.path.join(workdir, CONFIG_FILE)
    if os.path.exists(config_path) and overwrite:
        logging.info("--overwrite: removing the previous run in %s", workdir)
        shutil.rmtree(workdir)
    elif os.path.exists(config_path):
        previous = config_lib.to_flat(read_config(workdir))
        current = config_lib.to_flat(config)
        changed = sorted(k for k in current if previous.get(k) != current[k])
        if not set(changed) <= config_lib.after_training_settings():
            raise WorkdirError(
                f"{workdir} holds a run with a different configuration "
                f"(differs in: {', '.join(changed)}); use another --workdir or pass --overwrite")
        if os.path.exists(os.path.join(workdir, TEST_METRICS)):
            if not changed:
                return FINISHED
            # config.json changes once the new report and export are written: an
            # interrupted rerun finds the old settings and does this again.
            logging.info("%s holds this run, finished with another %s: re-evaluating and "
                         "re-exporting its kept weights", workdir, ", ".join(changed))
            return REFINISH
        logging.info("Resuming the run in %s", workdir)
    write_config(config, workdir)
    return TRAIN


def write_config(config: TrainConfig, workdir: str) -> None:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, CONFIG_FILE), "w", encoding="utf-8") as f:
        json.dump(config.to_dict(), f, indent=2)


def build_model(config: TrainConfig, num_classes: int) -> keras.Model:
    model = config.model
    try:
        return models.create_model(
            model.name, num_classes=num_classes, image_size=config.data.image_size,
            backbone=model.backbone, weights=model.weights, dropout=model.dropout,
            pooling=model.pooling, head=model.head)
    except Exception as e:  # Offline imagenet download, or weights of another network.
        if model.weights != "none":
            target = model.backbone if model.name == "backbone" else model.name
            raise config_lib.ConfigError(
                f"could not load --weights={model.weights} into {target}: "
                f"{str(e).splitlines()[0]}") from e
        raise


def training_model(config: TrainConfig, model: keras.Model) -> keras.Model:
    """The model `fit` trains: `model` itself, or with device augmentation in front.

    Checkpoints hold this model's weights; export keeps `model` alone.
    """
    if not (config.augment.active and config.augment.on == "device"):
        return model
    inputs = keras.Input(model.input_shape[1:])
    layer = augment_lib.DeviceAugmentation(config.augment, seed=config.run.seed)
    return keras.Model(inputs, model(layer(inputs)), name=f"{model.name}_train")


def load_run(workdir: str, *, data_dir: str | None = None) -> tuple[TrainConfig, keras.Model]:
    """A finished (or interrupted) run's config and model with its best weights.

    `data_dir` replaces the run's own when its dataset has moved.
    """
    config = read_config(workdir)
    if data_dir:
        config = config.replace(data_dir=data_dir)
    builder = pipeline.load_builder(config.data.dataset, data_dir=config.data.data_dir)
    return config, restore_model(config, pipeline.num_classes(builder),
                                 os.path.join(workdir, callbacks_lib.BEST_WEIGHTS))


def restore_model(config: TrainConfig, num_classes: int, weights_path: str) -> keras.Model:
    """`config`'s model, built anew (in the current strategy), with a checkpoint's weights."""
    # The checkpoint replaces whatever weights the run started from.
    model = build_model(config.replace(weights="none", freeze_epochs=0), num_classes)
    training_model(config, model).load_weights(weights_path)
    return model


def create_strategy(name: str) -> tf.distribute.Strategy:
    """`mirrored`: one replica per local GPU, each global batch split across them (Keras
    shards the tf.data input per replica); without GPUs, one per logical CPU device
    (one unless configured: the tests configure two). `multi_worker`: the cluster of
    `TF_CONFIG` (`loop.create_strategy`); it must come before any other TensorFlow op."""
    if name == "multi_worker":
        return loop.create_strategy()
    if name != "mirrored":
        return tf.distribute.get_strategy()
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    strategy = tf.distribute.MirroredStrategy([device.name for device in devices])
    logging.info("MirroredStrategy: %d replicas", strategy.num_replicas_in_sync)
    return strategy


@contextlib.contextmanager
def precision_policy(name: str):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def create_inputs(config: TrainConfig, builder):
    """Training batches, endless, validation batches, and class weights for `fit`.

    Endless, so that `fit` keeps one iterator a phase: given a finite split, it builds
    the input anew every epoch (twice), and the first step waits for it (README:
    Training speed).
    """
    options = phases.input_options(config)
    train_ds = pipeline.create_split(builder, "train", config.data, training=True,
                                     augment=config.augment, **options).repeat()
    val_ds = None
    if "validation" in builder.info.splits:
        # `fit` validates whole paintings (one view each): multi-crop inference is for the
        # final model (calibration, test report, export), and would cost every epoch.
        val_data = evaluation_data(config).single_view()
        val_ds = pipeline.create_split(builder, "validation", val_data, training=False,
                                       **options)
    return train_ds, val_ds, class_weights(config, builder)


def class_weights(config: TrainConfig, builder) -> dict[int, float] | None:
    if config.data.balance == "class_weight":
        return pipeline.class_weights(builder, "train")
    return None


def evaluation_data(config: TrainConfig) -> pipeline.DataConfig:
    """Validation and test read locally, whatever serves the training input."""
    return dataclasses.replace(config.data, tf_data_service=None)


def fit_phases(config: TrainConfig, workdir: str, model: keras.Model, fit_model: keras.Model,
               train_ds, val_ds, *, steps_per_epoch: int, num_classes: int, class_weight):
    """`phases.plan` with `fit`; each phase resumable from its backup."""
    loss, metrics = optim.create_loss_and_metrics(config, num_classes)

    def fit_phase(phase: phases.Phase) -> None:
        optimizer = phases.create_optimizer(config, phase, steps_per_epoch=steps_per_epoch)
        fit_model.compile(optimizer=optimizer,
                          loss=loss, metrics=metrics, jit_compile=config.run.jit_compile)
        fit_model.fit(
            train_ds, steps_per_epoch=steps_per_epoch, validation_data=val_ds,
            initial_epoch=phase.start, epochs=phase.end,
            callbacks=phases.create_callbacks(config, workdir, phase,
                                              validation=val_ds is not None,
                                              ema=optimizer.use_ema),
            class_weight=class_weight, shuffle=False, verbose=2)  # tf.data shuffles.

    phases.run(config, model, fit_model, fit_phase)


def train(config: TrainConfig, workdir: str, builder) -> keras.Model:
    """Fits `config` on `builder`'s splits (resuming from `workdir`'s backup, if any);
    returns the model, without augmentation, holding its best weights.

    `config.run.deterministic` enables TensorFlow's op determinism for the rest of
    the process (TensorFlow offers no public way back).
    """
    strategy = create_strategy(config.run.strategy)
    keras.utils.set_random_seed(config.run.seed)
    if config.run.deterministic:
        tf.config.experimental.enable_op_determinism()
    artists = pipeline.artist_names(builder)
    splits = builder.info.splits
    logging.info("%s: %d artists, %s", builder.info.full_name, len(artists),
                 ", ".join(f"{s} {splits[s].num_examples}" for s in splits))
    best_weights = os.path.join(workdir, callbacks_lib.BEST_WEIGHTS)
    steps_per_epoch = phases.steps_per_epoch(config, builder)
    # A keras.applications backbone keeps the momentum it was built (and pretrained) with.
    momentum = (None if config.model.name == "backbone"
                else models.batch_norm_momentum(config.model.bn_momentum, steps_per_epoch))
    multi_worker = config.run.strategy == "multi_worker"
    # The work directory, or on a cluster's other workers a temporary one of their own.
    with loop.worker_directory(workdir, strategy) as own_dir:
        with precision_policy(config.run.precision), strategy.scope():
            model = build_model(config, len(artists))
            fit_model = training_model(config, model)
            if momentum and models.set_batch_norm_momentum(fit_model, momentum):
                logging.info("batch norm: momentum %.3f (%d steps an epoch)", momentum,
                             steps_per_epoch)
            if not multi_worker:
                train_ds, val_ds, class_weight = create_inputs(config, builder)
                fit_phases(config, workdir, model, fit_model, train_ds, val_ds,
                           steps_per_epoch=steps_per_epoch,
                           num_classes=len(artists), class_weight=class_weight)
                if os.path.exists(best_weights):
                    fit_model.load_weights(best_weights)
                return model
            if config.run.sync_batch_norm:
                models.synchronize_batch_norm(fit_model)
            loop.fit_phases(config, workdir, own_dir, strategy, model, fit_model, builder,
                            num_classes=len(artists), class_weight=class_weights(config, builder))
        # The best weights, in a model of one machine (evaluated and exported as any
        # other): this worker's own copy, or, if it saved none since a restart (no
        # better epoch), the chief's from before (the same weights: workers save together).
        best = os.path.join(own_dir, callbacks_lib.BEST_WEIGHTS)
        if not os.path.exists(best):
            best = best_weights
        with precision_policy(config.run.precision):
            return restore_model(config, len(artists), best)


def train_and_evaluate(config: TrainConfig, workdir: str, *, overwrite: bool = False) -> dict:
    """Trains `config` in `workdir` (resuming if interrupted), evaluates on the test split
    and exports; returns the test metrics (empty on a multi-worker run's other workers)."""
    models.check_weights_file(config.model)
    if config.run.strategy == "multi_worker" and not loop.chief_task():
        # The chief claims the work directory and writes everything in it.
        if os.path.exists(os.path.join(workdir, TEST_METRICS)) and not overwrite:
            return {}
        builder = pipeline.load_builder(config.data.dataset, data_dir=config.data.data_dir)
        train(config, workdir, builder)
        return {}
    state = prepare_workdir(config, workdir, overwrite=overwrite)
    if state == FINISHED:
        logging.info("%s already holds this finished run; reusing it", workdir)
        with open(os.path.join(workdir, TEST_METRICS), encoding="utf-8") as f:
            return json.load(f)
    builder = pipeline.load_builder(config.data.dataset, data_dir=config.data.data_dir)
    warn_if_crops_repeat(config, builder)
    if state == TRAIN:
        return finish(config, workdir, builder, train(config, workdir, builder))
    model = restore_model(config, pipeline.num_classes(builder),
                          os.path.join(workdir, callbacks_lib.BEST_WEIGHTS))
    for export_dir in (SAVED_MODEL, TFLITE):  # Nothing of the old export stays behind.
        shutil.rmtree(os.path.join(workdir, export_dir), ignore_errors=True)
    metrics = finish(config, workdir, builder, model)
    write_config(config, workdir)
    return metrics


def warn_if_crops_repeat(config: TrainConfig, builder) -> None:
    """Says so, before any training, when most paintings' crops would only repeat them."""
    split = next((s for s in ("validation", "test") if s in builder.info.splits), None)
    data = evaluation_data(config)
    if split is None or not data.eval_crops:
        return
    if (share := pipeline.crops_repeating_whole(builder, split, data)) >= 0.5:
        logging.warning(
            "--eval_crops=%d: %.0f%% of the %s paintings are squares of at most "
            "--image_size=%d px, so each of their crops at the stored scale is the whole "
            "painting again: %d forward passes a painting for what one gives. Crop them "
            "enlarged (--crop_scale=1.5) or at a smaller --image_size.", data.eval_crops,
            100 * share, split, data.image_size, data.views.count)


def headline_metrics(test: dict) -> dict:
    """The test report's figures that test_metrics.json and the SavedModel keep, flat."""
    return {
        **{f"test_{k}": test[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "examples")},
        **{f"test_{k}": v for k, v in test.items() if k.startswith("top")},
        **{f"test_{k}": v for k, v in test.get("nearest_neighbours", {}).items()
           if k.endswith("accuracy")},
        **{f"test_{k}": v for k, v in test["calibration"].items()
           if k not in ("bins", "bin_totals")},
        **{f"test_{k}": v for k, v in test["abstention"].items()},
    }


def finish(config: TrainConfig, workdir: str, builder, model: keras.Model) -> dict:
    """Test-split report, curves, SavedModel; then the marker of a finished run."""
    metrics_csv = os.path.join(workdir, callbacks_lib.METRICS_CSV)
    metrics = {"dataset": builder.info.full_name,
               # Summed over metrics.csv: a resumed run counts the epochs before the interruption.
               **callbacks_lib.epoch_costs(metrics_csv),
               "epochs_run": len(callbacks_lib.csv_rows(metrics_csv))}
    explainer = explain.explainable(model)
    gallery = None
    if config.export.gallery_per_artist and "train" in builder.info.splits:
        gallery = gallery_lib.build(explainer, builder, "train", evaluation_data(config),
                                    per_artist=config.export.gallery_per_artist,
                                    seed=config.run.seed)
        logging.info("gallery: %d training paintings, %.1f MB", len(gallery),
                     gallery.nbytes / 2**20)
    answer = {"temperature": 1.0, "min_confidence": 0.0, "min_familiarity": None}
    if "validation" in builder.info.splits:
        head = head_lib.CosineHead.of(model)
        answer = evaluation.fit_answer(
            builder, "validation", evaluation_data(config), evaluation.keras_answer_fn(explainer),
            target_precision=config.export.target_precision, gallery=gallery,
            novelty_reject=config.export.novelty_reject,
            directions=None if head is None else head.directions.numpy(),
            verify_false_accept=config.export.verify_false_accept)
        logging.info("calibration: temperature %.3f (%s); 'unknown' below p %.3f or "
                     "familiarity %s, target precision met: %s (validation: %s)",
                     answer["temperature"], answer["calibration"]["method"],
                     answer["min_confidence"], answer["min_familiarity"],
                     answer["target_met"], answer["fitted_on"])
    rule = {key: answer[key] for key in ("temperature", "min_confidence", "min_familiarity")}
    if "test" in builder.info.splits:
        test = evaluation.evaluate_split(
            builder, "test", evaluation_data(config),
            evaluation.keras_answer_fn(explainer, answer["temperature"]), workdir,
            gallery=gallery, fitted=answer, **rule)
        metrics.update(headline_metrics(test))
    if os.path.exists(metrics_csv):
        report.plot_curves(metrics_csv, os.path.join(workdir, "curves.png"))
    artists = pipeline.artist_names(builder)
    export.export_model(
        model, os.path.join(workdir, SAVED_MODEL), artist_names=artists,
        artist_metadata=features.artist_metadata(builder), views=config.data.views,
        answer=export.Answer(top_k=config.export.top_k, **rule), gallery=gallery,
        abstention={k: v for k, v in answer.items() if k not in (*rule, "verification")},
        verification=answer.get("verification"),
        metadata={"dataset": builder.info.full_name, "metrics": metrics,
                  "config": config.to_dict()})
    if config.export.export_tflite:
        export.export_tflite(model, os.path.join(workdir, TFLITE),
                             image_size=config.data.image_size, artist_names=artists)
    with open(os.path.join(workdir, TEST_METRICS), "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2)
    shutil.rmtree(os.path.join(workdir, callbacks_lib.BACKUP), ignore_errors=True)
    return metrics
