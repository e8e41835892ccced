"""`create_split`: every ordering decision of the input pipeline lives here."""

import functools
import math

import tensorflow as tf
import tensorflow_datasets as tfds

from pipeline import augment as augment_lib
from pipeline import balance as balance_lib
from pipeline import ops

AUTOTUNE = tf.data.AUTOTUNE
# Encoded records, not decoded images: ~20-40 KB a slot rather than ~1 MB.
SHUFFLE_BUFFER = 4096
# After `cache` the records are decoded images (~0.1-0.5 MB each), so the
# shuffle that follows it holds fewer: memory stays bounded; the first pass
# (before the cache) was already shuffled at the encoded level.
CACHED_SHUFFLE_BUFFER = 512
AUGMENT_ON = ("host", "device")
SERVICE_MODES = ("distributed_epoch", "parallel_epochs")
# Host augmentation warps paintings up to 2.25x the training size straight
# from their decoded pixels (at 300 px: 675, above best_artworks' stored long
# side of 640, so its paintings are never resampled twice); larger ones are
# first shrunk with antialiasing, so the plain bilinear warp downsamples by
# at most 2.25 x 1.2 (zoom) and a batch of decoded paintings stays < 45 MB.
MAX_SIDE_FACTOR = 2.25


class DatasetError(ValueError):
    """A dataset that cannot be found or read; the message says what to do."""


