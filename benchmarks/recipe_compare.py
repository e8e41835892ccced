"""Original recipe vs the project's default recipe, on the same splits and CPU budget.

    python benchmarks/recipe_compare.py --source_dir=PAINTINGS --workdir=DIR

1. Builds PAINTINGS (a folder of paintings sorted by artist, or the Kaggle
   download) with the `best_artworks` builder into DIR/data.
2. Trains `--recipe=original` and notes its training CPU time: the budget.
3. Trains `--recipe=default` with as many epochs as fit in that budget
   (estimated from timed training steps of both models, then enforced by
   `--cpu_budget_seconds`).
4. Prints both test-split results; the last line is one JSON object.

Reruns reuse the built dataset and finished runs (each run's workdir).
"""

import json
import os
import sys
import time

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
flags.DEFINE_string("source_dir", None, "Folder of paintings sorted by artist (manual_dir).")
flags.DEFINE_string("workdir", None, "Where the dataset and both runs go.")
flags.DEFINE_string("dataset_config", None, "best_artworks config (default: the builder's).")
flags.DEFINE_integer("original_epochs", 20, "Epochs of the original recipe (20 is the recipe; "
                     "fewer for a quick, proportionally budgeted comparison).", lower_bound=1)
flags.DEFINE_integer("max_default_epochs", 60, "Upper bound on the default recipe's epochs.",
                     lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of both runs.")
flags.DEFINE_list("set", [], "Settings applied to both runs, as name=value (e.g. "
                  "image_size=64,batch_size=16 for a quick smoke run).")
flags.mark_flags_as_required(["source_dir", "workdir"])


def build_dataset(source_dir: str, data_dir: str, config: str | None):
    import tensorflow_datasets as tfds

    import artist_tfds  # noqa: F401  Registers best_artworks.

    name = "best_artworks" + (f"/{config}" if config else "")
    builder = tfds.builder(name, data_dir=data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=source_dir))
    return name


def step_cost(config, num_classes: int, steps: int = 4) -> float:
    """CPU seconds per training step of `config`'s model on random data."""
    import keras
    import numpy as np

    from trainer import optim, train_lib

    model = train_lib.build_model(config, num_classes)
    loss, _ = optim.create_loss_and_metrics(config.optimizer, num_classes)
    model.compile(optimizer=optim.create_optimizer(config.optimizer, 1e-3), loss=loss)
    batch, size = config.data.batch_size, config.data.image_size
    x = np.random.default_rng(0).random((batch, size, size, 3), dtype=np.float32)
    y = np.zeros((batch, num_classes) if optim.uses_one_hot(config.optimizer) else batch)
    model.train_on_batch(x, y)  # Trace and warm up.
    start = time.process_time()
    for _ in range(steps):
        model.train_on_batch(x, y)
    keras.backend.clear_session()
    return (time.process_time() - start) / steps


def summary(metrics: dict) -> dict:
    return {"test_accuracy": round(metrics["test_accuracy"], 4),
            "macro_f1": round(metrics["test_macro_f1"], 4),
            "seconds": metrics["train_seconds"], "cpu_seconds": metrics["train_cpu_seconds"],
            "epochs": metrics["epochs_run"]}


def main(argv):
    del argv
    import configs
    from tools import memory
    from trainer import config as config_lib
    from trainer import train_lib

    memory.tune_malloc()  # As train.py: both recipes run with it.
    data_dir = os.path.join(FLAGS.workdir, "data")
    dataset = build_dataset(FLAGS.source_dir, data_dir, FLAGS.dataset_config)
    common = {"dataset": dataset, "data_dir": data_dir, "seed": FLAGS.seed,
              **config_lib.parse_assignments(FLAGS.set)}

    original = configs.resolve("original", {**common, "epochs": FLAGS.original_epochs})
    logging.info("Training the original recipe: %s", original)
    original_metrics = train_lib.train_and_evaluate(original, os.path.join(FLAGS.workdir, "original"))
    budget = original_metrics["train_cpu_seconds"]

    num_classes = len(json.load(open(os.path.join(FLAGS.workdir, "original", "report.json")))["per_artist"])
    default = configs.resolve("default", common)
    ratio = step_cost(default, num_classes) / step_cost(original, num_classes)
    per_epoch = budget / original_metrics["epochs_run"] * ratio
    # 90%: evaluation passes and tracing also cost CPU inside the budget.
    epochs = max(2, min(FLAGS.max_default_epochs, int(0.9 * budget / per_epoch)))
    logging.info("Default recipe: step cost x%.2f of the original -> %d epochs in %.0f CPU s",
                 ratio, epochs, budget)
    default = configs.resolve("default", {**common, "epochs": epochs,
                                          "warmup_epochs": min(2, epochs - 1),
                                          "cpu_budget_seconds": budget})
    default_metrics = train_lib.train_and_evaluate(default, os.path.join(FLAGS.workdir, "default"))

    result = {"original": summary(original_metrics), "default": summary(default_metrics)}
    gain = result["default"]["test_accuracy"] - result["original"]["test_accuracy"]
    print(f"original: {result['original']}")
    print(f"default:  {result['default']}")
    print(f"default - original: {gain:+.1%} test accuracy")
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
