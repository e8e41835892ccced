"""End to end: train a tiny run, export, and serve it from a process that knows nothing of
us; resume a killed run; each training setting reaching the training step."""

import collections
import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import pipeline
from artist_id import configs
from pipeline import augment
from tests.conftest import ENV, ROOT, SKEWED_COUNTS, TINY, encode, run, tiny_config
from trainer import callbacks as callbacks_lib
from trainer import config as config_lib
from trainer import evaluation, models, train_lib


@pytest.fixture(scope="module")
def trained(trained_run):
    return trained_run


def test_workdir_holds_everything(trained):
    config, workdir, metrics = trained
    for name in ("config.json", "metrics.csv", "checkpoints/best.weights.h5", "test_metrics.json",
                 "report.json", "report.md", "confusion.png", "mistakes.png", "curves.png",
                 "reliability.png", "coverage.png",
                 "saved_model/saved_model.pb"):
        assert os.path.exists(os.path.join(workdir, name)), name
    assert os.listdir(os.path.join(workdir, "tensorboard"))
    assert not os.path.exists(os.path.join(workdir, "backup"))  # Removed once finished.
    with open(os.path.join(workdir, "config.json")) as f:
        recorded = json.load(f)
    assert recorded["data"]["image_size"] == 32 and recorded["recipe"] == "scratch"
    assert config_lib.from_dict(recorded) == config
    with open(os.path.join(workdir, "metrics.csv")) as f:
        lines = f.read().splitlines()
    assert lines[0].split(",")[0] == "epoch" and len(lines) == 1 + config.training.epochs
    with open(os.path.join(workdir, "report.json")) as f:
        report = json.load(f)
    assert metrics["test_examples"] == report["examples"] == 12
    assert metrics["test_accuracy"] == report["accuracy"]
    assert metrics["epochs_run"] == config.training.epochs


def test_rerun_reuses_finished_run_and_refuses_other_config(trained):
    config, workdir, metrics = trained
    assert train_lib.train_and_evaluate(config, workdir) == metrics
    other = config.replace(learning_rate=0.5)
    with pytest.raises(train_lib.WorkdirError, match="learning_rate.*--overwrite"):
        train_lib.train_and_evaluate(other, workdir)


def test_rerun_with_other_views_re_exports_the_kept_weights_without_training(trained, tmp_path):
    import shutil

    config, workdir, metrics = trained
    copy = str(tmp_path / "run")
    shutil.copytree(workdir, copy)
    kept = (tmp_path / "run" / "checkpoints" / "best.weights.h5").read_bytes()
    epochs = (tmp_path / "run" / "metrics.csv").read_text()
    flipped = config.replace(test_flips=True, top_k=2)
    # Training settings beside them still make it another run.
    with pytest.raises(train_lib.WorkdirError,
                       match=r"differs in: learning_rate, test_flips, top_k\)"):
        train_lib.train_and_evaluate(flipped.replace(learning_rate=0.5), copy)
    refinished = train_lib.train_and_evaluate(flipped, copy)
    # No epoch trained, the same kept weights; a new report and export of them.
    assert (tmp_path / "run" / "metrics.csv").read_text() == epochs
    assert (tmp_path / "run" / "checkpoints" / "best.weights.h5").read_bytes() == kept
    assert refinished["epochs_run"] == metrics["epochs_run"]
    assert train_lib.read_config(copy) == flipped
    with open(os.path.join(copy, "saved_model", "assets.extra", "metadata.json")) as f:
        document = json.load(f)
    assert document["views"]["count"] == 2 and document["config"]["data"]["test_flips"]
    served = tf.saved_model.load(os.path.join(copy, "saved_model")).signatures["serving_default"]
    with open(os.path.join(copy, "report.json")) as f:
        assert json.load(f)["accuracy"] == refinished["test_accuracy"]
    image = encode(np.zeros((40, 40, 3), np.uint8))
    assert served(images=tf.constant([image]))["top_k_ids"].shape == (1, 2)
    # Now it is this run, finished.
    assert train_lib.prepare_workdir(flipped, copy, overwrite=False) == train_lib.FINISHED


