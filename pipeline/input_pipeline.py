"""`create_split`: TFDS shards -> batches of (images, labels), in small named stages.

Read top to bottom, a split goes through: read shards -> cache -> shuffle or
rebalance -> decode and resize (or batch whole paintings for the warp) ->
augment -> labels -> tf.data service -> prefetch. Every ordering decision of
the input pipeline lives in this module; the ops themselves are in `ops`,
`augment` and `balance`.
"""

import dataclasses
import functools
import math

import tensorflow as tf
import tensorflow_datasets as tfds

import artist_tfds  # noqa: F401  Registers this project's builders with TFDS.
from pipeline import augment as augment_lib
from pipeline import balance as balance_lib
from pipeline import mixing, ops
from pipeline import settings
from pipeline import views as views_lib
from pipeline.settings import setting

AUTOTUNE = tf.data.AUTOTUNE
# Encoded records, not decoded images: ~20-40 KB a slot rather than ~1 MB.
SHUFFLE_BUFFER = 4096
# After `cache` the records are decoded images (~0.1-0.5 MB each), so the
# shuffle that follows it holds fewer: memory stays bounded; the first pass
# (before the cache) was already shuffled at the encoded level.
CACHED_SHUFFLE_BUFFER = 512
# Bytes of read-ahead per open shard. TFDS's default, 8 MiB, times the 16
# shards its interleave keeps open: up to 128 MiB of encoded records in
# buffers, growing with the collection until shards pass 8 MiB (measured: 72 MB
# at 5k paintings, 136 MB at 20k). 1 MiB still reads 25-80 paintings at a time.
READ_BUFFER = 1 << 20
SERVICE_MODES = ("distributed_epoch", "parallel_epochs")
# Mixing draws its seeds from `seed` + this, apart from the other augmentations'.
MIXING_SEED_OFFSET = 7919
# Host augmentation warps paintings up to 2.25x the training size straight
# from their decoded pixels (at 300 px: 675, above best_artworks' stored long
# side of 640, so its paintings are never resampled twice); larger ones are
# first shrunk with antialiasing, so the plain bilinear warp downsamples by
# at most 2.25 x 1.2 (zoom) and a batch of decoded paintings stays < 45 MB.
MAX_SIDE_FACTOR = 2.25
# Training crops of stored pixels decode paintings up to this side as they are
# (best_artworks stores 320 px on the shorter side, <= 640 on the longer);
# larger ones (e.g. `all_source_size`) are shrunk to it first, so their crops
# are at that scale, and a batch of 32 stays < 400 MB.
STORED_CROP_MAX_SIDE = 2048


@dataclasses.dataclass(frozen=True)
class DataConfig(settings.Section):
    """Which dataset, and how its paintings become batches."""

    dataset: str = setting("sample_paintings", "TFDS dataset as name[/config][:version], e.g. "
                           "best_artworks/top11.")
    data_dir: str | None = setting(None, "TFDS data directory (default: ~/tensorflow_datasets).")
    image_size: int = setting(160, "Square input size in pixels.", bounds=(16, 1024))
    resize_mode: str = setting("stretch", "Painting to square: stretch, or keep the aspect "
                               "ratio and centre-crop.", choices=ops.RESIZE_MODES)
    batch_size: int = setting(32, "Global batch size.", bounds=(1, None))
    cache: bool = setting(False, "Cache decoded images in memory after the first epoch "
                          "(small datasets).")
    balance: str = setting("class_weight", "Class balance: none, class_weight (loss weights from "
                           "split counts) or resample (in-graph rebalancing).",
                           choices=balance_lib.MODES)
    tf_data_service: str | None = setting(None, "grpc://HOST:PORT of a tf.data service "
                                          "dispatcher to run preprocessing on.")
    eval_crops: int = setting(0, "Multi-crop inference: crops (centre, then the corners) that "
                              "evaluation and every serving signature run the model on besides "
                              "the whole painting, averaging the probabilities (0: the whole "
                              "painting only).", bounds=(0, views_lib.MAX_CROPS),
                              after_training=True)
    crop_scale: float = setting(0.0, "Scale of crops, evaluation's and training's "
                                "(--crop_probability): image_size crops of the painting scaled "
                                "so its shorter side is crop_scale x image_size; 0: of its stored "
                                "pixels.", bounds=(0.0, 16.0))
    test_flips: bool = setting(False, "Test-time flips: evaluation and serving also run the "
                               "mirror image of every view.", after_training=True)
    eval_scale: float = setting(1.4, "Multi-scale inference: evaluation and every serving "
                                "signature also run the model on the whole painting at "
                                "eval_scale x image_size (1.4: 224 px for 160), averaging the "
                                "probabilities; 0: one size. Not with --eval_crops.",
                                bounds=(0.0, 4.0), after_training=True)

    def __post_init__(self):
        super().__post_init__()
        try:
            self.views  # Its checks are the checks across these settings.
        except ValueError as e:
            raise settings.ConfigError(str(e)) from None

    @property
    def views(self) -> views_lib.Views:
        """What evaluation (and the exported model) runs the model on, per painting."""
        return views_lib.Views(self.image_size, self.resize_mode, crops=self.eval_crops,
                               crop_scale=self.crop_scale, flips=self.test_flips,
                               scale=self.eval_scale)

    def single_view(self) -> "DataConfig":
        """The same without multi-crop inference: whole paintings, one per example."""
        return dataclasses.replace(self, eval_crops=0, test_flips=False, eval_scale=0.0)


