"""Request checks for the serving signature: read headers, never decode.

A bad element (empty, not an image, unsupported format, truncated JPEG, more
pixels than `max_pixels`) fails the whole call with InvalidArgument
"images[i]: ..." before anything is decoded, so a server keeps serving.
"""

import tensorflow as tf

SERVING_INPUT = "images"
SUPPORTED_FORMATS = "JPEG, PNG, GIF or BMP"
# Pixels an encoded image may declare in its header. 40 MP is an 8000x5000 scan:
# 120 MB decoded, about four times that while it is resized in float32.
DEFAULT_MAX_PIXELS = 40_000_000
# Images checked at once inside one call.
DECODE_PARALLELISM = 8

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
