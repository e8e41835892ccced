"""SavedModel and TFLite export: encoded bytes or pixels in, artist names and probabilities out.

Signatures of the SavedModel (`saved_model_cli show --all --dir DIR` lists them):

* `serving_default`: `images` tf.string [batch] of encoded JPEG, PNG, GIF (first
  frame) or BMP -> `probabilities` float32 [batch, artists], `top_k_ids` int32
  [batch, k], `top_k_artists` tf.string [batch, k], `top_k_probabilities`
  float32 [batch, k]. TensorFlow Serving's REST `{"instances": [{"b64": ...}]}`
  maps onto `images`.
* `serve_pixels`: `pixels` uint8 [batch, height, width, 3] in 0-255, any size
  (one size per call) -> the same four outputs.
* `serve_float_pixels`: `pixels` float32 [batch, height, width, 3] in [0, 1]
  -> the same four outputs. Pixels are quantised to 0-255 first: training saw
  uint8 images, so the model does too.
* `metadata`: no inputs -> `metadata` (a JSON string, the same document as
  `assets.extra/metadata.json`) and `artists` tf.string [artists].

A bad element (empty, not an image, unsupported format, truncated JPEG, more
pixels than `max_pixels`) fails the call with InvalidArgument "images[i]: ..."
before anything is decoded; the loaded model keeps serving.

Decoding, resizing and rescaling are `pipeline.ops`' own functions. One
serving-only shortcut exists, off unless asked for (`jpeg_downscale_margin`):
a JPEG far larger than the model's input is decoded at 1/2, 1/4 or 1/8 scale by
libjpeg before the pipeline's antialiased resize.
"""

import json
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from pipeline import ops

SERVING_INPUT = "images"
PIXELS_INPUT = "pixels"
DEFAULT_TOP_K = 5
# Pixels an encoded image may declare in its header. 40 MP is an 8000x5000 scan:
# 120 MB decoded, about four times that while it is resized in float32.
DEFAULT_MAX_PIXELS = 40_000_000
# Images decoded at once inside one call: both cores stay busy on a batch.
DECODE_PARALLELISM = 8
# Off by default: served pixels are then exactly the training pipeline's, so the
# SavedModel and the trained model agree image for image. 2.0 is a good value
# for servers fed large photos (see `decode_batch`).
DEFAULT_JPEG_DOWNSCALE_MARGIN = None
SUPPORTED_FORMATS = "JPEG, PNG, GIF or BMP"
METADATA_FORMAT_VERSION = 1
ARTISTS_FILE = "artists.txt"
METADATA_FILE = "metadata.json"
TFLITE_FILES = {"float32": "model_float32.tflite", "dynamic_range": "model_dynamic_range.tflite"}

