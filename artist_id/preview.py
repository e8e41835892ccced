"""A contact sheet of training augmentation: each painting as stored, then `n` augmented versions.

    artist-id preview --dataset=sample_paintings --split=train --n=5 --out=preview.png

One row per painting (the first `--paintings` of the split, one artist each
where possible), labelled with the artist's name: the stored image resized
as evaluation sees it, then `n` draws of the training augmentation (the host
path: one fused warp from the decoded painting, then contrast).
"""

import sys

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import app, flags
from PIL import Image, ImageDraw

import pipeline
from pipeline import augment, input_pipeline, ops

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "sample_paintings", "TFDS dataset as name[/config][:version].")
flags.DEFINE_string("data_dir", None, "TFDS data directory.")
flags.DEFINE_string("split", "train", "Split to take paintings from.")
flags.DEFINE_integer("n", 5, "Augmented versions per painting.", lower_bound=1)
flags.DEFINE_integer("paintings", 4, "Paintings (rows) on the sheet.", lower_bound=1)
flags.DEFINE_integer("image_size", 160, "Side of each tile: the training image size.",
                     lower_bound=16)
flags.DEFINE_enum("resize_mode", "stretch", list(ops.RESIZE_MODES), "How paintings become squares.")
flags.DEFINE_integer("seed", 0, "Augmentation seed.")
flags.DEFINE_string("out", "preview.png", "Output PNG.")

PAD = 6  # Pixels between tiles and around the sheet.
LABEL_HEIGHT = 16  # Text line above each row.
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)


def sheet_size(rows: int, n: int, image_size: int) -> tuple[int, int]:
    """(width, height) of a sheet of `rows` paintings with `n` augmented versions each."""
    width = PAD + (n + 1) * (image_size + PAD)
    height = PAD + rows * (LABEL_HEIGHT + image_size + PAD)
    return width, height


def pick_paintings(builder, split: str, count: int) -> list[tuple[bytes, int]]:
    """The first `count` (encoded image, label) pairs, preferring one per artist."""
    ds = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
    chosen, spare, seen = [], [], set()
    for example in ds.as_numpy_iterator():
        pair = (example["image"], int(example["label"]))
        (spare if pair[1] in seen else chosen).append(pair)
        seen.add(pair[1])
        if len(chosen) >= count:
            break
    return (chosen + spare)[:count]


def render_row(encoded: bytes, *, n: int, image_size: int, resize_mode: str, seed: int):
    """uint8 [(n + 1), S, S, 3]: the evaluation view, then `n` augmentations."""
    stored = ops.decode_resized(tf.constant(encoded), image_size, mode=resize_mode)
    batch = ops.decode_batch_within({"image": tf.constant([encoded] * n)},
                                    max_side=input_pipeline.default_max_side(image_size))
    augmented = augment.random_resized_augment(
        batch["pixels"], batch["offset"], batch["size"], tf.constant([seed, 0], tf.int64),
        image_size=image_size, resize_mode=resize_mode)
    augmented = np.round(augmented.numpy() * 255).astype(np.uint8)
    return np.concatenate([stored.numpy()[None], augmented])


def make_sheet(rows: list[tuple[str, np.ndarray]], image_size: int):
    """Pillow image of labelled rows of tiles, laid out as `sheet_size` says."""
    n = len(rows[0][1]) - 1
    sheet = Image.new("RGB", sheet_size(len(rows), n, image_size), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for r, (name, tiles) in enumerate(rows):
        top = PAD + r * (LABEL_HEIGHT + image_size + PAD)
        draw.text((PAD, top + 2), f"{name}   (stored | {n} augmented)", fill=TEXT)
        for c, tile in enumerate(tiles):
            sheet.paste(Image.fromarray(tile), (PAD + c * (image_size + PAD), top + LABEL_HEIGHT))
    return sheet


def write_preview(builder, split: str, out: str, *, n: int, paintings: int, image_size: int,
                  resize_mode: str = "stretch", seed: int = 0) -> tuple[int, int]:
    """Writes the contact sheet PNG to `out`; returns its (width, height)."""
    names = builder.info.features["label"].names
    rows = [
        (names[label], render_row(encoded, n=n, image_size=image_size,
                                  resize_mode=resize_mode, seed=seed + i))
        for i, (encoded, label) in enumerate(pick_paintings(builder, split, paintings))
    ]
    sheet = make_sheet(rows, image_size)
    sheet.save(out, format="PNG")
    return sheet.size


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    try:
        builder = pipeline.load_builder(FLAGS.dataset, data_dir=FLAGS.data_dir)
    except pipeline.DatasetError as e:
        sys.exit(f"preview: error: {e}")
    width, height = write_preview(
        builder, FLAGS.split, FLAGS.out, n=FLAGS.n, paintings=FLAGS.paintings,
        image_size=FLAGS.image_size, resize_mode=FLAGS.resize_mode, seed=FLAGS.seed)
    print(f"Wrote {FLAGS.out} ({width}x{height})")


if __name__ == "__main__":
    app.run(main)