def test_config_json_of_the_flat_format_still_loads(trained, tmp_path):
    config, _, _ = trained
    # Version 0.1 wrote one flat object, with settings since removed.
    flat = {**config_lib.to_flat(config), "recipe": config.recipe, "retired_setting": 1}
    (tmp_path / "config.json").write_text(json.dumps(flat))
    assert train_lib.read_config(str(tmp_path)) == config
    (tmp_path / "config.json").write_text(json.dumps({"recipe": "default", "image_size": 4}))
    with pytest.raises(train_lib.WorkdirError, match="cannot be read by this version.*"
                       "image_size=4.*--overwrite") as error:
        train_lib.read_config(str(tmp_path))
    assert "\n" not in str(error.value)


def stored_temperature(workdir: str) -> float:
    with open(os.path.join(workdir, "saved_model", "assets.extra", "metadata.json")) as f:
        return json.load(f)["calibration"]["temperature"]


def test_test_split_probabilities_are_the_served_ones(trained, tiny_builder):
    # Evaluation batches the split through the pipeline; a server decodes the same files.
    config, workdir, _ = trained
    _, model = train_lib.load_run(workdir)
    temperature = stored_temperature(workdir)
    labels, evaluated = evaluation.predict_split(
        tiny_builder, "test", config.data, evaluation.keras_predict_fn(model, temperature))
    serve = tf.saved_model.load(os.path.join(workdir, "saved_model")).signatures["serving_default"]
    served = serve(images=tf.constant(pipeline.encoded_images(tiny_builder, "test")))
    np.testing.assert_allclose(served["probabilities"].numpy(), evaluated, atol=1e-6)
    stored = [int(f["label"]) for f in tiny_builder.as_dataset(split="test")]
    assert labels.tolist() == stored


def test_served_answers_are_calibrated_and_say_unknown_below_the_rule(trained, tiny_builder):
    config, workdir, metrics = trained
    with open(os.path.join(workdir, "saved_model", "assets.extra", "metadata.json")) as f:
        document = json.load(f)
    rule = document["abstention"]
    assert rule["target_precision"] == config.export.target_precision == 0.9
    assert rule["fitted_on"]["split"] == "validation" and rule["fitted_on"]["examples"] == 12
    served = tf.saved_model.load(os.path.join(workdir, "saved_model")).signatures[
        "serving_default"](images=tf.constant(pipeline.encoded_images(tiny_builder, "test")))
    # Both tests of the rule: the distance one is on (a gallery, novelty_reject 0.1), and
    # fitted to reject 10 % of the 12 validation paintings: 1.
    assert config.export.novelty_reject == rule["novelty_reject"] == 0.1
    assert np.isfinite(rule["min_familiarity"])
    np.testing.assert_array_equal(
        served["unknown"].numpy(),
        (served["top_k_probabilities"][:, 0].numpy() < rule["min_confidence"])
        | (served["familiarity"].numpy() < rule["min_familiarity"]))
    with open(os.path.join(workdir, "report.json")) as f:
        report = json.load(f)
    calibration = report["calibration"]
    assert calibration["temperature"] == document["calibration"]["temperature"] > 0
    assert 0 <= calibration["ece"] <= 1 and calibration["bins"] == 15
    assert metrics["test_ece"] == calibration["ece"]
    assert report["abstention"]["unknown_fraction"] == pytest.approx(
        served["unknown"].numpy().mean())
    with open(os.path.join(workdir, "report.md")) as f:
        assert f"calibration error (15 bins) {calibration['ece_before']:.3f} before" in f.read()


def test_load_run_restores_the_exported_model(trained):
    config, workdir, _ = trained
    loaded_config, model = train_lib.load_run(workdir)
    assert loaded_config == config
    pixels = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    served = tf.saved_model.load(os.path.join(workdir, "saved_model")).signatures["serve_pixels"]
    expected = served(pixels=tf.constant(pixels))["probabilities"].numpy()
    logits = model(pixels.astype(np.float32) / 255.0, training=False)
    np.testing.assert_allclose(tf.nn.softmax(logits / stored_temperature(workdir)).numpy(),
                               expected, atol=1e-5)


