"""Multi-crop inference, pixel side: a painting -> it whole, fixed crops of it (+ mirrors).

Evaluation (`create_split(training=False)`) and every serving signature make
their model inputs here, so a served file and the same file in a split get
the same views; the model side (running the model on each view, averaging
probabilities) is `serving.multiview`. With no crops and no flips a painting
is one view, exactly `ops.resize` of it as before.

View order: the whole painting (`ops.resize`, as without crops), then the
crops in `CROP_POSITIONS` order, then the mirror images of all of these in
the same order. With crops, a JPEG is decoded at the scale the crops need
(full size for stored pixels), and the whole view is resized from that (one
decode, not two): it differs from the one-view decode (at 1/2-1/8 scale) by
a few 1/255 on average (2.9/255 on sample_paintings/tiny at 32 px).

Multi-scale (`scale` > 1): the whole painting (and its mirror, with flips) is
made at `scale` x `image_size` (`Views.size`); the model side runs the model on
it and on it shrunk to `image_size` (`serving.multiview.passes`), so one
decoded tensor carries both sizes. Not combined with crops.
"""

import dataclasses
import math

import tensorflow as tf

from pipeline import ops

# Where the crops lie, in order: the first `crops` of these are taken.
CROP_POSITIONS = ("centre", "top_left", "top_right", "bottom_left", "bottom_right")
MAX_CROPS = len(CROP_POSITIONS)


@dataclasses.dataclass(frozen=True)
class Views:
    """Which views of a painting the model sees at inference (`DataConfig.views` makes one).

    `crop_scale` 0: crops of the painting's own (stored or sent) pixels;
    otherwise of the painting scaled so its shorter side is
    `crop_scale` x `image_size`. Either way a painting whose shorter side is
    below `image_size` is first enlarged to it.
    """

    image_size: int
    resize_mode: str = "stretch"
    crops: int = 0
    crop_scale: float = 0.0
    flips: bool = False
    scale: float = 0.0  # Multi-scale: the whole painting also at scale x image_size; 0: off.

    def __post_init__(self):
        # The messages name the flags too: `DataConfig` makes its views here, and these
        # checks are its checks (as ConfigError).
        if not 0 <= self.crops <= MAX_CROPS:
            raise ValueError(f"crops (--eval_crops) must be in [0, {MAX_CROPS}], got {self.crops}")
        if self.crop_scale and self.crop_scale < 1.0:
            raise ValueError(f"--crop_scale={self.crop_scale}: 0 (stored pixels) or >= 1")
        if self.scale and scaled_side(self.image_size, self.scale) <= self.image_size:
            raise ValueError(f"--eval_scale={self.scale}: 0 (one size) or above 1 (a view "
                             f"larger than {self.image_size} px)")
        if self.scale and self.crops:
            raise ValueError(f"--eval_scale={self.scale} and --eval_crops cannot be combined: "
                             "choose multi-scale or crops (--eval_scale=0, one size, for crops)")

    @property
    def size(self) -> int:
        """The side of the views made here: `image_size`, or the larger one of multi-scale."""
        return scaled_side(self.image_size, self.scale) if self.scale else self.image_size

    @property
    def pixel_count(self) -> int:
        """Views per painting in the tensor made here (`views`)."""
        return (1 + self.crops) * (2 if self.flips else 1)

    @property
    def count(self) -> int:
        """The model's passes per painting: the views, each at both sizes with multi-scale."""
        return self.pixel_count * (2 if self.scale else 1)

    @property
    def decode_size(self) -> int | None:
        """The side a JPEG is decoded for (`ops.jpeg_ratio_index`); None: at full size."""
        if not self.crops:
            return self.size
        if not self.crop_scale:
            return None
        return crop_side(self.image_size, self.crop_scale)

    def describe(self) -> dict:
        """What the SavedModel's metadata says about them."""
        side = crop_side(self.image_size, self.crop_scale) if self.crop_scale else None
        return {"count": self.count, "crops": self.crops,
                "positions": list(CROP_POSITIONS[:self.crops]),
                "crop_scale": self.crop_scale, "flips": self.flips,
                "sizes": [self.image_size, self.size] if self.scale else [self.image_size],
                "scale": (f"shorter side scaled to {side} px" if side else
                          "the painting's own pixels") if self.crops else None,
                "decode": ("full size" if self.decode_size is None else
                           f"as for {self.decode_size} px (ops.jpeg_ratio_index)"),
                "combination": "log of the mean over views of softmax(logits); the "
                               "temperature divides that" if self.count > 1 else None}