# Leading bytes of formats TensorFlow may or may not decode but this model does
# not accept: naming them beats "not an image". (offset, magic, name)
_UNSUPPORTED_MAGIC = (
    (8, b"WEBP", "WebP"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (0, b"\xff\x0a", "JPEG XL"),
    (4, b"JXL ", "JPEG XL"),
    (4, b"ftyp", "HEIF/AVIF"),
    (4, b"jP  ", "JPEG 2000"),
    (0, b"8BPS", "Photoshop"),
    (0, b"%PDF", "PDF"),
)
# DIB header sizes a real BMP carries right after "BM" and the file header.
_BMP_DIB_SIZES = (12, 40, 52, 56, 64, 108, 124)
_HEADER_BYTES = 32


def serving_outputs(
    model: keras.Model, pixels: tf.Tensor, artists: tf.Tensor, top_k: int
) -> dict[str, tf.Tensor]:
    """Logits -> probabilities and the top-k artists; shared by every endpoint."""
    logits = model(pixels, training=False)
    probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
    top = tf.math.top_k(probabilities, k=top_k)
    return {
        "probabilities": probabilities,
        "top_k_ids": top.indices,
        "top_k_artists": tf.gather(artists, top.indices),
        "top_k_probabilities": top.values,
    }


# --- Checking encoded images before decoding them ---------------------------------------


def _starts_with(header: tf.Tensor, length: tf.Tensor, magic: bytes, offset: int = 0) -> tf.Tensor:
    """Whether each element holds `magic` at `offset` (header: its first bytes as int64)."""
    expected = tf.constant(list(magic), tf.int64)
    found = tf.reduce_all(tf.equal(header[:, offset:offset + len(magic)], expected), axis=1)
    return found & (length >= offset + len(magic))


def _number(header: tf.Tensor, offset: int, size: int, *, big_endian: bool) -> tf.Tensor:
    """Unsigned integer of `size` bytes at `offset` of each header row, as int64."""
    value = tf.zeros_like(header[:, 0])
    order = range(size) if big_endian else reversed(range(size))
    for i in order:
        value = value * 256 + header[:, offset + i]
    return value


def _header_dimensions(
    header: tf.Tensor, is_png: tf.Tensor, is_gif: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """(width, height) declared by PNG, GIF or else BMP headers (the fields the decoders use)."""
    png_w = _number(header, 16, 4, big_endian=True)
    png_h = _number(header, 20, 4, big_endian=True)
    gif_w = _number(header, 6, 2, big_endian=False)
    gif_h = _number(header, 8, 2, big_endian=False)
    # BMP: signed int32 at 18 and 22; a negative height means top-down rows.
    bmp_w = _number(header, 18, 4, big_endian=False)
    bmp_h = _number(header, 22, 4, big_endian=False)
    bmp_w = tf.where(bmp_w >= 2**31, bmp_w - 2**32, bmp_w)
    bmp_h = tf.abs(tf.where(bmp_h >= 2**31, bmp_h - 2**32, bmp_h))
    width = tf.where(is_png, png_w, tf.where(is_gif, gif_w, bmp_w))
    height = tf.where(is_png, png_h, tf.where(is_gif, gif_h, bmp_h))
    return width, height


def _jpeg_is_truncated(images: tf.Tensor) -> tf.Tensor:
    """True where no end-of-image marker (FFD9) follows the first start-of-scan (FFDA).

    Entropy-coded data never holds FF D9 (every FF in it is stuffed), so a JPEG
    cut anywhere inside its scans has no FFD9 after its first FFDA. Bytes after
    the end marker (phone "motion photo" or maker trailers) are fine. A
    truncated file whose EXIF thumbnail ends after the first FFDA slips through
    here and is refused by the decoder instead ("Invalid JPEG data").
    """
    length = tf.cast(tf.strings.length(images), tf.int64)
    head = tf.strings.split(images, sep=b"\xff\xda", maxsplit=1)
    first_scan = tf.strings.length(tf.gather(head.values, head.row_splits[:-1]))
    pieces = tf.strings.split(images, sep=b"\xff\xd9")
    tail = tf.strings.length(tf.gather(pieces.values, pieces.row_splits[1:] - 1))
    last_end = tf.where(pieces.row_lengths() > 1, length - 2 - tf.cast(tail, tf.int64), -1)
    return last_end < tf.cast(first_scan, tf.int64)


def _problems(images: tf.Tensor, *, max_pixels: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Per element: ("" or what is wrong with it, is it a JPEG). Reads headers only."""
    length = tf.strings.length(images)
    header = tf.cast(tf.io.decode_raw(images, tf.uint8, fixed_length=_HEADER_BYTES), tf.int64)
    is_jpeg = _starts_with(header, length, b"\xff\xd8\xff")
    is_png = _starts_with(header, length, b"\x89PNG\r\n\x1a\n")
    is_gif = _starts_with(header, length, b"GIF87a") | _starts_with(header, length, b"GIF89a")
    dib_size = _number(header, 14, 4, big_endian=False)
    is_bmp = _starts_with(header, length, b"BM") & tf.reduce_any(
        tf.equal(dib_size[:, None], tf.constant(_BMP_DIB_SIZES, tf.int64)), axis=1)
    unsupported = tf.fill(tf.shape(images), "")
    for offset, magic, name in reversed(_UNSUPPORTED_MAGIC):
        unsupported = tf.where(_starts_with(header, length, magic, offset), name, unsupported)

    width, height = _header_dimensions(header, is_png, is_gif)
    short_header = (is_png & (length < 24)) | (is_gif & (length < 10)) | (is_bmp & (length < 26))
    truncated_jpeg = is_jpeg & _jpeg_is_truncated(tf.where(is_jpeg, images, ""))

    # Checked in this order; the first that applies names the element's problem.
    rules = [
        (tf.equal(length, 0), tf.constant("empty input (0 bytes)")),
        (tf.not_equal(unsupported, ""), tf.strings.join(
            ["unsupported image format ", unsupported, "; send ", SUPPORTED_FORMATS])),
        (~(is_jpeg | is_png | is_gif | is_bmp), tf.constant(
            f"not an image (unrecognised header bytes); send {SUPPORTED_FORMATS}")),
        (short_header, tf.constant("truncated image header")),
        (truncated_jpeg, tf.constant(
            "truncated JPEG (no end-of-image marker FFD9 after the image data)")),
        (~is_jpeg & ((width <= 0) | (height <= 0)), tf.strings.join(
            ["invalid image dimensions ", _size(width, height)])),
        (~is_jpeg & (width * height > max_pixels), _too_large(width, height, max_pixels)),
    ]
    problem = tf.fill(tf.shape(images), "")
    for condition, message in reversed(rules):
        problem = tf.where(condition, message, problem)
    return problem, is_jpeg


def _size(width: tf.Tensor, height: tf.Tensor) -> tf.Tensor:
    return tf.strings.join([tf.strings.as_string(width), "x", tf.strings.as_string(height)])


def _too_large(width: tf.Tensor, height: tf.Tensor, max_pixels: int) -> tf.Tensor:
    return tf.strings.join([
        "image too large: ", _size(width, height), " = ", tf.strings.as_string(width * height),
        f" pixels, over the limit of {max_pixels} (decompression bomb?)"])


def _assert_no_problem(problem: tf.Tensor) -> tf.Operation:
    """InvalidArgument "images[i]: <problem>" for the first element with one."""
    bad = tf.where(tf.not_equal(problem, ""))[:, 0]
    first = tf.concat([bad, tf.zeros([1], tf.int64)], axis=0)[0]
    message = tf.strings.join([
        f"{SERVING_INPUT}[", tf.strings.as_string(first), "]: ",
        tf.concat([problem, [""]], axis=0)[first]])
    return tf.debugging.Assert(tf.size(bad) == 0, [message], name="check_images")


def _jpeg_shapes(images: tf.Tensor, is_jpeg: tf.Tensor) -> tf.Tensor:
    """int64 [batch, 2]: (height, width) of each JPEG as libjpeg reads it; (1, 1) otherwise."""
    # A tiny valid JPEG stands in for the other formats, so one loop serves the batch.
    with tf.init_scope():  # Encoded once, at export: a constant in the graph.
        placeholder = tf.io.encode_jpeg(tf.zeros([1, 1, 3], tf.uint8)).numpy()
    shapes = tf.map_fn(tf.image.extract_jpeg_shape, tf.where(is_jpeg, images, placeholder),
                       fn_output_signature=tf.TensorSpec([3], tf.int32),
                       parallel_iterations=DECODE_PARALLELISM)
    return tf.cast(shapes[:, :2], tf.int64)


def check_encoded(
    images: tf.Tensor, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(images, is_jpeg, JPEG shapes) once every element passed the header checks.

    A failed check raises InvalidArgument "images[i]: <problem>" before any
    element is decoded.
    """
    problem, is_jpeg = _problems(images, max_pixels=max_pixels)
    with tf.control_dependencies([_assert_no_problem(problem)]):
        # Runs only once the batch passed the checks above: no truncated or foreign data
        # reaches libjpeg's header parser, whose own errors are less clear.
        shapes = _jpeg_shapes(tf.identity(images), is_jpeg)
    height, width = shapes[:, 0], shapes[:, 1]
    too_large = is_jpeg & (width * height > max_pixels)
    jpeg_problem = tf.where(too_large, _too_large(width, height, max_pixels), "")
    with tf.control_dependencies([_assert_no_problem(jpeg_problem)]):
        return tf.identity(images), is_jpeg, shapes


# --- Turning requests into model inputs -----------------------------------------------


def jpeg_scale_index(shapes: tf.Tensor, is_jpeg: tf.Tensor, *, image_size: int,
                     margin: float | None) -> tf.Tensor:
    """0, 1, 2, 3: decode at 1/1, 1/2, 1/4, 1/8 scale; the shorter side keeps margin x size."""
    if margin is None:
        return tf.zeros_like(shapes[:, 0], tf.int32)
    shorter = tf.cast(tf.reduce_min(shapes, axis=1), tf.float32)
    needed = tf.constant([2.0, 4.0, 8.0]) * margin * image_size
    return tf.where(is_jpeg, tf.reduce_sum(
        tf.cast(shorter[:, None] >= needed[None, :], tf.int32), axis=1), 0)


def decode_batch(
    images: tf.Tensor,
    *,
    image_size: int,
    resize_mode: str,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    jpeg_downscale_margin: float | None = None,
) -> tf.Tensor:
    """Encoded images [batch] -> uint8 [batch, size, size, 3] with the pipeline's own ops.

    With `jpeg_downscale_margin`, a JPEG whose shorter side is at least
    2 x margin x image_size is decoded at 1/2, 1/4 or 1/8 scale inside libjpeg
    (its DCT does the first, cheap, part of the downscaling), still leaving
    margin x image_size for the pipeline's antialiased resize.
    """
    images, is_jpeg, shapes = check_encoded(images, max_pixels=max_pixels)
    scale = jpeg_scale_index(shapes, is_jpeg, image_size=image_size, margin=jpeg_downscale_margin)

    def decode_one(args: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        encoded, scale = args
        if jpeg_downscale_margin is None:
            image = ops.decode_image(encoded)
        else:
            image = tf.switch_case(scale, [lambda: ops.decode_image(encoded)] + [
                lambda r=r: tf.io.decode_jpeg(encoded, channels=3, ratio=r) for r in (2, 4, 8)])
            image.set_shape([None, None, 3])
        return ops.resize(image, image_size, mode=resize_mode)

    # Each image has its own size and format, so decode one by one, several at a time.
    return tf.map_fn(decode_one, (images, scale), parallel_iterations=DECODE_PARALLELISM,
                     fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.uint8))


def resize_batch(pixels: tf.Tensor, *, image_size: int, resize_mode: str) -> tf.Tensor:
    """uint8 [batch, h, w, 3] of any size -> uint8 [batch, size, size, 3]."""
    shape = tf.shape(pixels)
    with tf.control_dependencies([tf.debugging.assert_positive(
            shape[1:3], message=f"{PIXELS_INPUT}: images must be at least 1x1 pixels")]):
        pixels = tf.identity(pixels)

    def resize_each() -> tf.Tensor:
        return tf.map_fn(lambda image: ops.resize(image, image_size, mode=resize_mode), pixels,
                         parallel_iterations=DECODE_PARALLELISM,
                         fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.uint8))

    already_sized = tf.logical_and(tf.equal(shape[1], image_size), tf.equal(shape[2], image_size))
    # Already the model's size: resizing would be the identity, so skip its cost.
    resized = tf.cond(already_sized, lambda: tf.identity(pixels), resize_each)
    return tf.ensure_shape(resized, [None, image_size, image_size, 3])


def quantize_float_pixels(pixels: tf.Tensor) -> tf.Tensor:
    """float32 in [0, 1] -> uint8 0-255 (InvalidArgument outside [0, 1], NaN included)."""
    in_range = tf.reduce_all((pixels >= 0.0) & (pixels <= 1.0))
    message = tf.strings.join([
        f"{PIXELS_INPUT}: serve_float_pixels takes float32 values in [0, 1], got values in [",
        tf.strings.as_string(tf.reduce_min(pixels)), ", ", tf.strings.as_string(tf.reduce_max(pixels)),
        "]; send 0-255 pixels as uint8 to serve_pixels"])
    with tf.control_dependencies([tf.debugging.Assert(in_range, [message])]):
        return tf.cast(tf.round(pixels * 255.0), tf.uint8)


# --- Metadata -------------------------------------------------------------------------


def _dataset_fields(dataset) -> dict:
    """"name/config/version" (TFDS full_name) or a dict -> {name, config, version, full_name}."""
    if isinstance(dataset, dict):
        return dict(dataset)
    parts = str(dataset).split("/")
    fields = {"full_name": str(dataset), "name": parts[0]}
    if len(parts) == 3:
        fields.update(config=parts[1], version=parts[2])
    elif len(parts) == 2:
        fields["version"] = parts[1]
    return fields


def build_metadata(
    *,
    artist_names: list[str],
    image_size: int,
    resize_mode: str,
    top_k: int,
    max_pixels: int,
    jpeg_downscale_margin: float | None = None,
    artist_metadata: dict[str, dict] | None = None,
    metadata: dict | None = None,
) -> dict:
    """The document stored as `assets.extra/metadata.json` and in the `metadata` signature."""
    extra = dict(metadata or {})
    artist_metadata = artist_metadata or {}
    document = {
        "format_version": METADATA_FORMAT_VERSION,
        "artists": [{"id": i, **{k: v for k, v in artist_metadata.get(name, {}).items()},
                     "name": name} for i, name in enumerate(artist_names)],
        "image_size": image_size,
        "resize_mode": resize_mode,
        "top_k": top_k,
        "preprocessing": {
            "decode": "tf.io.decode_image, 3 channels, first GIF frame" + (
                "" if jpeg_downscale_margin is None else
                f"; JPEGs whose shorter side is at least {2 * jpeg_downscale_margin:g} x "
                f"{image_size} px decoded at 1/2, 1/4 or 1/8 scale by libjpeg"),
            "resize": f"{resize_mode} to {image_size}x{image_size}, antialiased, rounded to uint8",
            "rescale": "float32 = uint8 / 255, values in [0, 1]",
            "accepted_formats": SUPPORTED_FORMATS,
            "max_pixels": max_pixels,
            "jpeg_downscale_margin": jpeg_downscale_margin,
        },
        "dataset": _dataset_fields(extra.pop("dataset")) if "dataset" in extra else None,
        "metrics": extra.pop("metrics", None),
        "signatures": {
            "serving_default": f"{SERVING_INPUT}: tf.string [batch] encoded {SUPPORTED_FORMATS}",
            "serve_pixels": f"{PIXELS_INPUT}: uint8 [batch, height, width, 3], 0-255",
            "serve_float_pixels": f"{PIXELS_INPUT}: float32 [batch, height, width, 3], [0, 1]",
            "metadata": "no inputs; this document as JSON",
        },
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
    }
    document.update(extra)  # Anything else the caller stores (e.g. the run's config).
    return document


# --- Export ---------------------------------------------------------------------------


def export_model(
    model: keras.Model,
    path: str,
    *,
    artist_names: list[str],
    image_size: int,
    resize_mode: str = "stretch",
    top_k: int = DEFAULT_TOP_K,
    metadata: dict | None = None,
    artist_metadata: dict[str, dict] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    jpeg_downscale_margin: float | None = DEFAULT_JPEG_DOWNSCALE_MARGIN,
) -> str:
    """Writes the SavedModel described in this module's docstring; returns `path`.

    `metadata` keys `dataset` (TFDS full name "name/config/version" or a dict)
    and `metrics` are stored in their own fields; any other key is stored as is.
    `artist_metadata` maps an artist name to fields such as years, genre,
    nationality and wikipedia. `max_pixels` bounds the size an encoded image may
    declare; `jpeg_downscale_margin` (None: off) lets large JPEGs decode at
    reduced scale (see `decode_batch`).
    """
    if resize_mode not in ops.RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {ops.RESIZE_MODES}, got {resize_mode!r}")
    top_k = min(top_k, len(artist_names))
    document = build_metadata(
        artist_names=list(artist_names), image_size=image_size, resize_mode=resize_mode,
        top_k=top_k, max_pixels=max_pixels, jpeg_downscale_margin=jpeg_downscale_margin,
        artist_metadata=artist_metadata, metadata=metadata)
    artists = tf.constant(list(artist_names))
    document_json = tf.constant(json.dumps(document, ensure_ascii=False))

    def predict(uint8_pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        return serving_outputs(model, ops.rescale(uint8_pixels), artists, top_k)

    def resized(pixels: tf.Tensor) -> tf.Tensor:
        return resize_batch(pixels, image_size=image_size, resize_mode=resize_mode)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=SERVING_INPUT)])
    def serve_bytes(images):
        return predict(decode_batch(images, image_size=image_size, resize_mode=resize_mode,
                                    max_pixels=max_pixels,
                                    jpeg_downscale_margin=jpeg_downscale_margin))

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name=PIXELS_INPUT)])
    def serve_pixels(pixels):
        return predict(resized(pixels))

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name=PIXELS_INPUT)])
    def serve_float_pixels(pixels):
        return predict(resized(quantize_float_pixels(pixels)))

    @tf.function(input_signature=[])
    def serve_metadata():
        return {"metadata": document_json, "artists": artists}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name="serving_default", fn=serve_bytes)
    archive.add_endpoint(name="serve_pixels", fn=serve_pixels)
    archive.add_endpoint(name="serve_float_pixels", fn=serve_float_pixels)
    archive.add_endpoint(name="metadata", fn=serve_metadata)
    archive.write_out(path, verbose=False)
    _write_assets(path, artist_names=list(artist_names), document=document)
    return path


