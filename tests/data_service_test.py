"""tf.data service: an in-process dispatcher and two workers on localhost run create_split."""

import collections
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import tensorflow_datasets as tfds

from tests.conftest import ENV, ROOT, TINY, make_split
from tools.ports import free_ports

service = tf.data.experimental.service


@pytest.fixture(scope="module")
def sharded_builder(tmp_path_factory):
    """The tiny dataset in 4 shards per split, so both workers get files to read."""
    builder = tfds.builder(TINY, data_dir=str(tmp_path_factory.mktemp("sharded")))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=4))
    assert builder.info.splits["train"].num_shards == 4
    return builder


@pytest.fixture(scope="module")
def dispatcher():
    server = service.DispatchServer(service.DispatcherConfig(port=0))
    address = server.target.split("://")[1]
    workers = [service.WorkerServer(service.WorkerConfig(dispatcher_address=address))
               for _ in range(2)]
    yield server
    for worker in workers:
        worker.stop()
    server.stop()


def fingerprints(ds) -> collections.Counter:
    """(label, pixel sum) of every image: which examples arrived, and how often."""
    return collections.Counter(
        (int(y), round(float(np.sum(x)), 2)) for xs, ys in ds for x, y in zip(xs, ys))


def test_every_example_of_an_epoch_arrives_exactly_once(dispatcher, sharded_builder):
    kwargs = dict(batch_size=5, image_size=16, training=False)
    direct = fingerprints(make_split(sharded_builder, "train", **kwargs))
    served = fingerprints(make_split(
        sharded_builder, "train", tf_data_service=dispatcher.target, **kwargs))
    assert sum(direct.values()) == 36 and len(direct) == 36  # All distinct.
    assert served == direct


def test_training_split_with_augmentation_runs_on_the_service(dispatcher, tiny_builder):
    ds = make_split(tiny_builder, "train", batch_size=6, image_size=16, training=True,
                    tf_data_service=dispatcher.target, service_job="train")
    labels = collections.Counter(int(y) for _, ys in ds for y in ys)
    assert labels == {label: 6 for label in range(6)}  # 36 = 6 full batches, each once.


def test_service_mode_is_validated(tiny_builder):
    with pytest.raises(ValueError, match="tf.data service mode"):
        make_split(tiny_builder, "train", batch_size=6, training=True,
                   tf_data_service="grpc://localhost:1", service_mode="x")


# --- Separate processes, as deployed -------------------------------------------------------


def start_server(*args: str) -> subprocess.Popen:
    """`python -m pipeline.data_service ...`, once it says it is ready."""
    process = subprocess.Popen([sys.executable, "-m", "pipeline.data_service", *args], cwd=ROOT,
                               env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    line = process.stdout.readline()
    assert "ready" in line, (args, line, process.poll())
    return process


def epochs_done(workdir) -> int:
    path = workdir / "metrics.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


def test_training_on_separate_servers_goes_on_when_a_killed_worker_restarts(
        sharded_builder, tmp_path):
    port = free_ports(1)[0]
    dispatcher = start_server("dispatcher", f"--port={port}", f"--work_dir={tmp_path / 'journal'}",
                              "--worker_timeout_ms=1000")
    worker_args = [("worker", f"--dispatcher=localhost:{port}", f"--port={free_ports(1)[0]}")
                   for _ in range(2)]
    workers = [start_server(*args) for args in worker_args]
    workdir = tmp_path / "run"
    epochs = 4
    trainer = subprocess.Popen(
        [sys.executable, "train.py", f"--dataset={TINY}",
         f"--data_dir={sharded_builder.data_dir_root}", f"--workdir={workdir}", "--recipe=scratch",
         "--model=seed_cnn", "--image_size=32", "--batch_size=4", f"--epochs={epochs}",
         "--warmup_epochs=1",
         f"--tf_data_service=grpc://localhost:{port}", "--gallery_per_artist=0"],
        cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while epochs_done(workdir) < 1 and trainer.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        killed_after = epochs_done(workdir)
        workers[1].kill()  # SIGKILL: no goodbye to the dispatcher.
        workers[1].wait()
        time.sleep(2)  # What a supervisor takes to notice.
        workers.append(start_server(*worker_args[1]))  # Restarted in place.
        _, stderr = trainer.communicate(timeout=600)
    finally:
        for process in (trainer, *workers, dispatcher):
            process.kill()
            process.wait()
    assert trainer.returncode == 0, stderr[-3000:]
    assert 1 <= killed_after < epochs
    rows = (workdir / "metrics.csv").read_text().splitlines()[1:]
    assert len(rows) == epochs  # Every epoch ran.
    assert (workdir / "saved_model" / "saved_model.pb").exists()
