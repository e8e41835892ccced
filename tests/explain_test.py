"""Embeddings, Grad-CAM heatmaps and similar paintings: the math, and the exported signatures."""

import io
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

import pipeline
from pipeline import ops
from serving import explain
from serving import gallery as gallery_lib
from trainer import models


def one_by_one_model() -> keras.Model:
    """Feature maps = the image's channels; logit k = the mean of channel k: Grad-CAM of
    artist k is then channel k itself, scaled to a peak of 1."""
    inputs = keras.Input((8, 8, 3))
    maps = keras.layers.Conv2D(3, 1, use_bias=False, name="identity")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(maps)
    model = keras.Model(inputs, keras.layers.Dense(2, use_bias=False, name="logits")(pooled))
    model.get_layer("identity").set_weights([np.eye(3, dtype=np.float32)[None, None]])
    model.get_layer("logits").set_weights([np.eye(3, 2, dtype=np.float32)])
    return model


def test_grad_cam_finds_the_evidence_of_each_artist():
    image = np.zeros((1, 8, 8, 3), np.float32)
    image[0, :4, :4, 0] = 0.5  # Artist 0's evidence, top left.
    image[0, 2, 6, 0] = 1.0
    image[0, 4:, 4:, 1] = 0.8  # Artist 1's, bottom right.
    explainer = explain.explainable(one_by_one_model())
    for artist in (0, 1):
        outputs = explain.analyze(explainer, tf.constant(image), tf.constant([artist]))
        expected = image[0, :, :, artist] / image[0, :, :, artist].max()
        np.testing.assert_allclose(outputs["heatmaps"][0], expected, atol=1e-6)
        assert outputs["explained_ids"].numpy().tolist() == [artist]
    # No artist given: the top-1 is explained, artist 1 (mean 0.2 against 0.14).
    assert explain.analyze(explainer, tf.constant(image))["explained_ids"].numpy()[0] == 1
    embedding = explain.analyze(explainer, tf.constant(image))["embeddings"].numpy()[0]
    pooled = image[0].mean(axis=(0, 1))
    np.testing.assert_allclose(embedding, pooled / np.linalg.norm(pooled), atol=1e-6)


def test_a_map_without_positive_evidence_is_zero_not_nan():
    explainer = explain.explainable(one_by_one_model())
    heatmaps = explain.analyze(explainer, tf.zeros((2, 8, 8, 3)))["heatmaps"].numpy()
    assert heatmaps.shape == (2, 8, 8) and not heatmaps.any()


@pytest.mark.parametrize("name,options,grid,width", [
    ("seed_cnn", {}, (4, 4), 128),
    ("resnet_small", {}, (1, 1), 192),
    # Mean and standard deviation: twice the channels, and still the block's maps.
    ("resnet_small", {"pooling": "mean_std"}, (1, 1), 384),
    # The backbone's own output (pooled outside it), not a layer of the classifier.
    ("backbone", {"backbone": "mobilenetv3small"}, (1, 1), 576),
])
def test_every_model_has_maps_and_an_embedding(name, options, grid, width):
    model = models.create_model(name, num_classes=3, image_size=32, **options)
    maps, embedding, logits = explain.explainable(model)(tf.zeros((1, 32, 32, 3)))
    assert maps.shape[1:3] == grid and embedding.shape == (1, width) and logits.shape == (1, 3)
    np.testing.assert_array_equal(logits, model(tf.zeros((1, 32, 32, 3))))


def test_a_model_without_feature_maps_cannot_be_explained():
    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="only 4-D tensor is the input"):
        explain.explainable(model)


def test_gallery_keeps_at_most_n_per_artist_chosen_by_seed():
    labels = np.array([0] * 7 + [1] * 2 + [2] * 5)
    keep = gallery_lib.choose(labels, 3, seed=1)
    assert np.bincount(labels[keep]).tolist() == [3, 2, 3]
    np.testing.assert_array_equal(keep, gallery_lib.choose(labels, 3, seed=1))
    assert not np.array_equal(keep, gallery_lib.choose(labels, 3, seed=2))


