"""Batched random augmentation: one affine warp per image, then contrast.

The original recipe chained five Keras layers (flip, rotation, zoom,
translation, contrast). Here flip, rotation, zoom and translation are composed
into a single 3x3 matrix per image and applied as one resampling, with the
same parameter ranges and the same reflective fill as the Keras layers.
"""

import dataclasses
import math

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Ranges as the Keras `Random*` layers count them; 0 or False switches off."""

    flip_horizontal: bool = True
    flip_vertical: bool = True
    rotation: float = 0.25  # Fraction of a full turn: 0.25 -> uniform in [-90, 90] degrees.
    zoom: float = 0.2  # Scale of the sampled region in [1 - zoom, 1 + zoom].
    translate_height: float = 0.3  # Shift in [-0.3, 0.3] x image height.
    translate_width: float = 0.2  # Shift in [-0.2, 0.2] x image width.
    contrast: float = 0.2  # Contrast factor in [1 - contrast, 1 + contrast].

    def __post_init__(self):
        for name in ("rotation", "zoom", "translate_height", "translate_width", "contrast"):
            value = getattr(self, name)
            if not 0.0 <= value <= (1.0 if name != "rotation" else 0.5):
                raise ValueError(f"augmentation {name}={value} is out of range")


NO_AUGMENTATION = AugmentConfig(
    flip_horizontal=False, flip_vertical=False, rotation=0.0, zoom=0.0,
    translate_height=0.0, translate_width=0.0, contrast=0.0,
)


def _uniform(seed: tf.Tensor, batch: tf.Tensor, low: float, high: float) -> tf.Tensor:
    return tf.random.stateless_uniform([batch], seed, minval=low, maxval=high)


def _flip_sign(seed: tf.Tensor, batch: tf.Tensor, enabled: bool) -> tf.Tensor:
    """+1 or -1 per image (-1: mirrored), always +1 when disabled."""
    if not enabled:
        return tf.ones([batch])
    coin = tf.random.stateless_uniform([batch], seed) < 0.5
    return tf.where(coin, -1.0, 1.0)


def random_transforms(
    seed: tf.Tensor, batch: tf.Tensor, height: int, width: int, config: AugmentConfig
) -> tf.Tensor:
    """[batch, 8] projective transforms mapping output pixels to input pixels.

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


def warp(images: tf.Tensor, transforms: tf.Tensor) -> tf.Tensor:
    """Resamples each image through its transform, filling by reflection."""
    shape = tf.shape(images)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=shape[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )


def random_contrast(
    images: tf.Tensor, seed: tf.Tensor, config: AugmentConfig
) -> tf.Tensor:
    """Scales each image's deviation from its per-channel mean, as RandomContrast."""
    if config.contrast == 0.0:
        return images
    batch = tf.shape(images)[0]
    factor = _uniform(seed, batch, 1.0 - config.contrast, 1.0 + config.contrast)
    mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
    adjusted = (images - mean) * factor[:, None, None, None] + mean
    return tf.clip_by_value(adjusted, 0.0, 1.0)


def _has_geometry(config: AugmentConfig) -> bool:
    return dataclasses.replace(config, contrast=0.0) != NO_AUGMENTATION


def random_augment(
    images: tf.Tensor, seed: tf.Tensor, config: AugmentConfig = AugmentConfig()
) -> tf.Tensor:
    """float32 [B, H, W, 3] in [0, 1] -> the same, randomly warped and contrasted.

    `seed` is a shape-[2] integer tensor: the same seed gives the same output.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    batch = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    warp_seed, contrast_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    if _has_geometry(config):
        transforms = random_transforms(warp_seed, batch, height, width, config)
        images = warp(images, transforms)
    return random_contrast(images, contrast_seed, config)