class DatasetError(ValueError):
    """A dataset that cannot be found or read; the message says what to do."""


def load_builder(dataset: str, *, data_dir: str | None) -> tfds.core.DatasetBuilder:
    """`name[/config][:version]` -> the builder of an already built dataset."""
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


def default_max_side(image_size: int, *, crop_scale: float | None = None) -> int:
    """The largest side host augmentation decodes to, when `create_split` is given none.

    With training crops (`crop_scale` not None) the painting must stay larger
    than `image_size`: crops of stored pixels (0) keep paintings up to
    `STORED_CROP_MAX_SIDE` as they are; at a chosen scale, up to
    `MAX_SIDE_FACTOR` x that scale's side on the shorter side of a 2:1 painting.
    """
    if crop_scale is None:
        return math.ceil(MAX_SIDE_FACTOR * image_size)
    if not crop_scale:
        return max(STORED_CROP_MAX_SIDE, math.ceil(MAX_SIDE_FACTOR * image_size))
    return math.ceil(2 * MAX_SIDE_FACTOR * views_lib.crop_side(image_size, crop_scale))


# --- Stages, in the order `create_split` applies them ----------------------------------


def read_config(**kwargs) -> tfds.ReadConfig:
    """How every split is read: bounded read-ahead, and never TFDS's autocache.

    The autocache keeps every encoded record of an unshuffled dataset under
    250 MiB in memory (a 20k-painting split: ~200 MB more RSS by the end of
    one inference pass, growing with the collection) for a second pass the
    page cache serves anyway; `DataConfig.cache` is the one, explicit cache.
    """
    return tfds.ReadConfig(try_autocache=False, override_buffer_size=READ_BUFFER, **kwargs)


