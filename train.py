"""Trains an artist classifier from flags: `python train.py --workdir=DIR [flags]`."""

import dataclasses
import sys

from absl import app, flags, logging

FLAGS = flags.FLAGS

flags.DEFINE_string("workdir", None, "Directory for everything the run writes: config, "
                    "checkpoints, TensorBoard logs, metrics, saved_model/.")
flags.DEFINE_string("dataset", "sample_paintings",
                    "TFDS dataset as name[/config][:version], e.g. best_artworks/top11.")
flags.DEFINE_string("data_dir", None, "TFDS data directory (default: ~/tensorflow_datasets).")
flags.DEFINE_enum("model", "seed_cnn", ["seed_cnn"], "Model architecture.")
flags.DEFINE_integer("image_size", 300, "Square input size in pixels.", lower_bound=16, upper_bound=1024)
flags.DEFINE_integer("batch_size", 32, "Examples per training batch.", lower_bound=1)
flags.DEFINE_integer("epochs", 20, "Passes over the training split.", lower_bound=1)
flags.DEFINE_enum("optimizer", "rmsprop", ["rmsprop", "adam", "sgd"], "Optimizer.")
flags.DEFINE_float("learning_rate", 1e-3, "Learning rate.", lower_bound=0.0, upper_bound=10.0)
flags.DEFINE_float("momentum", 0.1, "Momentum (rmsprop, sgd).", lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_integer("seed", 0, "Seed for shuffling, augmentation and initialisation.")
flags.DEFINE_bool("augment", True, "Random flip, rotation, zoom, translation and contrast "
                  "on training batches (the original recipe's).")
flags.DEFINE_enum("resize_mode", "stretch", ["stretch", "crop"], "How paintings become "
                  "squares: stretch (original recipe) or keep aspect with a centre crop.")
flags.DEFINE_bool("cache", False, "Cache decoded, resized uint8 images in memory "
                  "(small datasets: faster epochs).")
flags.DEFINE_bool("deterministic", False, "Deterministic ops and input order: the same "
                  "flags and seed give the same run (slower).")
flags.DEFINE_integer("top_k", 5, "Artists the exported model returns per image.", lower_bound=1)
flags.DEFINE_bool("overwrite", False, "Replace a different run already in --workdir.")
flags.mark_flag_as_required("workdir")


def config_from_flags():
    from trainer import train_lib

    fields = {f.name for f in dataclasses.fields(train_lib.TrainConfig)}
    return train_lib.TrainConfig(**{name: FLAGS[name].value for name in fields})


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    # Imported here so that --help and flag errors come back without loading TensorFlow.
    import pipeline
    from trainer import train_lib

    try:
        metrics = train_lib.train_and_evaluate(
            config_from_flags(), FLAGS.workdir, overwrite=FLAGS.overwrite)
    except (pipeline.DatasetError, train_lib.WorkdirError) as e:
        logging.error("%s", e)
        sys.exit(f"train.py: error: {e}")
    print(f"Test accuracy: {metrics['test_accuracy']:.1%} on {metrics['test_examples']} "
          f"images of {metrics['dataset']}")
    print(f"SavedModel: {FLAGS.workdir}/saved_model")


if __name__ == "__main__":
    app.run(main)
