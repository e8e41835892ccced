"""Multi-worker training: a custom loop under `MultiWorkerMirroredStrategy`.

Keras 3 `fit` fails under `MultiWorkerMirroredStrategy` (keras-team/keras#20585);
a Keras model and optimizer train there fine when the step is ours. The loop
runs the plan `train_lib.fit_phases` runs with `fit` (`phases`: the phases,
each phase's optimizer and schedule, the Keras callbacks for metrics.csv,
TensorBoard, the best checkpoint, early stopping and the CPU budget), with the
same model, loss and class weights and the input of `pipeline.create_split`,
so a run's files read the same either way.

* Every worker runs the same command; the cluster comes from `TF_CONFIG`.
  Worker 0 is the chief (or the task of type "chief", if there is one).
* Input: each worker reads its share of the split's files (TFDS's
  `ReadConfig.input_context`, through `distribute_datasets_from_function`),
  batches of the global batch / replicas; the loss is averaged over the global
  batch (`tf.nn.compute_average_loss`), gradients are summed across workers.
* Batch-norm statistics are synchronised across workers, so the moving
  averages (and the weights) are the same on every worker.
* Validation: each worker scores its share of the split; the counts are summed.
  Every worker sees the same figures, and so takes the same decisions.
* Resume: a `tf.train.CheckpointManager` saves model, optimizer and epoch after
  every epoch, into the work directory on the chief and into a temporary
  directory on the others (TensorFlow's convention: every worker must save).
  Restarted workers restore from the chief's, so the work directory must be
  shared storage (NFS, GCS) across machines.
* CPU time: `epoch_cpu_seconds` is summed over all workers, so
  `--cpu_budget_seconds` caps the work of the whole cluster, as it caps one
  machine's.
"""

import contextlib
import dataclasses
import functools
import json
import os
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

import pipeline
from trainer import callbacks as callbacks_lib
from trainer import optim, phases, report

CHECKPOINTS = "phase{phase}"
SUM = tf.distribute.ReduceOp.SUM
# Per-batch sums the loop adds up; the metrics are their ratios.
COUNTS = ("loss", "weight", "correct", "top_k_correct", "examples")


def create_strategy() -> tf.distribute.MultiWorkerMirroredStrategy:
    """The cluster of `TF_CONFIG`; without it, a cluster of one (this process)."""
    if "TF_CONFIG" not in os.environ:
        logging.warning("--strategy=multi_worker without TF_CONFIG: training on this "
                        "machine alone")
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    context = input_context(strategy)
    logging.info("MultiWorkerMirroredStrategy: worker %d of %d, %d replicas in all",
                 context.input_pipeline_id, context.num_input_pipelines,
                 strategy.num_replicas_in_sync)
    return strategy


def chief_task() -> bool:
    """Whether `TF_CONFIG` makes this process the chief (known before the strategy is)."""
    tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = tf_config.get("task", {})
    if "chief" in tf_config.get("cluster", {}):
        return task.get("type") == "chief"
    return int(task.get("index", 0)) == 0


def input_context(strategy) -> tf.distribute.InputContext:
    """This worker's place among the cluster's input pipelines: the context
    `distribute_datasets_from_function` gives the training input (no public accessor),
    a chief task included."""
    return strategy.extended._make_input_context()


def is_chief(strategy) -> bool:
    """TensorFlow's rule: the "chief" task if the cluster has one, else worker 0."""
    return strategy.extended.should_checkpoint


def sharded_split(builder, split: str, data: pipeline.DataConfig,
                  context: tf.distribute.InputContext, **options) -> tf.data.Dataset:
    """This input pipeline's part of `split`, in per-replica batches."""
    per_replica = context.get_per_replica_batch_size(data.batch_size)
    return pipeline.create_split(builder, split, dataclasses.replace(data, batch_size=per_replica),
                                 input_context=context, **options)


