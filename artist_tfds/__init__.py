"""TFDS builders for paintings sorted by artist; importing this registers them."""

from artist_tfds.sample_paintings import sample_paintings_dataset_builder as _sample_paintings  # noqa: F401
