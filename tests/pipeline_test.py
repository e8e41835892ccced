"""Pipeline ops, augmentation and create_split, eagerly and inside tf.data."""

import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import pipeline
from pipeline import augment, input_pipeline, ops
from artist_id import memory
from tests.conftest import encode, make_split

GEOMETRY_OFF = dict(rotation=0.0, zoom=0.0, translate_height=0.0, translate_width=0.0,
                    contrast=0.0, flip_horizontal=False, flip_vertical=False)


def odd_image(seed=0, shape=(37, 53, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_jpeg_ratio_index_keeps_twice_the_size():
    # libjpeg gives ceil(side / ratio) pixels: 127 / 2 -> 64 is still 2 x 32.
    sides = tf.constant([63, 126, 127, 252, 253, 504, 505, 10_000])
    assert ops.jpeg_ratio_index(sides, 32).numpy().tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert ops.jpeg_ratio_index(tf.constant([[224, 96]]), 48).numpy().tolist() == [[1, 0]]


def test_decode_for_size_scales_large_jpegs_only():
    rows, cols = np.mgrid[0:200, 0:264]
    smooth = np.stack([rows, cols, rows + cols], -1) * 0.4 + odd_image(shape=(200, 264, 3)) * 0.2
    image = smooth.astype(np.uint8)
    jpeg, png = tf.constant(encode(image, "JPEG")), tf.constant(encode(image, "PNG"))
    # Shorter side 200: half scale leaves 100 >= 2 x 48; quarter scale would leave 50.
    assert ops.decode_for_size(jpeg, 48).shape == (100, 132, 3)
    assert ops.decode_for_size(jpeg, 51).shape == (200, 264, 3)
    np.testing.assert_array_equal(ops.decode_for_size(jpeg, 51), ops.decode_image(jpeg))
    np.testing.assert_array_equal(ops.decode_for_size(png, 48), image)  # PNG: full size.
    # The scaled decode is an antialiased shrink: close to decoding at full size first.
    scaled = ops.decode_resized(jpeg, 48).numpy().astype(float)
    full = ops.resize(ops.decode_image(jpeg), 48).numpy().astype(float)
    assert 0 < np.abs(scaled - full).mean() < 1.5, np.abs(scaled - full).mean()


def model_input(encoded, image_size, mode="stretch"):
    """Encoded bytes -> what the model sees: float32 [S, S, 3] in [0, 1]."""
    return ops.rescale(ops.decode_resized(encoded, image_size, mode=mode))


def test_model_input_shape_dtype_range():
    out = model_input(tf.constant(encode(odd_image())), 24)
    assert out.shape == (24, 24, 3) and out.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 1.0
    assert float(tf.math.reduce_std(out)) > 0.05  # Not a blank image.


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_preprocess_eager_and_in_dataset_map_agree(fmt):
    blob = encode(odd_image(), fmt)
    eager = model_input(tf.constant(blob), 20, mode="crop")
    mapped = next(iter(tf.data.Dataset.from_tensors(blob).map(
        lambda b: model_input(b, 20, mode="crop"))))
    np.testing.assert_array_equal(eager.numpy(), mapped.numpy())


def test_png_decodes_to_exact_pixels():
    image = odd_image()
    np.testing.assert_array_equal(ops.decode_image(tf.constant(encode(image, "PNG"))), image)


def test_resize_crop_keeps_centre_and_stretch_keeps_all():
    image = np.zeros((30, 90, 3), np.uint8)
    image[:, :30] = (255, 0, 0)
    image[:, 30:60] = (0, 255, 0)
    image[:, 60:] = (0, 0, 255)
    crop = ops.resize(tf.constant(image), 10, mode="crop").numpy()
    stretch = ops.resize(tf.constant(image), 9, mode="stretch").numpy()
    assert (crop[..., 1] == 255).all() and (crop[..., [0, 2]] == 0).all()
    np.testing.assert_array_equal(stretch[5, [0, 4, 8]], [(255, 0, 0), (0, 255, 0), (0, 0, 255)])


def test_resize_averages_where_it_shrinks_and_interpolates_where_it_grows():
    # Every 4th row bright: shrinking 4x must average it to flat grey (plain
    # bilinear sampling falls between the bright rows and returns black).
    rows = np.where(np.arange(40) % 4 == 0, 200, 0).astype(np.uint8)
    image = np.broadcast_to(rows[:, None, None], (40, 8, 3))
    resized = ops.resize(tf.constant(image), 10).numpy().astype(int)
    # Rows 40 -> 10 (shrink: box average of 4 rows), columns 8 -> 10 (grow).
    np.testing.assert_array_equal(resized, 50)
    ramp = np.repeat(np.linspace(0, 200, 5).astype(np.uint8)[None, :, None], 3, axis=2)
    grown = ops.resize(tf.constant(np.repeat(ramp, 5, axis=0)), 5).numpy().astype(int)
    np.testing.assert_array_equal(grown[0, :, 0], [0, 50, 100, 150, 200])  # Same size: exact.
    wider = ops.resize(tf.constant(np.repeat(ramp, 9, axis=0)), 9).numpy().astype(int)
    # 5 -> 9 columns bilinearly (half-pixel centres): monotone, ends kept.
    assert wider[0, 0, 0] == 0 and wider[0, -1, 0] == 200
    assert (np.diff(wider[0, :, 0]) >= 0).all() and len(set(wider[0, :, 0])) > 5


def test_resize_rejects_unknown_mode():
    with pytest.raises(ValueError, match="resize mode"):
        ops.resize(tf.zeros([4, 4, 3], tf.uint8), 2, mode="squash")


def marked_batch(batch=16, height=9, width=11, y=2, x=3) -> np.ndarray:
    images = np.zeros((batch, height, width, 3), np.float32)
    images[:, y, x] = 1.0
    return images


def marks(images: np.ndarray) -> list[tuple[int, int]]:
    return [tuple(np.argwhere(image[..., 0] > 0.5)[0]) for image in images]


def test_horizontal_flip_moves_marked_pixel_or_leaves_it():
    config = augment.AugmentConfig(**{**GEOMETRY_OFF, "flip_horizontal": True})
    out = augment.random_augment(marked_batch(), tf.constant([1, 2]), config).numpy()
    found = set(marks(out))
    assert found == {(2, 3), (2, 11 - 1 - 3)}  # Both outcomes occur in 16 draws.


def test_vertical_flip_moves_marked_pixel_or_leaves_it():
    config = augment.AugmentConfig(**{**GEOMETRY_OFF, "flip_vertical": True})
    out = augment.random_augment(marked_batch(), tf.constant([5, 6]), config).numpy()
    assert set(marks(out)) == {(2, 3), (9 - 1 - 2, 3)}


def test_no_geometry_returns_image_unchanged():
    images = odd_image(shape=(4, 13, 13, 3)).astype(np.float32) / 255
    out = augment.random_augment(images, tf.constant([0, 0]), augment.AugmentConfig(**GEOMETRY_OFF))
    np.testing.assert_allclose(out, images, atol=1e-6)


def linear_parts(config, batch=64, size=11):
    transforms = augment.random_transforms(tf.constant([7, 8]), batch, size, size, config).numpy()
    return transforms[:, [0, 1, 3, 4]].reshape(-1, 2, 2), transforms


def test_rotation_is_a_rotation_about_the_centre_within_range():
    config = augment.AugmentConfig(**{**GEOMETRY_OFF, "rotation": 0.25})
    linear, transforms = linear_parts(config)
    np.testing.assert_allclose(np.linalg.det(linear), 1.0, atol=1e-5)
    angles = np.arctan2(linear[:, 1, 0], linear[:, 0, 0])
    assert np.abs(angles).max() <= 0.25 * 2 * np.pi + 1e-6
    assert angles.min() < -1.0 and angles.max() > 1.0  # Spread over +-90 degrees.
    centre = np.array([5.0, 5.0])
    np.testing.assert_allclose(linear @ centre + transforms[:, [2, 5]], np.tile(centre, (64, 1)),
                               atol=1e-4)


def warp(images: tf.Tensor, transforms: tf.Tensor) -> tf.Tensor:
    """Resamples each whole image through a given transform (same size), reflecting at edges."""
    pixels, offsets, sizes = augment._flatten(tf.convert_to_tensor(images, tf.float32))
    points = augment._points_jit(offsets, sizes, transforms, tuple(images.shape[1:3]))
    return augment._render_jit(pixels, sizes[:, 1], points, None)


def test_quarter_turn_moves_marked_pixel():
    # A hand-made 90 degree transform: output (x, y) samples input (y, 10 - x).
    transform = tf.constant([[0.0, 1.0, 0.0, -1.0, 0.0, 10.0, 0.0, 0.0]])
    out = warp(tf.constant(marked_batch(batch=1, height=11, width=11, y=2, x=5)), transform)
    assert marks(out.numpy()) == [(5, 8)]


def test_zoom_scales_within_range():
    config = augment.AugmentConfig(**{**GEOMETRY_OFF, "zoom": 0.2})
    linear, _ = linear_parts(config)
    scales = linear[:, 0, 0]
    np.testing.assert_allclose(linear[:, 1, 1], scales)
    np.testing.assert_allclose(linear[:, [0, 1], [1, 0]], 0.0, atol=1e-7)
    assert 0.8 <= scales.min() < 0.9 and 1.1 < scales.max() <= 1.2


def test_translation_shifts_within_range():
    config = augment.AugmentConfig(**{**GEOMETRY_OFF, "translate_width": 0.2})
    images = marked_batch(batch=32, height=9, width=41, y=4, x=20)
    out = augment.random_augment(images, tf.constant([3, 1]), config).numpy()
    shifts = [x - 20 for y, x in marks(out)]
    assert all(y == 4 for y, _ in marks(out))
    assert max(abs(s) for s in shifts) <= 0.2 * 41 + 1 and len(set(shifts)) > 3


def test_contrast_keeps_per_image_mean():
    config = augment.AugmentConfig(**{**GEOMETRY_OFF, "contrast": 0.2})
    # Mid-range values: no clipping, so the mean is exactly preserved.
    images = 0.4 + 0.2 * np.random.default_rng(0).random((8, 12, 12, 3), dtype=np.float32)
    out = augment.random_augment(images, tf.constant([1, 1]), config).numpy()
    np.testing.assert_allclose(out.mean(axis=(1, 2)), images.mean(axis=(1, 2)), atol=1e-5)
    assert not np.allclose(out, images)


def test_full_augmentation_range_seed_and_dataset_map():
    images = odd_image(shape=(4, 24, 24, 3)).astype(np.float32) / 255
    seed = tf.constant([11, 12], tf.int64)
    eager = augment.random_augment(images, seed).numpy()
    again = augment.random_augment(images, seed).numpy()
    other = augment.random_augment(images, tf.constant([11, 13], tf.int64)).numpy()
    mapped = next(iter(tf.data.Dataset.from_tensors((images, seed)).map(augment.random_augment)))
    assert eager.min() >= 0.0 and eager.max() <= 1.0
    np.testing.assert_array_equal(eager, again)
    np.testing.assert_allclose(eager, mapped.numpy(), atol=1e-6)
    assert not np.allclose(eager, other)


def test_config_rejects_out_of_range():
    with pytest.raises(ValueError, match="zoom"):
        augment.AugmentConfig(zoom=1.5)


def test_create_split_training_batches(tiny_builder):
    ds = make_split(tiny_builder, "train", batch_size=8, image_size=32,
                    training=True, seed=3)
    images, labels = next(iter(ds))
    assert images.shape == (8, 32, 32, 3) and images.dtype == tf.float32
    assert labels.shape == (8,) and labels.dtype == tf.int64
    assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 1.0
    # 36 training images, drop_remainder: 4 full batches of 8.
    assert sum(1 for _ in ds) == 4


def test_create_split_same_seed_same_batches(tiny_builder):
    def first(seed):
        ds = make_split(tiny_builder, "train", batch_size=8, image_size=24,
                        training=True, seed=seed)
        return next(iter(ds))
    (a, la), (b, lb), (c, _) = first(5), first(5), first(6)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a, c)


def _dataset_ops(ds: tf.data.Dataset) -> set[str]:
    variant = ds._variant_tensor  # pylint: disable=protected-access
    graph = tf.compat.v1.GraphDef.FromString(
        tf.raw_ops.DatasetToGraphV2(input_dataset=variant).numpy())
    return {node.op for node in graph.node} | {
        node.op for function in graph.library.function for node in function.node_def}


def test_splits_are_read_without_autocache_with_bounded_read_ahead(tiny_builder):
    # TFDS would autocache this tiny unshuffled split: every record kept in memory.
    assert any(op.startswith("CacheDataset") for op in _dataset_ops(tiny_builder.as_dataset(
        split="test", decoders={"image": tfds.decode.SkipDecoding()})))
    ds = make_split(tiny_builder, "test", batch_size=5, image_size=24, training=False)
    assert not any(op.startswith("CacheDataset") for op in _dataset_ops(ds))
    config = input_pipeline.read_config(shuffle_seed=3)
    assert config.override_buffer_size == input_pipeline.READ_BUFFER and config.shuffle_seed == 3


def test_create_split_evaluation_is_repeatable_and_complete(tiny_builder):
    ds = make_split(tiny_builder, "test", batch_size=5, image_size=24, training=False)
    first = [(x.numpy(), y.numpy()) for x, y in ds]
    second = [(x.numpy(), y.numpy()) for x, y in ds]
    assert [len(y) for _, y in first] == [5, 5, 2]  # Nothing dropped: 12 test images.
    for (x1, y1), (x2, y2) in zip(first, second):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert sorted(np.concatenate([y for _, y in first]).tolist()) == sorted(list(range(6)) * 2)


def test_create_split_one_hot(tiny_builder):
    ds = make_split(tiny_builder, "validation", batch_size=12, image_size=16,
                    training=False, one_hot=True)
    _, labels = next(iter(ds))
    assert labels.shape == (12, 6)
    np.testing.assert_array_equal(labels.numpy().sum(axis=1), np.ones(12))


def test_create_split_cache_gives_same_eval_pixels(tiny_builder):
    kwargs = dict(batch_size=12, image_size=16, training=False)
    plain = next(iter(make_split(tiny_builder, "test", **kwargs)))[0]
    cached = next(iter(make_split(tiny_builder, "test", cache=True, **kwargs)))[0]
    np.testing.assert_array_equal(plain, cached)


def test_load_builder_errors(tmp_path, tiny_data_dir):
    with pytest.raises(pipeline.DatasetError, match="unknown dataset 'no_such_paintings'"):
        pipeline.load_builder("no_such_paintings", data_dir=str(tmp_path))
    with pytest.raises(pipeline.DatasetError, match="tfds build"):
        pipeline.load_builder("sample_paintings/tiny", data_dir=str(tmp_path))
    assert pipeline.load_builder("sample_paintings/tiny", data_dir=tiny_data_dir).is_prepared()


def fingerprints(ds) -> list[tuple[int, float]]:
    """Sorted (label, pixel sum) of every image of one pass."""
    return sorted((int(y), round(float(np.sum(x)), 3)) for xs, ys in ds for x, y in zip(xs, ys))


def test_training_without_augmentation_sees_the_evaluation_pixels(tiny_builder):
    kwargs = dict(batch_size=6, image_size=20)  # 36 = 6 full batches: nothing dropped.
    train = make_split(tiny_builder, "train", training=True, seed=1,
                       augment=augment.NO_AUGMENTATION, **kwargs)
    evaluation = make_split(tiny_builder, "train", training=False, **kwargs)
    assert fingerprints(train) == fingerprints(evaluation)


def test_device_path_batches_are_the_unaugmented_host_batches(tiny_builder):
    kwargs = dict(batch_size=8, image_size=24, training=True, seed=2)
    device = next(iter(make_split(tiny_builder, "train", augment_on="device",
                                  **kwargs)))
    plain = next(iter(make_split(tiny_builder, "train",
                                 augment=augment.NO_AUGMENTATION, **kwargs)))
    np.testing.assert_array_equal(device[0], plain[0])
    np.testing.assert_array_equal(device[1], plain[1])
    augmented = augment.DeviceAugmentation(seed=2)(device[0], training=True)
    assert augmented.shape == device[0].shape and not np.allclose(augmented, device[0])


def test_host_augmentation_cached_equals_streamed(tiny_builder):
    kwargs = dict(batch_size=12, image_size=24, training=True, seed=4)
    streamed = [b for b in make_split(tiny_builder, "train", **kwargs)]
    cached = [b for b in make_split(tiny_builder, "train", cache=True, **kwargs)]
    assert len(streamed) == len(cached) == 3
    for (x1, y1), (x2, y2) in zip(streamed, cached):
        np.testing.assert_array_equal(y1, y2)
        np.testing.assert_allclose(x1, x2, atol=1e-6)


@pytest.mark.parametrize("mode", ["stretch", "crop"])
def test_host_augmentation_one_hot_and_resize_modes(tiny_builder, mode):
    ds = make_split(tiny_builder, "train", batch_size=8, image_size=28, training=True,
                    one_hot=True, resize_mode=mode, max_side=100)
    images, labels = next(iter(ds))
    assert images.shape == (8, 28, 28, 3) and labels.shape == (8, 6)
    assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 1.0
    np.testing.assert_array_equal(labels.numpy().sum(axis=1), np.ones(8))


def test_create_split_rejects_unknown_options(tiny_builder):
    for bad in (dict(augment_on="gpu"), dict(resize_mode="squash"), dict(max_side=0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            make_split(tiny_builder, "train", batch_size=4, training=True, **bad)


FIRST_BATCHES = """
import hashlib, sys
import numpy as np
import tensorflow as tf
import pipeline
from tests.conftest import make_split
tf.random.set_seed(5)  # Seeded ops combine it with their own seed, as train.py sets it.
builder = pipeline.load_builder("sample_paintings/tiny", data_dir=sys.argv[1])
ds = make_split(builder, "train", batch_size=12, image_size=24, training=True, seed=9)
digest = hashlib.sha256()
for _ in range(2):  # Two epochs: the second reshuffles and re-augments.
    for images, labels in ds:
        digest.update(np.round(images.numpy() * 255).astype(np.uint8).tobytes())
        digest.update(labels.numpy().tobytes())
print(digest.hexdigest())
"""


def test_same_seed_same_batches_in_a_fresh_process(tiny_builder, tiny_data_dir):
    import hashlib
    import os
    import subprocess
    import sys

    tf.random.set_seed(5)  # Whatever an earlier test left, as the other process does.
    try:
        ds = make_split(tiny_builder, "train", batch_size=12, image_size=24,
                        training=True, seed=9)
        digest = hashlib.sha256()
        for _ in range(2):
            for images, labels in ds:
                digest.update(np.round(images.numpy() * 255).astype(np.uint8).tobytes())
                digest.update(labels.numpy().tobytes())
    finally:
        tf.random.set_seed(None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root, "TF_CPP_MIN_LOG_LEVEL": "3"}
    other = subprocess.run([sys.executable, "-c", FIRST_BATCHES, tiny_data_dir], env=env,
                           capture_output=True, text=True, check=True, cwd=root)
    assert other.stdout.strip().splitlines()[-1] == digest.hexdigest()


def test_device_augmentation_trains_inside_fit_and_advances_its_seed(tiny_builder):
    import keras

    ds = make_split(tiny_builder, "train", batch_size=12, image_size=16,
                    training=True, augment_on="device")
    layer = augment.DeviceAugmentation(augment.AugmentConfig(), seed=5)
    inputs = keras.Input((16, 16, 3))
    outputs = keras.layers.Dense(6)(keras.layers.Flatten()(layer(inputs)))
    model = keras.Model(inputs, outputs)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(ds, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert layer.seed_generator.state.numpy().tolist() == [5, 6]  # 2 epochs x 3 steps.


# Prints how many MiB of a 64 MiB malloc came from the heap (0: glibc mmapped it).
HEAP_PROBE = """
import ctypes, ctypes.util, sys
def heap_mib():
    for line in open("/proc/self/maps"):
        if line.rstrip().endswith("[heap]"):
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            return (end - start) >> 20
    return 0
if sys.argv[1:] == ["tune"]:
    from artist_id import memory
    assert memory.tune_malloc()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
before = heap_mib()
block = libc.malloc(64 << 20)
print(heap_mib() - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc" or not os.path.exists("/proc/self/maps"),
                    reason="glibc malloc settings, read from /proc/self/maps")
def test_malloc_settings_take_effect_in_process_and_from_the_environment():
    env = {k: v for k, v in os.environ.items()
           if k not in ("ARTIST_ID_DEFAULT_MALLOC", "GLIBC_TUNABLES")}

    def heap_growth(*args, **extra_env):
        return int(subprocess.run([sys.executable, "-c", HEAP_PROBE, *args], env={**env, **extra_env},
                                  check=True, capture_output=True, text=True).stdout.split()[-1])

    assert heap_growth() == 0  # glibc's default: a 64 MiB block is its own mapping.
    assert heap_growth("tune") >= 60
    assert heap_growth(GLIBC_TUNABLES=memory.GLIBC_TUNABLES) >= 60  # Misspelt: ignored, 0.


def test_tune_malloc_has_an_escape_hatch():
    env = {**os.environ, "ARTIST_ID_DEFAULT_MALLOC": "1"}
    assert subprocess.run([sys.executable, "-c", "from artist_id import memory; "
                           "print(memory.tune_malloc())"], env=env, check=True,
                          capture_output=True, text=True).stdout.strip() == "False"


# --- Each stage of create_split on its own ----------------------------------------------


def test_read_shards_gives_encoded_records_in_stored_order(tiny_builder):
    records = list(input_pipeline.read_shards(tiny_builder, "test", training=False, seed=0))
    assert len(records) == 12 and set(records[0]) == {"image", "label"}
    assert records[0]["image"].dtype == tf.string
    assert [r["image"].numpy() for r in records] == pipeline.encoded_images(tiny_builder, "test")
    stored = [int(f["label"]) for f in tiny_builder.as_dataset(split="test")]
    assert [int(r["label"]) for r in records] == stored


def test_shuffle_or_rebalance_keeps_each_record_once_per_epoch(tiny_builder):
    ds = input_pipeline.read_shards(tiny_builder, "train", training=True, seed=0)
    shuffled = input_pipeline.shuffle_or_rebalance(ds, tiny_builder, "train", balance="none",
                                                   seed=0, buffer=64)
    first, second = ([r["image"].numpy() for r in shuffled] for _ in range(2))
    assert sorted(first) == sorted(second) and len(first) == 36
    assert first != second  # Reshuffled each epoch.


def test_batch_images_rescales_and_drops_the_remainder_only_when_training():
    squares = tf.data.Dataset.from_tensor_slices(
        {"image": np.full((5, 4, 4, 3), 255, np.uint8), "label": np.arange(5)})
    parallel = dict(num_parallel_calls=None, deterministic=True)
    training = list(input_pipeline.batch_images(squares, 2, training=True, parallel=parallel))
    evaluation = list(input_pipeline.batch_images(squares, 2, training=False, parallel=parallel))
    assert [len(b["label"]) for b in training] == [2, 2]
    assert [len(b["label"]) for b in evaluation] == [2, 2, 1]
    assert training[0]["image"].dtype == tf.float32 and float(training[0]["image"][0, 0, 0, 0]) == 1.0


def test_to_pairs_gives_sparse_or_one_hot_labels():
    batch = tf.data.Dataset.from_tensors({"image": tf.zeros([2, 4, 4, 3]),
                                          "label": tf.constant([2, 0], tf.int64)})
    parallel = dict(num_parallel_calls=None, deterministic=True)
    (_, sparse), = input_pipeline.to_pairs(batch, num_classes=3, one_hot=False, parallel=parallel)
    (_, dense), = input_pipeline.to_pairs(batch, num_classes=3, one_hot=True, parallel=parallel)
    assert sparse.numpy().tolist() == [2, 0]
    assert dense.numpy().tolist() == [[0, 0, 1], [1, 0, 0]]
