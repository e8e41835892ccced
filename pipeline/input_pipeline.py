"""`create_split`: every ordering decision of the input pipeline lives here."""

import functools

import tensorflow as tf
import tensorflow_datasets as tfds

from pipeline import augment as augment_lib
from pipeline import ops

AUTOTUNE = tf.data.AUTOTUNE
# Encoded records, not decoded images: ~20-40 KB a slot rather than ~1 MB.
SHUFFLE_BUFFER = 4096


class DatasetError(ValueError):
    """A dataset that cannot be found or read; the message says what to do."""


def load_builder(dataset: str, *, data_dir: str | None) -> tfds.core.DatasetBuilder:
    """`name[/config][:version]` -> the builder of an already built dataset."""
    import artist_tfds  # noqa: F401  Registers this project's builders with TFDS.

    try:
        builder = tfds.builder(dataset, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        known = ", ".join(n for n in tfds.list_builders() if "paint" in n or "art" in n)
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


def create_split(
    builder: tfds.core.DatasetBuilder,
    split: str,
    *,
    batch_size: int,
    image_size: int = 300,
    training: bool,
    seed: int = 0,
    augment: augment_lib.AugmentConfig = augment_lib.AugmentConfig(),
    one_hot: bool = False,
    resize_mode: str = "stretch",
    cache: bool = False,
    shuffle_buffer: int = SHUFFLE_BUFFER,
    deterministic: bool = True,
) -> tf.data.Dataset:
    """Batches of (float32 images in [0, 1], labels) ready for `model.fit`.

    Training splits are shuffled, augmented and drop the last partial batch
    (static shapes); evaluation splits are neither, and repeat exactly.
    """
    if training and builder.info.splits[split].num_examples < batch_size:
        raise DatasetError(
            f"split {split!r} has {builder.info.splits[split].num_examples} examples, "
            f"fewer than one batch of {batch_size}"
        )
    ds = builder.as_dataset(
        split=split,
        shuffle_files=training,
        read_config=tfds.ReadConfig(shuffle_seed=seed),
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    ds = ds.map(lambda f: {"image": f["image"], "label": f["label"]})
    decode = functools.partial(ops.decode_and_resize, image_size=image_size, mode=resize_mode)
    parallel = dict(num_parallel_calls=AUTOTUNE, deterministic=deterministic or not training)
    if cache:
        # Cache decoded uint8 squares once, before any randomness.
        ds = ds.map(decode, **parallel).cache()
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if not cache:
        ds = ds.map(decode, **parallel)
    # Batch first: one vectorised warp per batch beats one op per image.
    ds = ds.batch(batch_size, drop_remainder=training, num_parallel_calls=AUTOTUNE)
    to_inputs = functools.partial(ops.to_inputs, num_classes=num_classes(builder), one_hot=one_hot)
    ds = ds.map(to_inputs, **parallel)
    if training and augment != augment_lib.NO_AUGMENTATION:
        # A fresh, seeded pair per batch and per epoch: stateless, so reproducible.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds).map(
            lambda batch, s: (augment_lib.random_augment(batch[0], s, augment), batch[1]),
            **parallel,
        )
    return ds.prefetch(AUTOTUNE)
