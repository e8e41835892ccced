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
from serving import explain, multiview
from serving import gallery as gallery_lib
from trainer import calibration, report, verification

# Float32 images [batch, S, S, 3] in [0, 1] (with multi-crop inference, views
# [batch, V, S, S, 3]) -> probabilities [batch, artists] (or any per-image rows,
# e.g. embeddings; or a dict of them, e.g. a signature's outputs).
PredictFn = Callable[[tf.Tensor], np.ndarray | dict[str, np.ndarray]]


def keras_predict_fn(model: keras.Model, temperature: float = 1.0) -> PredictFn:
    """A Keras model's logits / `temperature` as probabilities (float32 even under mixed
    precision), as the exported model computes them."""

    multiview.accept_any_size(model)  # Multi-scale views: larger images too.

    @tf.function
    def predict(images):  # Views [B, V, S, S, 3] too: probabilities averaged (multiview).
        return tf.nn.softmax(
            tf.cast(multiview.painting_logits(model, images), tf.float32) / temperature)

    return lambda images: predict(images).numpy()


def multi_view(document: dict) -> bool:
    """Whether an exported model (its metadata) runs several views of each painting."""
    return (document.get("views") or {}).get("count", 1) > 1


def saved_model_predict_fn(model_dir: str) -> tuple[PredictFn, dict]:
    """An exported model's `serve_float_pixels` as a PredictFn, and its metadata document.

    The fn returns the signature's `probabilities` and `unknown` (its own rule), as a dict
    (`predict_split` joins dicts key by key; models exported before `unknown` existed
    give `probabilities` only).
    The signature quantises [0, 1] floats back to the uint8 pixels the pipeline
    made (exactly: they are uint8 / 255) and skips its resize for images
    already at the model's size, so it sees what `serving_default` sees.
    A multi-view model (`multi_view`) makes its views from whole paintings,
    so its PredictFn is `serving_default` itself, fed encoded files:
    `predict_split(..., encoded=True)`.
    """
    loaded = tf.saved_model.load(model_dir)
    document = json.loads(loaded.signatures["metadata"]()["metadata"].numpy())
    if multi_view(document):
        signature, key = loaded.signatures["serving_default"], "images"
    else:
        signature, key = loaded.signatures["serve_float_pixels"], "pixels"

    def predict(images) -> dict[str, np.ndarray]:
        outputs = signature(**{key: images})
        return {name: outputs[name].numpy() for name in ("probabilities", "unknown")
                if name in outputs}

    return predict, document


def keras_answer_fn(explainer: keras.Model, temperature: float = 1.0) -> PredictFn:
    """{"probabilities" (of logits / `temperature`), "embeddings" (normalised)} from one
    forward pass (`explain.forward`), as the exported signatures compute them.
    `explainer`: `explain.explainable(model)`."""

    @tf.function
    def answer(images):  # Views too, as keras_predict_fn.
        logits, embeddings = explain.forward(explainer, images)
        return {"probabilities": tf.nn.softmax(tf.cast(logits, tf.float32) / temperature),
                "embeddings": embeddings}

    return lambda images: {name: rows.numpy() for name, rows in answer(images).items()}


