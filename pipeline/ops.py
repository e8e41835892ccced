"""Pure preprocessing ops shared by training, evaluation and serving."""

import math

import tensorflow as tf

Features = dict[str, tf.Tensor]

# How an image of any aspect ratio becomes a square model input.
RESIZE_MODES = ("stretch", "crop")


# Scales libjpeg decodes at inside its inverse DCT (1/1, 1/2, 1/4, 1/8).
JPEG_RATIOS = (1, 2, 4, 8)
# A JPEG is decoded at reduced scale only while it stays this many times the
# target size, so the area resize after it still averages >= 2x2 pixels into
# each one: Pillow's default `reducing_gap` for thumbnails, "very close to
# fair resampling". Against a full decode, at 1000 x 900 -> 160 px: 0.5/255
# mean difference on (upscaled) devset paintings, 0.9/255 on procedural ones.
JPEG_REDUCING_GAP = 2


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP bytes -> uint8 [H, W, 3] (first frame of a GIF)."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    # decode_image leaves the static shape unknown; the rank is always 3 here.
    image.set_shape([None, None, 3])
    return image


def jpeg_ratio_index(shorter_side: tf.Tensor, image_size: int) -> tf.Tensor:
    """Index into `JPEG_RATIOS` of the largest ratio that keeps the shorter side
    >= JPEG_REDUCING_GAP x image_size (libjpeg's output has ceil(side / ratio)
    pixels). Elementwise, on int sides of any shape.
    """
    shorter = tf.cast(shorter_side, tf.int32)[..., None]
    ratios = tf.constant(JPEG_RATIOS[1:], tf.int32)
    fits = (shorter + ratios - 1) // ratios >= JPEG_REDUCING_GAP * image_size
    return tf.reduce_sum(tf.cast(fits, tf.int32), axis=-1)  # Fits at r fits at every smaller r.


def decode_at_ratio(encoded: tf.Tensor, ratio_index: tf.Tensor) -> tf.Tensor:
    """`decode_image` at 1/JPEG_RATIOS[ratio_index] scale; index 0 (full size) for any format."""
    image = tf.switch_case(ratio_index, [lambda: decode_image(encoded)] + [
        lambda r=r: tf.io.decode_jpeg(encoded, channels=3, ratio=r) for r in JPEG_RATIOS[1:]])
    image.set_shape([None, None, 3])
    return image


def decode_for_size(encoded: tf.Tensor, image_size: int) -> tf.Tensor:
    """Decodes for `resize(..., image_size)`: a large JPEG at 1/2, 1/4 or 1/8 scale.

    libjpeg's scaled inverse DCT is the cheapest antialiased shrink there is
    (it skips part of the decode; entropy decoding stays), and the area resize
    then averages 4-64x fewer pixels (docs/serving.md). The
    shorter side stays >=
    JPEG_REDUCING_GAP x image_size. Other formats, and JPEGs less than
    4 x image_size on their shorter side, decode at full size.
    """
    def jpeg_index():
        shape = tf.image.extract_jpeg_shape(encoded)
        return jpeg_ratio_index(tf.minimum(shape[0], shape[1]), image_size)

    index = tf.cond(tf.io.is_jpeg(encoded), jpeg_index, lambda: tf.constant(0, tf.int32))
    return decode_at_ratio(encoded, index)


def _to_uint8(image: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)


