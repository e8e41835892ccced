"""CPU cost per image of each model: training step and inference.

    python -m benchmarks.model_speed --image_sizes=300,160 --num_classes=50
    python -m benchmarks.model_speed --models=resnet_small,backbone:efficientnet_lite0 \
        --image_sizes=160

Models run round-robin in one process on the same random batch; the last
line is one JSON object {model@size: {"train_images_per_s", "infer_images_per_s"}}.
"""

import statistics
import time

from absl import app, flags

from benchmarks import json_result


FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["seed_cnn", "resnet_small"], "Models to compare; "
                  "backbone:NAME for a --backbone (random weights: the cost is the same).")
flags.DEFINE_list("image_sizes", ["300", "160"], "Input sizes.")
flags.DEFINE_integer("num_classes", 50, "Classes (the Kaggle set has 50).")
flags.DEFINE_integer("batch_size", 32, "Batch size.")
flags.DEFINE_integer("rounds", 3, "Round-robin rounds; the median is reported.")
flags.DEFINE_integer("steps", 3, "Steps per model per round.")
flags.DEFINE_string("json_out", None, "Also write the result, with the command, commit and machine, to this file (e.g. results/NAME.json).")


def main(argv):
    del argv
    import keras
    import numpy as np

    from trainer import models

    rng = np.random.default_rng(0)
    cases = {}
    for size in map(int, FLAGS.image_sizes):
        x = rng.random((FLAGS.batch_size, size, size, 3), dtype=np.float32)
        y = rng.integers(0, FLAGS.num_classes, FLAGS.batch_size)
        for name in FLAGS.models:
            model_name, _, backbone = name.partition(":")
            options = {"backbone": backbone} if backbone else {}
            model = models.create_model(model_name, num_classes=FLAGS.num_classes,
                                        image_size=size, **options)
            model.compile(optimizer="adam",
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            model.train_on_batch(x, y)
            model.predict_on_batch(x)
            cases[f"{name}@{size}"] = (model, x, y, [], [])
    for _ in range(FLAGS.rounds):
        for key, (model, x, y, train, infer) in cases.items():
            start = time.perf_counter()
            for _ in range(FLAGS.steps):
                model.train_on_batch(x, y)
            train.append(FLAGS.steps * len(x) / (time.perf_counter() - start))
            start = time.perf_counter()
            for _ in range(FLAGS.steps):
                model.predict_on_batch(x)
            infer.append(FLAGS.steps * len(x) / (time.perf_counter() - start))
    result = {}
    for key, (model, _, _, train, infer) in cases.items():
        result[key] = {"params": model.count_params(),
                       "train_images_per_s": round(statistics.median(train), 1),
                       "infer_images_per_s": round(statistics.median(infer), 1)}
        print(f"{key:20s} {result[key]}")
    json_result.emit(result, FLAGS.json_out)


if __name__ == "__main__":
    app.run(main)
