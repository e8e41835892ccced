"""SavedModel and TFLite export: encoded bytes or pixels in, artist names and probabilities out.

Signatures of the SavedModel, the methods of `ServingModule` (`saved_model_cli show --all
--dir DIR` lists them):

* `serving_default`: `images` tf.string [batch] of encoded JPEG, PNG, GIF (first
  frame) or BMP -> `probabilities` float32 [batch, artists], `top_k_ids` int32
  [batch, k], `top_k_artists` tf.string [batch, k], `top_k_probabilities`
  float32 [batch, k], `unknown` bool [batch]; with a gallery, also `familiarity`
  float32 [batch]. TensorFlow Serving's REST `{"instances": [{"b64": ...}]}` maps
  onto `images`.
* `serve_pixels`: `pixels` uint8 [batch, height, width, 3] in 0-255, any size
  (one size per call) -> the same four outputs.
* `serve_float_pixels`: `pixels` float32 [batch, height, width, 3] in [0, 1]
  -> the same four outputs. Pixels are quantised to 0-255 first: training saw
  uint8 images, so the model does too.
* `embed`: `images` -> `embeddings` float32 [batch, D], L2-normalised: the input
  of the classifier layer (`serving.explain`).
* `explain`: `images` -> `heatmaps` float32 [batch, h, w] in [0, 1] (Grad-CAM on
  the last convolutional block, h x w its grid), `explained_ids` int32 [batch] and
  `explained_artists` tf.string [batch] (each image's top-1 artist) and
  `explained_probabilities` float32 [batch]. `explain_artist` takes `images` and
  `artist_ids` int32 [batch] and explains those artists instead.
* `similar` (when exported with a gallery, `serving.gallery`): `images` -> the
  k nearest training paintings by cosine similarity of embeddings:
  `similar_ids` (gallery rows), `similar_artist_ids`, `similar_artists`,
  `similar_file_names`, `similarities` and `similar_thumbnails_bytes` (JPEG),
  each [batch, k].
* `panel`: `images` -> all of serving_default's, explain's and similar's
  outputs from one decode and one forward and backward pass: what a page
  showing a painting needs (predict.py --html, serve.py).
* `metadata`: no inputs -> `metadata` (a JSON string, the same document as
  `assets.extra/metadata.json`) and `artists` tf.string [artists].

Probabilities are calibrated: the logits are divided by the temperature
fitted on the validation split (`trainer.calibration`; T = 1 when the split is
too small to show that the fitted one generalises), stored in the model and
stated in `metadata` ("calibration", with the "method" saying which and why).
`unknown` is the stored abstention
rule ("abstention" in `metadata`, `trainer.calibration.fit_abstention`): the
top probability is below `min_confidence`, or (with a gallery) the painting's
`familiarity`, minus the relative Mahalanobis distance of its embedding to the
nearest artist's gallery paintings (`serving.gallery.Familiarity`), is below
`min_familiarity`; both chosen on the validation split so that the answers kept
are right at the stated precision, or, if no threshold is, a fallback that
still answers most paintings ("target_met": false, "kept_instead" and
"warning" say so). The top-k artists are still given, as the closest ones.

A bad element (empty, not an image, unsupported format, truncated JPEG, more
pixels than `max_pixels`) fails the call with InvalidArgument "images[i]: ..."
before anything is decoded; the loaded model keeps serving. Every signature
that takes `images` decodes them with the same `decode_batch`.

Multi-crop inference (`crops`, `flips`; "views" in `metadata`): every
signature that answers with probabilities runs the model on the whole
painting, its crops and (with flips) their mirror images, made by
`pipeline.views` as evaluation makes them, and averages the probabilities
(`serving.multiview`: log of the mean softmax, then the temperature).
`embed` and `similar` use the mean direction of the views' embeddings (the
gallery is embedded the same way); `explain`'s heatmap is Grad-CAM on the
whole-painting view, for the artist the combined probabilities rank first.
Multi-scale inference (`Views.scale`; "sizes" in "views") decodes the whole
painting at the larger size and runs the model on it and on it shrunk to
`image_size`, in every one of those signatures alike.

Decoding, resizing and rescaling are `pipeline.ops`' own functions, the ones
evaluation uses (`ops.decode_resized`): a JPEG at least 4x the model's input
is decoded at 1/2, 1/4 or 1/8 scale by libjpeg, then area-resized, so a served
photo and the same file in the test split give the same pixels.
"""

