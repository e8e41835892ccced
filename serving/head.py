"""The served cosine classifier: one direction per artist, in a variable artists can join.

A model trained with `--head=cosine` answers `scale` x the cosine similarity of
a painting's embedding to each artist's direction (`trainer.models.
CosineClassifier`). The SavedModel computes those logits here, from the
directions as a variable of unknown length, rather than inside the Keras
graph: an artist is then added or removed by changing the variable's rows
(`serving/enrolment.py`), without retraining and without tracing anew. A dense
head has no such directions; its models answer through the Keras graph.
"""

import keras
import numpy as np
import tensorflow as tf

# How trainer.models registers its cosine classifier layer (`keras.saving`).
COSINE_LAYER = "artist_id>CosineClassifier"


def cosine_layer(model: keras.Model) -> keras.layers.Layer | None:
    """The model's cosine classifier layer, if its classifier is one (nested models too)."""
    for layer in model._flatten_layers(include_self=False):
        if keras.saving.get_registered_name(type(layer)) == COSINE_LAYER:
            return layer
    return None


def unit_rows(x: tf.Tensor) -> tf.Tensor:
    """Rows of unit length, as the Keras layer divides them (the same epsilon)."""
    x = tf.cast(x, tf.float32)
    return x / tf.sqrt(tf.reduce_sum(tf.square(x), axis=-1, keepdims=True) + 1e-12)


class CosineHead(tf.Module):
    """`scale` x cos(features, direction) for every artist: logits [batch, artists]."""

    def __init__(self, directions: np.ndarray, scale: float):
        super().__init__(name="head")
        directions = np.asarray(directions, np.float32)
        self.scale = float(scale)
        self.directions = tf.Variable(directions, shape=tf.TensorShape([None, directions.shape[1]]),
                                      trainable=False, name="directions")

    @classmethod
    def of(cls, model: keras.Model) -> "CosineHead | None":
        """The head of a model with a cosine classifier (its kernel's columns as rows)."""
        layer = cosine_layer(model)
        if layer is None:
            return None
        return cls(keras.ops.convert_to_numpy(layer.kernel).T, layer.scale)

    def __call__(self, features: tf.Tensor) -> tf.Tensor:
        """The classifier's input [batch, D] (not yet normalised) -> logits [batch, artists]."""
        return self.scale * tf.matmul(unit_rows(features), unit_rows(self.directions),
                                      transpose_b=True)