def batch_counts(labels, logits, per_example_loss, weights, *, top_k: int) -> tf.Tensor:
    """[loss sum, weight sum, right, right in the top k, examples] of one batch; accuracy
    and loss are weighted by the class weights, as `fit` weighs them."""
    logits = tf.cast(logits, tf.float32)
    if labels.shape.rank == 2:  # One-hot rows (label smoothing).
        labels = tf.argmax(labels, axis=-1)
    labels = tf.cast(labels, tf.int32)
    correct = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels),
                      tf.float32)
    top_k_correct = tf.cast(tf.math.in_top_k(labels, logits, top_k), tf.float32)
    return tf.stack([tf.reduce_sum(per_example_loss * weights), tf.reduce_sum(weights),
                     tf.reduce_sum(correct * weights), tf.reduce_sum(top_k_correct * weights),
                     tf.cast(tf.size(labels), tf.float32)])


def metrics_from(counts: np.ndarray, *, top_k: int, prefix: str = "") -> dict[str, float]:
    """fit's log names and values from summed `batch_counts`."""
    loss, weight, correct, top_k_correct, examples = counts
    return {f"{prefix}loss": float(loss / max(examples, 1)),
            f"{prefix}accuracy": float(correct / max(weight, 1e-12)),
            f"{prefix}top{top_k}_accuracy": float(top_k_correct / max(weight, 1e-12))}


@functools.cache
def _all_sum_function(strategy):
    return tf.function(lambda values: strategy.reduce(
        SUM, strategy.run(tf.identity, args=(values,)), axis=None))


def all_sum(strategy, values) -> np.ndarray:
    """`values` summed over every worker (every worker must call it, in the same order)."""
    return _all_sum_function(strategy)(tf.cast(values, tf.float32)).numpy()


class Loop:
    """Training and validation steps of one phase, compiled once per phase."""

    def __init__(self, strategy, fit_model: keras.Model, optimizer, loss: keras.losses.Loss,
                 *, global_batch: int, num_classes: int, class_weight: dict | None,
                 jit_compile: bool):
        self.strategy, self.model, self.optimizer = strategy, fit_model, optimizer
        self.global_batch = global_batch
        self.top_k = min(report.TOP_K, num_classes)
        # Per-example losses: the loop averages them over the global batch.
        self.loss = loss.__class__(**{**loss.get_config(), "reduction": None})
        weights = np.ones(num_classes, np.float32)
        for label, weight in (class_weight or {}).items():
            weights[label] = weight
        self.class_weights = tf.constant(weights)
        # XLA compiles the forward and backward pass; the all-reduce stays outside it.
        self.gradients = tf.function(self._gradients, jit_compile=True) if jit_compile \
            else self._gradients
        self.train_step = tf.function(self._train_step)
        self.evaluate_step = tf.function(self._evaluate_step)

    def _weights(self, labels):
        if labels.shape.rank == 2:
            labels = tf.argmax(labels, axis=-1)
        return tf.gather(self.class_weights, tf.cast(labels, tf.int32))

    def _gradients(self, images, labels):
        weights = self._weights(labels)
        with tf.GradientTape() as tape:
            logits = self.model(images, training=True)
            per_example = self.loss(labels, tf.cast(logits, tf.float32))
            loss = tf.nn.compute_average_loss(per_example * weights,
                                              global_batch_size=self.global_batch)
            if self.model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(self.model.losses))
            scaled = (self.optimizer.scale_loss(loss)
                      if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer) else loss)
        gradients = tape.gradient(scaled, self.model.trainable_variables)
        return gradients, batch_counts(labels, logits, per_example, weights, top_k=self.top_k)

    def _train_replica(self, images, labels):
        gradients, counts = self.gradients(images, labels)
        self.optimizer.apply_gradients(zip(gradients, self.model.trainable_variables))
        return counts

    def _train_step(self, iterator):
        counts = self.strategy.run(self._train_replica, args=next(iterator))
        # This worker's replicas only: the workers' counts are summed once an epoch.
        return tf.add_n(self.strategy.experimental_local_results(counts))

    def _evaluate_step(self, images, labels):
        logits = self.model(images, training=False)
        per_example = self.loss(labels, tf.cast(logits, tf.float32))
        return batch_counts(labels, logits, per_example, tf.ones_like(per_example),
                            top_k=self.top_k)

    def train_epoch(self, iterator, steps: int) -> np.ndarray:
        counts = tf.zeros(len(COUNTS))
        for step in range(steps):
            counts += self.train_step(iterator)  # No .numpy(): steps stay asynchronous.
            if (step + 1) % max(1, steps // 4) == 0:
                logging.log_every_n_seconds(logging.INFO, "  step %d/%d", 30, step + 1, steps)
        return all_sum(self.strategy, counts)

    def evaluate(self, dataset) -> np.ndarray:
        """This worker's share of the split, scored locally, then summed over workers."""
        counts = np.zeros(len(COUNTS), np.float32)
        for images, labels in dataset:
            counts += self.evaluate_step(images, labels).numpy()
        return all_sum(self.strategy, counts)


class Checkpoints:
    """Model, optimizer and epoch after every epoch: the chief writes `directory`, the
    others a temporary directory each (removed after saving); all restore the chief's."""

    def __init__(self, directory: str, *, chief: bool, **trackables):
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.checkpoint = tf.train.Checkpoint(epoch=self.epoch, **trackables)
        self.directory, self.chief = directory, chief

    def restore(self) -> int:
        latest = tf.train.latest_checkpoint(self.directory)
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
            logging.info("Resumed from %s (epoch %d)", latest, int(self.epoch.numpy()))
        return int(self.epoch.numpy())

    def save(self, epoch: int) -> None:
        self.epoch.assign(epoch)
        directory = self.directory if self.chief else tempfile.mkdtemp(prefix="worker_ckpt_")
        tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=2).save()
        if not self.chief:
            shutil.rmtree(directory, ignore_errors=True)