import dataclasses
import json
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from pipeline import ops, settings
from pipeline import views as views_lib
from pipeline.settings import setting
from serving import abstention, request_checks
from serving import explain as explain_lib
from serving import head as head_lib
from serving import gallery as gallery_lib

SERVING_INPUT = request_checks.SERVING_INPUT
PIXELS_INPUT = "pixels"
ARTIST_IDS_INPUT = "artist_ids"
CLAIMED_INPUT = "artists"  # `verify`: the artist each painting is said to be by.
OTHER_IMAGES_INPUT = "other_images"  # `verify_pair`: the paintings compared with `images`.
# Artists a served answer lists; the report's top-k accuracy counts the same k.
DEFAULT_TOP_K = 5
DEFAULT_MAX_PIXELS = request_checks.DEFAULT_MAX_PIXELS
# Images decoded at once inside one call: both cores stay busy on a batch.
DECODE_PARALLELISM = request_checks.DECODE_PARALLELISM
SUPPORTED_FORMATS = request_checks.SUPPORTED_FORMATS
METADATA_FORMAT_VERSION = 1
RULE_TEXT = "unknown when the top probability < min_confidence"
TEMPERATURE_TEXT = ("temperature scaling (the logits are divided by it), fitted on the "
                    "validation split by NLL")
FAMILIARITY_TEXT = ("the squared Mahalanobis distance of the painting's embedding to the "
                    "mean of the gallery's paintings less the one to the nearest artist's "
                    "mean (the relative Mahalanobis distance, negated); higher is more "
                    "familiar")
VERIFY_TEXT = ("cosine similarity of embeddings: a painting's against the claimed artist's "
               "direction in the head (verify), or against another painting's (verify_pair); "
               "accepted at or above the threshold")
ARTISTS_FILE = "artists.txt"
METADATA_FILE = "metadata.json"
# A loaded SavedModel's attribute `STATE_PREFIX + name`: [the variable `name`] of
# `ServingModule.state`.
STATE_PREFIX = "state_"
TFLITE_FILES = {"float32": "model_float32.tflite", "dynamic_range": "model_dynamic_range.tflite"}


@dataclasses.dataclass(frozen=True)
class ExportConfig(settings.Section):
    """What the exported model answers with, and which files are written: none of it changes
    the weights, so a finished run given other values is re-exported, not retrained."""

    top_k: int = setting(DEFAULT_TOP_K, "Artists the exported model returns per image.",
                         bounds=(1, None), after_training=True)
    export_tflite: bool = setting(False, "Also write float and quantised TFLite models.",
                                  after_training=True)
    gallery_per_artist: int = setting(
        100, "Training paintings per artist kept in the SavedModel (embedding, file name, "
        f"{gallery_lib.THUMBNAIL_PX} px thumbnail) for the `similar` signature; 0: none.",
        bounds=(0, None), after_training=True)
    target_precision: float = setting(
        0.9, "The 'unknown artist' rule: answer only where the top probability makes the "
        "answers kept on the validation split right this often; below it, `unknown`.",
        bounds=(0.0, 1.0), after_training=True)
    novelty_reject: float = setting(
        0.1, "The 'unknown artist' rule's distance test: paintings less like the gallery's "
        "training paintings than all but this share of the validation split are `unknown` "
        "whatever their probabilities (a painting by an artist the model never saw); "
        "0: probabilities only. Needs the gallery.", bounds=(0.0, 0.5), after_training=True)
    verify_false_accept: float = setting(
        0.05, "The `verify` signatures' thresholds: the share of false claims (a painting "
        "named for another artist) and of pairs of two hands they accept on the validation "
        "split.", bounds=(0.001, 0.5), after_training=True)