def scaled_side(image_size: int, scale: float) -> int:
    """The side of multi-scale's larger whole-painting view."""
    return round(scale * image_size)


def crop_side(image_size: int, crop_scale: float) -> int:
    """The shorter side, in pixels, a painting is scaled to before crops at `crop_scale` (> 0)."""
    return max(image_size, math.ceil(crop_scale * image_size))


def scale_for_crops(image: tf.Tensor, image_size: int, crop_scale: float) -> tf.Tensor:
    """uint8 [h, w, 3] -> the same, aspect kept, shorter side `crop_side` (0: unchanged, unless
    below `image_size`). Antialiased where it shrinks (`ops.resample`)."""
    shape = tf.shape(image)[:2]
    shorter = tf.reduce_min(shape)
    if crop_scale:
        target = tf.constant(crop_side(image_size, crop_scale), tf.int32)
    else:
        target = tf.maximum(shorter, image_size)
    factor = tf.cast(target, tf.float32) / tf.cast(shorter, tf.float32)
    size = tf.maximum(tf.cast(tf.round(tf.cast(shape, tf.float32) * factor), tf.int32), target)
    return tf.cond(tf.reduce_all(tf.equal(size, shape)), lambda: image,
                   lambda: ops._to_uint8(ops.resample(image, size)))


def repeats_whole(height: int, width: int, spec: Views) -> bool:
    """Whether every crop of a painting this size is its whole view: at the stored scale
    (`crop_scale` 0), a square no larger than `image_size` (enlarged to it, then cropped
    to all of it)."""
    return bool(spec.crops) and not spec.crop_scale and height == width <= spec.image_size


def crop_grid(image: tf.Tensor, image_size: int, crops: int) -> tf.Tensor:
    """uint8 [h, w, 3], h and w >= image_size -> the first `crops` squares of `CROP_POSITIONS`,
    uint8 [crops, image_size, image_size, 3]; offsets in whole pixels (centre: rounded down)."""
    shape = tf.shape(image)
    bottom, right = shape[0] - image_size, shape[1] - image_size
    corners = {"centre": (bottom // 2, right // 2), "top_left": (0, 0), "top_right": (0, right),
               "bottom_left": (bottom, 0), "bottom_right": (bottom, right)}
    squares = [tf.slice(image, tf.stack([y, x, 0]), [image_size, image_size, 3])
               for y, x in (corners[name] for name in CROP_POSITIONS[:crops])]
    return tf.stack(squares)


def views(image: tf.Tensor, spec: Views) -> tf.Tensor:
    """uint8 [h, w, 3] -> uint8 [spec.pixel_count, spec.size, spec.size, 3], in this module's
    view order."""
    parts = [ops.resize(image, spec.size, mode=spec.resize_mode)[None]]
    if spec.crops:
        scaled = scale_for_crops(image, spec.image_size, spec.crop_scale)
        parts.append(crop_grid(scaled, spec.image_size, spec.crops))
    stacked = tf.concat(parts, axis=0) if len(parts) > 1 else parts[0]
    if spec.flips:
        stacked = tf.concat([stacked, tf.reverse(stacked, axis=[2])], axis=0)
    return tf.ensure_shape(stacked, [spec.pixel_count, spec.size, spec.size, 3])


def model_input(image: tf.Tensor, spec: Views) -> tf.Tensor:
    """A decoded painting -> uint8 [S, S, 3] when it is one view (`ops.resize`, as always;
    S is `spec.size`), else uint8 [V, S, S, 3]."""
    if spec.pixel_count == 1:
        return ops.resize(image, spec.size, mode=spec.resize_mode)
    return views(image, spec)


def decode(encoded: tf.Tensor, spec: Views) -> tf.Tensor:
    """Encoded bytes -> `model_input`: evaluation's images (serving decodes a batch at once,
    choosing the same JPEG scale from the headers it has already read)."""
    size = spec.decode_size
    image = ops.decode_image(encoded) if size is None else ops.decode_for_size(encoded, size)
    return model_input(image, spec)
