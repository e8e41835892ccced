"""Why the model answers what it does: embeddings and Grad-CAM heatmaps, in TensorFlow only.

Works for every model in `trainer.models` (and any Keras model whose last
layer is its classifier): the *embedding* is that layer's input (the pooled
features, L2-normalised), the *feature maps* are the last 4-D tensor of the
model's graph (the last convolutional block; for `--model=backbone`, the
backbone's output), and Grad-CAM (Selvaraju et al. 2017) weighs those maps by
the gradient of the chosen artist's logit, averaged over the map.
"""

import keras
import tensorflow as tf

from serving import multiview


def _graph_outputs(model: keras.Model) -> list[keras.KerasTensor]:
    """Every layer's output tensor in `model`'s own graph, inputs first.

    `layer.output` of a nested model (a backbone) is a tensor of its own inner
    graph, not of this one, so the walk goes through the graph's nodes.
    """
    if isinstance(model, keras.Sequential):  # Same layers, as a graph with nodes.
        model = keras.Model(model.inputs, model.outputs)
    nodes = model._nodes_by_depth  # Keras keeps no public list of a graph's nodes.
    return [tensor for depth in sorted(nodes, reverse=True) for node in nodes[depth]
            if node.operation is not None for tensor in node.output_tensors]


def explainable(model: keras.Model) -> keras.Model:
    """`model` -> a model of the same layers with outputs [feature maps, embedding, logits].

    Raises ValueError for a model with no 4-D tensor (nothing to draw a map on).
    """
    tensors = _graph_outputs(model)
    maps = [tensor for tensor in tensors if len(tensor.shape) == 4]
    if not maps:
        raise ValueError(f"{model.name} has no convolutional feature maps to explain")
    if maps[-1] is tensors[0]:
        raise ValueError(f"{model.name}: its only 4-D tensor is the input image")
    classifier = model.layers[-1]
    # Callable at other sizes too (multi-scale views): `multiview.accept_any_size`.
    return multiview.accept_any_size(keras.Model(
        model.inputs, [maps[-1], classifier.input, model.outputs[0]],
        name=f"{model.name}_explainable"))


def normalized_embeddings(embeddings: tf.Tensor) -> tf.Tensor:
    """float32 rows of unit length: cosine similarity is then a dot product."""
    return tf.math.l2_normalize(tf.cast(embeddings, tf.float32), axis=-1)


def grad_cam(feature_maps: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
    """[batch, h, w, c] maps and their gradients -> heatmaps [batch, h, w] in [0, 1].

    Each image's map is divided by its own maximum; a map with no positive
    evidence stays all zero.
    """
    maps = tf.cast(feature_maps, tf.float32)
    weights = tf.reduce_mean(tf.cast(gradients, tf.float32), axis=[1, 2], keepdims=True)
    heatmaps = tf.nn.relu(tf.reduce_sum(maps * weights, axis=-1))
    peak = tf.reduce_max(heatmaps, axis=[1, 2], keepdims=True)
    return tf.math.divide_no_nan(heatmaps, peak)


def view_logits(outputs: list, head=None) -> list[tf.Tensor]:
    """Each pass's float32 logits: the model's own, or `head` (`serving.head.CosineHead`)
    applied to the classifier's input, where the artists are a variable."""
    return [tf.cast(logits if head is None else head(features), tf.float32)
            for _, features, logits in outputs]


def forward(explainer: keras.Model, images: tf.Tensor, *, head=None
            ) -> tuple[tf.Tensor, tf.Tensor]:
    """Float images [B, S, S, 3] (or views [B, V, S, S, 3]) -> (logits [B, C], normalised
    embeddings [B, D]) from one pass; with views, their combined logits and the mean
    direction of their embeddings (`serving.multiview`, multi-scale views included)."""
    outputs, views = multiview.run(explainer, images)
    return (multiview.combine_logits(view_logits(outputs, head), views),
            multiview.combine_embeddings([normalized_embeddings(e) for _, e, _ in outputs],
                                         views))


def embed(explainer: keras.Model, images: tf.Tensor) -> tf.Tensor:
    """Float images (or views) -> normalised embeddings [B, D], as `forward` gives them."""
    outputs, views = multiview.run(explainer, images)
    return multiview.combine_embeddings([normalized_embeddings(e) for _, e, _ in outputs], views)


def analyze(explainer: keras.Model, images: tf.Tensor, artist_ids: tf.Tensor | None = None,
            *, head=None) -> dict[str, tf.Tensor]:
    """One forward and backward pass over float images in [0, 1].

    Returns `logits` [batch, artists] (float32), `embeddings` (normalised) [batch, D],
    `heatmaps` [batch, h, w] for `artist_ids` [batch] (default: each image's
    top-1 artist), and `explained_ids` [batch], the artists explained.

    Views [batch, V, S, S, 3] (multi-crop inference) run in the same pass:
    logits and embeddings combine all views (`serving.multiview`), the
    default artist is the combined top-1, and the heatmap is Grad-CAM on the
    whole-painting view (a map over crops would not line up with the painting; with
    multi-scale views, the one at the model's own size).
    """
    with tf.GradientTape() as tape:
        outputs, views = multiview.run(explainer, images)
        feature_maps = outputs[0][0]  # The pass at the model's own size.
        per_pass = view_logits(outputs, head)
        logits = multiview.combine_logits(per_pass, views)
        if artist_ids is None:
            artist_ids = tf.argmax(logits, axis=-1, output_type=tf.int32)
        chosen = tf.gather(multiview.whole_views(per_pass[0], views), artist_ids, axis=1,
                           batch_dims=1)
    gradients = tape.gradient(chosen, feature_maps)
    return {
        "logits": logits,
        "embeddings": multiview.combine_embeddings(
            [normalized_embeddings(e) for _, e, _ in outputs], views),
        "heatmaps": grad_cam(multiview.whole_views(feature_maps, views),
                             multiview.whole_views(gradients, views)),
        "explained_ids": artist_ids,
    }
