"""Batched random augmentation: one affine resampling per image, then contrast.

The original recipe chained five Keras layers (flip, rotation, zoom,
translation, contrast), each resampling the whole image. Here flip, rotation,
zoom and translation -- and, on the host path, the resize to the training size
as well -- are composed into one affine map per image and applied as a single
bilinear resampling, with the Keras layers' parameter ranges and their
reflective fill ("d c b a | a b c d | d c b a"); contrast is applied in the
same pass over the output.

Images travel as one flat run of pixels each ([N, C] plus per-image offsets
and sizes), so a batch can hold decoded paintings of different sizes with no
padding; every sample reflects inside its own painting. The resampling is
written as gathers and compiled with XLA: on CPU much cheaper than
`ImageProjectiveTransformV3` (docs/pipeline.md), which also could not reflect at
each image's own bounds.

Two paths share this code: `random_resized_augment` (host: decoded paintings
in, training squares out) and `random_augment` / `DeviceAugmentation`
(device: already-resized squares, inside the training step).

Transforms are 8-vectors as in `ImageProjectiveTransformV3` (affine only: the
last two entries are zero) and map *output* pixel indices (x, y) to *input*
pixel indices: x_in = a0 x + a1 y + a2, y_in = b0 x + b1 y + b2.
"""

import dataclasses
import math

import keras
import tensorflow as tf

from pipeline import ops
from pipeline import settings
from pipeline import views as views_lib
from pipeline.settings import setting

Seed = tf.Tensor  # Shape [2], int32 or int64: a stateless RNG seed.
# Contrast's pivot is the mean over at least this many rows and columns.
PIVOT_GRID = 64


# Where augmentation runs: in tf.data on the CPU, or inside the training step.
PLACES = ("host", "device")
ROTATION_MAX = 0.5  # Half a turn either way: every orientation.


@dataclasses.dataclass(frozen=True)
class AugmentConfig(settings.Section):
    """Training augmentation. Ranges as the Keras `Random*` layers count them; 0 or
    False switches a transform off.

    Defaults keep a painting's composition (a mirrored painting is still by its
    painter; upside-down skies and quarter turns are not paintings any more).
    """

    enabled: bool = setting(True, "Random augmentation of training batches.", flag="augment")
    on: str = setting("host", "Where augmentation runs: host (tf.data, CPU) or device (inside "
                      "the training step, for accelerators).", choices=PLACES, flag="augment_on")
    flip_horizontal: bool = setting(True, "Random horizontal flips.")
    flip_vertical: bool = setting(False, "Random vertical flips.")
    rotation: float = setting(0.03, "Rotation range as a fraction of a full turn (0.25: +-90 deg).",
                              bounds=(0.0, ROTATION_MAX))
    zoom: float = setting(0.2, "Zoom range: the sampled region is scaled in [1-zoom, 1+zoom].",
                          bounds=(0.0, 1.0))
    translate_height: float = setting(0.1, "Vertical shift range, fraction of the height.",
                                      bounds=(0.0, 1.0))
    translate_width: float = setting(0.1, "Horizontal shift range, fraction of the width.",
                                     bounds=(0.0, 1.0))
    contrast: float = setting(0.2, "Contrast factor range [1-c, 1+c].", bounds=(0.0, 1.0))
    crop_probability: float = setting(
        0.0, "Host: probability that a training painting is seen as a random image_size crop "
        "at --crop_scale (its stored pixels by default) instead of whole; the other "
        "transforms apply to the crop.", bounds=(0.0, 1.0))
    mixup: float = setting(0.0, "Mixup: each training image blended with another of its batch, "
                           "labels in proportion; Beta(a, a) shares (0: off; 0.2 is usual).",
                           bounds=(0.0, 10.0))
    cutmix: float = setting(0.0, "CutMix: a box of another image of the batch pasted in, labels "
                            "by area; Beta(a, a) shares (0: off; 1.0 is usual). With --mixup, "
                            "each image takes one of the two.", bounds=(0.0, 10.0))

    def __post_init__(self):
        super().__post_init__()
        settings.check_that(not (self.crop_probability and self.on == "device"),
                            "--crop_probability needs --augment_on=host (the device path "
                            "sees paintings already resized)")

    @property
    def has_geometry(self) -> bool:
        """Whether a warp is needed: flips, rotation, zoom, translation or crops on."""
        return self.enabled and bool(self.flip_horizontal or self.flip_vertical or self.rotation
                                     or self.zoom or self.translate_height or self.translate_width
                                     or self.crop_probability)

    @property
    def mixes(self) -> bool:
        """Whether training batches are mixed (`pipeline.mixing`): labels must be one-hot."""
        return self.enabled and bool(self.mixup or self.cutmix)

    @property
    def active(self) -> bool:
        """Whether this augments anything at all."""
        return self.has_geometry or (self.enabled and self.contrast > 0)