def outputs_of(rows: np.ndarray | dict[str, np.ndarray]
               ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """A PredictFn's rows over a split -> (probabilities, embeddings or None, unknown or
    None): a bare array is probabilities."""
    if not isinstance(rows, dict):
        return rows, None, None
    return rows["probabilities"], rows.get("embeddings"), rows.get("unknown")


def fit_answer(builder, split: str, data: pipeline.DataConfig, predict_fn: PredictFn, *,
               target_precision: float, gallery: gallery_lib.Gallery | None = None,
               novelty_reject: float = 0.0, directions: np.ndarray | None = None,
               verify_false_accept: float = 0.05) -> dict:
    """The temperature and the "unknown artist" rule, fitted on `split` (the validation
    split): {"temperature", "min_confidence", "min_familiarity", "target_precision",
    "target_met", "novelty_reject", "fitted_on": {...}, "calibration": {how the temperature
    was chosen}}, "kept_instead" when the target is out of reach and "warning" when a user
    must hear about the rule (`calibration.choose_temperature`, `fit_abstention`,
    `abstention_warning`). `serving.export` stores "calibration" in the metadata's
    "calibration", the rest in its "abstention".

    `predict_fn` gives probabilities at temperature 1; the rule's distance test also
    needs a `gallery` and the fn's "embeddings", made as the gallery's were
    (`keras_answer_fn`). With embeddings, "verification" holds the `verify` signatures'
    thresholds for `verify_false_accept` (`trainer.verification`; claims need the cosine
    head's `directions`)."""
    labels, rows = predict_split(builder, split, data, predict_fn)
    probabilities, embeddings, _ = outputs_of(rows)
    if gallery is None or not len(gallery):
        novelty_reject = 0.0  # No distance test without training paintings to measure to.
    familiarity = None
    if novelty_reject > 0:
        if embeddings is None:
            raise ValueError("the distance test (novelty_reject > 0) needs embeddings from "
                             "predict_fn (keras_answer_fn)")
        familiarity = gallery.familiarity(embeddings)
    answer = fit_answer_on(probabilities, labels, split=split,
                           target_precision=target_precision, familiarity=familiarity,
                           novelty_reject=novelty_reject)
    if embeddings is not None:
        answer["verification"] = verification.fit(embeddings, labels, directions,
                                                  false_accept=verify_false_accept)
    return answer


def fit_answer_on(probabilities: np.ndarray, labels: np.ndarray, *, split: str,
                  target_precision: float, familiarity: np.ndarray | None = None,
                  novelty_reject: float = 0.0) -> dict:
    """`fit_answer` on a split's probabilities at temperature 1 (and familiarity) already
    computed: what a finished run's outputs re-fit without a model."""
    # log p = logits + a constant per row: the temperature fits on it as on logits.
    log_p = calibration.log_probabilities(probabilities)
    choice = calibration.choose_temperature(log_p, labels)
    temperature = choice.pop("temperature")
    calibrated = calibration.softmax(log_p, temperature)
    rule = calibration.fit_abstention(calibrated, labels, precision=target_precision,
                                      familiarity=familiarity, novelty_reject=novelty_reject)
    kept = ~calibration.is_unknown(calibrated, familiarity=familiarity,
                                   min_confidence=rule["min_confidence"],
                                   min_familiarity=rule["min_familiarity"])
    right = calibrated.argmax(axis=1) == labels
    answer = {"temperature": temperature, **rule, "target_precision": target_precision,
              "novelty_reject": novelty_reject,
              "fitted_on": {"split": split, "examples": int(len(labels)),
                            "coverage": float(kept.mean()) if len(labels) else 0.0,
                            "precision": float(right[kept].mean()) if kept.any() else 0.0},
              "calibration": choice}
    warning = calibration.abstention_warning(answer)
    return {**answer, **({"warning": warning} if warning else {})}


def predict_split(builder, split: str, data: pipeline.DataConfig, predict_fn: PredictFn, *,
                  encoded: bool = False) -> tuple[np.ndarray, np.ndarray | dict]:
    """(labels, the fn's rows) over a split, in stored order.

    A fn that returns a dict of row arrays (a signature's outputs) gives a dict of
    them. `encoded`: the fn takes the split's encoded files
    (`pipeline.encoded_split`), not images.
    """
    labels, rows = [], []
    batches = (pipeline.encoded_split(builder, split, batch_size=data.batch_size) if encoded
               else pipeline.create_split(builder, split, data, training=False))
    for images, batch_labels in batches:
        rows.append(predict_fn(images))
        labels.append(batch_labels.numpy())
    if rows and isinstance(rows[0], dict):
        return np.concatenate(labels), {key: np.concatenate([part[key] for part in rows])
                                        for key in rows[0]}
    return np.concatenate(labels), np.concatenate(rows)


def evaluate_split(builder, split: str, data: pipeline.DataConfig, predict_fn: PredictFn,
                   out_dir: str, *, gallery: gallery_lib.Gallery | None = None,
                   temperature: float = 1.0, min_confidence: float = 0.0,
                   min_familiarity: float | None = None, encoded: bool = False,
                   fitted: dict | None = None) -> dict:
    """Writes report.json, report.md and the pictures (`report.write_report`); returns the
    metrics.

    `predict_fn` gives calibrated probabilities, of logits / `temperature` (or a
    SavedModel's outputs, `saved_model_predict_fn`, whose `unknown` is then the rule's
    answer); `min_confidence` and `min_familiarity` are the "unknown artist" rule
    (`calibration.is_unknown`). With a `gallery` and the fn's "embeddings", made as
    the gallery's were (`keras_answer_fn`), the report also gives the
    nearest-neighbour artist accuracy of the split against the gallery.
    `encoded`: as `predict_split`'s. `fitted`: how the temperature and rule were fitted
    (`fit_answer`'s answer, or a SavedModel's "abstention" with its "calibration"), which
    the report states (`report.write_report`).
    """
    labels, rows = predict_split(builder, split, data, predict_fn, encoded=encoded)
    probabilities, embeddings, unknown = outputs_of(rows)
    neighbours = familiarity = None
    if gallery is not None and len(gallery) and embeddings is not None:
        neighbours = gallery_lib.neighbour_metrics(gallery, embeddings, labels)
        familiarity = gallery.familiarity(embeddings)
    if unknown is None:
        unknown = calibration.is_unknown(probabilities, min_confidence=min_confidence,
                                         familiarity=familiarity,
                                         min_familiarity=min_familiarity)
    return report.write_report(
        out_dir, labels=labels, probabilities=probabilities,
        names=pipeline.artist_names(builder),
        images=pipeline.encoded_images(builder, split),
        title=f"{builder.info.full_name} / {split}", neighbours=neighbours,
        temperature=temperature, min_confidence=min_confidence, min_familiarity=min_familiarity,
        unknown=unknown, fitted=fitted)
