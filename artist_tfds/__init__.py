"""TFDS builders for paintings sorted by artist; importing this registers them."""

from artist_tfds.best_artworks import best_artworks_dataset_builder as _best_artworks  # noqa: F401
from artist_tfds.sample_paintings import sample_paintings_dataset_builder as _sample_paintings  # noqa: F401

# The datasets this project builds (names for `tfds.builder` and error messages).
BUILDERS = ("sample_paintings", "best_artworks")
