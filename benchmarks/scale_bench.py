"""The cost curve: build, one training epoch of input and one inference pass, at growing size.

    python -m benchmarks.scale_bench --source_dir=PAINTINGS --workdir=DIR [--sizes=1000,5000,20000]

For each size N, a folder of N paintings is made once from `--source_dir`
(varied crops re-encoded as JPEG: `build_bench.make_crops`), then three
stages each run in a process of their own, so each has its own peak RSS:

* `build`: `tfds build`-equivalent `download_and_prepare` of the folder
  (the builder's default process pool);
* `epoch`: one pass of the training split through `create_split` with the
  default recipe's full augmentation (what feeds the trainer);
* `infer`: every stored painting decoded, resized and run through the scratch
  recipe's model (`resnet_small`, untrained: the cost does not depend on the
  weights), batch 64.

Each stage runs `--repeats` times and the fastest counts. Reports the seconds
of the work (the child's imports excluded: every size pays them alike; the
whole process's seconds are recorded too), images/s and peak RSS per stage and size, a least-squares
line seconds = fixed + per_image x N with its R^2 for each stage, and
`scale.png`; the last line printed is one JSON object (also `--json_out`).
Targets (issue 13): seconds linear in N (R^2 >= 0.98); peak RSS at the
largest size within 10 % of the second largest.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

from absl import app, flags


from benchmarks import json_result

FLAGS = flags.FLAGS
flags.DEFINE_string("source_dir", None, "Paintings sorted by artist, to crop from.")
flags.DEFINE_string("workdir", None, "Where the folders, datasets and results go (reused).")
flags.DEFINE_list("sizes", ["1000", "5000", "20000"], "Paintings per folder.")
flags.DEFINE_integer("image_size", 160, "Model input size (the default recipe's).")
flags.DEFINE_integer("batch_size", 32, "Training batch (the default recipe's).")
flags.DEFINE_integer("repeats", 2, "Runs of each stage; the fastest counts (a shared "
                     "machine only ever slows a run down).", lower_bound=1)
flags.DEFINE_string("json_out", None, "Also write the results here.")
flags.DEFINE_string("plot", None, "Where to draw the curve (default: WORKDIR/scale.png).")
flags.DEFINE_enum("stage", None, ["build", "epoch", "infer"], "Internal: run one stage.")
flags.DEFINE_integer("size", None, "Internal: the size of --stage.")

STAGES = ("build", "epoch", "infer")
INFER_BATCH = 64
R2_TARGET = 0.98
RSS_GROWTH_TARGET = 0.10


def folder_of(size: int) -> pathlib.Path:
    return pathlib.Path(FLAGS.workdir) / f"crops_{size}"


def data_dir_of(size: int) -> pathlib.Path:
    return pathlib.Path(FLAGS.workdir) / f"data_{size}"


def builder_of(size: int):
    import tensorflow_datasets as tfds

    import artist_tfds  # noqa: F401  Registers best_artworks.

    return tfds.builder("best_artworks/all", data_dir=str(data_dir_of(size)))


def run_stage(stage: str, size: int) -> int:
    """The work of one stage (imports done); returns the number of images it handled."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    import pipeline
    from pipeline import augment
    from trainer import models

    if stage == "build":
        shutil.rmtree(data_dir_of(size), ignore_errors=True)  # A whole build, every time.
        builder = builder_of(size)
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            manual_dir=str(folder_of(size))))
        return sum(split.num_examples for split in builder.info.splits.values())
    builder = builder_of(size)
    data = pipeline.DataConfig(image_size=FLAGS.image_size, batch_size=FLAGS.batch_size)
    if stage == "epoch":
        ds = pipeline.create_split(builder, "train", data, training=True,
                                   augment=augment.AugmentConfig())
        return sum(int(tf.shape(images)[0]) for images, _ in ds)
    model = models.create_model("resnet_small", num_classes=pipeline.num_classes(builder),
                                image_size=FLAGS.image_size)
    predict = tf.function(lambda images: model(images, training=False))
    # One view of each painting: the cost curve of the network at one size.
    data = pipeline.DataConfig(image_size=FLAGS.image_size, batch_size=INFER_BATCH,
                               eval_scale=0.0)
    count = 0
    for split in builder.info.splits:
        for images, _ in pipeline.create_split(builder, split, data, training=False):
            predict(images).numpy()
            count += int(images.shape[0])
    return count


