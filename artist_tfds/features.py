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


def artist_metadata(builder: tfds.core.DatasetBuilder, split: str = "train") -> dict[str, dict]:
    """{artist: {years, genre, ...}} from a built dataset's `artist` feature, if it has one.

    Reads `split` until every artist has been seen (images are not decoded).
    """
    if "artist" not in builder.info.features:
        return {}
    names = builder.info.features["label"].names
    found: dict[str, dict] = {}
    ds = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
    for label, fields in ds.map(lambda f: (f["label"], f["artist"])).as_numpy_iterator():
        found.setdefault(names[label], {k: v.decode() if isinstance(v, bytes) else v
                                        for k, v in fields.items()})
        if len(found) == len(names):
            break
    return found