def test_neighbour_metrics_count_nearest_and_vote():
    gallery = gallery_lib.Gallery(
        embeddings=np.array([[1, 0, 0], [.8, .6, 0], [.6, .8, 0], [0, 1, 0], [0, 0, 1],
                             [0, .6, .8]], np.float32),
        labels=np.array([0, 1, 1, 1, 2, 2], np.int32),
        file_names=np.array([b"a", b"b", b"c", b"d", b"e", b"f"], object),
        thumbnails=np.array([b"x"] * 6, object))
    queries = np.array([[1, 0, 0], [0, 0, 1]], np.float32)
    metrics = gallery_lib.neighbour_metrics(gallery, queries, np.array([1, 2]))
    # Query 0: nearest is artist 0 (wrong); its 5 nearest vote 0, 1, 1, 1, 2: artist 1.
    # Query 1: nearest is artist 2; the vote ties 2 against 2 between artists 1 and 2,
    # and the similarities (1 + 0.8 against 0) give it to artist 2.
    assert metrics["nn1_accuracy"] == 0.5 and metrics["nn5_vote_accuracy"] == 1.0
    assert metrics["gallery_size"] == 6



def test_familiarity_is_the_negated_relative_mahalanobis_distance():
    rng = np.random.default_rng(0)
    # Two artists in 4 dimensions, both spread along the first; the second 6 along the third.
    labels = np.repeat([0, 1], 30)
    rows = (rng.normal(size=(60, 4)) * [3.0, 0.5, 0.5, 0.5]
            + np.where(labels[:, None] == 1, [0, 0, 6, 0], 0))
    measure = gallery_lib.Familiarity.fit(rows, labels, shrinkage=0.3)
    queries = np.array([[0, 0, 0, 0], [0, 0, 6, 0], [4, 0, 0, 0], [0, 4, 0, 0],
                        [0, 0, 3, 0], [0, 0, 3, 4]], np.float64)

    def inverse(centred):  # The shrunk covariance, inverted directly.
        covariance = np.cov(centred, rowvar=False)
        return np.linalg.inv(0.7 * covariance + 0.3 * np.trace(covariance) / 4 * np.eye(4))

    means = np.stack([rows[labels == a].mean(axis=0) for a in (0, 1)])
    within, overall = inverse(rows - means[labels]), inverse(rows - rows.mean(axis=0))

    def squared(x, mean, inverse_covariance):
        return (x - mean) @ inverse_covariance @ (x - mean)

    expected = [squared(q, rows.mean(axis=0), overall)
                - min(squared(q, m, within) for m in means) for q in queries]
    np.testing.assert_allclose(measure(queries), expected, rtol=1e-4)
    got = measure(queries)
    # Each artist's centre is the most familiar; 4 along the artists' spread is more
    # familiar than 4 across it, or than halfway between them; and off that line, less.
    assert min(got[:2]) > got[2] > 0 > got[3] > got[4] > got[5]
    # A gallery of one painting an artist (every covariance zero) still gives finite values.
    single = gallery_lib.Familiarity.fit(np.eye(4)[:2], np.array([0, 1]))
    assert np.isfinite(single(queries)).all()

def test_thumbnail_keeps_the_aspect_within_the_bound():
    encoded = tf.io.encode_png(tf.zeros((300, 120, 3), tf.uint8))
    with Image.open(io.BytesIO(ops.thumbnail_jpeg(encoded, 128).numpy())) as image:
        assert image.format == "JPEG" and image.size == (51, 128)
    small = tf.io.encode_png(tf.zeros((40, 60, 3), tf.uint8))
    with Image.open(io.BytesIO(ops.thumbnail_jpeg(small, 128).numpy())) as image:
        assert image.size == (60, 40)  # Never enlarged.


# --- On a trained run's SavedModel -------------------------------------------------------


@pytest.fixture(scope="module")
def served(trained_run):
    config, workdir, metrics = trained_run
    return config, workdir, metrics, tf.saved_model.load(os.path.join(workdir, "saved_model"))


def train_files(builder) -> list[tuple[bytes, bytes, int]]:
    ds = builder.as_dataset(split="train", decoders={"image": tfds.decode.SkipDecoding()})
    return [(f["image"], f["file_name"], int(f["label"])) for f in ds.as_numpy_iterator()]


