"""Models: each trains a step, their layers compute what they say, backbones load weights."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from artist_id import configs
from trainer import config as config_lib
from trainer import models, train_lib


@pytest.mark.parametrize("name,options", [("seed_cnn", {}), ("resnet_small", {}),
                                          ("resnet_small", {"pooling": "mean_std"}),
                                          ("seed_cnn", {"head": "cosine"}),
                                          ("resnet_small", {"head": "cosine"})])
def test_each_model_trains_a_step(name, options):  # backbone: train_test.py.
    model = models.create_model(name, num_classes=4, image_size=48, **options)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).random((4, 48, 48, 3), dtype=np.float32)
    before = [w.copy() for w in model.get_weights()]
    loss = model.train_on_batch(x, np.arange(4))
    assert np.isfinite(loss) and model.output_shape == (None, 4)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_mean_std_pooling_gives_each_channels_mean_then_standard_deviation():
    maps = np.zeros((2, 2, 2, 3), np.float32)
    maps[0, :, :, 0] = [[0, 2], [0, 2]]  # Mean 1, deviation 1.
    maps[0, :, :, 1] = 5  # Flat: deviation 0 (but for the epsilon under the root).
    maps[1, :, :, 2] = [[1, 2], [3, 6]]  # Mean 3, variance (4 + 1 + 0 + 9) / 4.
    pooled = keras.ops.convert_to_numpy(models.MeanStdPooling2D()(maps))
    np.testing.assert_allclose(pooled, [[1, 5, 0, 1, 0, 0], [0, 0, 3, 0, 0, 3.5 ** 0.5]],
                               atol=2e-3)


def test_cosine_head_gives_16_times_the_cosine_and_saves_and_serves(tmp_path):
    model = models.create_model("resnet_small", num_classes=3, image_size=32, head="cosine",
                                widths=(8, 8, 8, 8))
    head = model.get_layer("logits")
    assert isinstance(head, models.CosineClassifier) and model.layers[-1] is head
    kernel = np.array([[1.0, 0, -2], [0, 3, 0]] + [[0, 0, 0]] * 6, np.float32)
    head.set_weights([kernel])
    embeddings = np.zeros((2, 8), np.float32)
    embeddings[0, :2] = [3, 4]  # cos to the columns: 0.6, 0.8, -0.6.
    embeddings[1, :2] = [-10, 0]  # ...and -1, 0, 1.
    expected = 16 * np.array([[0.6, 0.8, -0.6], [-1, 0, 1]])
    np.testing.assert_allclose(head(embeddings), expected, rtol=1e-5)
    np.testing.assert_allclose(head(7 * embeddings), expected, rtol=1e-5)  # Length: no say.
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    model.save(tmp_path / "cosine.keras")
    np.testing.assert_allclose(keras.saving.load_model(tmp_path / "cosine.keras")(x),
                               model(x), rtol=1e-5)
    from pipeline import views
    from serving import export
    path = export.export_model(model, str(tmp_path / "saved"), artist_names=["a", "b", "c"],
                               views=views.Views(32), answer=export.Answer(temperature=2.0))
    served = tf.saved_model.load(path).signatures["serve_pixels"](
        pixels=tf.constant((x * 255).round().astype(np.uint8)))
    np.testing.assert_allclose(
        served["probabilities"],
        tf.nn.softmax(model(np.round(x * 255) / 255, training=False) / 2.0), atol=1e-5)


def test_original_cnn_has_the_original_shape():
    model = models.create_model("seed_cnn", num_classes=50, image_size=300)
    convs = (27 * 16 + 16) + (144 * 32 + 32) + (288 * 64 + 64)
    dense = (37 * 37 * 64) * 128 + 128  # 300 -> 150 -> 75 -> 37 after three poolings.
    assert model.count_params() == convs + dense + 128 * 50 + 50 == 11_245_010
    assert model.layers[-1].activation is keras.activations.linear
    assert models.create_model("resnet_small", num_classes=50, image_size=300).count_params() < 2_000_000


def test_imagenet_weights_without_network_is_a_one_line_error(monkeypatch):
    from keras.src.utils import file_utils

    url = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v3/x.h5"

    def offline(*args, **kwargs):  # What keras raises here with no network (measured).
        raise Exception(f"URL fetch failure on {url}: None -- [Errno -2] Name or service not "
                        "known\nmore detail")

    monkeypatch.setattr(file_utils, "get_file", offline)
    config = configs.resolve("default", {"model": "backbone", "backbone": "mobilenetv3small",
                                         "weights": "imagenet", "image_size": 48})
    with pytest.raises(config_lib.ConfigError) as raised:
        train_lib.build_model(config, 3)
    assert str(raised.value) == (f"could not load --weights=imagenet into mobilenetv3small: "
                                 f"URL fetch failure on {url}: None -- [Errno -2] Name or "
                                 "service not known")


def test_local_weights_file_loads_into_backbone(tmp_path):
    base = keras.applications.MobileNetV3Small(include_top=False, weights=None,
                                               input_shape=(48, 48, 3), pooling="avg")
    path = str(tmp_path / "mobilenet.weights.h5")
    base.save_weights(path)
    model = models.create_model("backbone", num_classes=3, image_size=48,
                                backbone="mobilenetv3small", weights=path)
    loaded = model.get_layer(models.BACKBONE_LAYER).get_weights()
    for a, b in zip(base.get_weights(), loaded):
        np.testing.assert_array_equal(a, b)
    assert models.set_backbone_trainable(model, False)
    assert not model.get_layer(models.BACKBONE_LAYER).trainable


@pytest.mark.parametrize("setting, steps, expected", [
    (0.97, 18, 0.97),  # Given: kept.
    (0.0, 18, 0.9),  # A few hundred paintings: 1 - 2/18 = 0.889, at least 0.9.
    (0.0, 68, 1 - 2 / 68),  # Devset at batch 32: 0.971.
    (0.0, 1000, 0.99),  # Large collections: Keras' default, at most.
])
def test_batch_norm_momentum_matched_to_the_steps_per_epoch(setting, steps, expected):
    assert models.batch_norm_momentum(setting, steps) == pytest.approx(expected)
