"""The tf.data input pipeline: TFDS shards in, batches of (images, labels) out."""

from pipeline import ops  # noqa: F401
from pipeline.balance import class_weights, label_counts, split_labels  # noqa: F401
from pipeline.input_pipeline import (  # noqa: F401
    DataConfig,
    DatasetError,
    artist_names,
    create_split,
    crops_repeating_whole,
    encoded_images,
    encoded_split,
    gallery_split,
    load_builder,
    num_classes,
)