@dataclasses.dataclass(frozen=True)
class Answer:
    """How logits become the served answer: calibration, top k, abstention."""

    top_k: int = DEFAULT_TOP_K
    temperature: float = 1.0
    min_confidence: float = 0.0
    min_familiarity: float | None = None  # The distance test (needs a gallery); None: off.

    def probabilities(self, logits: tf.Tensor) -> tf.Tensor:
        return tf.nn.softmax(tf.cast(logits, tf.float32) / self.temperature, axis=-1)

    def outputs(self, probabilities: tf.Tensor, artists: tf.Tensor,
                familiarity: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        """Probabilities (and, with a gallery, familiarity) -> them, the top-k of `artists`
        and `unknown` (`serving.abstention`); shared by every endpoint."""
        top = tf.math.top_k(probabilities, k=self.top_k)
        unknown = abstention.is_unknown(top.values[:, 0], min_confidence=self.min_confidence,
                                        familiarity=familiarity,
                                        min_familiarity=self.min_familiarity)
        return {
            "probabilities": probabilities,
            "top_k_ids": top.indices,
            "top_k_artists": tf.gather(artists, top.indices),
            "top_k_probabilities": top.values,
            "unknown": unknown,
            **({} if familiarity is None else {"familiarity": familiarity}),
        }


@dataclasses.dataclass(frozen=True)
class Verification:
    """The `verify` signatures' thresholds on the cosine similarity (`trainer.verification`,
    fitted on validation for a stated false-accept rate); inf: never accepted (not fitted)."""

    claim_threshold: float = float("inf")
    pair_threshold: float = float("inf")

    @classmethod
    def of(cls, fitted: dict | None) -> "Verification":
        fitted = fitted or {}
        return cls(**{f"{kind}_threshold": fitted[kind]["threshold"]
                      for kind in ("claim", "pair") if kind in fitted})


# --- Requests -> model inputs ---------------------------------------------------------


def _views_shape(spec: views_lib.Views) -> list[int]:
    """One painting's model input: [S, S, 3], or [V, S, S, 3] with multi-crop inference (S:
    multi-scale's larger size, `Views.size`)."""
    square = [spec.size, spec.size, 3]
    return square if spec.pixel_count == 1 else [spec.pixel_count, *square]


def decode_batch(images: tf.Tensor, spec: views_lib.Views, *,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> tf.Tensor:
    """Encoded images [batch] -> uint8 [batch, size, size, 3], as `ops.decode_resized` makes them;
    with multi-crop views, uint8 [batch, V, size, size, 3] as `pipeline.views.decode` makes them.

    The header checks already read each JPEG's size, so the scale libjpeg
    decodes at (`ops.jpeg_ratio_index`) is chosen for the whole batch at once.
    """
    images, is_jpeg, shapes = request_checks.check_encoded(images, max_pixels=max_pixels)
    if spec.decode_size is None:  # Crops of the painting's own pixels: decoded whole.
        ratio_index = tf.zeros_like(is_jpeg, tf.int32)
    else:
        ratio_index = tf.where(
            is_jpeg, ops.jpeg_ratio_index(tf.reduce_min(shapes, axis=1), spec.decode_size), 0)

    def decode_one(args: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        encoded, index = args
        return views_lib.model_input(ops.decode_at_ratio(encoded, index), spec)

    # Each image has its own size and format, so decode one by one, several at a time.
    return tf.map_fn(decode_one, (images, ratio_index), parallel_iterations=DECODE_PARALLELISM,
                     fn_output_signature=tf.TensorSpec(_views_shape(spec), tf.uint8))


def resize_batch(pixels: tf.Tensor, spec: views_lib.Views) -> tf.Tensor:
    """uint8 [batch, h, w, 3] of any size -> uint8 [batch, size, size, 3] (with multi-crop
    views, [batch, V, size, size, 3]; with multi-scale, at its larger size)."""
    shape = tf.shape(pixels)
    with tf.control_dependencies([tf.debugging.assert_positive(
            shape[1:3], message=f"{PIXELS_INPUT}: images must be at least 1x1 pixels")]):
        pixels = tf.identity(pixels)
    if spec.pixel_count > 1:
        return tf.map_fn(lambda image: views_lib.views(image, spec), pixels,
                         parallel_iterations=DECODE_PARALLELISM,
                         fn_output_signature=tf.TensorSpec(_views_shape(spec), tf.uint8))
    size = spec.size

    def resize_each() -> tf.Tensor:
        return tf.map_fn(lambda image: ops.resize(image, size, mode=spec.resize_mode), pixels,
                         parallel_iterations=DECODE_PARALLELISM,
                         fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8))

    already_sized = tf.logical_and(tf.equal(shape[1], size), tf.equal(shape[2], size))
    # Already the model's size: resizing would be the identity, so skip its cost.
    resized = tf.cond(already_sized, lambda: tf.identity(pixels), resize_each)
    return tf.ensure_shape(resized, [None, size, size, 3])


def quantize_float_pixels(pixels: tf.Tensor) -> tf.Tensor:
    """float32 in [0, 1] -> uint8 0-255 (InvalidArgument outside [0, 1], NaN included)."""
    in_range = tf.reduce_all((pixels >= 0.0) & (pixels <= 1.0))
    message = tf.strings.join([
        f"{PIXELS_INPUT}: serve_float_pixels takes float32 values in [0, 1], got values in [",
        tf.strings.as_string(tf.reduce_min(pixels)), ", ", tf.strings.as_string(tf.reduce_max(pixels)),
        "]; send 0-255 pixels as uint8 to serve_pixels"])
    with tf.control_dependencies([tf.debugging.Assert(in_range, [message])]):
        return tf.cast(tf.round(pixels * 255.0), tf.uint8)


# --- Metadata -------------------------------------------------------------------------


def _dataset_fields(dataset) -> dict:
    """"name/config/version" (TFDS full_name) or a dict -> {name, config, version, full_name}."""
    if isinstance(dataset, dict):
        return dict(dataset)
    parts = str(dataset).split("/")
    fields = {"full_name": str(dataset), "name": parts[0]}
    if len(parts) == 3:
        fields.update(config=parts[1], version=parts[2])
    elif len(parts) == 2:
        fields["version"] = parts[1]
    return fields


def _preprocessing(spec: views_lib.Views, max_pixels: int) -> dict:
    image_size, resize_mode = spec.image_size, spec.resize_mode
    return {
        "decode": ("tf.io.decode_image, 3 channels, first GIF frame; a JPEG at 1/2, 1/4 or "
                   "1/8 scale (libjpeg) when its shorter side stays >= "
                   f"{ops.JPEG_REDUCING_GAP * image_size} px"),
        "resize": (f"{resize_mode} to {image_size}x{image_size}: area-averaged where it shrinks, "
                   "bilinear where it grows, rounded to uint8"),
        "rescale": "float32 = uint8 / 255, values in [0, 1]",
        "accepted_formats": SUPPORTED_FORMATS,
        "max_pixels": max_pixels,
    }


def _signature_texts(similar_k: int) -> dict:
    return {
        "serving_default": f"{SERVING_INPUT}: tf.string [batch] encoded {SUPPORTED_FORMATS}",
        "serve_pixels": f"{PIXELS_INPUT}: uint8 [batch, height, width, 3], 0-255",
        "serve_float_pixels": f"{PIXELS_INPUT}: float32 [batch, height, width, 3], [0, 1]",
        "embed": f"{SERVING_INPUT} -> embeddings [batch, D], L2-normalised",
        "explain": f"{SERVING_INPUT} -> Grad-CAM heatmaps [batch, h, w] of the top-1 artist",
        "explain_artist": f"{SERVING_INPUT}, {ARTIST_IDS_INPUT} int32 [batch] -> heatmaps "
                          "of those artists",
        **({"similar": f"{SERVING_INPUT} -> the {similar_k} most similar training "
                       "paintings (of the gallery)",
            "panel": f"{SERVING_INPUT} -> serving_default's, explain's and similar's "
                     "outputs in one pass"} if similar_k else {
            "panel": f"{SERVING_INPUT} -> serving_default's and explain's outputs"}),
        "verify": f"{SERVING_INPUT}, {CLAIMED_INPUT} tf.string [batch] -> same_hand, "
                  "same_hand_accepted: is each painting by the artist named? (cosine head)",
        "verify_pair": f"{SERVING_INPUT}, {OTHER_IMAGES_INPUT} -> same_hand, "
                       "same_hand_accepted: are two paintings by the same hand?",
        "metadata": "no inputs; this document as JSON",
    }


def _abstention_info(answer: Answer, fitted: dict | None) -> dict:
    """The rule's thresholds and text, then how they were chosen (`fitted`)."""
    rule = {"min_confidence": answer.min_confidence, "rule": RULE_TEXT}
    if answer.min_familiarity is not None:
        rule.update(min_familiarity=answer.min_familiarity,
                    rule=f"{RULE_TEXT} or familiarity < min_familiarity "
                         f"(familiarity: {FAMILIARITY_TEXT})")
    return {**rule, **(fitted or {})}


def _fitted_answer(answer: Answer, fitted: dict | None) -> dict:
    """The metadata's "calibration" and "abstention": the stored temperature and rule, and
    how they were chosen (`fitted`: `trainer.evaluation.fit_answer`'s figures, whose
    "calibration" part says how the temperature was)."""
    fitted = dict(fitted or {})
    calibration = {"method": TEMPERATURE_TEXT, **fitted.pop("calibration", {})}
    return {"calibration": {"temperature": answer.temperature, **calibration},
            "abstention": _abstention_info(answer, fitted)}


def build_metadata(
    *,
    artist_names: list[str],
    views: views_lib.Views,
    answer: Answer,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    artist_metadata: dict[str, dict] | None = None,
    metadata: dict | None = None,
    gallery: gallery_lib.Gallery | None = None,
    abstention: dict | None = None,
    verification: dict | None = None,
) -> dict:
    """The document stored as `assets.extra/metadata.json` and in the `metadata` signature
    (`export_model` says what the arguments hold)."""
    extra = dict(metadata or {})
    artist_metadata = artist_metadata or {}
    document = {
        "format_version": METADATA_FORMAT_VERSION,
        "artists": [{"id": i, **{k: v for k, v in artist_metadata.get(name, {}).items()},
                     "name": name} for i, name in enumerate(artist_names)],
        "image_size": views.image_size,
        "resize_mode": views.resize_mode,
        "top_k": answer.top_k,
        "preprocessing": _preprocessing(views, max_pixels),
        "dataset": _dataset_fields(extra.pop("dataset")) if "dataset" in extra else None,
        "metrics": extra.pop("metrics", None),
        "signatures": _signature_texts(gallery_lib.similar_count(gallery) if gallery else 0),
        "views": views.describe(),
        "gallery": {"paintings": len(gallery), "thumbnail_px": gallery_lib.THUMBNAIL_PX,
                    "familiarity": FAMILIARITY_TEXT,
                    "megabytes": round(gallery.nbytes / 2**20, 2)} if gallery else None,
        **_fitted_answer(answer, abstention),
        "verification": {"score": VERIFY_TEXT, **(verification or {
            "note": "no thresholds fitted (no validation split): nothing is accepted"})},
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
    }
    document.update(extra)  # Anything else the caller stores (e.g. the run's config).
    return document


# --- The SavedModel's signatures --------------------------------------------------------

IMAGES_SPEC = tf.TensorSpec([None], tf.string, name=SERVING_INPUT)
UINT8_PIXELS_SPEC = tf.TensorSpec([None, None, None, 3], tf.uint8, name=PIXELS_INPUT)
FLOAT_PIXELS_SPEC = tf.TensorSpec([None, None, None, 3], tf.float32, name=PIXELS_INPUT)
ARTIST_IDS_SPEC = tf.TensorSpec([None], tf.int32, name=ARTIST_IDS_INPUT)
CLAIMED_SPEC = tf.TensorSpec([None], tf.string, name=CLAIMED_INPUT)
OTHER_IMAGES_SPEC = tf.TensorSpec([None], tf.string, name=OTHER_IMAGES_INPUT)
EXPLAIN_KEYS = ("heatmaps", "explained_ids", "explained_artists", "explained_probabilities")
# Every model has these; one exported with a gallery also `similar`.
SIGNATURES = ("serving_default", "serve_pixels", "serve_float_pixels", "embed", "verify_pair", "explain",
              "explain_artist", "panel", "metadata")


class ServingModule(tf.Module):
    """The SavedModel's signatures, one `tf.function` method each, named as the signature.

    Everything a signature needs is fixed here, so each method reads as the
    path a request takes: decode (or resize) by `views`, the model, `answer`.
    """

    def __init__(self, model: keras.Model, *, views: views_lib.Views, answer: Answer,
                 artist_names: list[str], document: dict,
                 gallery: gallery_lib.Gallery | None = None,
                 verification: Verification = Verification(),
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        super().__init__(name="signatures")
        if views.resize_mode not in ops.RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {ops.RESIZE_MODES}, "
                             f"got {views.resize_mode!r}")
        has_gallery = gallery is not None and len(gallery) > 0
        if answer.min_familiarity is not None and not has_gallery:
            raise ValueError("min_familiarity (the distance test of the 'unknown artist' rule) "
                             "needs a gallery")
        self.model = model
        self.explainer = explain_lib.explainable(model)
        self.views, self.answer, self.max_pixels = views, answer, max_pixels
        # Variables of unknown length: enrolment adds or removes artists in place.
        self.artists = tf.Variable(list(artist_names), dtype=tf.string, trainable=False,
                                   shape=tf.TensorShape([None]), name="artists")
        self.head = head_lib.CosineHead.of(model)
        self.gallery = gallery_lib.GalleryModule(gallery, self.artists) if has_gallery else None
        self.document = tf.Variable(json.dumps(document, ensure_ascii=False), trainable=False,
                                    name="document")
        self.claim_threshold = tf.constant(verification.claim_threshold, tf.float32)
        self.pair_threshold = tf.constant(verification.pair_threshold, tf.float32)

    def state(self) -> dict[str, tf.Variable]:
        """The variables that say which artists the model knows: what enrolment changes
        (`serving/enrolment.py`), saved as named collections of the SavedModel."""
        state = {"artists": self.artists, "document": self.document}
        if self.head is not None:
            state["head_directions"] = self.head.directions
        if self.gallery is not None:
            state.update({f"gallery_{name}": variable
                          for name, variable in self.gallery.state().items()})
        return state

    def signatures(self) -> dict[str, tf.types.experimental.GenericFunction]:
        """Signature name -> its method."""
        names = [*SIGNATURES, *(["similar"] if self.gallery else []),
                 *(["verify"] if self.head is not None else [])]
        return {name: getattr(self, name) for name in names}

    @tf.function(input_signature=[IMAGES_SPEC])
    def serving_default(self, images):
        return self._predict(self._decoded(images))

    @tf.function(input_signature=[UINT8_PIXELS_SPEC])
    def serve_pixels(self, pixels):
        return self._predict(resize_batch(pixels, self.views))

    @tf.function(input_signature=[FLOAT_PIXELS_SPEC])
    def serve_float_pixels(self, pixels):
        return self._predict(resize_batch(quantize_float_pixels(pixels), self.views))

    @tf.function(input_signature=[IMAGES_SPEC])
    def embed(self, images):
        return {"embeddings": self._embeddings(images)}

    @tf.function(input_signature=[IMAGES_SPEC])
    def explain(self, images):
        outputs = self._explained(images)
        return {key: outputs[key] for key in EXPLAIN_KEYS}

    @tf.function(input_signature=[IMAGES_SPEC, ARTIST_IDS_SPEC])
    def explain_artist(self, images, artist_ids):
        count = tf.size(self.artists, out_type=tf.int32)
        in_range = tf.reduce_all((artist_ids >= 0) & (artist_ids < count))
        message = tf.strings.join([f"{ARTIST_IDS_INPUT}: ids must be in [0, ",
                                   tf.strings.as_string(count), ")"])
        checks = [tf.debugging.assert_equal(
            tf.size(artist_ids), tf.size(images),
            message=f"{ARTIST_IDS_INPUT}: one artist id per image"),
            tf.debugging.Assert(in_range, [message])]
        with tf.control_dependencies(checks):
            outputs = self._explained(images, tf.identity(artist_ids))
        return {key: outputs[key] for key in EXPLAIN_KEYS}

    @tf.function(input_signature=[IMAGES_SPEC])
    def similar(self, images):
        return self.gallery.nearest(self.embed(images)["embeddings"])

    @tf.function(input_signature=[IMAGES_SPEC])
    def panel(self, images):
        outputs = self._explained(images)
        panel = {**self._answer(outputs["probabilities"], outputs["embeddings"]),
                 **{key: outputs[key] for key in EXPLAIN_KEYS}}
        if self.gallery:
            panel.update(self.gallery.nearest(outputs["embeddings"]))
        return panel

    @tf.function(input_signature=[IMAGES_SPEC, CLAIMED_SPEC])
    def verify(self, images, artists):
        """Is each painting by the artist named beside it? Its embedding against that
        artist's direction in the head (`trainer.verification`)."""
        ids = self._artist_ids(artists)
        with tf.control_dependencies([tf.debugging.assert_equal(
                tf.size(artists), tf.size(images),
                message=f"{CLAIMED_INPUT}: one artist named per image")]):
            embeddings = self._embeddings(images)
        directions = tf.gather(head_lib.unit_rows(self.head.directions), ids)
        score = tf.reduce_sum(embeddings * directions, axis=-1)
        return {"same_hand": score, "same_hand_accepted": score >= self.claim_threshold,
                "claimed_ids": ids}

    @tf.function(input_signature=[IMAGES_SPEC, OTHER_IMAGES_SPEC])
    def verify_pair(self, images, other_images):
        """Are two paintings by the same hand, any hand (the model need not know it)?"""
        with tf.control_dependencies([tf.debugging.assert_equal(
                tf.size(other_images), tf.size(images),
                message=f"{OTHER_IMAGES_INPUT}: one painting to compare with each image")]):
            first = self._embeddings(images)
        score = tf.reduce_sum(first * self._embeddings(other_images), axis=-1)
        return {"same_hand": score, "same_hand_accepted": score >= self.pair_threshold}

    @tf.function(input_signature=[])
    def metadata(self):
        return {"metadata": tf.identity(self.document), "artists": tf.identity(self.artists)}

    def _decoded(self, images: tf.Tensor) -> tf.Tensor:
        return decode_batch(images, self.views, max_pixels=self.max_pixels)

    def _embeddings(self, images: tf.Tensor) -> tf.Tensor:
        return explain_lib.embed(self.explainer, ops.rescale(self._decoded(images)))

    def _artist_ids(self, names: tf.Tensor) -> tf.Tensor:
        """Artist names [batch] -> their ids; InvalidArgument naming one the model lacks."""
        matches = tf.equal(names[:, None], self.artists[None, :])
        found = tf.reduce_any(matches, axis=1)
        missing = tf.boolean_mask(names, tf.logical_not(found))
        message = tf.strings.join([f"{CLAIMED_INPUT}: this model knows no artist named ",
                                   tf.strings.reduce_join(missing[:1])])
        with tf.control_dependencies([tf.debugging.Assert(tf.reduce_all(found), [message])]):
            return tf.argmax(tf.cast(matches, tf.int32), axis=1, output_type=tf.int32)

    def _answer(self, probabilities: tf.Tensor, embeddings: tf.Tensor) -> dict[str, tf.Tensor]:
        familiarity = self.gallery.familiarity(embeddings) if self.gallery else None
        return self.answer.outputs(probabilities, self.artists, familiarity)

    def _predict(self, uint8_pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        logits, embeddings = explain_lib.forward(self.explainer, ops.rescale(uint8_pixels),
                                                 head=self.head)
        return self._answer(self.answer.probabilities(logits), embeddings)

    def _explained(self, images: tf.Tensor, artist_ids: tf.Tensor | None = None
                   ) -> dict[str, tf.Tensor]:
        outputs = explain_lib.analyze(self.explainer, ops.rescale(self._decoded(images)),
                                      artist_ids, head=self.head)
        outputs["probabilities"] = self.answer.probabilities(outputs["logits"])
        ids = outputs["explained_ids"]
        outputs["explained_artists"] = tf.gather(self.artists, ids)
        outputs["explained_probabilities"] = tf.gather(outputs["probabilities"], ids, axis=1,
                                                       batch_dims=1)
        return outputs


def write_saved_model(module: ServingModule, path: str) -> None:
    """Writes the module's signatures and every variable they use.

    Through Keras' ExportArchive, which saves the variables the functions
    capture as a flat list: `tf.saved_model.save(module)` refuses, as Keras 3's
    object graph does not reach some of them (a RandomFlip's seed state).
    """
    archive = keras.export.ExportArchive()
    archive.track(module.model)
    for name, variable in module.state().items():  # Found by name once loaded (enrolment).
        archive.add_variable_collection(STATE_PREFIX + name, [variable])
    for name, function in module.signatures().items():
        archive.add_endpoint(name=name, fn=function)
    archive.write_out(path, verbose=False)


# --- Export ---------------------------------------------------------------------------


def export_model(
    model: keras.Model,
    path: str,
    *,
    artist_names: list[str],
    views: views_lib.Views,
    answer: Answer = Answer(),
    gallery: gallery_lib.Gallery | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    artist_metadata: dict[str, dict] | None = None,
    metadata: dict | None = None,
    abstention: dict | None = None,
    verification: dict | None = None,
) -> str:
    """Writes the SavedModel described in this module's docstring; returns `path`.

    `views`: the model's input size and resize mode, and multi-crop or
    multi-scale inference (`pipeline.views`), as the run's `DataConfig.views`
    evaluated it. `answer`: temperature, top k (at most the artists) and the
    "unknown" rule's thresholds (`min_familiarity` needs a non-empty `gallery`,
    `gallery.build`, which also adds `similar`); `abstention` says how they were
    chosen (`trainer.evaluation.fit_answer`; its "warning", e.g. a target precision out
    of reach, is logged as a warning too). `max_pixels` bounds the size an encoded image
    may declare.
    `artist_metadata` maps an artist name to fields such as years and genre.
    `metadata` keys `dataset` (TFDS full name "name/config/version" or a dict) and
    `metrics` are stored in their own fields; any other key is stored as is.
    `verification`: the `verify` thresholds and how they were fitted
    (`trainer.verification.fit`); without it the signatures score but accept nothing.
    """
    names = list(artist_names)
    answer = dataclasses.replace(answer, top_k=min(answer.top_k, len(names)))
    gallery = gallery if gallery is not None and len(gallery) else None
    document = build_metadata(artist_names=names, views=views, answer=answer,
                              max_pixels=max_pixels, artist_metadata=artist_metadata,
                              metadata=metadata, gallery=gallery, abstention=abstention,
                              verification=verification)
    if warning := document["abstention"].get("warning"):
        logging.warning("the exported 'unknown artist' rule: %s", warning)
    module = ServingModule(model, views=views, answer=answer, artist_names=names,
                           document=document, gallery=gallery, max_pixels=max_pixels,
                           verification=Verification.of(verification))
    write_saved_model(module, path)
    write_assets(path, artist_names=names, document=document)
    return path


def write_assets(path: str, *, artist_names: list[str], document: dict) -> None:
    """Human-readable side files; the `metadata` signature serves the same document."""
    extra = os.path.join(path, "assets.extra")
    os.makedirs(extra, exist_ok=True)
    with open(os.path.join(extra, ARTISTS_FILE), "w", encoding="utf-8") as f:
        f.write("\n".join(artist_names) + "\n")
    with open(os.path.join(extra, METADATA_FILE), "w", encoding="utf-8") as f:
        json.dump(document, f, indent=2, ensure_ascii=False)


def export_tflite(
    model: keras.Model,
    path: str,
    *,
    image_size: int,
    artist_names: list[str] | None = None,
) -> dict[str, str]:
    """Writes float32 and dynamic-range quantised TFLite models into directory `path`.

    Input: float32 [1, image_size, image_size, 3] in [0, 1] (decode, resize and
    rescale on the device, as `ops` does); output: probabilities [1, artists]. One view:
    a model exported with multi-crop inference answers here for the whole painting only.
    Returns {"float32": file, "dynamic_range": file}. With `artist_names`, also
    writes `artists.txt` (line i names class i).
    """
    @tf.function(input_signature=[tf.TensorSpec([1, image_size, image_size, 3], tf.float32,
                                                name=PIXELS_INPUT)])
    def probabilities(pixels):
        return {"probabilities": tf.nn.softmax(
            tf.cast(model(pixels, training=False), tf.float32), axis=-1)}

    os.makedirs(path, exist_ok=True)
    written = {}
    with tempfile.TemporaryDirectory() as saved_model_dir:
        # Through a SavedModel: the converter then sees Keras 3 variables as constants.
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(name="serving_default", fn=probabilities)
        archive.write_out(saved_model_dir, verbose=False)
        for kind, file_name in TFLITE_FILES.items():
            converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
            if kind == "dynamic_range":
                # No representative data: int8 weights, float activations.
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
            written[kind] = os.path.join(path, file_name)
            with open(written[kind], "wb") as f:
                f.write(converter.convert())
    if artist_names is not None:
        with open(os.path.join(path, ARTISTS_FILE), "w", encoding="utf-8") as f:
            f.write("\n".join(artist_names) + "\n")
    return written


def tflite_predict(tflite_path: str, pixels: np.ndarray) -> np.ndarray:
    """Probabilities [n, artists] from a TFLite file for float32 pixels [n, size, size, 3].

    What an app runs on a phone, in Python: `benchmarks/tflite_compare.py` and
    the tests compare it with the SavedModel.
    """
    interpreter = tf.lite.Interpreter(model_path=tflite_path)
    interpreter.allocate_tensors()
    (source,), (target,) = interpreter.get_input_details(), interpreter.get_output_details()
    rows = []
    for image in np.asarray(pixels, np.float32):
        interpreter.set_tensor(source["index"], image[None])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(target["index"])[0].copy())
    return np.stack(rows)
