"""Recipes, flag validation, models, the report's numbers, and resuming a killed run."""

import collections
import dataclasses
import csv
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import flags

from artist_id import configs
import pipeline
from artist_tfds import features
from pipeline import augment
from tests.conftest import ENV, ROOT, SKEWED_COUNTS, TINY, encode, tiny_config
from trainer import callbacks as callbacks_lib
from trainer import config as config_lib
from trainer import models, optim, report, train_lib

@pytest.mark.parametrize("name,options", [("seed_cnn", {}), ("resnet_small", {}),
                                          ("resnet_small", {"pooling": "mean_std"}),
                                          ("seed_cnn", {"head": "cosine"}),
                                          ("resnet_small", {"head": "cosine"})])
def test_each_model_trains_a_step(name, options):  # backbone: see below.
    model = models.create_model(name, num_classes=4, image_size=48, **options)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).random((4, 48, 48, 3), dtype=np.float32)
    before = [w.copy() for w in model.get_weights()]
    loss = model.train_on_batch(x, np.arange(4))
    assert np.isfinite(loss) and model.output_shape == (None, 4)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_mean_std_pooling_gives_each_channels_mean_then_standard_deviation():
    maps = np.zeros((2, 2, 2, 3), np.float32)
    maps[0, :, :, 0] = [[0, 2], [0, 2]]  # Mean 1, deviation 1.
    maps[0, :, :, 1] = 5  # Flat: deviation 0 (but for the epsilon under the root).
    maps[1, :, :, 2] = [[1, 2], [3, 6]]  # Mean 3, variance (4 + 1 + 0 + 9) / 4.
    pooled = keras.ops.convert_to_numpy(models.MeanStdPooling2D()(maps))
    np.testing.assert_allclose(pooled, [[1, 5, 0, 1, 0, 0], [0, 0, 3, 0, 0, 3.5 ** 0.5]],
                               atol=2e-3)


def test_cosine_head_gives_16_times_the_cosine_and_saves_and_serves(tmp_path):
    model = models.create_model("resnet_small", num_classes=3, image_size=32, head="cosine",
                                widths=(8, 8, 8, 8))
    head = model.get_layer("logits")
    assert isinstance(head, models.CosineClassifier) and model.layers[-1] is head
    kernel = np.array([[1.0, 0, -2], [0, 3, 0]] + [[0, 0, 0]] * 6, np.float32)
    head.set_weights([kernel])
    embeddings = np.zeros((2, 8), np.float32)
    embeddings[0, :2] = [3, 4]  # cos to the columns: 0.6, 0.8, -0.6.
    embeddings[1, :2] = [-10, 0]  # ...and -1, 0, 1.
    expected = 16 * np.array([[0.6, 0.8, -0.6], [-1, 0, 1]])
    np.testing.assert_allclose(head(embeddings), expected, rtol=1e-5)
    np.testing.assert_allclose(head(7 * embeddings), expected, rtol=1e-5)  # Length: no say.
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    model.save(tmp_path / "cosine.keras")
    np.testing.assert_allclose(keras.saving.load_model(tmp_path / "cosine.keras")(x),
                               model(x), rtol=1e-5)
    from pipeline import views
    from serving import export
    path = export.export_model(model, str(tmp_path / "saved"), artist_names=["a", "b", "c"],
                               views=views.Views(32), answer=export.Answer(temperature=2.0))
    served = tf.saved_model.load(path).signatures["serve_pixels"](
        pixels=tf.constant((x * 255).round().astype(np.uint8)))
    np.testing.assert_allclose(
        served["probabilities"],
        tf.nn.softmax(model(np.round(x * 255) / 255, training=False) / 2.0), atol=1e-5)


