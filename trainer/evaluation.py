"""Runs a model over a stored split and writes the evaluation report."""

from collections.abc import Callable

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from trainer import report

# Encoded images [batch] -> probabilities [batch, artists].
PredictFn = Callable[[tf.Tensor], np.ndarray]


def saved_model_predict_fn(model_dir: str) -> tuple[PredictFn, int]:
    """The exported `serving_default` as a PredictFn, and how many artists it knows."""
    signature = tf.saved_model.load(model_dir).signatures["serving_default"]
    num_classes = signature.structured_outputs["probabilities"].shape[-1]
    return (lambda encoded: signature(images=encoded)["probabilities"].numpy()), num_classes


def predict_split(builder, split: str, predict_fn: PredictFn, *, batch_size: int = 64):
    """(labels, probabilities, encoded images) over a split, in stored order."""
    ds = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
    ds = ds.map(lambda f: (f["image"], f["label"])).batch(batch_size).prefetch(2)
    labels, probabilities, images = [], [], []
    for encoded, label in ds:
        probabilities.append(predict_fn(encoded))
        labels.append(label.numpy())
        images.extend(encoded.numpy())
    return np.concatenate(labels), np.concatenate(probabilities), images


def evaluate_split(builder, split: str, predict_fn: PredictFn, out_dir: str, *,
                   batch_size: int = 64) -> dict:
    """Writes report.json, report.md, confusion.png and mistakes.png; returns the metrics."""
    names = list(builder.info.features["label"].names)
    labels, probabilities, images = predict_split(builder, split, predict_fn, batch_size=batch_size)
    return report.write_report(out_dir, labels=labels, probabilities=probabilities, names=names,
                               images=images, title=f"{builder.info.full_name} / {split}")