def test_saved_model_serves_jpeg_bytes_in_a_fresh_process(trained, tiny_builder, tmp_path):
    _, workdir, _ = trained
    names = list(tiny_builder.info.features["label"].names)
    stored = next(iter(tiny_builder.as_dataset(split="test", decoders={
        "image": tfds.decode.SkipDecoding()})))["image"].numpy()
    (tmp_path / "a.jpg").write_bytes(stored)
    (tmp_path / "b.jpg").write_bytes(encode(np.full((40, 70, 3), 200, np.uint8)))
    script = textwrap.dedent(f"""
        import json, sys
        import tensorflow as tf
        assert not any(m.split('.')[0] in ('pipeline', 'trainer', 'artist_tfds')
                       for m in sys.modules)
        serve = tf.saved_model.load({os.path.join(workdir, 'saved_model')!r}).signatures['serving_default']
        blobs = [open(p, 'rb').read() for p in sys.argv[1:]]
        loaded = tf.saved_model.load({os.path.join(workdir, 'saved_model')!r})
        panel = loaded.signatures['panel'](images=tf.constant(blobs))
        assert panel['heatmaps'].shape[0] == panel['similar_thumbnails_bytes'].shape[0] == 2
        out = serve(images=tf.constant(blobs))
        print(json.dumps({{k: v.numpy().tolist() if v.dtype != tf.string else
                         [[s.decode() for s in row] for row in v.numpy()] for k, v in out.items()}}))
    """)
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "a.jpg"),
                             str(tmp_path / "b.jpg")], cwd=str(tmp_path), env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    probabilities = np.array(out["probabilities"])
    assert probabilities.shape == (2, 6)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert all(artist in names for row in out["top_k_artists"] for artist in row)
    assert np.array(out["top_k_ids"]).shape == (2, 5)
    for row_ids, row_names in zip(out["top_k_ids"], out["top_k_artists"]):
        assert [names[i] for i in row_ids] == row_names
    np.testing.assert_allclose(np.array(out["top_k_probabilities"])[:, 0], probabilities.max(1),
                               rtol=1e-6)


def test_predict_cli_reports_bad_file_and_carries_on(trained, tiny_builder, tmp_path):
    _, workdir, _ = trained
    folder = tmp_path / "paintings" / "nested"
    folder.mkdir(parents=True)
    (folder / "good.png").write_bytes(encode(np.full((30, 50, 3), 90, np.uint8), "PNG"))
    (folder / "broken.jpg").write_bytes(b"not an image at all")
    result = run(["predict.py", f"--model_dir={workdir}/saved_model", "--top_k=2",
                  str(tmp_path / "paintings"), str(tmp_path / "missing.jpg")])
    assert result.returncode == 1
    assert "good.png" in result.stdout and "2. " in result.stdout and "3. " not in result.stdout
    names = tiny_builder.info.features["label"].names
    assert any(name in result.stdout for name in names)
    errors = [line for line in result.stderr.splitlines() if line.startswith("predict.py: error")]
    assert len(errors) == 2
    assert any("broken.jpg: not a readable image" in line for line in errors)
    assert any("missing.jpg: no such file" in line for line in errors)


def test_evaluate_cli_on_exported_model(trained, tiny_data_dir, tmp_path):
    _, workdir, _ = trained
    result = run(["evaluate.py", f"--model_dir={workdir}/saved_model", f"--dataset={TINY}",
                  f"--data_dir={tiny_data_dir}", "--split=test", f"--out_dir={tmp_path}/eval"],
                 timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "eval" / "report.json") as f:
        standalone = json.load(f)
    with open(os.path.join(workdir, "report.json")) as f:
        in_training = json.load(f)
    # The served model and the trained model agree on the test split.
    assert standalone["confusion_matrix"] == in_training["confusion_matrix"]
    assert standalone["accuracy"] == in_training["accuracy"] and standalone["examples"] == 12
    # And on the "unknown artist" rule, both its tests (the served model's own `unknown`).
    assert standalone["abstention"] == pytest.approx(in_training["abstention"])
    assert "min_familiarity" in standalone["abstention"]