NO_AUGMENTATION = AugmentConfig(enabled=False)


def _uniform(seed: Seed, batch: tf.Tensor, low: float, high: float) -> tf.Tensor:
    return tf.random.stateless_uniform([batch], seed, minval=low, maxval=high)


def _flip_sign(seed: Seed, batch: tf.Tensor, enabled: bool) -> tf.Tensor:
    """+1 or -1 per image (-1: mirrored), always +1 when disabled."""
    if not enabled:
        return tf.ones([batch])
    coin = tf.random.stateless_uniform([batch], seed) < 0.5
    return tf.where(coin, -1.0, 1.0)


def random_transforms(
    seed: Seed, batch: tf.Tensor, height: int, width: int, config: AugmentConfig
) -> tf.Tensor:
    """[batch, 8] random transforms of a `height` x `width` image onto itself.

    Coordinates are pixel indices centred on the image centre, so every
    transform below is a 2x2 linear map plus the centre offset:
    input = centre + F R Z (output - centre - shift).
    """
    seeds = tf.random.experimental.stateless_split(seed, 6)
    flip_x = _flip_sign(seeds[0], batch, config.flip_horizontal)
    flip_y = _flip_sign(seeds[1], batch, config.flip_vertical)
    angle = _uniform(seeds[2], batch, -1.0, 1.0) * (config.rotation * 2.0 * math.pi)
    scale = _uniform(seeds[3], batch, 1.0 - config.zoom, 1.0 + config.zoom)
    shift_x = _uniform(seeds[4], batch, -1.0, 1.0) * (config.translate_width * width)
    shift_y = _uniform(seeds[5], batch, -1.0, 1.0) * (config.translate_height * height)
    cos, sin = tf.cos(angle) * scale, tf.sin(angle) * scale
    # Linear part L = F @ R(angle) @ (scale * I), F = diag(flip_x, flip_y).
    a0, a1 = flip_x * cos, -flip_x * sin
    b0, b1 = flip_y * sin, flip_y * cos
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    # input = c + L (output - c - shift)  =>  offset = c - L (c + shift).
    a2 = cx - (a0 * (cx + shift_x) + a1 * (cy + shift_y))
    b2 = cy - (b0 * (cx + shift_x) + b1 * (cy + shift_y))
    zeros = tf.zeros([batch])
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def resize_transforms(sizes: tf.Tensor, image_size: int, *, mode: str = "stretch") -> tf.Tensor:
    """[B, 8] transforms from an `image_size` square to images of `sizes` [B, 2] (h, w).

    Pixel centres as `tf.image.resize` places them (half-pixel), so with no
    other transform this is the plain bilinear resize; `crop` views the
    centred square as `ops.resize` crops it (integer offsets).
    """
    if mode not in ops.RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {ops.RESIZE_MODES}, got {mode!r}")
    sizes = tf.cast(sizes, tf.float32)
    height, width = sizes[:, 0], sizes[:, 1]
    if mode == "stretch":
        scale_y, scale_x = height / image_size, width / image_size
        offset_y = offset_x = tf.zeros_like(height)
    else:
        side = tf.minimum(height, width)
        scale_y = scale_x = side / image_size
        offset_y, offset_x = tf.floor((height - side) / 2), tf.floor((width - side) / 2)
    zeros = tf.zeros_like(height)
    return tf.stack([
        scale_x, zeros, (scale_x - 1.0) / 2.0 + offset_x,
        zeros, scale_y, (scale_y - 1.0) / 2.0 + offset_y,
        zeros, zeros,
    ], axis=1)


