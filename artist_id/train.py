"""Trains an artist classifier: `artist-id train --workdir=DIR [--recipe=NAME] [flags]`.

Every setting has one flag, generated from its declaration (`trainer/config.py`
gathers them); a recipe (`artist_id/configs/`) is a named set of overrides of
the declared defaults, and any flag given on the command line overrides the
recipe. `--print_config` shows the resolved settings; `WORKDIR/config.json`
records them.
"""

import sys

import tensorflow as tf
from absl import app, flags, logging

import pipeline
from artist_id import configs, memory
from trainer import config as config_lib
from trainer import train_lib

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for everything the run writes: config.json, "
                    "checkpoints, backup, TensorBoard logs, metrics.csv, report, saved_model/.")
flags.DEFINE_enum("recipe", "default", [*configs.RECIPES, *configs.ALIASES], "Named set of "
                  "overrides: 'default' (the declared defaults) fine-tunes EfficientNet-Lite0 "
                  "from ImageNet ('finetune': its earlier name); 'scratch' trains resnet_small "
                  "from scratch; 'original' reproduces the original notebook.")
flags.DEFINE_bool("print_config", False, "Print the resolved settings (the recipe's and the "
                  "flags' marked) and exit without training; --workdir is not needed.")
flags.DEFINE_bool("overwrite", False, "Replace a different run already in --workdir (a "
                  "finished run rerun with other views or export settings alone, e.g. "
                  "--test_flips, is re-evaluated and re-exported instead, without training).")
config_lib.define_flags({name: configs.recipe_values(name) for name in configs.RECIPES})
flags.adopt_module_key_flags(config_lib)  # --help lists the settings' flags beside these.


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    given = config_lib.given_flags()
    try:
        config = configs.resolve(FLAGS.recipe, given)
    except config_lib.ConfigError as e:
        sys.exit(f"train.py: error: {e}")
    if FLAGS.print_config:
        marked = {**dict.fromkeys(configs.recipe_values(FLAGS.recipe), f"--recipe={config.recipe}"),
                  **dict.fromkeys(given, "flag")}
        print(config_lib.describe(config, marked=marked))
        return
    if not FLAGS.workdir:
        raise app.UsageError("--workdir is required: the directory the run writes into")
    memory.tune_malloc()  # Large batches without page faults: see artist_id/memory.py.
    try:
        metrics = train_lib.train_and_evaluate(config, FLAGS.workdir, overwrite=FLAGS.overwrite)
    except (pipeline.DatasetError, train_lib.WorkdirError, config_lib.ConfigError) as e:
        logging.error("%s", e)
        sys.exit(f"train.py: error: {e}")
    except tf.errors.UnavailableError as e:  # --strategy=multi_worker: a peer is gone.
        logging.error("%s", e)
        sys.exit(f"train.py: error: a worker of the cluster stopped answering "
                 f"({e.message.splitlines()[0][:200]}); restart every worker with the same "
                 f"command: the run resumes from its last finished epoch in {FLAGS.workdir}")
    if not metrics:  # A multi-worker run's other workers.
        print(f"Training done; the chief writes {FLAGS.workdir}")
        return
    if "test_accuracy" in metrics:
        print(f"Test accuracy: {metrics['test_accuracy']:.1%} (balanced "
              f"{metrics['test_balanced_accuracy']:.1%}, macro-F1 {metrics['test_macro_f1']:.3f}) "
              f"on {metrics['test_examples']} images of {metrics['dataset']}")
    print(f"Report: {FLAGS.workdir}/report.md; SavedModel: {FLAGS.workdir}/saved_model")


if __name__ == "__main__":
    app.run(main)