@pytest.mark.parametrize("flags, message", [
    (["--dataset=no_such_paintings"], "unknown dataset 'no_such_paintings'"),
    (["--dataset=sample_paintings/tiny", "--data_dir=/nonexistent/dir"], "is not built in"),
    (["--epochs=0"], "--epochs=0"),
])
def test_train_cli_bad_input_is_one_line_error(flags, message, tmp_path):
    result = run(["train.py", f"--workdir={tmp_path}/w", *flags], timeout=300)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_weights_transfer_from_a_run_on_another_collection(trained, skewed_builder, tmp_path):
    # Pretrained: the tiny run (6 artists, 32 px). Fine-tuned: the skewed set (3 artists).
    config, workdir, _ = trained
    _, pretrained = train_lib.load_run(workdir)
    checkpoint = os.path.join(workdir, "checkpoints", "best.weights.h5")
    target = config.replace(dataset="skewed_paintings",
                            data_dir=str(skewed_builder.data_dir_root), weights=checkpoint,
                            epochs=1, warmup_epochs=0)
    model = train_lib.build_model(target, 3)
    for before, after in zip(pretrained.layers[:-1], model.layers[:-1]):
        for a, b in zip(before.get_weights(), after.get_weights()):
            np.testing.assert_array_equal(a, b)  # Every layer but the classifier...
    assert model.layers[-1].get_weights()[0].shape[-1] == 3  # ...which is new.
    trained_model = train_lib.train(target, str(tmp_path / "transfer"), skewed_builder)
    assert trained_model.output_shape == (None, 3)
    # Weights of another network: one line saying so, before any training.
    other = target.replace(model="resnet_small")
    with pytest.raises(config_lib.ConfigError, match="could not load --weights=.* into "
                       "resnet_small: .* is not a resnet_small at this image size"):
        train_lib.build_model(other, 3)


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
        epoch = train_ds.take(78 // 6)  # Endless: one epoch of it.
        return collections.Counter(int(y) for _, ys in epoch for y in ys), class_weight

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


def test_batch_norm_momentum_reaches_every_layer_of_a_run(tiny_data_dir, tmp_path):
    config = tiny_config(tiny_data_dir, model="resnet_small", bn_momentum=0.0, epochs=1,
                         warmup_epochs=0, gallery_per_artist=0)
    builder = pipeline.load_builder(config.data.dataset, data_dir=config.data.data_dir)
    steps = builder.info.splits["train"].num_examples // config.data.batch_size
    model = train_lib.train(config, str(tmp_path), builder)
    momenta = {layer.momentum for layer in models.batch_norm_layers(model)}
    assert momenta == {models.batch_norm_momentum(0.0, steps)} and 0.9 <= momenta.pop() < 0.99


def test_fit_builds_the_training_input_once_a_phase(tiny_data_dir, tiny_builder, tmp_path,
                                                    monkeypatch):
    # Given a finite split, fit built the input twice an epoch, and its first step waited.
    built = []
    make = tf.data.Dataset.__iter__

    def counting(dataset):
        built.append(int(dataset.cardinality()))
        return make(dataset)

    monkeypatch.setattr(tf.data.Dataset, "__iter__", counting)
    config = tiny_config(tiny_data_dir, epochs=3, gallery_per_artist=0)
    workdir = str(tmp_path / "run")
    train_lib.train(config, workdir, tiny_builder)
    assert built.count(tf.data.INFINITE_CARDINALITY) == 1, built
    assert [row["epoch"] for row in callbacks_lib.csv_rows(
        os.path.join(workdir, callbacks_lib.METRICS_CSV))] == ["0", "1", "2"]


def test_deterministic_runs_train_identical_weights(tiny_data_dir, tiny_builder, tmp_path,
                                                    op_determinism_restored):
    def run_weights(name):
        config = tiny_config(tiny_data_dir, deterministic=True, gallery_per_artist=0)
        workdir = str(tmp_path / name)
        model = train_lib.train(config, workdir, tiny_builder)
        losses = [row["loss"] for row in callbacks_lib.csv_rows(
            os.path.join(workdir, callbacks_lib.METRICS_CSV))]
        return [w.numpy() for w in model.weights], losses

    (first, first_losses), (second, second_losses) = run_weights("a"), run_weights("b")
    assert first_losses == second_losses and len(set(first_losses)) == 2  # Two epochs, trained.
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