def load_builder(dataset: str, *, data_dir: str | None) -> tfds.core.DatasetBuilder:
    """`name[/config][:version]` -> the builder of an already built dataset."""
    import artist_tfds  # noqa: F401  Registers this project's builders with TFDS.

    try:
        builder = tfds.builder(dataset, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        known = ", ".join(artist_tfds.BUILDERS)
        raise DatasetError(f"unknown dataset {dataset!r} (this project's: {known})") from e
    except ValueError as e:  # Unknown config or version.
        raise DatasetError(f"dataset {dataset!r}: {e}") from e
    if not builder.is_prepared():
        raise DatasetError(
            f"dataset {dataset!r} is not built in {builder.data_dir_root}: run "
            f"`tfds build artist_tfds/{builder.name} --data_dir={builder.data_dir_root}` first"
        )
    return builder


def num_classes(builder: tfds.core.DatasetBuilder) -> int:
    return builder.info.features["label"].num_classes


def artist_names(builder: tfds.core.DatasetBuilder) -> list[str]:
    return list(builder.info.features["label"].names)


def default_max_side(image_size: int) -> int:
    """The largest side host augmentation decodes to, when `create_split` is given none."""
    return math.ceil(MAX_SIDE_FACTOR * image_size)


def _check_options(*, augment_on: str, balance: str, resize_mode: str, max_side: int | None,
                   tf_data_service_mode: str) -> None:
    for name, value, allowed in (("augment_on", augment_on, AUGMENT_ON),
                                 ("balance", balance, balance_lib.BALANCE_MODES),
                                 ("resize_mode", resize_mode, ops.RESIZE_MODES),
                                 ("tf_data_service_mode", tf_data_service_mode, SERVICE_MODES)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be positive, got {max_side}")


def _read_encoded(builder, split: str, *, training: bool, seed: int,
                  whole_split: bool) -> tf.data.Dataset:
    """{"image": encoded bytes, "label"} records; files shuffled (seeded) when training."""
    ds = builder.as_dataset(
        split=split,
        shuffle_files=training,
        # Under a distributed_epoch service each worker reads some of the
        # files, so a worker does not see the split's cardinality.
        read_config=tfds.ReadConfig(shuffle_seed=seed, assert_cardinality=whole_split),
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    return ds.map(lambda f: {"image": f["image"], "label": f["label"]})


def _batch_paintings(ds: tf.data.Dataset, batch_size: int, *, decoded: bool, max_side: int,
                     parallel: dict) -> tf.data.Dataset:
    """Full batches of paintings at their own sizes, as `ops.flat_pixels` lays them out.

    No canvas to pad them to (padding 224-px paintings to a 600-px canvas
    halved throughput here). Encoded records are batched first and decoded
    a batch at a time; already decoded (cached) ones go through `ragged_batch`.
    """
    if decoded:
        ds = ds.map(lambda f: {**f, "image": tf.reshape(f["image"], [-1, 3])})
        ds = ds.ragged_batch(batch_size, drop_remainder=True, row_splits_dtype=tf.int32)
        return ds.map(ops.ragged_to_pixels, **parallel)
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.map(functools.partial(ops.decode_batch_within, max_side=max_side), **parallel)


def create_split(
    builder: tfds.core.DatasetBuilder,
    split: str,
    *,
    batch_size: int,
    image_size: int = 300,
    training: bool,
    seed: int = 0,
    augment: augment_lib.AugmentConfig = augment_lib.AugmentConfig(),
    augment_on: str = "host",
    one_hot: bool = False,
    resize_mode: str = "stretch",
    balance: str = "none",
    cache: bool | str = False,
    shuffle_buffer: int = SHUFFLE_BUFFER,
    deterministic: bool = True,
    max_side: int | None = None,
    tf_data_service: str | None = None,
    tf_data_service_job: str | None = None,
    tf_data_service_mode: str = "distributed_epoch",
) -> tf.data.Dataset:
    """Batches of (float32 images [B, S, S, 3] in [0, 1], labels) ready for `model.fit`.

    Training splits are shuffled (encoded records), augmented and drop the
    last partial batch (static shapes); evaluation splits are neither, never
    rebalanced, and repeat exactly. Labels are int64, or float32 one-hot rows.

    Training with `augment_on="host"` decodes each painting at up to
    `max_side` (default `default_max_side`), batches them at their own sizes
    and resizes + augments each in one XLA-compiled warp from the decoded
    pixels (bilinear; evaluation's resize is antialiased, which differs only
    where the warp downsamples, by at most `MAX_SIDE_FACTOR` x zoom). With
    `augment_on="device"` the batches are resized as for evaluation and left
    unaugmented: the trainer prepends `augment.DeviceAugmentation(augment,
    seed)` to the model for `fit`. Without geometric augmentation, training
    images are resized exactly as evaluation and serving resize them.

    `deterministic=True`: the same seed gives the same batches in every run
    (files, shuffle, augmentation and resampling are all seeded; slower).
    As for any seeded TensorFlow op, the global seed takes part too:
    `train.py` sets it (`keras.utils.set_random_seed`) before building data.
    `balance="resample"` rebalances training labels to uniform in-graph (an
    epoch keeps the split's size); `"class_weight"` leaves the data as it
    is: pass `pipeline.class_weights(builder, split)` to `fit`. `cache`
    (True: memory; a path: files) keeps decoded uint8 images after the first
    epoch, before any randomness (host augmentation caches whole decoded
    paintings, ~0.4 MB each at 320 x 450). `tf_data_service="grpc://host:port"`
    runs the pipeline on tf.data service workers (`distributed_epoch`: each
    example once per epoch, in no fixed order; a shared `tf_data_service_job`
    name lets several trainers read one job).
    """
    _check_options(augment_on=augment_on, balance=balance, resize_mode=resize_mode,
                   max_side=max_side, tf_data_service_mode=tf_data_service_mode)
    num_examples = builder.info.splits[split].num_examples
    if training and num_examples < batch_size:
        raise DatasetError(
            f"split {split!r} has {num_examples} examples, fewer than one batch of {batch_size}"
        )
    host_augment = training and augment_on == "host" and augment != augment_lib.NO_AUGMENTATION
    fused_warp = host_augment and augment.has_geometry
    decode_side = max_side or default_max_side(image_size)
    parallel = dict(num_parallel_calls=AUTOTUNE, deterministic=deterministic or not training)
    to_labels = functools.partial(ops.to_labels, num_classes=num_classes(builder), one_hot=one_hot)

    ds = _read_encoded(builder, split, training=training, seed=seed,
                       whole_split=not tf_data_service)
    if fused_warp:
        decode = functools.partial(ops.decode_within, max_side=decode_side)
    else:
        decode = functools.partial(ops.decode_and_resize, image_size=image_size, mode=resize_mode)
    if cache:
        # Decoded uint8, before any randomness: every epoch re-augments it.
        ds = ds.map(decode, **parallel).cache(cache if isinstance(cache, str) else "")
        shuffle_buffer = min(shuffle_buffer, CACHED_SHUFFLE_BUFFER)
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        if balance == "resample":
            counts = balance_lib.label_counts(builder, split)
            # An epoch keeps the split's size, so the trainer's epochs mean the
            # same; seed + 1 keeps the coins apart from the augmentation seeds.
            ds = balance_lib.resample(ds, counts, seed=seed + 1, num_examples=num_examples)
            # Exactly `num_examples` from an endless stream: say so, so that Keras
            # knows the epoch length instead of discovering it (with a warning).
            ds = ds.apply(tf.data.experimental.assert_cardinality(num_examples))

    if fused_warp:
        ds = _batch_paintings(ds, batch_size, decoded=bool(cache), max_side=decode_side,
                              parallel=parallel)
        warp = functools.partial(augment_lib.random_resized_augment, image_size=image_size,
                                 config=augment, resize_mode=resize_mode)
        # A fresh, seeded pair per batch and per epoch: stateless, so reproducible.
        ds = tf.data.Dataset.zip(ds, augment_lib.batch_seeds(seed)).map(
            lambda f, s: (warp(f["pixels"], f["offset"], f["size"], s), to_labels(f["label"])),
            **parallel)
    else:
        if not cache:
            ds = ds.map(decode, **parallel)
        # Batch first: one vectorised op per batch beats one op per image.
        ds = ds.batch(batch_size, drop_remainder=training, **parallel)
        to_inputs = functools.partial(ops.to_inputs, num_classes=num_classes(builder),
                                      one_hot=one_hot)
        ds = ds.map(to_inputs, **parallel)
        if host_augment:  # Contrast only: no warp, the images are already resized.
            ds = tf.data.Dataset.zip(ds, augment_lib.batch_seeds(seed)).map(
                lambda batch, s: (augment_lib.random_augment(batch[0], s, augment), batch[1]),
                **parallel)
    if tf_data_service:
        ds = ds.apply(tf.data.experimental.service.distribute(
            processing_mode=tf_data_service_mode, service=tf_data_service,
            job_name=tf_data_service_job))
    return ds.prefetch(AUTOTUNE)
