"""Input pipeline throughput against the original recipe, in one process on the same images.

    python -m benchmarks.pipeline_bench --dataset=best_artworks --data_dir=DIR --source_dir=FOLDER

(a) the original recipe: `image_dataset_from_directory(source_dir)` at 300 px
    plus the five Keras `Random*` layers and `Rescaling`, mapped in tf.data;
(b) decode-only throughput of the built shards (parse + decode, no resize);
(c) `create_split` without augmentation; (d) `create_split` with the
    recipe's full augmentation (one fused warp per image).
Timings on a shared machine are noisy, so the stages are timed round-robin
(`--rounds`), each on a fresh iterator that is dropped before the next stage
starts, and every rate is the median over rounds: compare the ratios. Each
stage also reports its first batch's latency (cold: includes tracing and XLA
compilation). Before timing, (d) runs `--memory_epochs` full passes and the
process' peak resident memory is printed after each: it must not grow with
the number of images read. The last line is one JSON object. If `--dataset`
is not built in `--data_dir`, it is built from `--source_dir` with that
dataset's builder (`best_artworks` reads any `<Artist>/*.jpg` folder).
"""

import resource
import time

from absl import app, flags

from benchmarks import json_result

# Run as a script from a checkout: make the project's packages importable
# even where the editable install predates them.

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "best_artworks", "TFDS dataset as name[/config][:version].")
flags.DEFINE_string("data_dir", None, "TFDS data directory holding (or to receive) the dataset.")
flags.DEFINE_string("source_dir", None, "Folder of <Artist>/*.jpg: the recipe reads it; "
                    "the dataset is built from it when missing.")
flags.DEFINE_string("split", "train", "Split that (b), (c) and (d) read.")
flags.DEFINE_integer("image_size", 300, "Training image size (the recipe's is 300).")
flags.DEFINE_integer("batch_size", 32, "Batch size.")
flags.DEFINE_integer("max_side", None, "Training canvas side (default: the pipeline's).")
flags.DEFINE_integer("rounds", 3, "Rounds; each times every stage once, round-robin, on a fresh "
                     "iterator. Rates are the median over rounds.", lower_bound=1)
flags.DEFINE_integer("images", 1280, "Images timed per stage and round (after a first batch).",
                     lower_bound=1)
flags.DEFINE_integer("recipe_images", 320, "Images the (slow) recipe is timed on per round.",
                     lower_bound=1)
flags.DEFINE_integer("memory_epochs", 4, "Full passes of (d) over the split before timing, "
                     "printing peak resident memory after each (0: skip).", lower_bound=0)
flags.DEFINE_string("stages", "abcd", "Which stages to time.")
flags.DEFINE_string("json_out", None, "Also write the result, with the command, commit and machine, to this file (e.g. results/NAME.json).")
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_bool("tune_malloc", True, "Apply `artist_id.memory.tune_malloc` (as train.py does) "
                  "to this process, hence to every stage alike.")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def batch_size_of(batch) -> int:
    return int((batch[0] if isinstance(batch, tuple) else batch).shape[0])


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def time_stage(ds, *, images: int) -> tuple[float, float, float]:
    """(images/s after the first batch, first batch latency, CPU ms per image) on a fresh iterator.

    CPU time counts every thread of the process: less sensitive than wall
    time to what else the machine runs. The iterator is dropped afterwards
    so its background threads stop before the next stage is timed.
    """
    start = time.perf_counter()
    iterator = iter(ds)
    next(iterator)
    first = time.perf_counter() - start
    count, start, cpu = 0, time.perf_counter(), cpu_seconds()
    while count < images:
        count += batch_size_of(next(iterator))
    rate = count / (time.perf_counter() - start)
    cpu_ms = (cpu_seconds() - cpu) * 1000 / count
    del iterator
    return rate, first, cpu_ms


def measure_memory(ds, epochs: int) -> tuple[float, float]:
    """Full passes over `ds`, printing the process' peak RSS after each.

    Returns (peak RSS in MB, the first batch's latency: cold, with tracing and
    XLA compilation).
    """
    first, start = None, time.perf_counter()
    for epoch in range(epochs):
        count = 0
        for batch in ds:
            first = first or time.perf_counter() - start
            count += batch_size_of(batch)
        print(f"   memory: (d) epoch {epoch + 1}: {count} images, peak RSS "
              f"{peak_rss_mb():.0f} MB", flush=True)
    return peak_rss_mb(), first


def load_or_build(dataset: str):
    import tensorflow_datasets as tfds

    import artist_tfds  # noqa: F401  Registers the builders.
    import pipeline

    builder = tfds.builder(dataset, data_dir=FLAGS.data_dir)
    if not builder.is_prepared():
        if not FLAGS.source_dir:
            raise app.UsageError(f"{dataset} is not built in {FLAGS.data_dir}: pass --source_dir")
        print(f"Building {dataset} from {FLAGS.source_dir} into {FLAGS.data_dir} ...", flush=True)
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=FLAGS.source_dir))
    return pipeline.load_builder(dataset, data_dir=FLAGS.data_dir)


