"""Pillow at build time: recognise an image by its content, check it, normalise it, re-encode it.

Everything here is a pure function of a file's bytes, so the default build,
its worker processes and Beam workers all store exactly the same JPEG.
"""

import dataclasses
import hashlib
import io
import pathlib
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from artist_tfds import features as features_lib

# Formats a painting arrives in; anything else Pillow recognises (icons, PSD,
# fonts mistaken for TGA, …) is skipped rather than guessed at.
SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "GIF", "BMP", "TIFF", "WEBP"})
# Below this on either side a file is an icon or a placeholder, not a painting:
# a 300-px model input would be upsampled more than 4x from it.
MIN_SIDE = 64
# Pillow's own decompression-bomb threshold (its default MAX_IMAGE_PIXELS),
# fixed here so a user's global Pillow setting cannot change what is stored.
MAX_PIXELS = 89_478_485
# Transparent areas become white, the colour of the paper or wall behind them.
BACKGROUND = (255, 255, 255)

# Skip reasons: the report groups skipped files by these.
EMPTY = "empty file"
NOT_AN_IMAGE = "not an image"
UNSUPPORTED = "unsupported image format"
TOO_SMALL = "too small"
BOMB = "decompression bomb"
CORRUPT = "truncated or corrupt"
UNREADABLE = "unreadable file"

_JPEG_FORMATS = ("JPEG", "MPO")
_HIGH_BIT_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


class Skipped(Exception):
    """A file that is not stored, and why."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class StoredSize:
    """How stored images are resized; `None` sides keep the source resolution."""

    short_side: int | None = None
    long_side: int | None = None


@dataclasses.dataclass(frozen=True)
class Inspection:
    """What the cheap first look at a file found (no pixels decoded)."""

    sha256: str = ""
    skip: str | None = None  # Why the file is skipped, or None.
    width: int = 0
    height: int = 0


@dataclasses.dataclass(frozen=True)
class Outcome:
    """The result of normalising one file: its stored size, or why it was skipped."""

    key: str
    skip: str | None = None
    width: int = 0
    height: int = 0


def reason_of(skip: str) -> str:
    """`"too small: 20×30 px"` -> `"too small"`."""
    return skip.split(":", 1)[0]


def _read(path: str) -> bytes:
    try:
        return pathlib.Path(path).read_bytes()
    except OSError as error:
        raise Skipped(UNREADABLE, error.strerror or type(error).__name__) from error


def open_checked(data: bytes) -> Image.Image:
    """Opens `data` by its content (not its name) and checks size; pixels not decoded."""
    if not data:
        raise Skipped(EMPTY)
    with warnings.catch_warnings():
        # Checked below against MAX_PIXELS; Pillow itself raises only at 2x.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as error:
            raise Skipped(BOMB, str(error)) from error
        except UnidentifiedImageError as error:
            raise Skipped(NOT_AN_IMAGE, "the content is no known image format") from error
        except Exception as error:  # Pillow raises many types on broken headers.
            raise Skipped(CORRUPT, f"{type(error).__name__}: {error}") from error
    if image.format not in SUPPORTED_FORMATS:
        raise Skipped(UNSUPPORTED, str(image.format))
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise Skipped(BOMB, f"{width}×{height} px is over {MAX_PIXELS:,} pixels")
    if min(width, height) < MIN_SIDE:
        raise Skipped(TOO_SMALL, f"{width}×{height} px, under {MIN_SIDE} px a side")
    return image


def _inspect(data: bytes) -> tuple[Inspection, Image.Image | None]:
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        image = open_checked(data)
    except Skipped as skipped:
        return Inspection(sha256, skip=str(skipped)), None
    return Inspection(sha256, width=image.size[0], height=image.size[1]), image


def inspect_file(path: str) -> Inspection:
    """sha256 of the file's bytes, and whether its header makes it worth decoding."""
    try:
        data = _read(path)
    except Skipped as skipped:
        return Inspection(skip=str(skipped))
    return _inspect(data)[0]


def target_size(size: tuple[int, int], stored: StoredSize) -> tuple[int, int]:
    """The stored size: shorter side to `short_side`, longer capped; never upscaled."""
    width, height = size
    scale = 1.0
    if stored.short_side:
        scale = min(scale, stored.short_side / min(width, height))
    if stored.long_side:
        scale = min(scale, stored.long_side / max(width, height))
    if scale >= 1.0:
        return size
    return max(1, round(width * scale)), max(1, round(height * scale))


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB: alpha over white, 16-bit scaled, CMYK/palette/gray converted."""
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values * (255.0 / top), 0, 255).round().astype(np.uint8))
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _upright(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # A broken EXIF block must not lose the painting.
        return image


def normalise(image: Image.Image, stored: StoredSize) -> Image.Image:
    """Decodes an opened image upright, in RGB, at its stored size."""
    # The target follows from the source size, whatever draft() decodes.
    target = target_size(image.size, stored)
    if target != image.size and image.format in _JPEG_FORMATS:
        # libjpeg decodes at 1/2, 1/4 or 1/8 scale (never below `target`),
        # skipping most of the inverse DCT and colour conversion, and the
        # resize below then starts from 4-64x fewer pixels.
        image.draft(None, target)
    try:
        image.load()
    except Exception as error:  # OSError "image file is truncated", SyntaxError, …
        raise Skipped(CORRUPT, f"{type(error).__name__}: {error}") from error
    decoded_size = image.size
    image = to_rgb(_upright(image))
    if image.size != decoded_size:  # Turned by 90 degrees.
        target = target[::-1]
    if image.size != target:
        image = image.resize(target, Image.Resampling.LANCZOS)
    return image


def encode_jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=features_lib.JPEG_QUALITY)
    return buffer.getvalue()


def encode_file(path: str, stored: StoredSize) -> bytes:
    """The stored JPEG for one source file; raises Skipped."""
    return encode_jpeg(normalise(open_checked(_read(path)), stored))


def _stored(key: str, image: Image.Image, stored: StoredSize) -> tuple[Outcome, bytes]:
    try:
        image = normalise(image, stored)
    except Skipped as skipped:
        return Outcome(key, skip=str(skipped)), b""
    return Outcome(key, width=image.size[0], height=image.size[1]), encode_jpeg(image)


def process(key: str, path: str, stored: StoredSize) -> tuple[Outcome, bytes]:
    """`encode_file` that reports instead of raising: (outcome, JPEG or b"")."""
    try:
        image = open_checked(_read(path))
    except Skipped as skipped:
        return Outcome(key, skip=str(skipped)), b""
    return _stored(key, image, stored)


@dataclasses.dataclass(frozen=True)
class SpillJob:
    """One file for a worker process: inspect it and, if valid, write its stored JPEG.

    Reading and decoding each file once (not once to inspect, once to store)
    is what lets the default build beat a plain loop by more than the cores.
    """

    key: str
    path: str
    out_path: str
    stored: StoredSize

    def __call__(self) -> tuple[Inspection, Outcome]:
        try:
            data = _read(self.path)
        except Skipped as skipped:
            return Inspection(skip=str(skipped)), Outcome(self.key, skip=str(skipped))
        inspection, image = _inspect(data)
        if image is None:
            return inspection, Outcome(self.key, skip=inspection.skip)
        outcome, jpeg = _stored(self.key, image, self.stored)
        if jpeg:
            pathlib.Path(self.out_path).write_bytes(jpeg)
        return inspection, outcome
