"""Optimizer, learning-rate schedule, losses and the labels they take."""

import keras
import numpy as np
import pytest

from tests.conftest import tiny_config
from trainer import optim, train_lib


@pytest.mark.parametrize("name, kind", [("rmsprop", keras.optimizers.RMSprop),
                                        ("sgd", keras.optimizers.SGD),
                                        ("adamw", keras.optimizers.AdamW)])
def test_optimizer_follows_the_settings(name, kind):
    config = optim.OptimizerConfig(name=name, momentum=0.5, weight_decay=0.01, warmup_epochs=0)
    optimizer = optim.create_optimizer(config, 0.1, steps_per_epoch=10)
    assert type(optimizer) is kind and optimizer.weight_decay == pytest.approx(0.01)
    if name != "adamw":
        assert optimizer.momentum == 0.5
    schedule = optim.create_learning_rate(config, 0.1, steps_per_epoch=10, epochs=5,
                                          warmup_epochs=1)
    assert [float(schedule(step)) for step in (0, 10)] == pytest.approx([0.001, 0.1])
    assert float(schedule(50)) == pytest.approx(0.0, abs=1e-6)


def test_label_smoothing_gives_one_hot_labels_and_a_smoothed_loss(tiny_builder, tiny_data_dir):
    smoothed = tiny_config(tiny_data_dir, label_smoothing=0.2)
    loss, _ = optim.create_loss_and_metrics(smoothed, 6)
    assert isinstance(loss, keras.losses.CategoricalCrossentropy)
    assert loss.get_config()["label_smoothing"] == 0.2
    train_ds, val_ds, _ = train_lib.create_inputs(smoothed, tiny_builder)
    assert next(iter(train_ds))[1].shape == (8, 6) and next(iter(val_ds))[1].shape == (8, 6)
    sparse = tiny_config(tiny_data_dir, label_smoothing=0.0)
    assert isinstance(optim.create_loss_and_metrics(sparse, 6)[0],
                      keras.losses.SparseCategoricalCrossentropy)
    assert next(iter(train_lib.create_inputs(sparse, tiny_builder)[0]))[1].shape == (8,)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_logit_norm_loss_is_the_cross_entropy_of_logits_scaled_to_one_over_tau(
        tiny_data_dir, label_smoothing):
    config = tiny_config(tiny_data_dir, logit_norm=0.5, label_smoothing=label_smoothing)
    loss, _ = optim.create_loss_and_metrics(config, 3)
    assert isinstance(loss, optim.LogitNormCrossentropy)
    # As the training loop rebuilds it: per-example losses.
    per_example = loss.__class__(**{**loss.get_config(), "reduction": None})
    logits = np.array([[3.0, 4.0, 0.0], [0.0, 0.0, -2.0]], np.float32)  # Norms 5 and 2.
    scaled = np.array([[1.2, 1.6, 0.0], [0.0, 0.0, -2.0]])  # logits / (0.5 x norm).
    labels = np.array([1, 0])
    target = np.full((2, 3), label_smoothing / 3) + (1 - label_smoothing) * np.eye(3)[labels]
    expected = -np.sum(target * (scaled - np.log(np.exp(scaled).sum(-1, keepdims=True))), -1)
    given = np.eye(3, dtype=np.float32)[labels] if label_smoothing else labels
    np.testing.assert_allclose(per_example(given, logits), expected, rtol=1e-5)
    # Growing the logits no longer changes the loss.
    np.testing.assert_allclose(per_example(given, 10 * logits), expected, rtol=1e-5)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_margin_loss_lowers_the_true_cosine_by_the_margin(tiny_data_dir, label_smoothing):
    config = tiny_config(tiny_data_dir, margin=0.25, head="cosine",
                         label_smoothing=label_smoothing)
    loss, _ = optim.create_loss_and_metrics(config, 3)
    assert isinstance(loss, optim.MarginCrossentropy) and loss.margin == 0.25 * 16
    per_example = loss.__class__(**{**loss.get_config(), "reduction": None})
    logits = np.array([[8.0, 12.0, -4.0], [6.0, 2.0, 0.0]], np.float32)  # 16 x cosines.
    labels = np.array([1, 0])
    shifted = logits - 4.0 * np.eye(3)[labels]  # The true artist's cosine, 0.25 lower.
    target = np.full((2, 3), label_smoothing / 3) + (1 - label_smoothing) * np.eye(3)[labels]
    expected = -np.sum(target * (shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))), -1)
    given = np.eye(3, dtype=np.float32)[labels] if label_smoothing else labels
    np.testing.assert_allclose(per_example(given, logits), expected, rtol=1e-5)
    # A mixed label (mixup, CutMix) takes off the margin in proportion to its weights.
    mixed = np.array([[0.5, 0.5, 0.0]], np.float32)
    if label_smoothing:
        half = logits[:1] - 2.0 * np.array([[1.0, 1.0, 0.0]])
        mixed_target = np.full(3, 0.1 / 3) + 0.9 * mixed
        np.testing.assert_allclose(
            per_example(mixed, logits[:1]),
            -np.sum(mixed_target * (half - np.log(np.exp(half).sum(-1, keepdims=True))), -1),
            rtol=1e-5)