def recipe_dataset(source_dir: str, image_size: int, batch_size: int, seed: int):
    """(a) The original recipe, with today's names for its layers."""
    import keras
    import tensorflow as tf

    layers = keras.layers
    augment = keras.Sequential([
        layers.RandomFlip("horizontal_and_vertical", seed=seed),
        layers.RandomRotation(0.25, seed=seed),
        layers.RandomZoom(0.2, seed=seed),
        layers.RandomTranslation(0.3, 0.2, seed=seed),
        layers.RandomContrast(0.2, seed=seed),
        layers.Rescaling(1.0 / 255),
    ])
    ds = keras.utils.image_dataset_from_directory(
        source_dir, image_size=(image_size, image_size), batch_size=batch_size, seed=seed)
    ds = ds.map(lambda x, y: (augment(x, training=True), y),
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def decode_only(builder, split: str):
    """(b) Parse + decode every stored JPEG; nothing else."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from pipeline import ops

    ds = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
    ds = ds.map(lambda f: tf.shape(ops.decode_image(f["image"])), tf.data.AUTOTUNE)
    return ds.batch(256).prefetch(tf.data.AUTOTUNE)


LABELS = {
    "a": "original recipe (image_dataset_from_directory 300 px + 5 Random* + Rescaling)",
    "b": "decode only (parse + decode the stored JPEGs)",
    "c": "create_split, no augmentation",
    "d": "create_split, full augmentation (one fused warp + contrast)",
}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    import statistics

    from artist_id import configs
    import pipeline
    from pipeline import augment
    from artist_id import memory

    if FLAGS.tune_malloc:
        print(f"malloc tuned for large batches: {memory.tune_malloc()}", flush=True)

    if "a" in FLAGS.stages and not FLAGS.source_dir:
        raise app.UsageError("stage a (the recipe) needs --source_dir")
    builder = load_or_build(FLAGS.dataset)
    data = pipeline.DataConfig(batch_size=FLAGS.batch_size, image_size=FLAGS.image_size)
    common = dict(training=True, seed=FLAGS.seed, deterministic=False, max_side=FLAGS.max_side)
    # The original recipe's augmentation: the most transforms, the comparison with (a).
    full_augment = configs.resolve("original", {}).augment
    print(f"{builder.info.full_name} {FLAGS.split}: "
          f"{builder.info.splits[FLAGS.split].num_examples} images; peak RSS so far "
          f"{peak_rss_mb():.0f} MB", flush=True)
    full = pipeline.create_split(builder, FLAGS.split, data, augment=full_augment, **common)
    summary, cold_first = {}, None
    if FLAGS.memory_epochs:
        peak, cold_first = measure_memory(full, FLAGS.memory_epochs)
        summary["peak_rss_mb"] = round(peak)
    datasets = {
        "a": lambda: recipe_dataset(FLAGS.source_dir, 300, FLAGS.batch_size, FLAGS.seed).repeat(),
        "b": lambda: decode_only(builder, FLAGS.split).repeat(),
        "c": lambda: pipeline.create_split(builder, FLAGS.split, data,
                                           augment=augment.NO_AUGMENTATION, **common).repeat(),
        "d": lambda: full.repeat(),
    }
    stages = [s for s in "abcd" if s in FLAGS.stages]
    built = {s: datasets[s]() for s in stages}
    rates, firsts, cpus = ({s: [] for s in stages} for _ in range(3))
    for round_ in range(FLAGS.rounds):
        for s in stages:
            images = FLAGS.recipe_images if s == "a" else FLAGS.images
            rate, first, cpu_ms = time_stage(built[s], images=images)
            rates[s].append(rate)
            firsts[s].append(first)
            cpus[s].append(cpu_ms)
            print(f"   round {round_ + 1} ({s}): {rate:.0f} images/s, first batch {first:.2f} s, "
                  f"{cpu_ms:.2f} CPU ms/image", flush=True)
    for s in stages:
        summary[s] = round(statistics.median(rates[s]), 1)
        summary[f"{s}_cpu_ms"] = round(statistics.median(cpus[s]), 3)
        cold = cold_first if s == "d" and cold_first else firsts[s][0]
        firsts[s][0] = cold
        print(f"({s}) {LABELS[s]}: {summary[s]:.0f} images/s (median of {FLAGS.rounds}), "
              f"first batch {cold:.2f} s cold, {min(firsts[s][1:] or firsts[s]):.2f} s warm, "
              f"{statistics.median(cpus[s]):.2f} CPU ms/image", flush=True)
    if "d" in stages:
        summary["first_batch_s"] = round(firsts["d"][0], 2)
    for num, den in (("d", "a"), ("d", "c")):
        if num in summary and den in summary:
            summary[f"{num}_over_{den}"] = round(summary[num] / summary[den], 2)
            # The same ratio in CPU time per image: robust to the machine's other load.
            summary[f"cpu_{num}_over_{den}"] = round(
                statistics.median(cpus[den]) / statistics.median(cpus[num]), 2)
    json_result.emit(summary, FLAGS.json_out)


if __name__ == "__main__":
    app.run(main)
