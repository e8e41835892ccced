"""Tests for the procedural sample_paintings builder and its style generators."""

import collections
import io
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import artist_tfds  # noqa: F401  (registers the builders)
from artist_tfds.sample_paintings import sample_paintings_dataset_builder as builder_lib
from artist_tfds.sample_paintings import styles

NUM_ARTISTS = len(styles.ARTISTS)


class SamplePaintingsTest(tfds.testing.DatasetBuilderTestCase):
    """The standard TFDS contract, on the `tiny` config (dummy_data/ is empty)."""

    DATASET_CLASS = builder_lib.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["tiny"]
    SPLITS = {"train": 36, "validation": 12, "test": 12}


@pytest.fixture(scope="module")
def tiny_examples(tiny_builder) -> dict[str, list[dict]]:
    """Every example of the built `tiny` config (conftest), image left as bytes."""
    return {
        split: list(tfds.as_numpy(tiny_builder.as_dataset(
            split=split, decoders={"image": tfds.decode.SkipDecoding()})))
        for split in builder_lib.SPLITS
    }


def _decode(jpeg: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(jpeg))
    image.load()
    return image


def test_artists_have_distinct_names_and_slugs():
    names = [artist.name for artist in styles.ARTISTS]
    slugs = [artist.slug for artist in styles.ARTISTS]
    assert NUM_ARTISTS >= 6
    assert len(set(names)) == len(names) and len(set(slugs)) == len(slugs)
    assert all(" " in name for name in names)
    assert all(slug.isidentifier() and slug.islower() for slug in slugs)


def test_same_index_gives_identical_bytes():
    for artist_index in range(NUM_ARTISTS):
        first = builder_lib.create_example("default", "train", artist_index, 7)
        second = builder_lib.create_example("default", "train", artist_index, 7)
        assert first[0] == second[0]
        assert first[1]["image"] == second[1]["image"]


def test_different_indexes_splits_and_configs_differ():
    images = {
        args: builder_lib.create_example(*args)[1]["image"]
        for args in [("default", "train", 0, 0), ("default", "train", 0, 1),
                     ("default", "test", 0, 0), ("tiny", "train", 0, 0),
                     ("default", "train", 1, 0)]
    }
    assert len(set(images.values())) == len(images)


def test_example_key_and_file_name():
    key, example = builder_lib.create_example("tiny", "validation", 2, 6)
    slug = styles.ARTISTS[2].slug
    assert key == f"validation/{slug}/00006"
    assert example["file_name"] == f"{slug}_6.jpg"
    assert example["label"] == 2


@pytest.mark.parametrize("artist", styles.ARTISTS, ids=lambda a: a.slug)
@pytest.mark.parametrize("width,height", [(37, 53), (320, 192), (200, 320)])
def test_style_returns_requested_size_in_rgb(artist, width, height):
    image = artist.paint(np.random.default_rng(0), width, height)
    assert image.size == (width, height)
    assert image.mode == "RGB"
    # Not a blank canvas: the style painted something.
    assert np.asarray(image, np.float32).std() > 8.0


@pytest.mark.parametrize("artist", styles.ARTISTS, ids=lambda a: a.slug)
def test_style_palette_varies_between_images(artist):
    means = [
        np.asarray(artist.paint(np.random.default_rng(seed), 64, 64)).mean(axis=(0, 1))
        for seed in range(6)
    ]
    # Colour alone must not name the artist: mean colours spread out.
    assert np.ptp(np.stack(means), axis=0).max() > 40.0


def test_random_size_stays_in_bounds_and_varies_orientation():
    rng = np.random.default_rng(0)
    sizes = [styles.random_size(rng) for _ in range(300)]
    for width, height in sizes:
        assert styles.MIN_LONG_SIDE <= max(width, height) <= styles.MAX_LONG_SIDE
        # Rounding the short side moves the ratio by at most one pixel's worth.
        assert styles.MIN_ASPECT - 0.01 <= width / height <= styles.MAX_ASPECT + 0.01
    assert any(width > height for width, height in sizes)
    assert any(width < height for width, height in sizes)


