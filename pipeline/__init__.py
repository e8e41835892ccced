"""The tf.data input pipeline: TFDS shards in, batches of (images, labels) out."""

from pipeline.balance import (  # noqa: F401
    BALANCE_MODES,
    class_weights,
    label_counts,
)
from pipeline.input_pipeline import (  # noqa: F401
    DatasetError,
    artist_names,
    create_split,
    load_builder,
    num_classes,
)