def crop_transforms(seed: Seed, sizes: tf.Tensor, image_size: int, *,
                    crop_scale: float = 0.0) -> tf.Tensor:
    """[B, 8] transforms from an `image_size` square to a random square of images of `sizes`
    [B, 2], at a fixed pixel scale: each output pixel covers one input pixel (`crop_scale`
    0: the decoded pixels), or the painting is seen as if scaled so its shorter side is
    `views.crop_side` (as evaluation's crops, `pipeline.views`). A painting whose shorter
    side is below `image_size` is seen whole along it. The crop's origin is in whole input
    pixels, uniform over the positions that keep the crop inside the painting.
    """
    sizes = tf.cast(sizes, tf.float32)
    shorter = tf.reduce_min(sizes, axis=1)
    if crop_scale:
        target = tf.fill(tf.shape(shorter), float(views_lib.crop_side(image_size, crop_scale)))
    else:
        target = tf.maximum(shorter, float(image_size))
    scale = shorter / target  # Input pixels per output pixel.
    room = sizes - (scale * image_size)[:, None]  # [B, 2]: (y, x) ranges of the origin.
    origin = tf.floor(tf.random.stateless_uniform(tf.shape(sizes), seed) * room)
    zeros = tf.zeros_like(scale)
    return tf.stack([
        scale, zeros, (scale - 1.0) / 2.0 + origin[:, 1],
        zeros, scale, (scale - 1.0) / 2.0 + origin[:, 0],
        zeros, zeros,
    ], axis=1)


def choose_crops(seed: Seed, sizes: tf.Tensor, whole: tf.Tensor, *, image_size: int,
                 config: AugmentConfig, crop_scale: float) -> tf.Tensor:
    """`whole` [B, 8] (whole-painting transforms) with each row replaced, with probability
    `config.crop_probability`, by a random crop's (`crop_transforms`)."""
    # Its own seeds, folded from the batch's: the other draws stay as without crops.
    coin_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(
        tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), 1), 2))
    coin = tf.random.stateless_uniform([tf.shape(sizes)[0]], coin_seed) < config.crop_probability
    crops = crop_transforms(crop_seed, sizes, image_size, crop_scale=crop_scale)
    return tf.where(coin[:, None], crops, whole)


def compose(outer: tf.Tensor, inner: tf.Tensor) -> tf.Tensor:
    """The affine transform that applies `inner`, then `outer` (output -> input)."""
    a0, a1, a2, b0, b1, b2 = tf.unstack(outer[:, :6], axis=1)
    c0, c1, c2, d0, d1, d2 = tf.unstack(inner[:, :6], axis=1)
    zeros = tf.zeros_like(a0)
    return tf.stack([
        a0 * c0 + a1 * d0, a0 * c1 + a1 * d1, a0 * c2 + a1 * d2 + a2,
        b0 * c0 + b1 * d0, b0 * c1 + b1 * d1, b0 * c2 + b1 * d2 + b2,
        zeros, zeros,
    ], axis=1)


def _round_to_int(values: tf.Tensor) -> tf.Tensor:
    """float32 in [0, 2^22] -> int32, rounded half to even (as `tf.round`).

    Adding 2^23 leaves the rounded integer in the low mantissa bits: an add
    and a subtract, where XLA's saturating float -> int conversion (and the
    rounding) take six vector ops: worth >= 5% of the whole augmented
    pipeline's throughput (`benchmarks/pipeline_bench.py`, stage d).
    Where XLA contracts a product into the add (an FMA) the exact product is
    rounded: at most one step off `tf.round` of the rounded product.
    """
    return tf.bitcast(values + 2.0**23, tf.int32) - 0x4B000000  # The bits of 2^23.