def read_shards(builder, split: str, *, training: bool, seed: int,
                whole_split: bool = True,
                input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
    """{"image": encoded bytes, "label"} records; files shuffled (seeded) when training.

    `input_context` (multi-worker input): only this input pipeline's share of
    the files, or of the records when the split has fewer files than pipelines.
    """
    pipelines = input_context.num_input_pipelines if input_context else 1
    by_file = pipelines > 1 and builder.info.splits[split].num_shards >= pipelines
    ds = builder.as_dataset(
        split=split,
        shuffle_files=training,
        # Under a distributed_epoch service or a cluster each worker reads some of
        # the files, so a worker does not see the split's cardinality.
        read_config=read_config(shuffle_seed=seed,
                                assert_cardinality=whole_split and pipelines == 1,
                                input_context=input_context if by_file else None),
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    if pipelines > 1 and not by_file:
        ds = ds.shard(pipelines, input_context.input_pipeline_id)
    return ds.map(lambda f: {"image": f["image"], "label": f["label"]})


def encoded_images(builder, split: str) -> list[bytes]:
    """A split's stored images as encoded bytes, in the order evaluation batches them."""
    ds = read_shards(builder, split, training=False, seed=0).map(lambda f: f["image"])
    return list(ds.as_numpy_iterator())


def crops_repeating_whole(builder, split: str, data: DataConfig, *, sample: int = 200
                          ) -> float:
    """The share of (up to `sample` of) a split's paintings whose crops under `data`'s views
    only repeat the whole painting (`views.repeats_whole`): crops that cost a forward
    pass each and add nothing. 0.0 without crops."""
    if not data.views.crops:
        return 0.0
    ds = read_shards(builder, split, training=False, seed=0).take(sample)
    shapes = [tf.image.decode_image(f["image"], channels=3, expand_animations=False).shape
              for f in ds]
    repeated = [views_lib.repeats_whole(shape[0], shape[1], data.views) for shape in shapes]
    return sum(repeated) / len(repeated) if repeated else 0.0


def encoded_split(builder, split: str, *, batch_size: int) -> tf.data.Dataset:
    """Batches of (encoded bytes [B], labels) in stored order: a split as a server receives it."""
    ds = read_shards(builder, split, training=False, seed=0)
    return ds.map(lambda f: (f["image"], f["label"])).batch(batch_size).prefetch(AUTOTUNE)


def gallery_split(builder, split: str, data: DataConfig, *, keep, thumbnail_px: int,
                  batch_size: int = 64) -> tf.data.Dataset:
    """Batches of {"image": uint8 squares (or views) as evaluation decodes them, "label",
    "file_name", "thumbnail": JPEG bytes, longer side <= `thumbnail_px`}: `split` in stored
    order, only the records whose entry in the boolean `keep` [examples] is True."""
    ds = builder.as_dataset(split=split, shuffle_files=False,
                            read_config=read_config(),
                            decoders={"image": tfds.decode.SkipDecoding()})
    keep = tf.constant(keep, tf.bool)
    ds = ds.enumerate().filter(lambda index, _: keep[index]).map(lambda _, features: features)

    def decode(features):
        return {"image": views_lib.decode(features["image"], data.views),
                "label": features["label"], "file_name": features["file_name"],
                "thumbnail": ops.thumbnail_jpeg(features["image"], thumbnail_px)}

    return ds.map(decode, num_parallel_calls=AUTOTUNE, deterministic=True).batch(
        batch_size).prefetch(AUTOTUNE)


def decoder(data: DataConfig, *, for_warp: bool, max_side: int):
    """The per-record decode: whole paintings (at most `max_side`) for the warp, else squares
    (`data.views`: [V, S, S, 3] views of each painting for multi-crop inference, or whole
    paintings at multi-scale's larger size)."""
    if for_warp:
        return functools.partial(ops.decode_within, max_side=max_side)
    if data.views.count == 1:
        return functools.partial(ops.decode_and_resize, image_size=data.image_size,
                                 mode=data.resize_mode)
    spec = data.views
    return lambda features: {**features, "image": views_lib.decode(features["image"], spec)}


def cache_decoded(ds: tf.data.Dataset, decode, parallel: dict) -> tf.data.Dataset:
    """Decoded uint8, before any randomness: every epoch re-augments it."""
    return ds.map(decode, **parallel).cache()


def shuffle_or_rebalance(ds: tf.data.Dataset, builder, split: str, *, balance: str, seed: int,
                         buffer: int) -> tf.data.Dataset:
    """Shuffled records each epoch; with `balance="resample"`, uniform labels too."""
    ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if balance != "resample":
        return ds
    num_examples = builder.info.splits[split].num_examples
    # An epoch keeps the split's size, so the trainer's epochs mean the same;
    # seed + 1 keeps the coins apart from the augmentation seeds.
    ds = balance_lib.resample(ds, balance_lib.label_counts(builder, split), seed=seed + 1,
                              num_examples=num_examples)
    # Exactly `num_examples` from an endless stream: say so, so that Keras
    # knows the epoch length instead of discovering it (with a warning).
    return ds.apply(tf.data.experimental.assert_cardinality(num_examples))


def batch_paintings(ds: tf.data.Dataset, batch_size: int, *, decoded: bool, max_side: int,
                    parallel: dict) -> tf.data.Dataset:
    """Full batches of paintings at their own sizes, as `ops.flat_pixels` lays them out.

    No canvas to pad them to (padding small paintings to a large canvas
    costs as much as the warp). Encoded records are batched first and
    decoded a batch at a time; already decoded (cached) ones go through
    `ragged_batch`.
    """
    if decoded:
        ds = ds.map(lambda f: {**f, "image": tf.reshape(f["image"], [-1, 3])})
        ds = ds.ragged_batch(batch_size, drop_remainder=True, row_splits_dtype=tf.int32)
        return ds.map(ops.ragged_to_pixels, **parallel)
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.map(functools.partial(ops.decode_batch_within, max_side=max_side), **parallel)


def warp_paintings(ds: tf.data.Dataset, data: DataConfig, augment: augment_lib.AugmentConfig, *,
                   seed: int, parallel: dict) -> tf.data.Dataset:
    """Batched paintings -> {"image": float32 [B, S, S, 3], "label"}: resized and augmented
    by one warp."""
    warp = functools.partial(augment_lib.random_resized_augment, image_size=data.image_size,
                             config=augment, resize_mode=data.resize_mode,
                             crop_scale=data.crop_scale)
    # A fresh, seeded pair per batch and per epoch: stateless, so reproducible.
    return tf.data.Dataset.zip(ds, augment_lib.batch_seeds(seed)).map(
        lambda f, s: {"image": warp(f["pixels"], f["offset"], f["size"], s), "label": f["label"]},
        **parallel)


def batch_images(ds: tf.data.Dataset, batch_size: int, *, training: bool,
                 parallel: dict) -> tf.data.Dataset:
    """Square uint8 images -> batches of float32 in [0, 1]; training drops the last partial one."""
    # Batch first: one vectorised op per batch beats one op per image.
    ds = ds.batch(batch_size, drop_remainder=training, **parallel)
    return ds.map(lambda f: {**f, "image": ops.rescale(f["image"])}, **parallel)


def contrast_images(ds: tf.data.Dataset, augment: augment_lib.AugmentConfig, *, seed: int,
                    parallel: dict) -> tf.data.Dataset:
    """Random contrast on resized batches (host augmentation without geometry)."""
    return tf.data.Dataset.zip(ds, augment_lib.batch_seeds(seed)).map(
        lambda f, s: {**f, "image": augment_lib.random_augment(f["image"], s, augment)},
        **parallel)


def to_pairs(ds: tf.data.Dataset, *, num_classes: int, one_hot: bool,
             parallel: dict) -> tf.data.Dataset:
    """Feature dicts -> the (images, labels) pairs `model.fit` takes."""
    to_labels = functools.partial(ops.to_labels, num_classes=num_classes, one_hot=one_hot)
    return ds.map(lambda f: (f["image"], to_labels(f["label"])), **parallel)


def mix_pairs(ds: tf.data.Dataset, augment: augment_lib.AugmentConfig, *, one_hot: bool,
              seed: int, parallel: dict) -> tf.data.Dataset:
    """Mixup / CutMix (`pipeline.mixing`) on (images, one-hot labels) training batches."""
    if not one_hot:
        raise ValueError("--mixup and --cutmix need one-hot labels (one_hot=True)")
    # Seeds of their own: not the draws of the other augmentations.
    seeds = augment_lib.batch_seeds(seed + MIXING_SEED_OFFSET)
    return tf.data.Dataset.zip(ds, seeds).map(
        lambda pair, s: mixing.mix_batch(*pair, s, mixup=augment.mixup, cutmix=augment.cutmix),
        **parallel)


def distribute(ds: tf.data.Dataset, service: str, *, job_name: str | None,
               mode: str) -> tf.data.Dataset:
    """Runs everything before it on tf.data service workers (`service`: grpc://host:port).

    `distributed_epoch`: each example once per epoch, in no fixed order; a
    shared `job_name` lets several trainers read one job.
    """
    if mode not in SERVICE_MODES:
        raise ValueError(f"tf.data service mode must be one of {SERVICE_MODES}, got {mode!r}")
    return ds.apply(tf.data.experimental.service.distribute(
        processing_mode=mode, service=service, job_name=job_name))


# --- The whole split ------------------------------------------------------------------


def create_split(
    builder: tfds.core.DatasetBuilder,
    split: str,
    data: DataConfig,
    *,
    training: bool,
    augment: augment_lib.AugmentConfig = augment_lib.NO_AUGMENTATION,
    seed: int = 0,
    deterministic: bool = False,
    one_hot: bool = False,
    max_side: int | None = None,
    shuffle_buffer: int = SHUFFLE_BUFFER,
    service_job: str | None = None,
    service_mode: str = "distributed_epoch",
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """Batches of (float32 images [B, S, S, 3] in [0, 1], labels) ready for `model.fit`.

    Evaluation splits with multi-crop inference (`data.views`, more than one
    view) give images [B, V, S, S, 3] instead: every view of each painting
    (`pipeline.views`), for `serving.multiview` to combine; with multi-scale
    (`eval_scale`), at the larger size (the model side shrinks them to S as well).

    Training splits are shuffled (encoded records), augmented and drop the
    last partial batch (static shapes); evaluation splits are neither, never
    rebalanced, and come in stored order, the same every time. Labels are
    int64, or float32 one-hot rows.

    Host augmentation with geometry decodes each painting at up to
    `max_side` (default `default_max_side`), batches them at their own sizes
    and resizes + augments each in one XLA-compiled warp from the decoded
    pixels (bilinear; evaluation's resize is antialiased, which differs only
    where the warp downsamples, by at most `MAX_SIDE_FACTOR` x zoom).
    `augment.on == "device"` leaves training batches resized as for
    evaluation and unaugmented: the trainer puts `augment.DeviceAugmentation`
    in front of the model for `fit`. Without geometric augmentation,
    training images are resized exactly as evaluation and serving resize them.

    `deterministic=True`: the same seed gives the same batches in every run
    (files, shuffle, augmentation and resampling are all seeded; slower).
    As for any seeded TensorFlow op, the global seed takes part too:
    `train.py` sets it (`keras.utils.set_random_seed`) before building data.
    `data.balance="resample"` rebalances training labels to uniform in-graph
    (an epoch keeps the split's size); `"class_weight"` leaves the data as
    it is: pass `pipeline.class_weights(builder, split)` to `fit`.
    `input_context`: one worker's share of the split (`read_shards`).
    """
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be positive, got {max_side}")
    num_examples = builder.info.splits[split].num_examples
    if training and num_examples < data.batch_size:
        raise DatasetError(f"split {split!r} has {num_examples} examples, fewer than one "
                           f"batch of {data.batch_size}")
    host_augment = training and augment.active and augment.on == "host"
    for_warp = host_augment and augment.has_geometry
    crops = for_warp and augment.crop_probability > 0
    max_side = max_side or default_max_side(data.image_size,
                                            crop_scale=data.crop_scale if crops else None)
    parallel = dict(num_parallel_calls=AUTOTUNE, deterministic=deterministic or not training)
    # Training sees one view of a painting per example; multi-crop is inference's.
    decode = decoder(data.single_view() if training else data, for_warp=for_warp,
                     max_side=max_side)

    ds = read_shards(builder, split, training=training, seed=seed,
                     whole_split=not data.tf_data_service, input_context=input_context)
    if data.cache:
        ds = cache_decoded(ds, decode, parallel)
        shuffle_buffer = min(shuffle_buffer, CACHED_SHUFFLE_BUFFER)
    if training:
        ds = shuffle_or_rebalance(ds, builder, split, balance=data.balance, seed=seed,
                                  buffer=shuffle_buffer)
    if for_warp:
        ds = batch_paintings(ds, data.batch_size, decoded=data.cache, max_side=max_side,
                             parallel=parallel)
        ds = warp_paintings(ds, data, augment, seed=seed, parallel=parallel)
    else:
        if not data.cache:
            ds = ds.map(decode, **parallel)
        ds = batch_images(ds, data.batch_size, training=training, parallel=parallel)
        if host_augment:
            ds = contrast_images(ds, augment, seed=seed, parallel=parallel)
    ds = to_pairs(ds, num_classes=num_classes(builder), one_hot=one_hot, parallel=parallel)
    if training and augment.mixes:
        ds = mix_pairs(ds, augment, one_hot=one_hot, seed=seed, parallel=parallel)
    if data.tf_data_service:
        ds = distribute(ds, data.tf_data_service, job_name=service_job, mode=service_mode)
    return ds.prefetch(AUTOTUNE)
