"""SavedModel export: encoded image bytes in, artist names and probabilities out."""

import json
import os

import keras
import tensorflow as tf

from pipeline import ops

SERVING_INPUT = "images"


def serving_outputs(
    model: keras.Model, pixels: tf.Tensor, artists: tf.Tensor, top_k: int
) -> dict[str, tf.Tensor]:
    """Logits -> probabilities and the top-k artists; shared by every endpoint."""
    logits = model(pixels, training=False)
    probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
    top = tf.math.top_k(probabilities, k=top_k)
    return {
        "probabilities": probabilities,
        "top_k_ids": top.indices,
        "top_k_artists": tf.gather(artists, top.indices),
        "top_k_probabilities": top.values,
    }


def export_model(
    model: keras.Model,
    path: str,
    *,
    artist_names: list[str],
    image_size: int,
    resize_mode: str = "stretch",
    top_k: int = 5,
    metadata: dict | None = None,
) -> str:
    """Writes a SavedModel whose `serving_default` takes a batch of encoded images."""
    top_k = min(top_k, len(artist_names))
    artists = tf.constant(artist_names)
    pixel_spec = tf.TensorSpec([image_size, image_size, 3], tf.float32)

    def preprocess(encoded: tf.Tensor) -> tf.Tensor:
        # The pipeline's own decode -> resize -> rescale, image by image
        # (each may have its own size and format), then one batched call.
        return ops.preprocess_encoded(encoded, image_size, mode=resize_mode)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=SERVING_INPUT)])
    def serve_bytes(images):
        pixels = tf.map_fn(preprocess, images, fn_output_signature=pixel_spec)
        return serving_outputs(model, pixels, artists, top_k)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name="serving_default", fn=serve_bytes)
    archive.write_out(path, verbose=False)
    _write_assets(path, artist_names=artist_names, metadata={
        "image_size": image_size, "resize_mode": resize_mode, "top_k": top_k,
        **(metadata or {}),
    })
    return path


def _write_assets(path: str, *, artist_names: list[str], metadata: dict) -> None:
    """Human-readable side files; the graph itself already holds the names."""
    extra = os.path.join(path, "assets.extra")
    os.makedirs(extra, exist_ok=True)
    with open(os.path.join(extra, "artists.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(artist_names) + "\n")
    with open(os.path.join(extra, "metadata.json"), "w", encoding="utf-8") as f:
        json.dump(metadata, f, indent=2, ensure_ascii=False)
