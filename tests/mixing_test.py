"""Mixup and CutMix: pixels and labels mixed in the same proportions."""

import numpy as np
import pytest
import tensorflow as tf

import pipeline
from pipeline import mixing
from tests.conftest import tiny_config
from trainer import optim

CLASSES = 5
VALUES = np.array([0.0, 0.25, 0.5, 0.75, 1.0], np.float32)  # Each class's constant image.


def constant_batch(batch: int = 16, size: int = 24):
    """Images of one value each (their class's), and their one-hot labels."""
    classes = np.arange(batch) % CLASSES
    images = np.broadcast_to(VALUES[classes][:, None, None, None], (batch, size, size, 3))
    return tf.constant(images), tf.one_hot(classes, CLASSES)


@pytest.mark.parametrize("mixup, cutmix", [(0.4, 0.0), (0.0, 1.0), (0.4, 1.0)])
def test_labels_are_the_pixels_shares(mixup, cutmix):
    images, labels = constant_batch()
    mixed, mixed_labels = mixing.mix_batch(images, labels, tf.constant([3, 4]), mixup=mixup,
                                           cutmix=cutmix)
    mixed, mixed_labels = mixed.numpy(), mixed_labels.numpy()
    np.testing.assert_allclose(mixed_labels.sum(axis=1), 1.0, atol=1e-6)
    # Every image's mean pixel is its label's weighted mean of the class values.
    np.testing.assert_allclose(mixed.mean(axis=(1, 2, 3)), mixed_labels @ VALUES, atol=1e-5)
    # Labels really are mixed (Beta(0.4, 0.4) puts most shares near 0 or 1).
    assert np.sum(mixed_labels.max(axis=1) < 0.95) >= 3
    if mixup and not cutmix:  # Blended: every pixel of an image holds the same value.
        np.testing.assert_allclose(mixed.std(axis=(1, 2, 3)), 0.0, atol=1e-6)
    if cutmix and not mixup:  # Pasted: each pixel is one image's or its partner's.
        partners = images.numpy()[::-1]
        own_or_partner = np.isclose(mixed, images.numpy()) | np.isclose(mixed, partners)
        assert own_or_partner.all()


def test_both_draw_from_the_seed():
    images, labels = constant_batch()
    first = mixing.mix_batch(images, labels, tf.constant([1, 2]), mixup=0.4, cutmix=1.0)
    again = mixing.mix_batch(images, labels, tf.constant([1, 2]), mixup=0.4, cutmix=1.0)
    other = mixing.mix_batch(images, labels, tf.constant([5, 6]), mixup=0.4, cutmix=1.0)
    np.testing.assert_array_equal(first[1].numpy(), again[1].numpy())
    assert not np.allclose(first[1].numpy(), other[1].numpy())


def test_off_is_the_identity_and_sparse_labels_are_refused():
    images, labels = constant_batch()
    same_images, same_labels = mixing.mix_batch(images, labels, tf.constant([1, 2]),
                                                mixup=0.0, cutmix=0.0)
    assert same_images is images and same_labels is labels
    with pytest.raises(ValueError, match="one-hot"):
        mixing.mix_batch(images, tf.range(16), tf.constant([1, 2]), mixup=0.2, cutmix=0.0)


def test_training_split_mixes_and_the_trainer_uses_one_hot_labels(tiny_builder, tiny_data_dir):
    config = tiny_config(tiny_data_dir, label_smoothing=0.0, mixup=0.4, cutmix=1.0)
    assert optim.uses_one_hot(config)
    options = dict(augment=config.augment, seed=0)
    _, labels = next(iter(pipeline.create_split(tiny_builder, "train", config.data,
                                                training=True, one_hot=True, **options)))
    assert labels.shape == (8, 6)
    np.testing.assert_allclose(labels.numpy().sum(axis=1), 1.0, atol=1e-6)
    assert (labels.numpy().max(axis=1) < 0.999).any()
    # Evaluation splits are never mixed.
    _, labels = next(iter(pipeline.create_split(tiny_builder, "validation", config.data,
                                                training=False, one_hot=True, **options)))
    assert set(np.unique(labels.numpy())) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="one-hot"):
        pipeline.create_split(tiny_builder, "train", config.data, training=True,
                              one_hot=False, **options)
    assert not optim.uses_one_hot(tiny_config(tiny_data_dir, label_smoothing=0.0))
