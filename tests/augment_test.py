"""The fused host warp, the device layer and their building blocks, on synthetic images."""

import dataclasses
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline import augment, ops
from tests.conftest import FULL_AUGMENT as FULL
from tests.conftest import encode

# Augmentation on, but every transform off: the plain resize.
OFF = augment.AugmentConfig(flip_horizontal=False, flip_vertical=False, rotation=0.0, zoom=0.0,
                            translate_height=0.0, translate_width=0.0, contrast=0.0)
SEED = tf.constant([4, 2], tf.int64)


def flat(images: list[np.ndarray]) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Paintings of any sizes -> the (pixels, offsets, sizes) the host warp takes."""
    return ops.flat_pixels([tf.constant(image) for image in images])


def fused(images, config, *, size, mode="stretch", seed=SEED) -> np.ndarray:
    return augment.random_resized_augment(
        *flat(images), seed, image_size=size, config=config, resize_mode=mode).numpy()


def noise(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def smooth(shape, seed=0) -> np.ndarray:
    """A smooth painting-like image, on which bilinear and antialiased resizes agree."""
    small = noise((4, 4, 3), seed).astype(np.float32)
    return tf.cast(tf.round(tf.image.resize(small, shape[:2], method="bicubic")), tf.uint8).numpy()


@pytest.mark.parametrize("mode", ["stretch", "crop"])
def test_no_geometry_equals_eval_resize_when_upsampling(mode):
    # Identity geometry: the fused warp is the plain resize, and upsampling
    # is where antialiasing changes nothing, so it matches evaluation's resize.
    images = [noise((13, 21, 3), 1), noise((20, 9, 3), 2)]
    out = fused(images, OFF, size=24, mode=mode)
    for image, warped in zip(images, out):
        expected = ops.rescale(ops.resize(tf.constant(image), 24, mode=mode)).numpy()
        if mode == "crop":
            # The outermost half pixel of a crop blends in the real neighbour
            # beyond the crop (evaluation, cropping first, repeats the edge).
            warped, expected = warped[1:-1, 1:-1], expected[1:-1, 1:-1]
        # Evaluation rounds to uint8; the warp hands on unrounded floats.
        np.testing.assert_allclose(warped, expected, atol=0.5 / 255 + 1e-4)


def test_no_geometry_downsampling_is_plain_bilinear_and_near_eval():
    image = smooth((60, 45, 3))
    (warped,) = fused([image], OFF, size=30)
    bilinear = tf.image.resize(image, [30, 30], antialias=False).numpy() / 255
    np.testing.assert_allclose(warped, bilinear, atol=1e-5)
    # Evaluation antialiases; on a smooth painting the two barely differ.
    antialiased = ops.rescale(ops.resize(tf.constant(image), 30)).numpy()
    assert np.mean(np.abs(warped - antialiased)) < 2 / 255


def marked(size, y, x) -> np.ndarray:
    image = np.zeros((size, size, 3), np.uint8)
    image[y, x] = 255
    return image


def marks(images: np.ndarray) -> set[tuple[int, int]]:
    return {tuple(np.argwhere(image[..., 0] > 0.5)[0]) for image in images}


@pytest.mark.parametrize("flag, moved", [("flip_horizontal", (2, 11 - 1 - 3)),
                                         ("flip_vertical", (11 - 1 - 2, 3))])
def test_fused_flips_move_marked_pixel(flag, moved):
    config = dataclasses.replace(OFF, **{flag: True})
    out = fused([marked(11, 2, 3)] * 16, config, size=11)
    assert marks(out) == {(2, 3), moved}  # Both outcomes occur in 16 draws.
    assert out.max() == 1.0 and np.count_nonzero(out[..., 0] > 0.5) == 16  # Moved, not blurred.


def test_fused_warp_reflects_inside_each_painting_only():
    # Two flat colours of different sizes in one batch: with full geometry
    # every output pixel must still be its own painting's colour (no padding,
    # no neighbour). Contrast keeps a flat image flat.
    red = np.full((10, 17, 3), (200, 10, 10), np.uint8)
    blue = np.full((23, 8, 3), (10, 10, 200), np.uint8)
    out = fused([red, blue] * 4, FULL, size=16)
    np.testing.assert_allclose(out[0::2], np.broadcast_to(red[0, 0] / 255, out[0::2].shape),
                               atol=1e-6)
    np.testing.assert_allclose(out[1::2], np.broadcast_to(blue[0, 0] / 255, out[1::2].shape),
                               atol=1e-6)


def test_reflect_matches_keras_fill_mode_reflect():
    # "d c b a | a b c d | d c b a" at pixel centres, several periods out.
    left, weight = augment._reflect(tf.constant([-1.0, -4.0, 4.0, 7.0, 8.0, -9.0, 1.25]), 4.0)
    np.testing.assert_allclose(left.numpy() + weight.numpy(), [0, 3, 3, 0, 0, 0, 1.25])
    assert left.numpy().max() <= 2  # The right tap (left + 1) stays inside the image.


def test_full_augmentation_range_seed_and_dataset_map():
    images = [noise((30, 41, 3), 3), noise((25, 25, 3), 4), noise((40, 12, 3), 5)]
    out = fused(images, FULL, size=20)
    again = fused(images, FULL, size=20)
    other = fused(images, FULL, size=20, seed=tf.constant([4, 3], tf.int64))
    mapped = next(iter(tf.data.Dataset.from_tensors((*flat(images), SEED)).map(
        lambda p, o, s, seed: augment.random_resized_augment(p, o, s, seed, image_size=20,
                                                             config=FULL))))
    assert out.shape == (3, 20, 20, 3) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_array_equal(out, again)
    np.testing.assert_allclose(out, mapped.numpy(), atol=1e-6)
    assert not np.allclose(out, other)


def test_host_fused_equals_device_augmentation_on_square_paintings():
    images = [smooth((24, 24, 3), seed) for seed in range(4)]
    host = fused(images, FULL, size=24)
    device = augment.random_augment(np.stack(images).astype(np.float32) / 255, SEED, FULL).numpy()
    np.testing.assert_allclose(host, device, atol=1e-5)
    assert not np.allclose(host, np.stack(images) / 255, atol=0.05)  # Really augmented.


def test_contrast_keeps_per_image_mean_through_fused_path():
    images = [(100 + noise((18, 18, 3), s) // 5).astype(np.uint8) for s in range(6)]
    config = dataclasses.replace(OFF, contrast=0.2)
    out = fused(images, config, size=18)
    plain = fused(images, OFF, size=18)
    np.testing.assert_allclose(out.mean(axis=(1, 2)), plain.mean(axis=(1, 2)), atol=1e-5)
    assert not np.allclose(out, plain)


def test_padded_length_bounds_padding_and_shapes():
    lengths = {int(ops.padded_length(n)) for n in range(1_000_000, 1_100_000, 997)}
    assert len(lengths) <= 2  # A 10% spread of batch sizes: one or two XLA compilations.
    for n in (1, 7, 4096, 50_177, 1_605_632):
        assert n < int(ops.padded_length(n)) <= n * 1.125 + 2


def test_fit_within_and_batch_decode():
    big, small = noise((90, 40, 3), 6), noise((30, 20, 3), 7)
    assert ops.fit_within(tf.constant(big), 45).shape == (45, 20, 3)
    np.testing.assert_array_equal(ops.fit_within(tf.constant(small), 45), small)
    batch = ops.decode_batch_within(
        {"image": tf.constant([encode(big, "PNG"), encode(small, "PNG")]), "label": [1, 2]},
        max_side=45)
    assert batch["size"].numpy().tolist() == [[45, 20], [30, 20]]
    assert batch["offset"].numpy().tolist() == [0, 45 * 20] and "image" not in batch
    pixels = batch["pixels"].numpy()
    assert len(pixels) == int(ops.padded_length(45 * 20 + 30 * 20))
    np.testing.assert_array_equal(pixels[900:1500], small.reshape(-1, 3))
    np.testing.assert_array_equal(batch["label"], [1, 2])


def test_device_layer_identity_at_inference_and_host_seeds_in_training():
    images = np.stack([smooth((20, 20, 3), s) for s in range(3)]).astype(np.float32) / 255
    layer = augment.DeviceAugmentation(FULL, seed=7)
    np.testing.assert_array_equal(layer(images, training=False), images)
    first, second = layer(images, training=True).numpy(), layer(images, training=True).numpy()
    # Call k uses the stateless seed [seed, k]: the host functions, reproducibly.
    np.testing.assert_allclose(first, augment.random_augment(images, tf.constant([7, 0]), FULL),
                               atol=1e-6)
    np.testing.assert_allclose(second, augment.random_augment(images, tf.constant([7, 1]), FULL),
                               atol=1e-6)
    assert not np.allclose(first, second)


def test_device_layer_in_a_model_and_round_trip():
    inputs = keras.Input((16, 16, 3))
    model = keras.Model(inputs, augment.DeviceAugmentation(
        dataclasses.replace(FULL, zoom=0.1), seed=3)(inputs))
    images = np.random.default_rng(0).random((2, 16, 16, 3)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(images, verbose=0), images)
    clone = keras.Model.from_config(model.get_config())
    layer = clone.layers[-1]
    assert layer.config == dataclasses.replace(FULL, zoom=0.1) and layer.seed == 3


# --- Random crops at a fixed pixel scale (`crop_probability`) ---------------------------


def ramp(height: int, width: int) -> np.ndarray:
    """Channel 0 = row, channel 1 = column: a pixel's value says where it was."""
    rows, cols = np.mgrid[:height, :width]
    return np.stack([rows, cols, np.zeros_like(rows)], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("crop_scale, step", [(0.0, 1), (2.0, 2)])
def test_crops_keep_the_pixel_scale(crop_scale, step):
    # Stored scale: one output pixel per painting pixel (whole-pixel origin: exact copies).
    # crop_scale 2 at 16 px: the 64-px shorter side is seen as 32 px, 2 pixels a pixel.
    crops = dataclasses.replace(OFF, crop_probability=1.0)
    images = [ramp(64, 90), ramp(100, 64)]
    out = augment.random_resized_augment(*flat(images), SEED, image_size=16, config=crops,
                                         crop_scale=crop_scale).numpy() * 255
    for image, crop in zip(images, out):
        rows, cols = crop[..., 0], crop[..., 1]
        np.testing.assert_allclose(np.diff(rows, axis=0), step, atol=1e-3)
        np.testing.assert_allclose(np.diff(cols, axis=1), step, atol=1e-3)
        np.testing.assert_allclose(np.diff(rows, axis=1), 0, atol=1e-3)
        # Inside the painting: no reflection at its edges.
        assert rows.min() >= 0 and rows.max() <= image.shape[0] - 1
        assert cols.min() >= 0 and cols.max() <= image.shape[1] - 1
        if step == 1:
            np.testing.assert_allclose(crop, np.round(crop), atol=1e-4)  # Whole pixels.
    # Random positions: the two crops start at different places of their paintings.
    assert (out[0, 0, 0, :2] != out[1, 0, 0, :2]).any()


def test_crops_off_or_never_drawn_leave_the_warp_unchanged():
    images = [noise((40, 56, 3), 1), noise((50, 30, 3), 2)]
    today = fused(images, FULL, size=24)
    assert FULL.crop_probability == 0.0 and augment.AugmentConfig().crop_probability == 0.0
    # Crops drawn (with probability ~0) from their own seeds: every other draw is as before.
    never = fused(images, dataclasses.replace(FULL, crop_probability=1e-9), size=24)
    np.testing.assert_array_equal(never, today)
    always = fused(images, dataclasses.replace(FULL, crop_probability=1.0), size=24)
    assert np.abs(always - today).mean() > 0.05


def test_crops_decode_larger_paintings_and_need_the_host_path():
    from pipeline import input_pipeline
    assert input_pipeline.default_max_side(160) == 360
    stored = input_pipeline.default_max_side(160, crop_scale=0.0)
    assert stored == input_pipeline.STORED_CROP_MAX_SIDE
    assert input_pipeline.default_max_side(160, crop_scale=2.0) == math.ceil(2 * 2.25 * 320)
    assert dataclasses.replace(OFF, crop_probability=0.5).has_geometry
    with pytest.raises(augment.settings.ConfigError, match="crop_probability.*host"):
        augment.AugmentConfig(on="device", crop_probability=0.5)