def _reflect(coords: tf.Tensor, size: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Reflects pixel coordinates into [0, size - 1]; returns the left tap and its weight.

    A triangle wave of period 2 * size mirrors about the outer pixel edges
    ("d c b a | a b c d"), as the Keras layers' `fill_mode="reflect"`. Beyond
    the outermost pixel centre the image is flat, so clamping there is exact
    and the right tap (left + 1) always stays inside the image.
    """
    inverse_period = 0.5 / size  # A multiply per pixel instead of a divide.
    phase = (coords + 0.5) * inverse_period
    phase -= tf.floor(phase)  # [0, 1): the position within one period.
    coords = tf.clip_by_value(size - tf.abs(size - 2.0 * size * phase) - 0.5, 0.0, size - 1.0)
    left = tf.minimum(tf.floor(coords), tf.maximum(size - 2.0, 0.0))
    return _round_to_int(left), coords - left


def sample_points(
    offsets: tf.Tensor, sizes: tf.Tensor, transforms: tf.Tensor, output_size: tuple[int, int]
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Where each output pixel samples: (flat index of its top-left tap, x weight, y weight).

    Image b's pixels lie row-major from `offsets[b]` in a flat pixel buffer,
    `sizes[b]` = (h, w); every sample reflects inside that image, so nothing
    outside it is read.
    """
    out_h, out_w = output_size
    heights, widths = sizes[:, 0], sizes[:, 1]
    xs, ys = tf.range(out_w, dtype=tf.float32), tf.range(out_h, dtype=tf.float32)
    t = transforms
    # Outer sums of per-row and per-column terms: one add per pixel and axis.
    x_in = (t[:, 0:1] * xs)[:, None, :] + (t[:, 1:2] * ys + t[:, 2:3])[:, :, None]
    y_in = (t[:, 3:4] * xs)[:, None, :] + (t[:, 4:5] * ys + t[:, 5:6])[:, :, None]
    left, weight_x = _reflect(x_in, tf.cast(widths, tf.float32)[:, None, None])
    top, weight_y = _reflect(y_in, tf.cast(heights, tf.float32)[:, None, None])
    index = offsets[:, None, None] + top * widths[:, None, None] + left
    return index, weight_x, weight_y


def blend(
    pixels: tf.Tensor, widths: tf.Tensor, index: tf.Tensor, weight_x: tf.Tensor,
    weight_y: tf.Tensor,
) -> tf.Tensor:
    """Bilinear mix of the 2 x 2 pixels at `index` in flat `pixels` [N, C] -> [B, h, w, C] f32."""
    below = widths[:, None, None]  # One row down in image b.

    # One gather of C-channel rows per tap: under XLA on CPU this beat
    # gather_nd, a 2x2 window gather, packed RGBX words, and 64-bit words of
    # the byte buffer shared by a tap pair's channels.
    def tap(offset):
        return tf.cast(tf.gather(pixels, index + offset), tf.float32)

    weight_x, weight_y = weight_x[..., None], weight_y[..., None]
    upper = tap(0) + (tap(1) - tap(0)) * weight_x
    lower = tap(below) + (tap(below + 1) - tap(below)) * weight_x
    return upper + (lower - upper) * weight_y


def contrast_pivot_stride(image_size: int) -> int:
    """Every k-th row and column of the warped image gives contrast its pivot (mean).

    At least a 64 x 64 grid: exact up to 127 px; a 75 x 75 grid at 300 px.
    """
    return max(1, image_size // PIVOT_GRID)


def _render(pixels, widths, points, factor):
    """The warped images as float32 in [0, 1], contrast `factor` [B] applied, in one pass.

    `points`: (index, weight_x, weight_y) as `sample_points` returns them.

    Contrast (skipped when `factor` is None) pivots on each image's
    per-channel mean over a regular grid of its warped pixels
    (`contrast_pivot_stride`), sampled first: the exact mean would need the
    whole warp written and read back before contrast could start, a third
    pass over the batch that costs far more than the grid (a third of the
    stage's throughput, `benchmarks/pipeline_bench.py`). On 128 real
    paintings at 300 px the grid's mean was off the full mean by 0.1% of the
    range on average, 0.6% at most; contrast scales that by |factor - 1| <= 0.2.
    """
    scale = 255.0 if pixels.dtype == tf.uint8 else 1.0  # ops.rescale's, for uint8.
    index, weight_x, weight_y = points
    if factor is None:
        return blend(pixels, widths, index, weight_x, weight_y) / scale
    k = contrast_pivot_stride(max(index.shape[1], index.shape[2]))
    grid = blend(pixels, widths, index[:, ::k, ::k], weight_x[:, ::k, ::k],
                 weight_y[:, ::k, ::k])
    pivot = tf.reduce_mean(grid, axis=[1, 2], keepdims=True) / scale
    factor = factor[:, None, None, None]
    # (x / scale - pivot) * factor + pivot, as one multiply-add per value.
    images = blend(pixels, widths, index, weight_x, weight_y) * (factor / scale)
    return tf.clip_by_value(images + pivot * (1.0 - factor), 0.0, 1.0)


# Two XLA clusters, each one fused loop over the output. Compiled as one, XLA
# on CPU fuses the sample-point arithmetic into every gather of every channel,
# several times slower; materialising the [B, S, S] sample points in between
# is far cheaper.
_points_jit = tf.function(sample_points, jit_compile=True)
_render_jit = tf.function(_render, jit_compile=True)


def _flatten(images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Dense [B, H, W, C] -> (flat pixels [B*H*W, C], offsets [B], sizes [B, 2])."""
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    offsets = tf.range(batch) * height * width
    sizes = tf.tile([[height, width]], [batch, 1])
    return tf.reshape(images, [-1, shape[3]]), offsets, sizes


def random_contrast(images: tf.Tensor, seed: Seed, config: AugmentConfig) -> tf.Tensor:
    """Scales each image's deviation from its per-channel mean, as RandomContrast."""
    if not (config.enabled and config.contrast):
        return images
    batch = tf.shape(images)[0]
    factor = _uniform(seed, batch, 1.0 - config.contrast, 1.0 + config.contrast)
    mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
    adjusted = (images - mean) * factor[:, None, None, None] + mean
    return tf.clip_by_value(adjusted, 0.0, 1.0)


_contrast_jit = tf.function(random_contrast, jit_compile=True)


def _augment(
    pixels: tf.Tensor, offsets: tf.Tensor, sizes: tf.Tensor, seed: Seed,
    config: AugmentConfig, output_size: tuple[int, int], base: tf.Tensor | None,
) -> tf.Tensor:
    """The shared body of both paths: one warp (if any geometry or base transform) and contrast."""
    # int64 whatever came in: stateless_split draws differently for int32 seeds.
    seed = tf.cast(seed, tf.int64)
    warp_seed, contrast_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    offsets, sizes = tf.cast(offsets, tf.int32), tf.cast(sizes, tf.int32)
    batch = tf.shape(sizes)[0]
    if config.has_geometry or base is not None:
        # Transforms and contrast factors ([B] values) are drawn here, outside
        # XLA, which would fuse their sines and random bits into the pixel loop.
        transforms = base
        if config.has_geometry:
            geometry = random_transforms(warp_seed, batch, *output_size, config)
            transforms = geometry if base is None else compose(base, geometry)
        factor = None
        if config.enabled and config.contrast:
            factor = _uniform(contrast_seed, batch, 1.0 - config.contrast, 1.0 + config.contrast)
        points = _points_jit(offsets, sizes, transforms, output_size)
        return _render_jit(pixels, sizes[:, 1], points, factor)
    # Contrast only: the images are already output_size; the pivot is exact.
    images = tf.reshape(pixels, [-1, *output_size, pixels.shape[-1]])
    return _contrast_jit(ops.rescale(images) if images.dtype == tf.uint8 else images,
                         contrast_seed, config)


def random_augment(
    images: tf.Tensor, seed: Seed, config: AugmentConfig = AugmentConfig()
) -> tf.Tensor:
    """float32 [B, H, W, 3] in [0, 1] -> the same, randomly warped and contrasted.

    The device path (already-resized batches). `seed` is a shape-[2] integer
    tensor: the same seed gives the same output.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    height, width = images.shape[1], images.shape[2]
    if height is None or width is None:
        raise ValueError(f"random_augment needs a static image size, got {images.shape}")
    if not config.active:
        return images
    return _augment(*_flatten(images), seed, config, (height, width), None)


def random_resized_augment(
    pixels: tf.Tensor, offsets: tf.Tensor, sizes: tf.Tensor, seed: Seed, *, image_size: int,
    config: AugmentConfig = AugmentConfig(), resize_mode: str = "stretch",
    crop_scale: float = 0.0,
) -> tf.Tensor:
    """Decoded uint8 paintings of any sizes -> float32 [B, S, S, 3] in [0, 1], augmented.

    The host path. Painting b's pixels lie row-major in `pixels` [N, 3] from
    `offsets[b]`, `sizes[b]` = (h, w) (`ops.flat_pixels` lays them out; N
    may include padding: XLA compiles once per N, so keep N to a few
    values, e.g. `ops.padded_length`). The resize to `image_size` (stretch
    or crop, as `ops.resize`) and the random geometry are one transform, so
    each painting is resampled once. Unlike `ops.resize` this resize is not
    antialiased: `create_split` first shrinks (antialiased) any painting
    larger than `max_side`, which bounds how far the warp itself
    downsamples. In crop mode the warp may sample real pixels beyond the
    centred square where evaluation would repeat its edge. With `seed` fixed
    and S x S paintings in stretch mode it equals `random_augment` of the
    same pixels.

    With `config.crop_probability`, that many paintings (at random) are
    seen as a random `image_size` crop at `crop_scale` instead
    (`crop_transforms`), before the same random geometry.
    """
    base = resize_transforms(sizes, image_size, mode=resize_mode)
    if config.enabled and config.crop_probability:
        base = choose_crops(seed, sizes, base, image_size=image_size, config=config,
                            crop_scale=crop_scale)
    return _augment(pixels, offsets, sizes, seed, config, (image_size, image_size), base)


def batch_seeds(seed: int) -> tf.data.Dataset:
    """An endless dataset of shape-[2] stateless seeds, fresh for every epoch.

    Reproducible: the same `seed` gives the same sequence in every run.
    """
    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)


@keras.saving.register_keras_serializable(package="artist_id")
class DeviceAugmentation(keras.layers.Layer):
    """`random_augment` as a layer, to run inside the training step (e.g. on a GPU).

    Prepend it to the model for `fit`; leave it out of the exported model. It
    augments only when `training` is true; otherwise it returns its input
    unchanged. Call k uses the stateless seed [seed, k] (a Keras
    `SeedGenerator`; weight files do not hold its state, so a resumed run
    starts the sequence again at [seed, 0] and repeats the first epochs'
    draws). Inputs are float32 [B, S, S, 3] in [0, 1]:
    `create_split` batches for an `AugmentConfig(on="device")`, already resized, so on
    this path the warp resamples the resized square (the fused resize is a
    host-path feature).
    """

    def __init__(self, config: AugmentConfig | dict = AugmentConfig(), seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.config = AugmentConfig(**config) if isinstance(config, dict) else config
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        if not training or not self.config.active:
            return images
        return random_augment(images, self.seed_generator.next(), self.config)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        config = dataclasses.asdict(self.config)
        return {**super().get_config(), "config": config, "seed": self.seed}
