"""Recipes, flag validation, models, the report's numbers, and resuming a killed run."""

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

import configs
from tests.conftest import TINY
from trainer import config as config_lib
from trainer import models, report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def test_original_recipe_is_the_original():
    config = configs.resolve("original", {})
    assert (config.model, config.image_size, config.batch_size, config.epochs) == ("seed_cnn", 300, 32, 20)
    assert (config.optimizer, config.learning_rate, config.momentum) == ("rmsprop", 1e-3, 0.1)
    assert (config.flip_horizontal, config.flip_vertical, config.rotation, config.zoom,
            config.translate_height, config.translate_width, config.contrast) == (
        True, True, 0.25, 0.2, 0.3, 0.2, 0.2)


def test_flags_override_recipe_and_recipe_is_recorded():
    config = configs.resolve("default", {"epochs": 3, "image_size": 64})
    assert (config.recipe, config.epochs, config.image_size) == ("default", 3, 64)
    assert config.model == configs.recipe_values("default")["model"]


@pytest.mark.parametrize("overrides, message", [
    ({"weights": "imagenet"}, "--weights=imagenet needs --model=backbone"),
    ({"warmup_epochs": 2}, "--warmup_epochs needs --schedule=cosine"),
    ({"schedule": "cosine", "warmup_epochs": 20}, "must be below --epochs"),
    ({"model": "backbone", "weights": "/no/such/file.h5"}, "not 'imagenet', 'none' or an existing"),
    ({"model": "backbone", "freeze_epochs": 2}, "random, frozen backbone"),
    ({"freeze_epochs": 2}, "--freeze_epochs needs --model=backbone"),
    ({"optimizer": "adagrad"}, "--optimizer=adagrad"),
    ({"label_smoothing": 1.0}, "--label_smoothing"),
    ({"deterministic": True, "tf_data_service": "grpc://localhost:5000"}, "--deterministic"),
])
def test_bad_combinations_fail_with_one_line(overrides, message):
    with pytest.raises(config_lib.ConfigError, match=message.replace("(", r"\(")) as error:
        configs.resolve("original", overrides)
    assert "\n" not in str(error.value)


def test_unknown_recipe():
    with pytest.raises(config_lib.ConfigError, match="--recipe=fancy"):
        configs.resolve("fancy", {})


def test_model_names_match_config_names():
    assert tuple(models.MODELS) == config_lib.MODELS
    assert tuple(models.BACKBONES) == config_lib.BACKBONES


@pytest.mark.parametrize("name, options", [
    ("seed_cnn", {}), ("resnet_small", {}),
    ("backbone", {"backbone": "mobilenetv3small", "weights": "none"}),
])
def test_each_model_trains_a_step(name, options):
    model = models.create_model(name, num_classes=4, image_size=48, **options)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).random((4, 48, 48, 3), dtype=np.float32)
    before = [w.copy() for w in model.get_weights()]
    loss = model.train_on_batch(x, np.arange(4))
    assert np.isfinite(loss) and model.output_shape == (None, 4)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_original_cnn_has_the_original_shape():
    model = models.create_model("seed_cnn", num_classes=50, image_size=300)
    convs = (27 * 16 + 16) + (144 * 32 + 32) + (288 * 64 + 64)
    dense = (37 * 37 * 64) * 128 + 128  # 300 -> 150 -> 75 -> 37 after three poolings.
    assert model.count_params() == convs + dense + 128 * 50 + 50 == 11_245_010
    assert model.layers[-1].activation is keras.activations.linear
    assert models.create_model("resnet_small", num_classes=50, image_size=300).count_params() < 2_000_000


def test_imagenet_weights_without_network_is_a_one_line_error(monkeypatch):
    from keras.src.utils import file_utils

    from trainer import train_lib

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
    from tests.conftest import encode

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


def train_command(workdir, data_dir, epochs=6):
    return [sys.executable, "train.py", f"--workdir={workdir}", f"--dataset={TINY}",
            f"--data_dir={data_dir}", "--recipe=original", "--image_size=64", "--batch_size=4",
            f"--epochs={epochs}"]


def csv_epochs(workdir) -> list[int]:
    path = os.path.join(workdir, "metrics.csv")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [int(line.split(",")[0]) for line in f.read().splitlines()[1:] if line]


