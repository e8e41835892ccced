"""Trains an artist classifier: `python train.py --workdir=DIR [--recipe=NAME] [flags]`.

A recipe (`configs/`) is a named set of flag values; any flag given on the
command line overrides it. `WORKDIR/config.json` records the resolved values.
"""

import sys

from absl import app, flags, logging

import configs
from trainer import config as config_lib

FLAGS = flags.FLAGS
_DEFAULTS = config_lib.TrainConfig()
_RECIPES = {name: configs.recipe_values(name) for name in configs.RECIPES}


def _help(name: str, text: str) -> str:
    """Help text that says what each recipe sets, since flags default to the recipe."""
    values = ", ".join(f"{recipe}={_RECIPES[recipe].get(name, getattr(_DEFAULTS, name))}"
                       for recipe in configs.RECIPES)
    return f"{text} (recipes: {values})"


def _define(kind: str, name: str, text: str, **kwargs) -> None:
    getattr(flags, f"DEFINE_{kind}")(name=name, default=None, help=_help(name, text), **kwargs)


flags.DEFINE_string("workdir", None, "Directory for everything the run writes: config.json, "
                    "checkpoints, backup, TensorBoard logs, metrics.csv, report, saved_model/.")
flags.DEFINE_enum("recipe", "default", list(configs.RECIPES), "Named set of flag values: "
                  "'original' reproduces the original notebook, 'default' is the project's.")
flags.DEFINE_bool("overwrite", False, "Replace a different run already in --workdir.")
flags.mark_flag_as_required("workdir")

# Data.
flags.DEFINE_string("dataset", None, "TFDS dataset as name[/config][:version], e.g. "
                    "best_artworks/top11. [sample_paintings]")
flags.DEFINE_string("data_dir", None, "TFDS data directory. [~/tensorflow_datasets]")
_define("integer", "image_size", "Square input size in pixels.", lower_bound=16, upper_bound=1024)
_define("enum", "resize_mode", "Painting to square: stretch, or keep aspect and centre-crop.",
        enum_values=["stretch", "crop"])
_define("integer", "batch_size", "Global batch size.", lower_bound=1)
_define("bool", "cache", "Cache decoded, resized uint8 images in memory (small datasets).")
_define("enum", "balance", "Class balance: none, class_weight (loss weights from split counts) "
        "or resample (in-graph rebalancing).", enum_values=list(config_lib.BALANCES))
flags.DEFINE_string("tf_data_service", None, "grpc://HOST:PORT of a tf.data service dispatcher "
                    "to run preprocessing on. [none]")
# Augmentation.
_define("bool", "augment", "Random augmentation of training batches.")
_define("enum", "augment_on", "Where augmentation runs: host (tf.data, CPU) or device "
        "(inside the training step, for accelerators).", enum_values=["host", "device"])
_define("bool", "flip_horizontal", "Random horizontal flips.")
_define("bool", "flip_vertical", "Random vertical flips.")
_define("float", "rotation", "Rotation range as a fraction of a full turn (0.25: +-90 deg).",
        lower_bound=0.0, upper_bound=0.5)
_define("float", "zoom", "Zoom range: sampled region scaled in [1-zoom, 1+zoom].",
        lower_bound=0.0, upper_bound=1.0)
_define("float", "translate_height", "Vertical shift range, fraction of the height.",
        lower_bound=0.0, upper_bound=1.0)
_define("float", "translate_width", "Horizontal shift range, fraction of the width.",
        lower_bound=0.0, upper_bound=1.0)
_define("float", "contrast", "Contrast factor range [1-c, 1+c].", lower_bound=0.0, upper_bound=1.0)
# Model.
_define("enum", "model", "seed_cnn (the original CNN), resnet_small (small residual net from "
        "scratch) or backbone (a keras.applications network, see --backbone).",
        enum_values=list(config_lib.MODELS))
_define("enum", "backbone", "keras.applications backbone for --model=backbone.",
        enum_values=list(config_lib.BACKBONES))
