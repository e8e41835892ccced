"""Pure preprocessing ops shared by training, evaluation and serving."""

import tensorflow as tf

Features = dict[str, tf.Tensor]

# How an image of any aspect ratio becomes a square model input.
RESIZE_MODES = ("stretch", "crop")


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP bytes -> uint8 [H, W, 3] (first frame of a GIF)."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    # decode_image leaves the static shape unknown; the rank is always 3 here.
    image.set_shape([None, None, 3])
    return image


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
    # Antialias: stored paintings are often several times the training size,
    # and plain bilinear would alias fine brushwork away.
    resized = tf.image.resize(image, [image_size, image_size], antialias=True)
    # uint8 keeps caches and shuffle buffers 4x smaller than float32, and
    # makes training and serving see exactly the same pixels.
    return tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8)


def rescale(images: tf.Tensor) -> tf.Tensor:
    """The one place that defines pixel scale: [0, 255] -> float32 [0, 1]."""
    return tf.cast(images, tf.float32) / 255.0


def preprocess_encoded(
    encoded: tf.Tensor, image_size: int, *, mode: str = "stretch"
) -> tf.Tensor:
    """Encoded bytes -> float32 [image_size, image_size, 3] in [0, 1]; serving uses it."""
    return rescale(resize(decode_image(encoded), image_size, mode=mode))


def decode_and_resize(
    features: Features, *, image_size: int, mode: str = "stretch"
) -> Features:
    """Decodes `image` and resizes it to a uint8 square, ready to batch or cache."""
    image = resize(decode_image(features["image"]), image_size, mode=mode)
    return {**features, "image": image}


def to_inputs(features: Features, *, num_classes: int, one_hot: bool) -> tuple:
    """Feature dict -> the (images in [0, 1], labels) pair `model.fit` takes."""
    labels = features["label"]
    if one_hot:
        labels = tf.one_hot(labels, num_classes, dtype=tf.float32)
    return rescale(features["image"]), labels
