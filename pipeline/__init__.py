"""The tf.data input pipeline: TFDS shards in, batches of (images, labels) out."""

from pipeline.balance import class_weights, label_counts  # noqa: F401
from pipeline.input_pipeline import (  # noqa: F401
    DataConfig,
    DatasetError,
    artist_names,
    create_split,
    encoded_images,
    load_builder,
    num_classes,
)
