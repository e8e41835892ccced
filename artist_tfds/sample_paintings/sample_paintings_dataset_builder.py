"""sample_paintings: procedural paintings by six fictional artists, no download needed."""

from collections.abc import Iterator
import dataclasses
import io
import zlib

import numpy as np
import tensorflow_datasets as tfds

from artist_tfds import features as features_lib
from artist_tfds import leftovers
from artist_tfds.sample_paintings import styles

ARTIST_NAMES = tuple(artist.name for artist in styles.ARTISTS)
SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(eq=False)
class SamplePaintingsConfig(tfds.core.BuilderConfig):
    """How many paintings per artist each split holds."""

    train: int = 0
    validation: int = 0
    test: int = 0

    def num_examples(self, split: str) -> int:
        return getattr(self, split)


def _split_offset(config: SamplePaintingsConfig, split: str) -> int:
    """First per-artist index of `split`: indexes run on across splits."""
    return sum(config.num_examples(s) for s in SPLITS[:SPLITS.index(split)])


def _rng(config_name: str, split: str, artist_index: int, index: int) -> np.random.Generator:
    # crc32, not hash(): Python salts str hashes per process.
    entropy = [zlib.crc32(config_name.encode()), zlib.crc32(split.encode()),
               artist_index, index]
    return np.random.default_rng(entropy)


def create_example(
    config_name: str, split: str, artist_index: int, index: int
) -> tuple[str, dict]:
    """The key and features of one painting; the same arguments give the same bytes."""
    artist = styles.ARTISTS[artist_index]
    rng = _rng(config_name, split, artist_index, index)
    width, height = styles.random_size(rng)
    image = artist.paint(rng, width, height)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=features_lib.JPEG_QUALITY)
    key = f"{split}/{artist.slug}/{index:05d}"
    return key, {
        "image": buffer.getvalue(),
        "label": artist_index,
        "file_name": f"{artist.slug}_{index}.jpg",
    }


class Builder(tfds.core.GeneratorBasedBuilder):
    """DatasetBuilder for the procedural sample_paintings dataset."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release: six styles; configs `default` and `tiny`.",
    }
    # The first config is the default one.
    BUILDER_CONFIGS = [
        SamplePaintingsConfig(
            name="default",
            description="300 paintings per artist: 240 train, 30 validation, 30 test.",
            train=240, validation=30, test=30,
        ),
        SamplePaintingsConfig(
            name="tiny",
            description="10 paintings per artist (6 / 2 / 2), for tests.",
            train=6, validation=2, test=2,
        ),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        # The description and citation come from README.md and CITATIONS.bib.
        return self.dataset_info_from_configs(
            features=features_lib.painting_features(ARTIST_NAMES),
            supervised_keys=("image", "label"),
        )

    def _download_and_prepare(self, dl_manager, download_config):
        leftovers.warn(self.data_dir)  # Folders of killed builds: named, not deleted.
        super()._download_and_prepare(dl_manager, download_config)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # Nothing to download: every image is generated.
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split: str) -> Iterator[tuple[str, dict]]:
        config = self.builder_config
        offset = _split_offset(config, split)
        for artist_index in range(len(styles.ARTISTS)):
            for index in range(offset, offset + config.num_examples(split)):
                yield create_example(config.name, split, artist_index, index)
