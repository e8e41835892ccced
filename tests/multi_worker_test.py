"""--strategy=multi_worker: the custom loop under MultiWorkerMirroredStrategy.

Two worker processes on localhost ports make the cluster (TF_CONFIG), as two
machines would; the units around them run in this process.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from pipeline import input_pipeline
from tests.conftest import ENV, ROOT, TINY, tiny_config
from tools.ports import free_ports
from trainer import callbacks as callbacks_lib
from trainer import config as config_lib
from trainer import loop, models

# Runs train.py, after making `train_lib.train` save the trainable weights it returns
# (this worker's model at its best epoch) to argv[1].
RECORDING_TRAIN = """
import sys
import numpy as np
from trainer import train_lib
weights_out = sys.argv.pop(1)
trained = train_lib.train
def recording_train(config, workdir, builder):
    model = trained(config, workdir, builder)
    np.savez(weights_out, *[w.numpy() for w in model.trainable_weights])
    return model
train_lib.train = recording_train
from artist_id import train
from absl import app
app.run(train.main)
"""


@pytest.fixture(scope="module")
def sharded_data_dir(tmp_path_factory) -> str:
    """The tiny dataset in 4 files per split: each of two workers reads two."""
    data_dir = str(tmp_path_factory.mktemp("sharded"))
    tfds.builder(TINY, data_dir=data_dir).download_and_prepare(
        download_config=tfds.download.DownloadConfig(num_shards=4))
    return data_dir


def start_workers(ports: list[int], args: list[str], tmp_path, *, record: bool = False,
                  only: int | None = None) -> list[subprocess.Popen]:
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    processes = []
    for index in range(len(ports)) if only is None else [only]:
        env = {**ENV, "TF_CONFIG": json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}),
            # A killed worker leaves its temporary directory behind: keep it in the test's.
            "TMPDIR": str(tmp_path)}
        command = ([sys.executable, "-c", RECORDING_TRAIN, str(tmp_path / f"weights{index}.npz")]
                   if record else [sys.executable, "train.py"])
        log = open(tmp_path / f"worker{index}.log", "a")  # noqa: SIM115  Closed with the process.
        processes.append(subprocess.Popen(command + args, cwd=ROOT, env=env,
                                          stdout=log, stderr=subprocess.STDOUT))
    return processes


def train_args(data_dir: str, workdir, *, epochs: int) -> list[str]:
    # resnet_small: batch norm, so synchronised statistics are tested too.
    return [f"--dataset={TINY}", f"--data_dir={data_dir}", f"--workdir={workdir}",
            "--recipe=scratch", "--image_size=32", "--batch_size=8", f"--epochs={epochs}",
            "--warmup_epochs=1", "--strategy=multi_worker", "--gallery_per_artist=0"]


def wait_all(processes, timeout: float = 600) -> list[int]:
    deadline = time.monotonic() + timeout
    codes = []
    for process in processes:
        try:
            codes.append(process.wait(timeout=max(1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            process.kill()
            codes.append(process.wait())
    return codes


def logged_epochs(workdir) -> list[int]:
    return [int(row["epoch"])
            for row in callbacks_lib.csv_rows(str(workdir / callbacks_lib.METRICS_CSV))]


def test_two_workers_train_the_same_weights_and_the_chief_exports(sharded_data_dir, tmp_path):
    workdir = tmp_path / "run"
    workers = start_workers(free_ports(2), train_args(sharded_data_dir, workdir, epochs=2),
                            tmp_path, record=True)
    codes = wait_all(workers)
    assert codes == [0, 0], (tmp_path / "worker0.log").read_text()[-3000:] + \
        (tmp_path / "worker1.log").read_text()[-3000:]
    chief, other = (np.load(tmp_path / f"weights{i}.npz") for i in (0, 1))
    assert len(chief.files) == len(other.files) > 10
    for name in chief.files:
        np.testing.assert_allclose(chief[name], other[name], rtol=0, atol=1e-6)
    # The chief wrote what a one-machine run writes; the other worker, nothing.
    assert logged_epochs(workdir) == [0, 1]
    rows = callbacks_lib.csv_rows(str(workdir / callbacks_lib.METRICS_CSV))
    assert {"accuracy", "loss", "val_accuracy", "val_loss", "epoch_cpu_seconds"} <= set(rows[0])
    assert os.listdir(workdir / "tensorboard")
    metrics = json.loads((workdir / "test_metrics.json").read_text())
    assert metrics["epochs_run"] == 2 and metrics["test_examples"] == 12
    assert "multi_worker" in (workdir / "config.json").read_text()
    served = tf.saved_model.load(str(workdir / "saved_model")).signatures["serving_default"]
    with open(os.path.join(ROOT, "docs", "webapp.jpg"), "rb") as f:
        out = served(images=tf.constant([f.read()]))
    probabilities = out["probabilities"].numpy()
    assert probabilities.shape == (1, 6)
    assert probabilities.sum() == pytest.approx(1, abs=1e-4)


def test_a_killed_worker_and_a_restart_resume_to_the_full_epoch_count(sharded_data_dir, tmp_path):
    workdir = tmp_path / "run"
    epochs = 4
    ports = free_ports(2)
    args = train_args(sharded_data_dir, workdir, epochs=epochs)
    workers = start_workers(ports, args, tmp_path)
    checkpoints = str(workdir / callbacks_lib.BACKUP / loop.CHECKPOINTS.format(phase=0))
    deadline = time.monotonic() + 600
    while not tf.train.latest_checkpoint(checkpoints) and time.monotonic() < deadline:
        assert all(w.poll() is None for w in workers), (tmp_path / "worker0.log").read_text()
        time.sleep(0.05)
    workers[1].send_signal(signal.SIGKILL)
    killed_after = len(logged_epochs(workdir))
    # The chief notices (its next collective fails) and stops; a supervisor restarts both.
    assert wait_all(workers, timeout=300)[0] != 0
    assert "restart every worker with the same command" in (tmp_path / "worker0.log").read_text()
    assert 1 <= killed_after < epochs
    assert len(logged_epochs(workdir)) < epochs
    codes = wait_all(start_workers(ports, args, tmp_path))
    assert codes == [0, 0], (tmp_path / "worker0.log").read_text()[-3000:]
    assert logged_epochs(workdir) == list(range(epochs))
    assert "Resumed from" in (tmp_path / "worker1.log").read_text()
    assert (workdir / "saved_model" / "saved_model.pb").exists()
    metrics = json.loads((workdir / "test_metrics.json").read_text())
    assert metrics["epochs_run"] == epochs


# --- The pieces, in this process ---------------------------------------------------------


@pytest.mark.parametrize("tf_config, chief", [
    (None, True),
    ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}, True),
    ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}, False),
    ({"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}},
     False),
    ({"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "chief", "index": 0}},
     True),
])
def test_the_chief_is_named_by_tf_config(monkeypatch, tf_config, chief):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    assert loop.chief_task() is chief


@pytest.mark.parametrize("num_shards", [4, 1])
def test_each_worker_reads_its_share_of_a_split_and_together_all_of_it(tmp_path, num_shards):
    builder = tfds.builder(TINY, data_dir=str(tmp_path))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(num_shards=num_shards))
    whole = [r["image"].numpy()
             for r in input_pipeline.read_shards(builder, "test", training=False, seed=0)]
    shares = [[r["image"].numpy() for r in input_pipeline.read_shards(
        builder, "test", training=False, seed=0,
        input_context=tf.distribute.InputContext(2, index, 2))] for index in range(2)]
    assert all(shares)  # By file with 4 files, by record with 1: neither worker idles.
    assert not set(shares[0]) & set(shares[1])
    assert sorted(shares[0] + shares[1]) == sorted(whole)


def test_batch_counts_weigh_as_fit_does():
    labels = tf.constant([0, 1, 2, 2])
    logits = tf.constant([[5.0, 0, 0], [0, 5, 0], [5, 1, 0], [0, 1, 0.5]])
    per_example = tf.constant([0.1, 0.2, 3.0, 1.0])
    weights = tf.constant([1.0, 1.0, 2.0, 2.0])
    counts = loop.batch_counts(labels, logits, per_example, weights, top_k=2).numpy()
    np.testing.assert_allclose(counts, [0.1 + 0.2 + 6 + 2, 6, 2, 2 + 0 + 2, 4])
    metrics = loop.metrics_from(counts, top_k=2, prefix="val_")
    assert metrics == pytest.approx({"val_loss": 8.3 / 4, "val_accuracy": 2 / 6,
                                     "val_top2_accuracy": 4 / 6})
    one_hot = tf.one_hot(labels, 3)
    np.testing.assert_allclose(
        loop.batch_counts(one_hot, logits, per_example, weights, top_k=2).numpy(), counts)


def test_logged_epochs_beyond_the_checkpoint_are_dropped(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,accuracy,loss\n0,0.5,1.0\n1,0.6,0.9\n2,0.7,0.8\n")
    loop.keep_logged_epochs(str(path), 2)
    assert path.read_text() == "epoch,accuracy,loss\n0,0.5,1.0\n1,0.6,0.9\n"
    loop.keep_logged_epochs(str(path), 5)
    assert path.read_text() == "epoch,accuracy,loss\n0,0.5,1.0\n1,0.6,0.9\n"


def test_batch_norm_is_synchronised_in_every_layer():
    model = models.create_model("resnet_small", num_classes=3, image_size=32)
    count = models.synchronize_batch_norm(model)
    bn = [layer for layer in model._flatten_layers()
          if isinstance(layer, models.layers.BatchNormalization)]
    assert count == len(bn) > 5 and all(layer.synchronized for layer in bn)
    assert model(np.zeros((2, 32, 32, 3), np.float32), training=True).shape == (2, 3)


def test_multi_worker_cannot_take_a_data_service(tiny_data_dir):
    with pytest.raises(config_lib.ConfigError, match="multi_worker"):
        tiny_config(tiny_data_dir, strategy="multi_worker", tf_data_service="grpc://localhost:1")
