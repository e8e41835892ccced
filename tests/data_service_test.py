"""tf.data service: an in-process dispatcher and two workers on localhost run create_split."""

import collections

import numpy as np
import pytest
import tensorflow as tf

import tensorflow_datasets as tfds

from tests.conftest import TINY, make_split

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
