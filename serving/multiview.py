"""Multi-crop inference, model side: per-view outputs -> one answer per painting.

`pipeline.views` makes the views (the whole painting, crops, mirrors); the
model runs on all of them as one batch, and the views' probabilities are
averaged. The average is returned as log(mean softmax): a valid logits
vector, so the served `Answer`'s temperature and the calibration fit
(`trainer.evaluation.fit_answer`, on log-probabilities) apply to it as to a
single view's logits. Evaluation (`trainer.evaluation`) and every serving
signature (`serving.export`) call these functions; with one view
(images [B, S, S, 3]) they return the model's own outputs untouched.
"""

import math

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


def combine_logits(logits: tf.Tensor, views: int) -> tf.Tensor:
    """[B * V, C] logits, painting-major -> [B, C] log of the mean of the views' softmax.

    One view: the logits as they are (calibration then divides them as before).
    """
    if views == 1:
        return logits
    logits = tf.cast(logits, tf.float32)
    per_view = tf.reshape(logits, [-1, views, logits.shape[-1]])
    return tf.reduce_logsumexp(tf.nn.log_softmax(per_view, axis=-1), axis=1) - math.log(views)


def whole_views(rows: tf.Tensor, views: int) -> tf.Tensor:
    """[B * V, ...] per-view rows -> [B, ...], each painting's first view (the whole painting)."""
    return rows if views == 1 else rows[::views]


def combine_embeddings(embeddings: tf.Tensor, views: int) -> tf.Tensor:
    """[B * V, D] unit rows -> [B, D]: the views' mean direction, again of unit length."""
    if views == 1:
        return embeddings
    per_view = tf.reshape(embeddings, [-1, views, embeddings.shape[-1]])
    return tf.math.l2_normalize(tf.reduce_mean(per_view, axis=1), axis=-1)


def painting_logits(model, images: tf.Tensor) -> tf.Tensor:
    """Float images [B, S, S, 3] or views [B, V, S, S, 3] -> logits [B, C] per painting."""
    flat, views = flatten(images)
    return combine_logits(model(flat, training=False), views)
