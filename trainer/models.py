"""Model definitions. Every model maps float32 images in [0, 1] to logits."""

from collections.abc import Callable

import keras

ModelFn = Callable[..., keras.Model]


def seed_cnn(*, num_classes: int, image_size: int) -> keras.Model:
    """The original recipe's CNN, kept exactly, but with logits out.

    The original put a softmax on the last layer *and* trained with
    `from_logits=True`; softmax belongs at serving time instead.
    """
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((image_size, image_size, 3)),
            layers.Conv2D(16, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(64, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Dropout(0.2),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dense(num_classes, name="logits"),
        ],
        name="seed_cnn",
    )


MODELS: dict[str, ModelFn] = {"seed_cnn": seed_cnn}


def create_model(name: str, *, num_classes: int, image_size: int) -> keras.Model:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](num_classes=num_classes, image_size=image_size)