def keep_logged_epochs(metrics_csv: str, epochs: int) -> None:
    """Drops metrics.csv rows of epochs the checkpoint does not hold (a worker killed
    after logging an epoch but before saving it reruns that epoch)."""
    rows = callbacks_lib.csv_rows(metrics_csv)
    kept = [row for row in rows if int(row["epoch"]) < epochs]
    if len(kept) == len(rows):
        return
    with open(metrics_csv, encoding="utf-8") as f:
        header = f.readline()
    with open(metrics_csv, "w", encoding="utf-8") as f:
        f.write(header)
        for row in kept:
            f.write(",".join(row[name] for name in header.strip().split(",")) + "\n")


def loop_callbacks(config, workdir: str, own_dir: str, phase: phases.Phase, *,
                   validation: bool) -> list[keras.callbacks.Callback]:
    """`phases.create_callbacks` writing into `own_dir`, after the work directory's
    metrics.csv (the best value and CPU spent so far), without the two the loop replaces.

    Every worker runs them all, the others into a temporary directory: saving
    weights takes collective ops, so all workers save together, and they take the
    same decisions (their figures are the cluster's).
    """
    if own_dir != workdir and os.path.exists(os.path.join(workdir, callbacks_lib.METRICS_CSV)):
        shutil.copy(os.path.join(workdir, callbacks_lib.METRICS_CSV), own_dir)
    # The loop times epochs itself (CPU summed over workers) and resumes from its checkpoints.
    return [c for c in phases.create_callbacks(config, own_dir, phase, validation=validation)
            if not isinstance(c, (keras.callbacks.BackupAndRestore, callbacks_lib.EpochTimer))]


@contextlib.contextmanager
def worker_directory(workdir: str, strategy):
    """Where this worker's callbacks write: the work directory on one machine and on a
    cluster's chief, a temporary directory (removed on exit) on the others."""
    if is_chief(strategy):
        yield workdir
        return
    own_dir = tempfile.mkdtemp(prefix=f"worker{input_context(strategy).input_pipeline_id}_")
    try:
        yield own_dir
    finally:
        shutil.rmtree(own_dir, ignore_errors=True)


