"""Runs a model over a stored split, through the input pipeline, and writes the report.

Validation (during `fit`) and test-split evaluation (after it, and in
`evaluate.py`) read the same batches: `pipeline.create_split(training=False)`.
"""

import json
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

import pipeline
from serving import gallery as gallery_lib
from trainer import calibration, report

# Float32 images [batch, S, S, 3] in [0, 1] -> probabilities [batch, artists]
# (or any per-image rows, e.g. embeddings).
PredictFn = Callable[[tf.Tensor], np.ndarray]


def keras_predict_fn(model: keras.Model, temperature: float = 1.0) -> PredictFn:
    """A Keras model's logits / `temperature` as probabilities (float32 even under mixed
    precision), as the exported model computes them."""

    @tf.function
    def predict(images):
        return tf.nn.softmax(tf.cast(model(images, training=False), tf.float32) / temperature)

    return lambda images: predict(images).numpy()


def saved_model_predict_fn(model_dir: str) -> tuple[PredictFn, dict]:
    """An exported model's `serve_float_pixels` as a PredictFn, and its metadata document.

    The signature quantises [0, 1] floats back to the uint8 pixels the pipeline
    made (exactly: they are uint8 / 255) and skips its resize for images
    already at the model's size, so it sees what `serving_default` sees.
    """
    loaded = tf.saved_model.load(model_dir)
    document = json.loads(loaded.signatures["metadata"]()["metadata"].numpy())
    signature = loaded.signatures["serve_float_pixels"]
    return (lambda images: signature(pixels=images)["probabilities"].numpy()), document


def fit_answer(builder, split: str, data: pipeline.DataConfig, predict_fn: PredictFn, *,
               target_precision: float) -> dict:
    """The temperature and the abstention rule, fitted on `split` (the validation split):
    {"temperature", "min_confidence", "target_precision", "fitted_on": {...}}."""
    labels, probabilities = predict_split(builder, split, data, predict_fn)
    # log p = logits + a constant per row: the temperature fits on it as on logits.
    temperature = calibration.fit_temperature(calibration.log_probabilities(probabilities),
                                              labels)
    calibrated = calibration.softmax(calibration.log_probabilities(probabilities), temperature)
    min_confidence = calibration.abstention_threshold(calibrated, labels,
                                                      precision=target_precision)
    kept = calibrated.max(axis=1) >= min_confidence
    right = calibrated.argmax(axis=1) == labels
    return {"temperature": temperature, "min_confidence": min_confidence,
            "target_precision": target_precision,
            "fitted_on": {"split": split, "examples": int(len(labels)),
                          "coverage": float(kept.mean()) if len(labels) else 0.0,
                          "precision": float(right[kept].mean()) if kept.any() else 0.0}}


def predict_split(builder, split: str, data: pipeline.DataConfig,
                  *fns: PredictFn) -> tuple[np.ndarray, ...]:
    """(labels, each fn's rows) over a split, in stored order: one pass, however many fns."""
    labels, rows = [], [[] for _ in fns]
    for images, batch_labels in pipeline.create_split(builder, split, data, training=False):
        for fn_rows, fn in zip(rows, fns):
            fn_rows.append(fn(images))
        labels.append(batch_labels.numpy())
    return np.concatenate(labels), *(np.concatenate(r) for r in rows)


def evaluate_split(builder, split: str, data: pipeline.DataConfig, predict_fn: PredictFn,
                   out_dir: str, *, gallery: gallery_lib.Gallery | None = None,
                   embed_fn: PredictFn | None = None, temperature: float = 1.0,
                   min_confidence: float = 0.0) -> dict:
    """Writes report.json, report.md and the pictures (`report.write_report`); returns the
    metrics.

    `predict_fn` gives calibrated probabilities, of logits / `temperature`;
    `min_confidence` is the abstention rule. With a `gallery` and the
    `embed_fn` that made it, the report also gives the nearest-neighbour
    artist accuracy of the split against the gallery.
    """
    neighbours = None
    if gallery is not None and len(gallery):
        labels, probabilities, embeddings = predict_split(builder, split, data, predict_fn,
                                                          embed_fn)
        neighbours = gallery_lib.neighbour_metrics(gallery, embeddings, labels)
    else:
        labels, probabilities = predict_split(builder, split, data, predict_fn)
    return report.write_report(
        out_dir, labels=labels, probabilities=probabilities,
        names=pipeline.artist_names(builder),
        images=pipeline.encoded_images(builder, split),
        title=f"{builder.info.full_name} / {split}", neighbours=neighbours,
        temperature=temperature, min_confidence=min_confidence)
