"""Multi-crop inference, model side: per-view outputs -> one answer per painting.

`pipeline.views` makes the views (the whole painting, crops, mirrors); the
model runs on all of them as one batch, and the views' probabilities are
averaged. The average is returned as log(mean softmax): a valid logits
vector, so the served `Answer`'s temperature and the calibration fit
(`trainer.evaluation.fit_answer`, on log-probabilities) apply to it as to a
single view's logits. Evaluation (`trainer.evaluation`) and every serving
signature (`serving.export`) call these functions; with one view
(images [B, S, S, 3]) they return the model's own outputs untouched.

Multi-scale: images larger than the model's own input size S (the network
was built for S) are the larger views of `pipeline.views` (`Views.scale`):
the model runs on them as they are and shrunk to S (`passes`), and each
painting's views are ordered all those at S first (the whole painting at S
is its first view), then all those at the larger size.
"""

import math

import keras
import tensorflow as tf


def flatten(images: tf.Tensor) -> tuple[tf.Tensor, int]:
    """[B, S, S, 3] (one view) or [B, V, S, S, 3] -> ([B * V, S, S, 3], V); V must be static."""
    if images.shape.rank == 4:
        return images, 1
    views = images.shape[1]
    if images.shape.rank != 5 or views is None:
        raise ValueError(f"images must be [B, S, S, 3] or [B, V, S, S, 3] with a static V, "
                         f"got {images.shape}")
    return tf.reshape(images, [-1, *images.shape[2:]]), views


def model_size(model: keras.Model) -> int:
    """The square side the model was built for."""
    return model.inputs[0].shape[1]


def accept_any_size(model: keras.Model) -> keras.Model:
    """Lets `model` (and the models nested in it) be called on images of another size: only
    Keras' input check is relaxed; every network here but seed_cnn (Flatten) runs at any size
    (global pooling). Returns `model`."""
    for layer in [model, *model._flatten_layers(include_self=False)]:
        if isinstance(layer, keras.Model) and getattr(layer, "inputs", None):
            layer.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: 3})
    return model


def passes(images: tf.Tensor, size: int) -> tuple[list[tf.Tensor], int]:
    """[B, S', S', 3] or [B, V, S', S', 3] -> ([B * V, size, size, 3] (, the same at S' when
    S' > size: multi-scale), V). The shrink is an area resize rounded to the uint8 grid, as
    `pipeline.ops.resize` shrinks a painting."""
    flat, views = flatten(images)
    side = flat.shape[1]
    if side is None or side < size:
        raise ValueError(f"images must be at least the model's {size} px, got {flat.shape}")
    if side == size:
        return [flat], views
    shrunk = tf.image.resize(tf.cast(flat, tf.float32), [size, size], method="area")
    return [tf.cast(tf.round(shrunk * 255.0) / 255.0, flat.dtype), flat], views


def run(model, images: tf.Tensor) -> tuple[list, int]:
    """The model on each of `passes`: ([its outputs on each pass], V). Combine them with
    `combine_logits` / `combine_embeddings`."""
    flat, views = passes(images, model_size(model))
    return [model(x, training=False) for x in flat], views


def join(rows: list[tf.Tensor], views: int) -> tf.Tensor:
    """Each pass's [B * V, ...] rows -> [B * V * passes, ...], painting-major (a painting's
    views of the first pass, then of the next)."""
    if len(rows) == 1:
        return rows[0]
    tail = _trailing_shape(rows[0])
    per_painting = [tf.reshape(r, [-1, views, *tail]) for r in rows]
    return tf.reshape(tf.concat(per_painting, axis=1), [-1, *tail])


def _trailing_shape(x: tf.Tensor) -> list:
    """The shape after the batch: static where known, else a tensor (the artists of a
    served head are a variable's length)."""
    dynamic = tf.shape(x)
    return [size if size is not None else dynamic[i + 1]
            for i, size in enumerate(x.shape[1:])]


def combine_logits(rows: list[tf.Tensor], views: int) -> tf.Tensor:
    """Each pass's [B * V, C] logits, painting-major -> [B, C] log of the mean of the softmax
    over all of a painting's views and passes.

    One view, one pass: the logits as they are (calibration then divides them as before).
    """
    logits, count = join(rows, views), views * len(rows)
    if count == 1:
        return logits
    logits = tf.cast(logits, tf.float32)
    per_view = tf.reshape(logits, [-1, count, *_trailing_shape(logits)])
    return tf.reduce_logsumexp(tf.nn.log_softmax(per_view, axis=-1), axis=1) - math.log(count)


def whole_views(rows: tf.Tensor, views: int) -> tf.Tensor:
    """[B * V, ...] per-view rows -> [B, ...], each painting's first view (the whole painting)."""
    return rows if views == 1 else rows[::views]


def combine_embeddings(rows: list[tf.Tensor], views: int) -> tf.Tensor:
    """Each pass's [B * V, D] unit rows -> [B, D]: the mean direction over all of a painting's
    views and passes, again of unit length."""
    embeddings, count = join(rows, views), views * len(rows)
    if count == 1:
        return embeddings
    per_view = tf.reshape(embeddings, [-1, count, *_trailing_shape(embeddings)])
    return tf.math.l2_normalize(tf.reduce_mean(per_view, axis=1), axis=-1)


def painting_logits(model, images: tf.Tensor) -> tf.Tensor:
    """Float images [B, S, S, 3] or views [B, V, S, S, 3] -> logits [B, C] per painting
    (`model`: `accept_any_size` for multi-scale views)."""
    return combine_logits(*run(model, images))
