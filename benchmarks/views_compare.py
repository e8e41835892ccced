"""Inference views on one trained run: what test-time flips and crops buy, and cost.

    python -m benchmarks.views_compare --workdir=RUN \
        [--views=eval_scale=0,test_flips=true,eval_crops=4+eval_scale=0] \
        [--sizes=224,160+224] [--rounds=3]

The views a model answers from (`--eval_crops`, `--test_flips`, `--crop_scale`,
`--eval_scale`) change inference alone, so one finished run of `train.py` answers
for all of them, on the same kept weights (RUN/checkpoints/best.weights.h5) and splits:

1. The run's own views first, then each `--views` item (name=value settings,
   `+` joining several) in their place.
2. For each: the temperature is fitted on the validation split as the trainer
   fits it, then the test split gives accuracy, macro-F1, and NLL and ECE (15
   bins) after the temperature.
3. `--sizes` items run the same kept weights on the whole painting at other input
   sizes (a network with global pooling runs at any): `224` alone (testing above
   the training size, as Touvron et al. 2019, "Fixing the train-test resolution
   discrepancy"), or `160+224`, the probabilities of each size averaged as views
   are (log of the mean softmax), the temperature fitted on the average: each
   size decoded from the file, where `--views=eval_scale=1.4` (the default recipe's
   multi-scale) shrinks the larger one to the run's size inside the graph, as served.
4. The test pass (input pipeline, views, model) is timed for every variant in
   turn, `--rounds` times; the median CPU ms per painting, and its ratio to the
   first variant's, is the serving cost of the views (`benchmarks/serving_bench.py`
   times the SavedModel's signatures themselves).

Prints a table; the last line is one JSON object {variant: {...}} (also `--json_out`).
"""

import os
import statistics
import time

import numpy as np
from absl import app, flags

import pipeline
from benchmarks import json_result
from artist_id import memory
from trainer import calibration, evaluation, report, train_lib
from trainer import callbacks as callbacks_lib
from trainer import config as config_lib

# The settings that change what a painting is answered from, and nothing of training.
VIEW_SETTINGS = ("eval_crops", "test_flips", "crop_scale", "eval_scale")

FLAGS = flags.FLAGS


def define_flags():
    """Defines the command line (when run, not at import: the tests import this module)."""
    flags.DEFINE_string("workdir", None, "Work directory of a finished train.py run.")
    flags.DEFINE_string("data_dir", None, "TFDS data directory (default: the run's).")
    flags.DEFINE_list("views", ["eval_scale=0", "test_flips=true", "eval_crops=4+eval_scale=0"],
                      "Variants of the run's views, each name=value (several joined by '+'), "
                      f"of: {', '.join(VIEW_SETTINGS)} (crops and multi-scale do not combine: "
                      "a crops variant of a multi-scale run names eval_scale=0).")
    flags.DEFINE_list("sizes", [], "Variants of the input size, each a size or sizes joined "
                      "by '+' (probabilities averaged), e.g. 224,160+224.")
    flags.DEFINE_integer("rounds", 3, "Timed test passes of each variant (in turn).",
                         lower_bound=1)
    flags.DEFINE_string("json_out", None, "Also write the JSON result here.")
    flags.mark_flags_as_required(["workdir"])


def variants(config, items: list[str]) -> dict[str, object]:
    """{name: the run's config with its views changed}; the run's own views first."""
    own = "+".join(f"{name}={getattr(config.data, name)}".lower() for name in VIEW_SETTINGS)
    found = {f"run ({own})": config}
    for item in items:
        try:
            settings = config_lib.parse_assignments(item.split("+"))
            if other := sorted(set(settings) - set(VIEW_SETTINGS)):
                raise app.UsageError(f"{', '.join(other)} changes training, not the views; only "
                                     f"{', '.join(VIEW_SETTINGS)} can vary here")
            found[item] = config.replace(**settings)
        except (config_lib.ConfigError, ValueError, app.UsageError) as e:
            raise app.UsageError(f"--views={item}: {e}") from e
    return found


def sized(items: list[str]) -> dict[str, list[int]]:
    """{item: its input sizes} of `--sizes` items such as "224" or "160+224"."""
    found = {}
    for item in items:
        try:
            found[f"sizes={item}"] = [int(size) for size in item.split("+")]
        except ValueError as e:
            raise app.UsageError(f"--sizes={item}: sizes are integers joined by '+'") from e
        if bad := [size for size in found[f"sizes={item}"] if size < 32]:
            raise app.UsageError(f"--sizes={item}: {bad[0]} px is below 32")
    return found