def test_similar_finds_a_gallery_painting_itself(served, tiny_builder):
    config, _, _, loaded = served
    files = train_files(tiny_builder)
    document = json.loads(loaded.signatures["metadata"]()["metadata"].numpy())
    per_artist = config.export.gallery_per_artist
    counts = np.bincount([label for *_, label in files])
    assert document["gallery"]["paintings"] == np.minimum(counts, per_artist).sum()
    outputs = {k: v.numpy() for k, v in loaded.signatures["similar"](
        images=tf.constant([image for image, *_ in files])).items()}
    names = set(outputs["similar_file_names"].ravel())
    in_gallery = [i for i, (_, name, _) in enumerate(files) if name in names]
    assert in_gallery
    for i in in_gallery[:4]:
        image, name, label = files[i]
        assert outputs["similarities"][i, 0] == pytest.approx(1.0, abs=1e-5)
        # Identical images may tie; this file is among the perfect matches.
        perfect = outputs["similarities"][i] > 1 - 1e-5
        assert name in outputs["similar_file_names"][i][perfect]
        assert outputs["similar_artist_ids"][i, 0] == label
    assert (np.diff(outputs["similarities"], axis=1) <= 1e-6).all()  # Most similar first.
    with Image.open(io.BytesIO(outputs["similar_thumbnails_bytes"][0, 0])) as thumb:
        assert thumb.format == "JPEG" and max(thumb.size) <= gallery_lib.THUMBNAIL_PX


def test_embed_explain_and_panel_agree_with_serving_default(served, tiny_builder):
    _, _, _, loaded = served
    images = tf.constant([image for image, *_ in train_files(tiny_builder)[:6]])
    panel = loaded.signatures["panel"](images=images)
    default = loaded.signatures["serving_default"](images=images)
    np.testing.assert_allclose(panel["probabilities"], default["probabilities"], atol=1e-6)
    np.testing.assert_array_equal(panel["top_k_ids"], default["top_k_ids"])
    explained = loaded.signatures["explain"](images=images)
    np.testing.assert_allclose(panel["heatmaps"], explained["heatmaps"], atol=1e-6)
    np.testing.assert_array_equal(explained["explained_ids"], default["top_k_ids"][:, 0])
    heatmaps = explained["heatmaps"].numpy()
    assert heatmaps.shape == (6, 4, 4) and heatmaps.min() >= 0 and heatmaps.max() == 1
    np.testing.assert_allclose(explained["explained_probabilities"],
                               default["top_k_probabilities"][:, 0], atol=1e-6)
    embeddings = loaded.signatures["embed"](images=images)["embeddings"].numpy()
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(panel["similarities"][:, 0],
                               loaded.signatures["similar"](images=images)["similarities"][:, 0],
                               atol=1e-6)


def test_explain_artist_takes_one_valid_id_per_image(served, tiny_builder):
    _, _, _, loaded = served
    images = tf.constant([image for image, *_ in train_files(tiny_builder)[:2]])
    outputs = loaded.signatures["explain_artist"](images=images, artist_ids=tf.constant([2, 0]))
    assert outputs["explained_ids"].numpy().tolist() == [2, 0]
    names = pipeline.artist_names(tiny_builder)
    assert [a.decode() for a in outputs["explained_artists"].numpy()] == [names[2], names[0]]
    for ids, message in (([0, len(names)], "ids must be in"), ([0], "one artist id per image")):
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            loaded.signatures["explain_artist"](images=images, artist_ids=tf.constant(ids))


def test_report_gives_the_nearest_neighbour_second_opinion(served):
    _, workdir, metrics, _ = served
    with open(os.path.join(workdir, "report.json")) as f:
        neighbours = json.load(f)["nearest_neighbours"]
    assert 0 <= neighbours["nn1_accuracy"] <= 1 and neighbours["gallery_size"] > 0
    assert metrics["test_nn1_accuracy"] == neighbours["nn1_accuracy"]
    with open(os.path.join(workdir, "report.md")) as f:
        markdown = f.read()
    assert f"| nearest painting's artist (k = 1) | {neighbours['nn1_accuracy']:.1%} |" in markdown