def test_original_cnn_has_the_original_shape():
    model = models.create_model("seed_cnn", num_classes=50, image_size=300)
    convs = (27 * 16 + 16) + (144 * 32 + 32) + (288 * 64 + 64)
    dense = (37 * 37 * 64) * 128 + 128  # 300 -> 150 -> 75 -> 37 after three poolings.
    assert model.count_params() == convs + dense + 128 * 50 + 50 == 11_245_010
    assert model.layers[-1].activation is keras.activations.linear
    assert models.create_model("resnet_small", num_classes=50, image_size=300).count_params() < 2_000_000


def test_imagenet_weights_without_network_is_a_one_line_error(monkeypatch):
    from keras.src.utils import file_utils

    url = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v3/x.h5"

    def offline(*args, **kwargs):  # What keras raises here with no network (measured).
        raise Exception(f"URL fetch failure on {url}: None -- [Errno -2] Name or service not "
                        "known\nmore detail")

    monkeypatch.setattr(file_utils, "get_file", offline)
    config = configs.resolve("default", {"model": "backbone", "backbone": "mobilenetv3small",
                                         "weights": "imagenet", "image_size": 48})
    with pytest.raises(config_lib.ConfigError) as raised:
        train_lib.build_model(config, 3)
    assert str(raised.value) == (f"could not load --weights=imagenet into mobilenetv3small: "
                                 f"URL fetch failure on {url}: None -- [Errno -2] Name or "
                                 "service not known")


def test_local_weights_file_loads_into_backbone(tmp_path):
    base = keras.applications.MobileNetV3Small(include_top=False, weights=None,
                                               input_shape=(48, 48, 3), pooling="avg")
    path = str(tmp_path / "mobilenet.weights.h5")
    base.save_weights(path)
    model = models.create_model("backbone", num_classes=3, image_size=48,
                                backbone="mobilenetv3small", weights=path)
    loaded = model.get_layer(models.BACKBONE_LAYER).get_weights()
    for a, b in zip(base.get_weights(), loaded):
        np.testing.assert_array_equal(a, b)
    assert models.set_backbone_trainable(model, False)
    assert not model.get_layer(models.BACKBONE_LAYER).trainable