def measure(stage: str, size: int) -> dict:
    """Runs one stage in a child process: the seconds of its work (after the imports,
    which every size pays alike), of the whole process, its images and peak RSS."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.scale_bench", f"--stage={stage}", f"--size={size}",
         f"--workdir={os.path.abspath(FLAGS.workdir)}", f"--image_size={FLAGS.image_size}",
         f"--batch_size={FLAGS.batch_size}"], stdout=subprocess.PIPE, text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process_seconds = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"{stage} at {size} failed (status {status})")
    child = json.loads(output.strip().splitlines()[-1])
    # ru_maxrss: the largest resident set of the child and its waited-for children, KiB.
    return {"seconds": round(child["seconds"], 2), "process_seconds": round(process_seconds, 2),
            "images": child["images"], "images_per_s": round(child["images"] / child["seconds"], 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def fit_line(sizes: list[int], seconds: list[float]) -> dict:
    """Least squares seconds = fixed + per_image x size, and its R^2."""
    import numpy as np

    x, y = np.asarray(sizes, float), np.asarray(seconds, float)
    per_image, fixed = np.polyfit(x, y, 1)
    residual = y - (fixed + per_image * x)
    total = ((y - y.mean()) ** 2).sum()
    return {"fixed_s": round(float(fixed), 2), "per_image_ms": round(float(per_image) * 1e3, 3),
            "r2": round(float(1 - (residual ** 2).sum() / total), 4) if total else 1.0}


def plot(results: dict, fits: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(int(size) for size in results)
    fig, (time_ax, rss_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for stage in STAGES:
        seconds = [results[str(size)][stage]["seconds"] for size in sizes]
        line = time_ax.plot(sizes, seconds, marker="o", linestyle="none", label=stage)[0]
        fit = fits[stage]
        time_ax.plot(sizes, [fit["fixed_s"] + fit["per_image_ms"] / 1e3 * s for s in sizes],
                     color=line.get_color(), linewidth=1,
                     label=f"{fit['per_image_ms']:.2f} ms/painting, R² {fit['r2']:.3f}")
        rss_ax.plot(sizes, [results[str(size)][stage]["peak_rss_mb"] for size in sizes],
                    marker="o", label=stage)
    time_ax.set(xlabel="paintings", ylabel="seconds", title="Time: one pass")
    rss_ax.set(xlabel="paintings", ylabel="MB", title="Peak RSS", ylim=(0, None))
    for ax in (time_ax, rss_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv):
    del argv
    if not FLAGS.workdir:
        raise app.UsageError("--workdir is required")
    if FLAGS.stage:  # A child: one stage, its image count on the last line.
        from artist_id import memory

        memory.tune_malloc()  # As train.py and the other benchmarks run.
        import tensorflow  # noqa: F401  Imported before the clock starts.
        import tensorflow_datasets  # noqa: F401

        import pipeline  # noqa: F401

        start = time.perf_counter()
        images = run_stage(FLAGS.stage, FLAGS.size)
        print(json.dumps({"images": images, "seconds": time.perf_counter() - start}))
        return
    if not FLAGS.source_dir:
        raise app.UsageError("--source_dir is required")
    from benchmarks import build_bench

    sizes = sorted(int(size) for size in FLAGS.sizes)
    results = {}
    for size in sizes:
        made = build_bench.make_crops(pathlib.Path(FLAGS.source_dir), folder_of(size), size)
        results[str(size)] = {"paintings": made}
        for stage in STAGES:
            runs = [measure(stage, size) for _ in range(FLAGS.repeats)]
            results[str(size)][stage] = {**min(runs, key=lambda run: run["seconds"]),
                                         "runs_s": [run["seconds"] for run in runs]}
            print(f"{size:>6} {stage:<6} {results[str(size)][stage]}", flush=True)
    fits = {stage: fit_line(sizes, [results[str(s)][stage]["seconds"] for s in sizes])
            for stage in STAGES}
    rss_growth = {}
    if len(sizes) >= 2:
        last, before = str(sizes[-1]), str(sizes[-2])
        rss_growth = {stage: round(results[last][stage]["peak_rss_mb"]
                                   / results[before][stage]["peak_rss_mb"] - 1, 3)
                      for stage in STAGES}
    print(f"\n{'stage':<7}{'ms/painting':>12}{'fixed s':>9}{'R^2':>8}  peak RSS growth, "
          f"{sizes[-1]} vs {sizes[-2] if len(sizes) > 1 else '-'}")
    for stage in STAGES:
        fit = fits[stage]
        growth = rss_growth.get(stage)
        print(f"{stage:<7}{fit['per_image_ms']:>12.3f}{fit['fixed_s']:>9.1f}{fit['r2']:>8.4f}  "
              + ("-" if growth is None else f"{growth:+.1%}"))
    targets = {stage: {"r2_met": fits[stage]["r2"] >= R2_TARGET,
                       "rss_met": stage not in rss_growth
                       or rss_growth[stage] <= RSS_GROWTH_TARGET} for stage in STAGES}
    for stage, met in targets.items():
        print(f"{'PASS' if all(met.values()) else 'FAIL'}  {stage}: R^2 >= {R2_TARGET} "
              f"({'met' if met['r2_met'] else 'not met'}), peak RSS within "
              f"{RSS_GROWTH_TARGET:.0%} ({'met' if met['rss_met'] else 'not met'})")
    plot_path = FLAGS.plot or os.path.join(FLAGS.workdir, "scale.png")
    plot(results, fits, plot_path)
    summary = {"sizes": sizes, "results": results, "fits": fits, "rss_growth": rss_growth,
               "targets": targets, "plot": plot_path}
    json_result.emit(summary, FLAGS.json_out)


if __name__ == "__main__":
    app.run(main)
