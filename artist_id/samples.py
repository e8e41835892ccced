"""Writes a few stored images of a split to a folder, named after their artist.

    artist-id samples --dataset=sample_paintings --split=test --per_artist=1 --out=DIR

Handy for trying `artist-id predict` on paintings the model never trained on.
"""

import collections
import os
import re
import sys

import tensorflow_datasets as tfds
from absl import app, flags

import pipeline

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "sample_paintings", "TFDS dataset as name[/config][:version].")
flags.DEFINE_string("data_dir", None, "TFDS data directory.")
flags.DEFINE_string("split", "test", "Split to take images from.")
flags.DEFINE_integer("per_artist", 1, "Images to write per artist.", lower_bound=1)
flags.DEFINE_string("out", None, "Output folder.")
flags.mark_flag_as_required("out")


def slug(name: str) -> str:
    return re.sub(r"\W+", "_", name).strip("_")


def write_samples(builder, split: str, out: str, *, per_artist: int) -> list[str]:
    """Writes the first `per_artist` stored JPEGs of each artist; returns their paths."""
    names = builder.info.features["label"].names
    counts, paths = collections.Counter(), []
    ds = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
    os.makedirs(out, exist_ok=True)
    for example in ds.as_numpy_iterator():
        artist = names[example["label"]]
        if counts[artist] >= per_artist:
            continue
        counts[artist] += 1
        path = os.path.join(out, f"{slug(artist)}_{counts[artist]}.jpg")
        with open(path, "wb") as f:
            f.write(example["image"])
        paths.append(path)
        if len(counts) == len(names) and min(counts.values()) >= per_artist:
            break
    return paths


def main(argv):
    del argv
    try:
        builder = pipeline.load_builder(FLAGS.dataset, data_dir=FLAGS.data_dir)
    except pipeline.DatasetError as e:
        sys.exit(f"artist-id samples: error: {e}")
    paths = write_samples(builder, FLAGS.split, FLAGS.out, per_artist=FLAGS.per_artist)
    print(f"Wrote {len(paths)} images to {FLAGS.out}")


if __name__ == "__main__":
    app.run(main)