def test_split_sizes_of_tiny(tiny_examples):
    sizes = {split: len(examples) for split, examples in tiny_examples.items()}
    assert sizes == {"train": 36, "validation": 12, "test": 12}


def test_labels_cover_all_artists_evenly_in_every_split(tiny_examples):
    for split, examples in tiny_examples.items():
        counts = collections.Counter(int(e["label"]) for e in examples)
        assert sorted(counts) == list(range(NUM_ARTISTS)), split
        assert len(set(counts.values())) == 1, split


def test_images_are_jpeg_and_not_all_square(tiny_examples):
    for split, examples in tiny_examples.items():
        shapes = []
        for example in examples:
            jpeg = example["image"]
            assert jpeg[:2] == b"\xff\xd8", split  # JPEG start-of-image marker.
            image = _decode(jpeg)
            assert image.format == "JPEG" and image.mode == "RGB"
            decoded = tf.io.decode_jpeg(jpeg, channels=3)
            assert decoded.shape == (image.height, image.width, 3)
            shapes.append(image.size)
        assert any(width != height for width, height in shapes), split


def test_file_names_are_unique_and_match_labels(tiny_examples):
    file_names = [e["file_name"].decode() for ex in tiny_examples.values() for e in ex]
    assert len(set(file_names)) == len(file_names)
    for examples in tiny_examples.values():
        for example in examples:
            slug = styles.ARTISTS[int(example["label"])].slug
            assert example["file_name"].decode().startswith(slug + "_")


def test_built_image_matches_generator(tiny_examples):
    """What TFDS stored is byte for byte what the generator produced."""
    stored = {e["file_name"].decode(): e["image"] for e in tiny_examples["test"]}
    _, example = builder_lib.create_example("tiny", "test", 3, 8)
    assert stored[example["file_name"]] == example["image"]


# Builds sample_paintings/tiny into argv[1], hanging after a few paintings (to be killed).
HANGING_BUILD = """
import sys, time
import tensorflow_datasets as tfds
import artist_tfds
from artist_tfds.sample_paintings import sample_paintings_dataset_builder as builder_lib
paint, calls = builder_lib.create_example, []
def create_example(*args):
    calls.append(args)
    if len(calls) == 5:
        print("hanging", flush=True)
        time.sleep(600)
    return paint(*args)
builder_lib.create_example = create_example
tfds.builder("sample_paintings/tiny", data_dir=sys.argv[1]).download_and_prepare()
"""


def test_build_killed_midway_leaves_a_folder_the_rerun_names_and_ignores(tmp_path, caplog):
    build = subprocess.Popen([sys.executable, "-c", HANGING_BUILD, str(tmp_path)],
                             stdout=subprocess.PIPE, text=True)
    try:
        # TFDS prints its own progress on stdout first.
        assert any(line.strip() == "hanging" for line in build.stdout), "the build ended"
    finally:
        build.kill()  # SIGKILL: TFDS gets no chance to clean up.
        build.wait()
    config_dir = tmp_path / "sample_paintings" / "tiny"
    (left,) = [p for p in config_dir.iterdir() if p.name.startswith("incomplete.")]
    assert left.name.endswith("_1.0.0")

    with caplog.at_level("WARNING"):
        builder = tfds.builder("sample_paintings/tiny", data_dir=str(tmp_path))
        builder.download_and_prepare()
    warnings = [r.getMessage() for r in caplog.records if "interrupted build" in r.getMessage()]
    assert len(warnings) == 1 and str(left) in warnings[0], warnings
    assert left.exists()  # Named, not deleted: another build could own it.
    assert builder.info.splits["train"].num_examples == 36
    assert sorted(p.name for p in config_dir.iterdir()) == sorted([left.name, "1.0.0"])