def resample(image: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """uint8 [H, W, 3] -> float32 [size[0], size[1], 3], antialiased where it shrinks.

    Each axis that shrinks is box-filtered (`area`: every output pixel is the
    exact area-weighted mean of the input pixels it covers); an axis that
    grows is interpolated bilinearly. Cheaper on CPU than
    `tf.image.resize(..., antialias=True)` (a wider triangle filter), and on
    real paintings the two differ by about 1/255 on average at 224 -> 160 or
    96 px: the same brushwork survives, the CPU cost of serving and
    evaluation drops.
    """
    size = tf.convert_to_tensor(size, tf.int32)
    shape = tf.shape(image)[:2]
    shrunk = tf.minimum(shape, size)
    image = tf.cond(tf.reduce_any(shape > size),
                    lambda: tf.image.resize(image, shrunk, method="area"),
                    lambda: tf.cast(image, tf.float32))
    return tf.cond(tf.reduce_any(shrunk < size),
                   lambda: tf.image.resize(image, size, method="bilinear"),
                   lambda: image)


def resize(image: tf.Tensor, image_size: int, *, mode: str = "stretch") -> tf.Tensor:
    """Any [H, W, 3] image -> uint8 [image_size, image_size, 3].

    `stretch` squashes the whole painting to a square (the original recipe);
    `crop` keeps the aspect ratio and takes the largest centred square.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    if mode == "crop":
        shape = tf.shape(image)
        side = tf.minimum(shape[0], shape[1])
        image = tf.image.crop_to_bounding_box(
            image, (shape[0] - side) // 2, (shape[1] - side) // 2, side, side
        )
    # Antialiased (`resample`): stored paintings are often several times the
    # training size, and plain bilinear would alias fine brushwork away.
    resized = resample(image, [image_size, image_size])
    resized.set_shape([image_size, image_size, 3])
    # uint8 keeps caches and shuffle buffers 4x smaller than float32, and
    # makes training and serving see exactly the same pixels.
    return _to_uint8(resized)


def fit_within(image: tf.Tensor, max_side: int) -> tf.Tensor:
    """uint8 [H, W, 3] -> the same, shrunk (antialiased, aspect kept) so no side exceeds `max_side`.

    Images already small enough pass through untouched: the training warp
    resamples them once, straight from the decoded pixels.
    """
    shape = tf.shape(image)
    longer = tf.maximum(shape[0], shape[1])

    def shrink():
        scale = max_side / tf.cast(longer, tf.float32)
        size = tf.maximum(tf.cast(tf.round(tf.cast(shape[:2], tf.float32) * scale), tf.int32), 1)
        return _to_uint8(resample(image, tf.minimum(size, max_side)))

    return tf.cond(longer > max_side, shrink, lambda: image)


def thumbnail_jpeg(encoded: tf.Tensor, max_side: int, *, quality: int = 80) -> tf.Tensor:
    """Encoded image -> a JPEG of it, aspect kept, no side above `max_side` (a scalar string)."""
    image = fit_within(decode_for_size(encoded, max_side), max_side)
    return tf.io.encode_jpeg(image, quality=quality, optimize_size=True)


def rescale(images: tf.Tensor) -> tf.Tensor:
    """The one place that defines pixel scale: [0, 255] -> float32 [0, 1]."""
    return tf.cast(images, tf.float32) / 255.0


def decode_resized(encoded: tf.Tensor, image_size: int, *, mode: str = "stretch") -> tf.Tensor:
    """Encoded bytes -> uint8 [image_size, image_size, 3]: evaluation's and serving's images."""
    return resize(decode_for_size(encoded, image_size), image_size, mode=mode)


def decode_and_resize(
    features: Features, *, image_size: int, mode: str = "stretch"
) -> Features:
    """Decodes `image` and resizes it to a uint8 square, ready to batch or cache."""
    return {**features, "image": decode_resized(features["image"], image_size, mode=mode)}


def decode_within(features: Features, *, max_side: int) -> Features:
    """Decodes `image` at (at most) `max_side` and records its size, for the training warp."""
    image = fit_within(decode_image(features["image"]), max_side)
    return {**features, "image": image, "size": tf.shape(image)[:2]}


def padded_length(count: tf.Tensor) -> tf.Tensor:
    """The smallest of 8 lengths per octave that exceeds `count` (int32).

    Flat pixel buffers padded to it come in few shapes, so XLA compiles the
    warp a few times rather than once per batch; at most 1/8 of a buffer is
    padding. Strictly greater: the right tap of a last 1-pixel column stays
    inside the buffer.
    """
    octave = tf.math.floor(tf.math.log(tf.cast(count, tf.float32) + 1.0) / math.log(2.0))
    step = tf.cast(2.0 ** tf.maximum(octave - 3.0, 0.0), tf.int32)
    return (count + step) // step * step


def flat_pixels(images: list[tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """uint8 [h, w, 3] paintings -> (pixels [padded_length, 3], offsets [B], sizes [B, 2]).

    Painting b's pixels lie row-major from offsets[b]: the layout
    `augment.random_resized_augment` takes. One concat, padding included.
    """
    sizes = tf.stack([tf.shape(image)[:2] for image in images])
    lengths = sizes[:, 0] * sizes[:, 1]
    total = tf.reduce_sum(lengths)
    padding = tf.zeros([padded_length(total) - total, 3], tf.uint8)
    pixels = tf.concat([tf.reshape(image, [-1, 3]) for image in images] + [padding], axis=0)
    return pixels, tf.cumsum(lengths, exclusive=True), sizes


def decode_batch_within(features: Features, *, max_side: int) -> Features:
    """A batch of encoded `image`s (static size B) -> `pixels`, `offset`s, `size`s.

    Each painting decoded at (at most) `max_side`, then laid out by
    `flat_pixels` with no padding to a common size. One graph of B
    independent decodes and one concat: cheaper than decoding per element and
    then `ragged_batch`, which copies every painting once more.
    """
    encoded = features["image"]
    images = [fit_within(decode_image(encoded[i]), max_side) for i in range(encoded.shape[0])]
    pixels, offsets, sizes = flat_pixels(images)
    rest = {k: v for k, v in features.items() if k != "image"}
    return {**rest, "pixels": pixels, "offset": offsets, "size": sizes}


def ragged_to_pixels(features: Features) -> Features:
    """`ragged_batch`ed paintings (`image` [B, (h*w), 3], `size`) -> the `flat_pixels` layout."""
    ragged = features["image"]
    count = tf.shape(ragged.values)[0]
    pixels = tf.pad(ragged.values, [[0, padded_length(count) - count], [0, 0]])
    rest = {k: v for k, v in features.items() if k != "image"}
    return {**rest, "pixels": pixels, "offset": ragged.row_splits[:-1]}


def to_labels(labels: tf.Tensor, *, num_classes: int, one_hot: bool) -> tf.Tensor:
    """Integer labels, or float32 one-hot rows (the original recipe's) when `one_hot`."""
    return tf.one_hot(labels, num_classes, dtype=tf.float32) if one_hot else labels