def _write_assets(path: str, *, artist_names: list[str], document: dict) -> None:
    """Human-readable side files; the `metadata` signature serves the same document."""
    extra = os.path.join(path, "assets.extra")
    os.makedirs(extra, exist_ok=True)
    with open(os.path.join(extra, ARTISTS_FILE), "w", encoding="utf-8") as f:
        f.write("\n".join(artist_names) + "\n")
    with open(os.path.join(extra, METADATA_FILE), "w", encoding="utf-8") as f:
        json.dump(document, f, indent=2, ensure_ascii=False)


def export_tflite(
    model: keras.Model,
    path: str,
    *,
    image_size: int,
    artist_names: list[str] | None = None,
) -> dict[str, str]:
    """Writes float32 and dynamic-range quantised TFLite models into directory `path`.

    Input: float32 [1, image_size, image_size, 3] in [0, 1] (decode, resize and
    rescale on the device, as `ops` does); output: probabilities [1, artists].
    Returns {"float32": file, "dynamic_range": file}. With `artist_names`, also
    writes `artists.txt` (line i names class i).
    """
    @tf.function(input_signature=[tf.TensorSpec([1, image_size, image_size, 3], tf.float32,
                                                name=PIXELS_INPUT)])
    def probabilities(pixels):
        return {"probabilities": tf.nn.softmax(
            tf.cast(model(pixels, training=False), tf.float32), axis=-1)}

    os.makedirs(path, exist_ok=True)
    written = {}
    with tempfile.TemporaryDirectory() as saved_model_dir:
        # Through a SavedModel: the converter then sees Keras 3 variables as constants.
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(name="serving_default", fn=probabilities)
        archive.write_out(saved_model_dir, verbose=False)
        for kind, file_name in TFLITE_FILES.items():
            converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
            if kind == "dynamic_range":
                # No representative data: int8 weights, float activations.
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
            written[kind] = os.path.join(path, file_name)
            with open(written[kind], "wb") as f:
                f.write(converter.convert())
    if artist_names is not None:
        with open(os.path.join(path, ARTISTS_FILE), "w", encoding="utf-8") as f:
            f.write("\n".join(artist_names) + "\n")
    return written


def tflite_predict(tflite_path: str, pixels: np.ndarray) -> np.ndarray:
    """Probabilities [n, artists] from a TFLite file for float32 pixels [n, size, size, 3]."""
    interpreter = tf.lite.Interpreter(model_path=tflite_path)
    interpreter.allocate_tensors()
    (source,), (target,) = interpreter.get_input_details(), interpreter.get_output_details()
    rows = []
    for image in np.asarray(pixels, np.float32):
        interpreter.set_tensor(source["index"], image[None])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(target["index"])[0].copy())
    return np.stack(rows)