def test_sigkilled_run_resumes_from_last_epoch(tiny_data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    process = subprocess.Popen(train_command(workdir, tiny_data_dir), cwd=ROOT, env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while len(csv_epochs(workdir)) < 2 and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = csv_epochs(workdir)
    assert 2 <= len(done_before) < 6, done_before
    assert not os.path.exists(os.path.join(workdir, "test_metrics.json"))

    result = subprocess.run(train_command(workdir, tiny_data_dir), cwd=ROOT, env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    epochs = csv_epochs(workdir)
    # Resumed, not restarted: the first run's epochs are kept and not repeated.
    assert epochs[:len(done_before)] == done_before and epochs[-1] == 5
    assert sorted(set(epochs)) == list(range(6))
    assert len(epochs) <= 7  # At most the killed epoch runs twice.
    assert f"Epoch {done_before[-1] + 2}/6" in result.stdout + result.stderr
    assert "Epoch 1/6" not in result.stdout + result.stderr
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
    from trainer import train_lib

    class Model:
        stop_training = False

    budget = train_lib.CpuBudget(100.0, used=60.0, epochs=3)  # 20 s an epoch so far.
    budget.set_model(Model())
    budget.on_epoch_end(3, {"epoch_cpu_seconds": 20.0})  # 80 used; one more -> 100: fits.
    assert not budget.model.stop_training
    budget.on_epoch_end(4, {"epoch_cpu_seconds": 20.0})  # 100 used; one more would overrun.
    assert budget.model.stop_training


def test_evaluate_cli_on_exported_model(tiny_data_dir, tmp_path):
    from tests.train_test import run

    workdir = tmp_path / "run"
    first = subprocess.run(train_command(workdir, tiny_data_dir, epochs=1), cwd=ROOT, env=ENV,
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    result = run(["evaluate.py", f"--model_dir={workdir}/saved_model", f"--dataset={TINY}",
                  f"--data_dir={tiny_data_dir}", "--split=test", f"--out_dir={tmp_path}/eval"])
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "eval" / "report.json") as f:
        standalone = json.load(f)
    with open(workdir / "report.json") as f:
        in_training = json.load(f)
    # The served model and the trained model agree on the test split.
    assert standalone["confusion_matrix"] == in_training["confusion_matrix"]
    assert standalone["examples"] == 12


def test_artist_metadata_comes_from_the_dataset(tmp_path):
    import tensorflow_datasets as tfds

    from trainer import train_lib

    dummy = os.path.join(ROOT, "artist_tfds", "best_artworks", "dummy_data")
    builder = tfds.builder("best_artworks/all", data_dir=str(tmp_path))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=dummy))
    metadata = train_lib.artist_metadata(builder)
    assert set(metadata) == set(builder.info.features["label"].names)
    assert metadata["Albrecht Dürer"]["years"] == "1471 - 1528"
    assert metadata["Vincent van Gogh"]["nationality"] == "Dutch"
    assert metadata["Edvard Munch"]["genre"] == ""  # No artists.csv row: kept, empty.


@pytest.mark.parametrize("overrides", [
    {"augment_on": "device", "balance": "class_weight", "label_smoothing": 0.1,
     "optimizer": "adamw", "schedule": "cosine", "warmup_epochs": 1, "epochs": 2},
    {"balance": "resample", "precision": "mixed_bfloat16", "optimizer": "sgd", "momentum": 0.9,
     "model": "resnet_small", "early_stopping_patience": 1, "epochs": 2},
    {"model": "backbone", "backbone": "mobilenetv3small", "weights": "LOCAL", "freeze_epochs": 1,
     "epochs": 2, "image_size": 48},
    {"strategy": "mirrored", "jit_compile": True, "epochs": 1},
], ids=["device_augment_class_weight_smoothing", "resample_bf16_sgd", "backbone_fine_tune",
        "mirrored_xla"])
def test_training_options_run_end_to_end(overrides, tiny_data_dir, tmp_path):
    from trainer import train_lib

    if overrides.get("weights") == "LOCAL":
        base = keras.applications.MobileNetV3Small(include_top=False, weights=None,
                                                   input_shape=(48, 48, 3), pooling="avg")
        overrides = {**overrides, "weights": str(tmp_path / "backbone.weights.h5")}
        base.save_weights(overrides["weights"])
    config = configs.resolve("original", {"dataset": TINY, "data_dir": tiny_data_dir,
                                          "image_size": 32, "batch_size": 6, **overrides})
    metrics = train_lib.train_and_evaluate(config, str(tmp_path / "run"))
    assert metrics["test_examples"] == 12 and 0.0 <= metrics["test_accuracy"] <= 1.0
    assert 1 <= metrics["epochs_run"] <= config.epochs
    with open(tmp_path / "run" / "config.json") as f:
        assert json.load(f) == config.to_dict()
    assert keras.mixed_precision.global_policy().name == "float32"  # Restored afterwards.


def test_curves_plot_a_run_without_validation(tmp_path):
    # Keras' CSVLogger fills the val_* columns with "NA" when there is no validation split.
    metrics_csv = tmp_path / "metrics.csv"
    metrics_csv.write_text("epoch,accuracy,loss,val_accuracy,val_loss\n"
                           "0,0.5,1.2,NA,NA\n1,0.75,0.8,NA,NA\n")
    report.plot_curves(str(metrics_csv), str(tmp_path / "curves.png"))
    with open(tmp_path / "curves.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
