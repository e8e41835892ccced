"""The feature schema every artist dataset shares, so one pipeline reads them all."""

from collections.abc import Sequence

import tensorflow_datasets as tfds

# Stored images are JPEG: the pipeline and serving decode them with the same op.
IMAGE_ENCODING = "jpeg"
JPEG_QUALITY = 90


def painting_features(
    artist_names: Sequence[str], **extra: tfds.features.FeatureConnector
) -> tfds.features.FeaturesDict:
    """`image` (RGB JPEG, any size), `label` (artist), `file_name`, plus `extra`."""
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(
            shape=(None, None, 3), encoding_format=IMAGE_ENCODING
        ),
        "label": tfds.features.ClassLabel(names=list(artist_names)),
        "file_name": tfds.features.Text(),
        **extra,
    })