def test_report_numbers_match_hand_computed_confusion():
    names = ["A", "B", "C"]
    labels = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 2, 2])
    probabilities = np.full((6, 3), 0.1)
    probabilities[np.arange(6), predicted] = 0.8
    metrics = report.compute_metrics(labels, probabilities, names)
    assert metrics["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    # Recalls 2/3, 1/2, 1; precisions 1, 1/2, 1/2.
    assert metrics["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    f1 = [2 * 1 * (2 / 3) / (1 + 2 / 3), 0.5, 2 * 0.5 * 1 / 1.5]
    assert metrics["macro_f1"] == pytest.approx(np.mean(f1))
    assert metrics["per_artist"]["B"] == pytest.approx(
        {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert metrics["top3_accuracy"] == 1.0


def test_report_files(tmp_path):
    names = ["A", "B"]
    images = [encode(np.full((20, 30, 3), v, np.uint8)) for v in (10, 120, 240)]
    probabilities = np.array([[0.9, 0.1], [0.3, 0.7], [0.95, 0.05]])
    metrics = report.write_report(str(tmp_path), labels=np.array([0, 0, 1]),
                                  probabilities=probabilities, names=names, images=images, title="t")
    with open(tmp_path / "report.json") as f:
        assert json.load(f)["accuracy"] == pytest.approx(1 / 3) == metrics["accuracy"]
    assert "| A | 0.50 | 0.50 | 0.50 | 2 |" in (tmp_path / "report.md").read_text()
    for name in ("confusion.png", "mistakes.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def train_command(workdir, data_dir, epochs=3) -> list[str]:
    return ["train.py", f"--workdir={workdir}", f"--dataset={TINY}", f"--data_dir={data_dir}",
            "--recipe=scratch", "--model=seed_cnn", "--image_size=32", "--batch_size=8",
            "--warmup_epochs=1", f"--epochs={epochs}"]


def csv_epochs(workdir) -> list[int]:
    path = os.path.join(workdir, "metrics.csv")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [int(line.split(",")[0]) for line in f.read().splitlines()[1:] if line]


# train.py, with one more callback: after epoch 2 it writes a marker file and waits
# to be killed, so the test kills it at a known point whatever the machine's speed.
PAUSED_TRAIN = """
import os, sys, time
import keras
from absl import app
from artist_id import train
from trainer import callbacks as callbacks_lib

class PauseAfterSecondEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:  # After every other callback: backup and metrics.csv are written.
            open(os.environ["PAUSE_MARKER"], "w").close()
            time.sleep(3600)

create = callbacks_lib.create_callbacks
callbacks_lib.create_callbacks = lambda *a, **k: create(*a, **k) + [PauseAfterSecondEpoch()]
sys.argv[0] = "train.py"
app.run(train.main)
"""


def test_sigkilled_run_resumes_from_last_epoch(tiny_data_dir, tmp_path):
    workdir, marker = str(tmp_path / "run"), tmp_path / "paused"
    command = train_command(workdir, tiny_data_dir)
    process = subprocess.Popen([sys.executable, "-c", PAUSED_TRAIN, *command[1:]], cwd=ROOT,
                               env={**ENV, "PAUSE_MARKER": str(marker)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(6000):  # A generous bound, not a timing assumption: 10 min.
            if marker.exists() or process.poll() is not None:
                break
            time.sleep(0.1)
        assert marker.exists(), "training never reached the end of epoch 2"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert csv_epochs(workdir) == [0, 1]
    assert not os.path.exists(os.path.join(workdir, "test_metrics.json"))

    result = subprocess.run([sys.executable, *command], cwd=ROOT, env=ENV, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    # Resumed, not restarted: the first run's epochs are kept and not repeated.
    assert csv_epochs(workdir) == [0, 1, 2]
    assert "Epoch 3/3" in result.stdout + result.stderr
    assert "Epoch 1/3" not in result.stdout + result.stderr
    for name in ("test_metrics.json", "report.md", "saved_model/saved_model.pb", "curves.png"):
        assert os.path.exists(os.path.join(workdir, name)), name
    assert not os.path.exists(os.path.join(workdir, "backup"))
    # The run's cost counts the epochs before the kill too (a CPU budget survives resumption).
    with open(os.path.join(workdir, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    assert all(float(row["epoch_cpu_seconds"]) > 0 for row in rows)
    with open(os.path.join(workdir, "test_metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["train_cpu_seconds"] == pytest.approx(
        sum(float(row["epoch_cpu_seconds"]) for row in rows), abs=0.1)


def test_cpu_budget_counts_earlier_runs_and_stops_before_overrunning():
    class Model:
        stop_training = False

    budget = callbacks_lib.CpuBudget(100.0, used=60.0, epochs=3)  # 20 s an epoch so far.
    budget.set_model(Model())
    budget.on_epoch_end(3, {"epoch_cpu_seconds": 20.0})  # 80 used; one more -> 100: fits.
    assert not budget.model.stop_training
    budget.on_epoch_end(4, {"epoch_cpu_seconds": 20.0})  # 100 used; one more would overrun.
    assert budget.model.stop_training


def test_artist_metadata_comes_from_the_dataset(tmp_path):
    dummy = os.path.join(ROOT, "artist_tfds", "best_artworks", "dummy_data")
    builder = tfds.builder("best_artworks/all", data_dir=str(tmp_path))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=dummy))
    metadata = features.artist_metadata(builder)
    assert set(metadata) == set(builder.info.features["label"].names)
    assert metadata["Albrecht Dürer"]["years"] == "1471 - 1528"
    assert metadata["Vincent van Gogh"]["nationality"] == "Dutch"
    assert metadata["Edvard Munch"]["genre"] == ""  # No artists.csv row: kept, empty.


def test_callbacks_follow_the_settings(tmp_path):
    options = dict(phase=0, select_by="val_accuracy", validation=True)

    def kinds(**more):
        return [type(c).__name__ for c in callbacks_lib.create_callbacks(
            str(tmp_path), **options, **more)]

    plain = kinds(cpu_budget_seconds=0.0, early_stopping_patience=0)
    assert plain == ["BackupAndRestore", "EpochTimer", "ModelCheckpoint", "CSVLogger",
                     "TensorBoard"]
    limited = callbacks_lib.create_callbacks(str(tmp_path), **options,
                                             cpu_budget_seconds=100.0, early_stopping_patience=3)
    budget, stopping = limited[-2:]
    assert isinstance(budget, callbacks_lib.CpuBudget) and budget.budget == 100.0
    assert isinstance(stopping, keras.callbacks.EarlyStopping) and stopping.patience == 3


@pytest.mark.parametrize("select_by, validation, monitor, best_only, resumed_best", [
    ("val_accuracy", True, "val_accuracy", True, 0.6),
    ("val_loss", True, "val_loss", True, 0.9),
    ("last", True, "val_accuracy", False, 0.6),
    ("val_loss", False, "loss", True, 1.2),
])
def test_select_by_sets_what_the_checkpoint_keeps(tmp_path, select_by, validation, monitor,
                                                  best_only, resumed_best):
    # An interrupted run's metrics.csv: the resumed checkpoint starts from its best value.
    (tmp_path / callbacks_lib.METRICS_CSV).write_text(
        "epoch,accuracy,loss,val_accuracy,val_loss\n"
        "0,0.3,2.0,0.4,1.5\n1,0.5,1.2,0.6,1.1\n2,0.4,1.4,0.5,0.9\n")
    callbacks = callbacks_lib.create_callbacks(
        str(tmp_path), phase=0, select_by=select_by, validation=validation,
        cpu_budget_seconds=0.0, early_stopping_patience=2)
    checkpoint = next(c for c in callbacks if isinstance(c, keras.callbacks.ModelCheckpoint))
    stopping = callbacks[-1]
    assert checkpoint.monitor == stopping.monitor == monitor
    assert checkpoint.save_best_only is best_only
    assert checkpoint.best == pytest.approx(resumed_best)
    # Lower is better for a loss, higher for an accuracy.
    assert checkpoint.mode == stopping.mode == ("min" if monitor.endswith("loss") else "max")
    with pytest.raises(ValueError, match="select_by"):
        callbacks_lib.selection("best", validation=True)


@pytest.mark.parametrize("name, kind", [("rmsprop", keras.optimizers.RMSprop),
                                        ("sgd", keras.optimizers.SGD),
                                        ("adamw", keras.optimizers.AdamW)])
def test_optimizer_follows_the_settings(name, kind):
    config = optim.OptimizerConfig(name=name, momentum=0.5, weight_decay=0.01, warmup_epochs=0)
    optimizer = optim.create_optimizer(config, 0.1, steps_per_epoch=10)
    assert type(optimizer) is kind and optimizer.weight_decay == pytest.approx(0.01)
    if name != "adamw":
        assert optimizer.momentum == 0.5
    schedule = optim.create_learning_rate(config, 0.1, steps_per_epoch=10, epochs=5,
                                          warmup_epochs=1)
    assert [float(schedule(step)) for step in (0, 10)] == pytest.approx([0.001, 0.1])
    assert float(schedule(50)) == pytest.approx(0.0, abs=1e-6)


def test_label_smoothing_gives_one_hot_labels_and_a_smoothed_loss(tiny_builder, tiny_data_dir):
    smoothed = tiny_config(tiny_data_dir, label_smoothing=0.2)
    loss, _ = optim.create_loss_and_metrics(smoothed, 6)
    assert isinstance(loss, keras.losses.CategoricalCrossentropy)
    assert loss.get_config()["label_smoothing"] == 0.2
    train_ds, val_ds, _ = train_lib.create_inputs(smoothed, tiny_builder)
    assert next(iter(train_ds))[1].shape == (8, 6) and next(iter(val_ds))[1].shape == (8, 6)
    sparse = tiny_config(tiny_data_dir, label_smoothing=0.0)
    assert isinstance(optim.create_loss_and_metrics(sparse, 6)[0],
                      keras.losses.SparseCategoricalCrossentropy)
    assert next(iter(train_lib.create_inputs(sparse, tiny_builder)[0]))[1].shape == (8,)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_logit_norm_loss_is_the_cross_entropy_of_logits_scaled_to_one_over_tau(
        tiny_data_dir, label_smoothing):
    config = tiny_config(tiny_data_dir, logit_norm=0.5, label_smoothing=label_smoothing)
    loss, _ = optim.create_loss_and_metrics(config, 3)
    assert isinstance(loss, optim.LogitNormCrossentropy)
    # As the training loop rebuilds it: per-example losses.
    per_example = loss.__class__(**{**loss.get_config(), "reduction": None})
    logits = np.array([[3.0, 4.0, 0.0], [0.0, 0.0, -2.0]], np.float32)  # Norms 5 and 2.
    scaled = np.array([[1.2, 1.6, 0.0], [0.0, 0.0, -2.0]])  # logits / (0.5 x norm).
    labels = np.array([1, 0])
    target = np.full((2, 3), label_smoothing / 3) + (1 - label_smoothing) * np.eye(3)[labels]
    expected = -np.sum(target * (scaled - np.log(np.exp(scaled).sum(-1, keepdims=True))), -1)
    given = np.eye(3, dtype=np.float32)[labels] if label_smoothing else labels
    np.testing.assert_allclose(per_example(given, logits), expected, rtol=1e-5)
    # Growing the logits no longer changes the loss.
    np.testing.assert_allclose(per_example(given, 10 * logits), expected, rtol=1e-5)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_margin_loss_lowers_the_true_cosine_by_the_margin(tiny_data_dir, label_smoothing):
    config = tiny_config(tiny_data_dir, margin=0.25, head="cosine",
                         label_smoothing=label_smoothing)
    loss, _ = optim.create_loss_and_metrics(config, 3)
    assert isinstance(loss, optim.MarginCrossentropy) and loss.margin == 0.25 * 16
    per_example = loss.__class__(**{**loss.get_config(), "reduction": None})
    logits = np.array([[8.0, 12.0, -4.0], [6.0, 2.0, 0.0]], np.float32)  # 16 x cosines.
    labels = np.array([1, 0])
    shifted = logits - 4.0 * np.eye(3)[labels]  # The true artist's cosine, 0.25 lower.
    target = np.full((2, 3), label_smoothing / 3) + (1 - label_smoothing) * np.eye(3)[labels]
    expected = -np.sum(target * (shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))), -1)
    given = np.eye(3, dtype=np.float32)[labels] if label_smoothing else labels
    np.testing.assert_allclose(per_example(given, logits), expected, rtol=1e-5)
    # A mixed label (mixup, CutMix) takes off the margin in proportion to its weights.
    mixed = np.array([[0.5, 0.5, 0.0]], np.float32)
    if label_smoothing:
        half = logits[:1] - 2.0 * np.array([[1.0, 1.0, 0.0]])
        mixed_target = np.full(3, 0.1 / 3) + 0.9 * mixed
        np.testing.assert_allclose(
            per_example(mixed, logits[:1]),
            -np.sum(mixed_target * (half - np.log(np.exp(half).sum(-1, keepdims=True))), -1),
            rtol=1e-5)


def skewed_config(builder, **overrides):
    return tiny_config(str(builder.data_dir_root), dataset="skewed_paintings", batch_size=6,
                       image_size=16, **overrides)


class Probe(keras.callbacks.Callback):
    """Calls `record(model, epoch)` before training (epoch None) and after each epoch."""

    def __init__(self, record):
        super().__init__()
        self.record = record

    def on_train_begin(self, logs=None):
        self.record(self.model, None)

    def on_epoch_end(self, epoch, logs=None):
        self.record(self.model, epoch)


@pytest.fixture
def probe(monkeypatch):
    """probe(record): every training phase from now on also runs `Probe(record)`."""
    def install(record):
        create = callbacks_lib.create_callbacks
        monkeypatch.setattr(callbacks_lib, "create_callbacks",
                            lambda *a, **k: create(*a, **k) + [Probe(record)])
    return install


def test_resampled_training_batches_are_balanced(skewed_builder):
    def epoch_counts(balance):
        train_ds, _, class_weight = train_lib.create_inputs(
            skewed_config(skewed_builder, balance=balance, label_smoothing=0.0), skewed_builder)
        return collections.Counter(int(y) for _, ys in train_ds for y in ys), class_weight

    plain, _ = epoch_counts("none")
    assert plain == dict(enumerate(SKEWED_COUNTS))  # 78 = 13 full batches: nothing dropped.
    resampled, class_weight = epoch_counts("resample")
    assert sum(resampled.values()) == 78 and class_weight is None
    assert min(resampled.values()) >= 18, resampled  # 26 each expected; 6 without resampling.


@pytest.fixture
def op_determinism_restored():
    """Deterministic runs enable TF op determinism process-wide (no public way back): undo it,
    or later tests would run without XLA, which Keras turns off under op determinism."""
    from tensorflow.python.framework import config as tf_config

    yield
    tf_config.disable_op_determinism()


def test_class_weights_change_the_loss(skewed_builder, tmp_path, op_determinism_restored):
    def first_loss(balance):
        config = skewed_config(skewed_builder, balance=balance, epochs=1, warmup_epochs=0,
                               deterministic=True)
        workdir = str(tmp_path / balance)
        train_lib.train(config, workdir, skewed_builder)
        with open(os.path.join(workdir, "metrics.csv")) as f:
            return float(next(csv.DictReader(f))["loss"])

    _, _, weights = train_lib.create_inputs(
        skewed_config(skewed_builder, balance="class_weight"), skewed_builder)
    assert weights == pytest.approx({0: 78 / 180, 1: 78 / 36, 2: 78 / 18})
    # Deterministic runs: the same but for the weights, so any difference is theirs.
    assert first_loss("none") != pytest.approx(first_loss("class_weight"), rel=1e-4)


def test_device_augmentation_trains_and_its_run_reloads(tiny_data_dir, tiny_builder, tmp_path,
                                                        probe):
    states = []
    def record(model, epoch):
        layer = next(x for x in model.layers if isinstance(x, augment.DeviceAugmentation))
        states.append(layer.seed_generator.state.numpy().tolist())

    probe(record)
    config = tiny_config(tiny_data_dir, augment_on="device", seed=3)
    workdir = str(tmp_path / "run")
    train_lib.prepare_workdir(config, workdir, overwrite=False)
    model = train_lib.train(config, workdir, tiny_builder)
    assert states == [[3, 0], [3, 4], [3, 8]]  # One augmentation per step: 36 // 8 a epoch.
    # The checkpoint holds the training model's weights; load_run used to fail on it.
    _, loaded = train_lib.load_run(workdir)
    images = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
    np.testing.assert_allclose(loaded(images, training=False), model(images, training=False),
                               atol=1e-6)


def small_backbone(*, include_top, weights, input_shape, pooling):
    """A stand-in for a keras.applications constructor (same signature), small enough to
    trace in a second: the freezing mechanics do not depend on the network."""
    del include_top
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.BatchNormalization()(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x) if pooling else x)
    assert weights is None
    return model


def test_backbone_is_frozen_then_fine_tuned(tiny_data_dir, tiny_builder, tmp_path, probe,
                                            monkeypatch):
    monkeypatch.setitem(models.BACKBONES, "mobilenetv3small", (small_backbone, None))
    base = small_backbone(include_top=False, weights=None, input_shape=(32, 32, 3),
                          pooling="avg")
    weights = str(tmp_path / "backbone.weights.h5")
    base.save_weights(weights)
    log = {}
    probe(lambda model, epoch: log.setdefault(epoch, [
        w.copy() for w in model.get_layer(models.BACKBONE_LAYER).get_weights()]))
    # The finetune recipe as a user without internet runs it: a local weights file.
    config = configs.resolve("finetune", {
        "dataset": TINY, "data_dir": tiny_data_dir, "image_size": 32, "batch_size": 8,
        "backbone": "mobilenetv3small", "weights": weights, "freeze_epochs": 1, "epochs": 2,
        "warmup_epochs": 0})
    assert config.data.balance == "class_weight" and config.model.name == "backbone"
    train_lib.train(config, str(tmp_path / "run"), tiny_builder)
    for start, loaded in zip(log[None], base.get_weights()):
        np.testing.assert_array_equal(start, loaded)  # Started from the weights file.
    for start, frozen in zip(log[None], log[0]):
        np.testing.assert_array_equal(start, frozen)  # Epoch 1: the head alone.
    assert any(not np.array_equal(a, b) for a, b in zip(log[0], log[1]))  # Then everything.


def test_jit_compile_and_mixed_precision_reach_the_training_step(tiny_data_dir, tiny_builder,
                                                                 tmp_path, probe):
    seen = {}
    probe(lambda model, epoch: seen.setdefault(
        "compiled", (bool(model.jit_compile), model.layers[1].compute_dtype)))
    config = tiny_config(tiny_data_dir, jit_compile=True, precision="mixed_bfloat16",
                         epochs=1, warmup_epochs=0)
    train_lib.train(config, str(tmp_path / "run"), tiny_builder)
    assert seen["compiled"] == (True, "bfloat16")
    assert keras.mixed_precision.global_policy().name == "float32"  # Restored afterwards.


MIRRORED = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import pipeline
from tests.conftest import tiny_config
from trainer import train_lib

config = tiny_config(sys.argv[1], strategy="mirrored", epochs=1, warmup_epochs=0)
builder = pipeline.load_builder(config.data.dataset, data_dir=config.data.data_dir)
model = train_lib.train(config, sys.argv[2], builder)
print(json.dumps({"replicas": len(model.weights[0].value.values)}))
"""


def test_mirrored_strategy_trains_on_two_replicas(tiny_data_dir, tmp_path):
    # Two logical CPUs stand in for two GPUs: one replica each, variables mirrored.
    result = subprocess.run([sys.executable, "-c", MIRRORED, tiny_data_dir, str(tmp_path / "run")],
                            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"replicas": 2}


def test_curves_plot_a_run_without_validation(tmp_path):
    # Keras' CSVLogger fills the val_* columns with "NA" when there is no validation split.
    metrics_csv = tmp_path / "metrics.csv"
    metrics_csv.write_text("epoch,accuracy,loss,val_accuracy,val_loss\n"
                           "0,0.5,1.2,NA,NA\n1,0.75,0.8,NA,NA\n")
    report.plot_curves(str(metrics_csv), str(tmp_path / "curves.png"))
    with open(tmp_path / "curves.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("setting, steps, expected", [
    (0.97, 18, 0.97),  # Given: kept.
    (0.0, 18, 0.9),  # A few hundred paintings: 1 - 2/18 = 0.889, at least 0.9.
    (0.0, 68, 1 - 2 / 68),  # Devset at batch 32: 0.971.
    (0.0, 1000, 0.99),  # Large collections: Keras' default, at most.
])
def test_batch_norm_momentum_matched_to_the_steps_per_epoch(setting, steps, expected):
    assert models.batch_norm_momentum(setting, steps) == pytest.approx(expected)


def test_batch_norm_momentum_reaches_every_layer_of_a_run(tiny_data_dir, tmp_path):
    config = tiny_config(tiny_data_dir, model="resnet_small", bn_momentum=0.0, epochs=1,
                         warmup_epochs=0, gallery_per_artist=0)
    builder = pipeline.load_builder(config.data.dataset, data_dir=config.data.data_dir)
    steps = builder.info.splits["train"].num_examples // config.data.batch_size
    model = train_lib.train(config, str(tmp_path), builder)
    momenta = {layer.momentum for layer in models.batch_norm_layers(model)}
    assert momenta == {models.batch_norm_momentum(0.0, steps)} and 0.9 <= momenta.pop() < 0.99


def test_ema_weights_are_validated_and_kept_while_the_backup_keeps_the_raw_ones(tmp_path):
    steps, epochs = 4, 3
    config = optim.OptimizerConfig(ema_epochs=0.5, warmup_epochs=0, schedule="constant")
    momentum = optim.ema_momentum(config, steps)
    assert momentum == pytest.approx(0.5)  # 1 - 1 / (0.5 x 4).
    assert optim.ema_momentum(dataclasses.replace(config, ema_epochs=0.0), steps) is None

    def dense():
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])

    class RawWeights(keras.callbacks.Callback):  # The trained weights after every step.
        seen = []

        def on_train_batch_end(self, batch, logs=None):
            self.seen.append(self.model.layers[0].get_weights())

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4 * steps, 3)), rng.integers(0, 2, 4 * steps)
    model = dense()
    model.compile(optimizer=optim.create_optimizer(config, 0.1, steps_per_epoch=steps),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert model.optimizer.use_ema and model.optimizer.ema_momentum == pytest.approx(0.5)
    callbacks = callbacks_lib.create_callbacks(
        str(tmp_path), phase=0, select_by="last", validation=True, cpu_budget_seconds=0.0,
        early_stopping_patience=0, ema=True)
    assert [type(c).__name__ for c in callbacks][:4] == [
        "BackupAndRestore", "EpochTimer", "SwapEMAWeights", "ModelCheckpoint"]
    model.fit(x, y, batch_size=4, epochs=epochs, validation_data=(x, y), shuffle=False,
              callbacks=callbacks + [RawWeights()], verbose=0)
    # The average as Keras defines it: the first step's weights, then m a + (1 - m) w.
    average = RawWeights.seen[0]
    for raw in RawWeights.seen[1:]:
        average = [momentum * a + (1 - momentum) * w for a, w in zip(average, raw)]
    kept = dense()
    kept.load_weights(tmp_path / callbacks_lib.BEST_WEIGHTS)
    last_raw = RawWeights.seen[-1]
    for got, want, raw in zip(kept.layers[0].get_weights(), average, last_raw):
        np.testing.assert_allclose(got, want, atol=1e-5)
        assert np.abs(got - raw).max() > 1e-3  # The average, not the last weights.
    # Validation scored the average: the kept weights' loss on the same data.
    kept.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    logged = callbacks_lib.csv_rows(str(tmp_path / callbacks_lib.METRICS_CSV))
    assert float(logged[-1]["val_loss"]) == pytest.approx(kept.evaluate(x, y, verbose=0),
                                                          rel=1e-4)
    # The backup, saved before the swap, resumes from the raw weights.
    backup = next(tmp_path.glob(f"{callbacks_lib.BACKUP}/phase0/*.weights.h5"))
    resumed = dense()
    resumed.load_weights(backup)
    for got, raw in zip(resumed.layers[0].get_weights(), last_raw):
        np.testing.assert_allclose(got, raw, atol=1e-6)
