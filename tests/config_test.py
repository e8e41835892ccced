"""Settings declared once: recipes, generated flags, checks, old config.json files, --print_config."""

import dataclasses
import json
import os

import pytest
from absl import flags

import pipeline
from artist_id import configs
from tests.conftest import run
from trainer import config as config_lib
from trainer import models, train_lib


def test_original_recipe_is_the_original():
    config = configs.resolve("original", {})
    assert (config.model.name, config.data.image_size, config.data.batch_size,
            config.training.epochs) == ("seed_cnn", 300, 32, 20)
    optimizer = config.optimizer
    assert (optimizer.name, optimizer.learning_rate, optimizer.momentum, optimizer.schedule,
            optimizer.label_smoothing, optimizer.weight_decay) == ("rmsprop", 1e-3, 0.1,
                                                                   "constant", 0.0, 0.0)
    a = config.augment
    assert (a.enabled, a.flip_horizontal, a.flip_vertical, a.rotation, a.zoom,
            a.translate_height, a.translate_width, a.contrast) == (
        True, True, True, 0.25, 0.2, 0.3, 0.2, 0.2)
    assert (config.model.head, config.data.eval_scale) == ("dense", 0.0)


def test_default_recipe_is_the_declared_defaults():
    assert configs.recipe_values("default") == {}
    config = configs.resolve("default", {})
    assert config == config_lib.TrainConfig()
    assert (config.model.name, config.model.backbone, config.model.weights, config.model.head,
            config.training.epochs, config.data.image_size, config.data.eval_scale) == (
        "backbone", "efficientnet_lite0", "imagenet", "cosine", 30, 160, 1.4)
    # The earlier name of the default recipe is the default recipe.
    assert configs.resolve("finetune", {}) == config


@pytest.mark.parametrize("recipe", [r for r in configs.RECIPES if r != "default"])
def test_a_recipe_names_only_what_differs_from_the_declared_defaults(recipe):
    defaults = config_lib.to_flat(config_lib.TrainConfig())
    values = configs.recipe_values(recipe)
    assert values and all(defaults[name] != value for name, value in values.items())


def test_flags_override_recipe_and_recipe_is_recorded():
    config = configs.resolve("original", {"epochs": 3, "image_size": 64})
    assert (config.recipe, config.training.epochs, config.data.image_size) == ("original", 3, 64)
    assert config.model.name == configs.recipe_values("original")["model"]
    assert config_lib.from_dict(config.to_dict()) == config
    assert config.replace(seed=4).run.seed == 4 and config.replace(seed=4).recipe == "original"


def test_legacy_values_are_settings_whose_default_changed():
    defaults = config_lib.to_flat(config_lib.TrainConfig())
    assert set(config_lib.LEGACY_VALUES) <= set(defaults)
    assert all(defaults[name] != value for name, value in config_lib.LEGACY_VALUES.items())


def test_a_config_json_without_a_newer_setting_rebuilds_what_it_trained():
    # Written before the cosine head, multi-scale inference, matched batch-norm momentum
    # and selection by validation loss: it trained and exported a dense head at one size.
    document = configs.resolve("default", {"seed": 3}).to_dict()
    for section, name in [("model", "head"), ("data", "eval_scale"), ("model", "bn_momentum"),
                          ("training", "select_by")]:
        del document[section][name]
    old = config_lib.from_dict(document)
    assert (old.model.head, old.data.eval_scale, old.model.bn_momentum,
            old.training.select_by, old.run.seed) == ("dense", 0.0, 0.99, "val_accuracy", 3)
    # A setting the file does record keeps its recorded value, whatever the legacy map says.
    document["model"]["head"] = "cosine"
    assert config_lib.from_dict(document).model.head == "cosine"


def test_a_flat_config_json_of_the_first_versions_loads():
    # Before sections, config.json was one flat object of flag names (the original recipe
    # was then the default), with settings since removed.
    document = {"recipe": "original", "model": "seed_cnn", "image_size": 300, "epochs": 20,
                "optimizer": "rmsprop", "momentum": 0.1, "augment": True, "augment_on": "host",
                "flip_vertical": True, "weights": "none", "freeze_epochs": 0,
                "balance": "none", "removed_long_ago": 1}
    config = config_lib.from_dict(document)
    assert (config.model.name, config.model.head, config.data.eval_scale,
            config.optimizer.name, config.training.epochs) == ("seed_cnn", "dense", 0.0,
                                                             "rmsprop", 20)


def test_after_training_settings_come_from_the_declarations():
    assert config_lib.after_training_settings() == {
        "eval_crops", "test_flips", "eval_scale", "top_k", "export_tflite",
        "gallery_per_artist", "target_precision", "novelty_reject", "verify_false_accept"}


def test_describe_shows_every_setting_once_and_marks_what_was_set():
    config = configs.resolve("original", {"epochs": 3})
    text = config_lib.describe(config, marked={"model": "--recipe=original", "epochs": "flag"})
    lines = text.splitlines()
    assert lines[0] == "# recipe: original"
    settings = [line.split(" = ")[0] for line in lines if " = " in line]
    assert settings == list(config_lib.setting_fields())
    assert "model = 'seed_cnn'  # --recipe=original" in lines
    assert "epochs = 3  # flag" in lines
    assert "image_size = 300" in lines  # Set by the recipe but not marked: not asked to.
    assert [line for line in lines if line.startswith("[")] == [
        f"[{name}]" for name in config_lib.sections()]