def measure(builder, passes: list, names: list[str]) -> tuple[dict, float]:
    """A variant's test figures after the temperature it fits on validation, and the CPU
    seconds of its test pass. `passes`: (DataConfig, model) pairs whose probabilities
    are averaged (log of the mean softmax: one pair is the run's own answer)."""
    splits = {}
    seconds = 0.0
    for split in ("validation", "test"):
        rows = []
        for data, model in passes:
            start = time.process_time()
            labels, probabilities = evaluation.predict_split(
                builder, split, data, evaluation.keras_predict_fn(model))
            seconds += (time.process_time() - start) if split == "test" else 0.0
            rows.append(probabilities)
        splits[split] = labels, calibration.log_probabilities(np.mean(rows, axis=0))
    # As `evaluation.fit_answer` chooses it: on log p, which is logits plus a constant per row.
    temperature = calibration.choose_temperature(splits["validation"][1],
                                                 splits["validation"][0])["temperature"]
    labels, log_p = splits["test"]
    probabilities = calibration.softmax(log_p, temperature)
    metrics = report.compute_metrics(labels, probabilities, names)
    return {"views": sum(data.views.count for data, _ in passes),
            "test_accuracy": round(metrics["accuracy"], 4),
            "macro_f1": round(metrics["macro_f1"], 4),
            "temperature": round(temperature, 3),
            "nll": round(calibration.negative_log_likelihood(probabilities, labels), 4),
            "ece": round(calibration.expected_calibration_error(probabilities, labels), 4),
            "examples": int(len(labels))}, seconds


def model_at(config, size: int, num_classes: int, weights: str):
    """The run's kept weights in its network built for `size` px inputs."""
    try:
        return train_lib.restore_model(config.replace(image_size=size), num_classes, weights)
    except ValueError as e:  # E.g. seed_cnn: Flatten ties its Dense layer to one size.
        raise app.UsageError(f"--sizes: {config.model.name} cannot run at {size} px with "
                             f"these weights (no global pooling?): {e}") from e


def main(argv):
    del argv
    memory.tune_malloc()  # As train.py.
    weights = os.path.join(FLAGS.workdir, callbacks_lib.BEST_WEIGHTS)
    if not os.path.exists(weights):
        raise app.UsageError(f"{FLAGS.workdir} holds no kept weights ({weights}): "
                             "train a run there first")
    # Bad --views stop here, before the model loads (the splits come from the builder).
    found = variants(train_lib.read_config(FLAGS.workdir), FLAGS.views)
    sizes = sized(FLAGS.sizes)  # Bad --sizes stop here too.
    config, model = train_lib.load_run(FLAGS.workdir, data_dir=FLAGS.data_dir)
    builder = pipeline.load_builder(config.data.dataset, data_dir=config.data.data_dir)
    names = pipeline.artist_names(builder)
    passes = {name: [(train_lib.evaluation_data(variant), model)]
              for name, variant in found.items()}
    models = {config.data.image_size: model}
    for name, item_sizes in sizes.items():
        for size in item_sizes:
            if size not in models:
                models[size] = model_at(config, size, len(names), weights)
        # The whole painting alone at each size, whatever views the run itself answers from.
        passes[name] = [(train_lib.evaluation_data(config.replace(image_size=size)).single_view(),
                         models[size]) for size in item_sizes]
    results, seconds = {}, {name: [] for name in passes}
    for round_index in range(FLAGS.rounds):
        for name, variant_passes in passes.items():
            figures, cpu = measure(builder, variant_passes, names)
            results.setdefault(name, figures)
            seconds[name].append(cpu)
            print(f"round {round_index + 1}/{FLAGS.rounds} {name}: {cpu:.1f} CPU s",
                  flush=True)
    first = statistics.median(seconds[next(iter(passes))])
    for name, figures in results.items():
        per_painting = statistics.median(seconds[name]) / figures["examples"]
        figures["cpu_ms_per_painting"] = round(1000 * per_painting, 2)
        figures["cost_ratio"] = round(statistics.median(seconds[name]) / first, 2)
    json_result.print_table(
        ["variant", "views", "acc", "F1", "ECE", "NLL", "ms", "cost"],
        [[name, f["views"], f"{f['test_accuracy']:.3f}", f"{f['macro_f1']:.3f}",
          f"{f['ece']:.3f}", f"{f['nll']:.3f}", f"{f['cpu_ms_per_painting']:.1f}",
          f"{f['cost_ratio']:.2f}"] for name, f in results.items()])
    json_result.emit(results, FLAGS.json_out)


if __name__ == "__main__":
    define_flags()
    app.run(main)
