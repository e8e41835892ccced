"""Class balance: per-class weights for `fit`, or in-graph resampling to uniform labels.

The Kaggle set ranges from 24 to 877 paintings per artist. `class_weight`
keeps the data as it is and weighs the loss; `resample` changes what the
model sees: every artist equally often, rare ones repeated, common ones
subsampled afresh each epoch.
"""

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

MODES = ("none", "class_weight", "resample")


def split_labels(builder: tfds.core.DatasetBuilder, split: str) -> np.ndarray:
    """`split`'s labels in stored order, int64 [examples].

    Only the `label` feature is parsed (no image bytes are copied): ~0.2 s
    per 2,000 records here.
    """
    ds = builder.as_dataset(split=split, decoders=tfds.decode.PartialDecoding({"label": True}))
    batches = list(ds.map(lambda f: f["label"]).batch(4096).as_numpy_iterator())
    return np.concatenate(batches) if batches else np.zeros(0, np.int64)


def label_counts(builder: tfds.core.DatasetBuilder, split: str) -> np.ndarray:
    """Examples per class in `split`, int64 [num_classes], from the labels alone."""
    num_classes = builder.info.features["label"].num_classes
    return np.bincount(split_labels(builder, split), minlength=num_classes).astype(np.int64)


def class_weights(builder: tfds.core.DatasetBuilder, split: str) -> dict[int, float]:
    """{class: weight} for `model.fit(class_weight=...)`: n / (k * count), as sklearn's "balanced".

    k counts the classes present in `split`, so the weights average to 1 over
    its examples; a class absent from the split gets 0.
    """
    counts = label_counts(builder, split)
    present = counts > 0
    total, classes = counts.sum(), present.sum()
    return {int(c): float(total / (classes * n)) if n else 0.0 for c, n in enumerate(counts)}


def resample(ds: tf.data.Dataset, counts: np.ndarray, *, seed: int,
             num_examples: int) -> tf.data.Dataset:
    """Feature dicts -> `num_examples` of them (an epoch) with uniform expected label counts.

    Rejection sampling over the repeated input: an example of class c is
    kept with probability min(counts) / counts[c], so the rarest artist's
    paintings are always kept (and recur once per pass) and a common
    artist's are thinned, a fresh subset each epoch (the coins come from a
    `Dataset.random` that re-randomises per iteration: reproducible with the
    seed). An epoch of the split's size reads mean(counts) / min(counts)
    passes of encoded records (7 for the Kaggle set): cheap next to
    decoding, since only kept records are decoded. `rejection_resample`
    does much the same with mixing, but repeats its coin flips every epoch
    and logs a warning whenever most examples are rejected, as here.
    Classes with no examples are left out.

    The epoch is cut (`take`) right after the filter, with nothing
    asynchronous in between: the repeated, reshuffled input draws fresh
    seeds from its shuffle's seed generator -- shared by all epochs --
    each time it has handed out a whole pass, so anything reading ahead
    of the cut (tf.data parallelises a stateless `map` on its own) would
    make later epochs depend on thread timing.
    """
    counts = np.asarray(counts, np.float64)
    present = counts > 0
    keep = np.where(present, counts[present].min() / np.maximum(counts, 1), 0.0)
    keep = tf.constant(keep, tf.float32)
    coins = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

    def kept(features, coin):
        uniform = tf.cast(tf.math.floormod(coin, 1 << 24), tf.float32) / (1 << 24)
        return uniform < tf.gather(keep, features["label"])

    ds = tf.data.Dataset.zip(ds.repeat(), coins).filter(kept).take(num_examples)
    return ds.map(lambda features, coin: features)