def fit_phases(config, workdir: str, own_dir: str, strategy, model: keras.Model,
               fit_model: keras.Model, builder, *, num_classes: int, class_weight) -> None:
    """`phases.plan` on a cluster, as `train_lib.fit_phases` runs it with `fit`; this
    worker's own files (`loop_callbacks`) go to `own_dir` (`worker_directory`)."""
    data, replicas = config.data, strategy.num_replicas_in_sync
    if data.batch_size % replicas:
        raise ValueError(f"--batch_size={data.batch_size} must be a multiple of the "
                         f"{replicas} replicas of the cluster")
    options = phases.input_options(config)
    train_ds = strategy.distribute_datasets_from_function(
        lambda context: sharded_split(
            builder, "train", data, context, training=True, augment=config.augment,
            # Each worker its own shuffle and augmentation draws.
            **{**options, "seed": options["seed"] + 1009 * context.input_pipeline_id}).repeat())
    val_ds = None
    if "validation" in builder.info.splits:
        # Whole paintings, as `fit` validates (`train_lib.create_inputs`).
        val_ds = pipeline.create_split(builder, "validation", data.single_view(),
                                       training=False, input_context=input_context(strategy),
                                       **options)
    all_sum(strategy, 0.0)  # A barrier: the chief has claimed (or cleared) the work directory.
    iterator = iter(train_ds)
    phases.run(config, model, fit_model, lambda phase: fit_phase(
        config, workdir, own_dir, strategy, fit_model, iterator, val_ds, phase,
        steps_per_epoch=phases.steps_per_epoch(config, builder), num_classes=num_classes,
        class_weight=class_weight))


def create_optimizer(config, strategy, fit_model: keras.Model, phase: phases.Phase, *,
                     steps_per_epoch: int, loss: keras.losses.Loss, metrics: list):
    """The phase's optimizer, built in the strategy's scope (loss-scaled under
    mixed_float16, as `fit` scales it), and `fit_model` compiled with it."""
    with strategy.scope():
        optimizer = phases.create_optimizer(config, phase, steps_per_epoch=steps_per_epoch)
        if keras.mixed_precision.global_policy().name == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(fit_model.trainable_variables)
        # The callbacks reach the optimizer (TensorBoard's learning rate) through the model.
        fit_model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
    return optimizer


def fit_phase(config, workdir: str, own_dir: str, strategy, fit_model: keras.Model, iterator,
              val_ds, phase: phases.Phase, *, steps_per_epoch: int, num_classes: int,
              class_weight) -> None:
    """The phase's epochs with a fresh optimizer, resumed from this phase's checkpoint."""
    loss, metrics = optim.create_loss_and_metrics(config, num_classes)
    optimizer = create_optimizer(config, strategy, fit_model, phase,
                                 steps_per_epoch=steps_per_epoch, loss=loss, metrics=metrics)
    loop = Loop(strategy, fit_model, optimizer, loss, global_batch=config.data.batch_size,
                num_classes=num_classes, class_weight=class_weight,
                jit_compile=config.run.jit_compile)
    checkpoints = Checkpoints(
        os.path.join(workdir, callbacks_lib.BACKUP, CHECKPOINTS.format(phase=phase.index)),
        chief=own_dir == workdir, model=fit_model, optimizer=optimizer)
    first = max(phase.start, checkpoints.restore())
    if own_dir == workdir:
        keep_logged_epochs(os.path.join(workdir, callbacks_lib.METRICS_CSV), first)
    all_sum(strategy, 0.0)  # A barrier: metrics.csv now holds what the checkpoint holds.
    fit_model.stop_training = False
    if first >= phase.end:
        return
    callbacks = keras.callbacks.CallbackList(
        loop_callbacks(config, workdir, own_dir, phase, validation=val_ds is not None),
        model=fit_model)
    callbacks.on_train_begin()
    for epoch in range(first, phase.end):
        callbacks.on_epoch_begin(epoch)
        start_time, start_cpu = time.perf_counter(), time.process_time()
        logs = metrics_from(loop.train_epoch(iterator, steps_per_epoch), top_k=loop.top_k)
        if val_ds is not None:
            logs |= metrics_from(loop.evaluate(val_ds), top_k=loop.top_k, prefix="val_")
        cpu = all_sum(strategy, time.process_time() - start_cpu)  # The cluster's.
        logs |= {"epoch_seconds": time.perf_counter() - start_time,
                 "epoch_cpu_seconds": float(cpu)}
        logging.info("Epoch %d/%d: %s", epoch + 1, phase.end,
                     json.dumps({k: round(v, 4) for k, v in logs.items()}))
        callbacks.on_epoch_end(epoch, logs)
        checkpoints.save(epoch + 1)
        # Any worker's stop stops all (their callbacks see the same figures anyway).
        fit_model.stop_training = bool(all_sum(strategy, float(fit_model.stop_training)))
        if fit_model.stop_training:
            break
    callbacks.on_train_end()