_define("string", "weights", "Backbone weights: imagenet (downloads once; needs internet), "
        "none, or a local weights file.")
_define("float", "dropout", "Dropout before the classifier (resnet_small, backbone).",
        lower_bound=0.0, upper_bound=0.99)
# Optimisation.
_define("integer", "epochs", "Passes over the training split.", lower_bound=1)
_define("enum", "optimizer", "Optimizer.", enum_values=list(config_lib.OPTIMIZERS))
_define("float", "learning_rate", "Peak learning rate.", lower_bound=0.0, upper_bound=10.0)
_define("float", "momentum", "Momentum (rmsprop, sgd).", lower_bound=0.0, upper_bound=0.999)
_define("float", "weight_decay", "Decoupled weight decay.", lower_bound=0.0, upper_bound=0.99)
_define("enum", "schedule", "Learning-rate schedule.", enum_values=list(config_lib.SCHEDULES))
_define("integer", "warmup_epochs", "Linear warm-up epochs (cosine schedule).", lower_bound=0)
_define("float", "label_smoothing", "Label smoothing.", lower_bound=0.0, upper_bound=0.99)
_define("integer", "freeze_epochs", "Backbone: epochs training the head alone before "
        "unfreezing everything.", lower_bound=0)
_define("float", "fine_tune_learning_rate_factor", "Backbone: learning rate multiplier once "
        "unfrozen.", lower_bound=0.0, upper_bound=1.0)
_define("integer", "early_stopping_patience", "Stop after this many epochs without a better "
        "validation accuracy (0: never).", lower_bound=0)
_define("float", "cpu_budget_seconds", "Stop at an epoch end before training CPU time would "
        "exceed this many seconds (0: no limit).", lower_bound=0.0)
# Execution.
_define("enum", "precision", "float32, or mixed precision for accelerators.",
        enum_values=list(config_lib.PRECISIONS))
_define("bool", "jit_compile", "Compile the training step with XLA.")
_define("enum", "strategy", "default (one device) or mirrored (all local GPUs).",
        enum_values=list(config_lib.STRATEGIES))
_define("bool", "deterministic", "Deterministic ops and input order: the same flags and seed "
        "give the same run (slower).")
_define("integer", "seed", "Seed for initialisation, shuffling and augmentation.")
_define("integer", "top_k", "Artists the exported model returns per image.", lower_bound=1)
_define("bool", "export_tflite", "Also write float and quantised TFLite models.")

CONFIG_FLAGS = [name for name in config_lib.TrainConfig.__dataclass_fields__ if name != "recipe"]


def config_from_flags() -> config_lib.TrainConfig:
    """The recipe's values, overridden by every config flag given on the command line."""
    overrides = {name: FLAGS[name].value for name in CONFIG_FLAGS if FLAGS[name].present}
    return configs.resolve(FLAGS.recipe, overrides)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    try:
        config = config_from_flags()
    except config_lib.ConfigError as e:
        sys.exit(f"train.py: error: {e}")
    # Imported after flag checks: --help and flag errors come back without TensorFlow.
    import pipeline
    from pipeline import memory
    from trainer import train_lib

    memory.tune_malloc()  # Large batches without page faults: see pipeline/memory.py.
    try:
        metrics = train_lib.train_and_evaluate(config, FLAGS.workdir, overwrite=FLAGS.overwrite)
    except (pipeline.DatasetError, train_lib.WorkdirError, config_lib.ConfigError) as e:
        logging.error("%s", e)
        sys.exit(f"train.py: error: {e}")
    if "test_accuracy" in metrics:
        print(f"Test accuracy: {metrics['test_accuracy']:.1%} (balanced "
              f"{metrics['test_balanced_accuracy']:.1%}, macro-F1 {metrics['test_macro_f1']:.3f}) "
              f"on {metrics['test_examples']} images of {metrics['dataset']}")
    print(f"Report: {FLAGS.workdir}/report.md; SavedModel: {FLAGS.workdir}/saved_model")


if __name__ == "__main__":
    app.run(main)