def test_train_print_config_prints_the_resolved_recipe_without_training(tmp_path):
    result = run(["train.py", "--recipe=original", "--image_size=96", "--print_config"],
                 timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "model = 'seed_cnn'  # --recipe=original" in lines
    assert "image_size = 96  # flag" in lines
    assert "head = 'dense'  # --recipe=original" in lines
    assert "epochs = 20  # --recipe=original" in lines


def test_flags_are_generated_from_the_declarations():
    values = flags.FlagValues()
    config_lib.define_flags({name: configs.recipe_values(name) for name in configs.RECIPES},
                            values)
    assert values["model"].parser.enum_values == list(models.MODELS)
    assert values["balance"].parser.enum_values == list(pipeline.balance.MODES)
    assert values["augment_on"].parser.enum_values == ["host", "device"]
    assert "[model; default=backbone, scratch=resnet_small, original=seed_cnn]" in (
        values["model"].help)
    values(["train.py", "--image_size=64", "--noaugment", "--optimizer=sgd"])
    given = config_lib.given_flags(values)
    assert given == {"image_size": 64, "augment": False, "optimizer": "sgd"}
    config = configs.resolve("default", given)
    assert (config.data.image_size, config.augment.enabled, config.optimizer.name) == (
        64, False, "sgd")
    with pytest.raises(flags.IllegalFlagValueError, match="image_size"):
        values(["train.py", "--image_size=8"])  # Below the declared bound.
    with pytest.raises(flags.IllegalFlagValueError, match="resize_mode"):
        values(["train.py", "--resize_mode=squash"])


@pytest.mark.parametrize("overrides, message", [
    ({"weights": "imagenet"}, "--weights=imagenet needs --model=backbone"),
    ({"warmup_epochs": 2}, "--warmup_epochs needs --schedule=cosine"),
    ({"schedule": "cosine", "warmup_epochs": 20}, "must be below --epochs"),
    ({"model": "backbone", "freeze_epochs": 2}, "random, frozen backbone"),
    ({"freeze_epochs": 2}, "--freeze_epochs needs --model=backbone"),
    ({"optimizer": "adagrad"}, "--optimizer=adagrad"),
    ({"label_smoothing": 1.0}, "--label_smoothing"),
    ({"deterministic": True, "tf_data_service": "grpc://localhost:5000"}, "--deterministic"),
    ({"margin": 0.2}, "--margin=0.2 is a cosine margin: it needs --head=cosine"),
    ({"margin": 0.2, "head": "cosine", "logit_norm": 0.04}, "pick one"),
    ({"eval_scale": 1.4}, "--eval_scale=1.4 needs a network that runs at any size"),
])
def test_bad_combinations_fail_with_one_line(overrides, message):
    with pytest.raises(config_lib.ConfigError, match=message.replace("(", r"\(")) as error:
        configs.resolve("original", overrides)
    assert "\n" not in str(error.value)


def test_crops_with_the_default_multi_scale_say_which_flag_to_change():
    with pytest.raises(config_lib.ConfigError, match="--eval_scale=0, one size, for crops"):
        configs.resolve("default", {"eval_crops": 4})
    assert configs.resolve("default", {"eval_crops": 4, "eval_scale": 0.0}).data.eval_crops == 4


def test_missing_weights_file_stops_the_run_before_it_starts(tmp_path):
    config = configs.resolve("default", {"model": "backbone", "weights": "/no/such/file.h5"})
    with pytest.raises(config_lib.ConfigError, match="not 'imagenet', 'none' or an existing"):
        train_lib.train_and_evaluate(config, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")  # Nothing written.


def test_unknown_setting():
    with pytest.raises(config_lib.ConfigError, match="unknown settings: colour"):
        configs.resolve("default", {"colour": "blue"})


def test_name_value_settings_are_typed_by_their_declarations():
    assert config_lib.parse_assignments(
        ["weights=none", "data_dir=none", "image_size=64", "augment=false", "mixup=0.2"]) == {
        "weights": "none", "data_dir": None, "image_size": 64, "augment": False, "mixup": 0.2}
    with pytest.raises(config_lib.ConfigError, match="unknown setting 'colour'"):
        config_lib.parse_assignments(["colour=blue"])


def test_unknown_recipe():
    with pytest.raises(config_lib.ConfigError, match="--recipe=fancy"):
        configs.resolve("fancy", {})


def test_a_written_config_json_reads_back_equal(tmp_path):
    config = configs.resolve("scratch", {"seed": 5, "image_size": 64})
    train_lib.write_config(config, str(tmp_path))
    document = json.loads((tmp_path / train_lib.CONFIG_FILE).read_text())
    assert set(document) == {"recipe", *config_lib.sections()}
    assert train_lib.read_config(str(tmp_path)) == config
    assert dataclasses.asdict(train_lib.read_config(str(tmp_path))) == document
