"""Multi-worker training speed: `fit` on one machine, the multi-worker loop alone, two workers.

    python -m benchmarks.multi_worker_bench --data_dir=DIR [--dataset=best_artworks/all]
        [--epochs=3] [--rounds=2] [--workdir=DIR] [--cases=fit,loop x1,...]

Three ways to train the same recipe on the same data, each a real `train.py`
run (the scratch recipe, `--gallery_per_artist=0`), round by round in turn:

* `fit`: `--strategy=default`, pinned to one core (`taskset`);
* `loop x1`: `--strategy=multi_worker` without TF_CONFIG, a cluster of one,
  pinned to one core: the custom loop's own cost against `fit`;
* `loop x2`: two workers on localhost ports (TF_CONFIG), each pinned to a core
  of its own: what a second machine adds, all-reduce over gRPC included (the
  network between two real machines is not measured here);
* `loop x2 local BN`: the same with `--sync_batch_norm=false` (batch norm's
  statistics per worker: no collective per layer and step).

Each run's speed is training images per second of wall time over its epochs
after the first (the first pays tracing), and CPU seconds an epoch (all workers'),
read from its metrics.csv (each epoch includes its validation pass). The median
over rounds is reported,
with the ratios `loop x1 / fit` (the loop's overhead) and each two-worker
case over `loop x1` (2.0 is perfect scaling). The last line printed is one JSON object.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from benchmarks import json_result

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "TFDS data directory holding --dataset.")
flags.DEFINE_string("dataset", "best_artworks/all", "Dataset to train on.")
flags.DEFINE_string("workdir", "/tmp/multi_worker_bench", "Scratch directory (cleared).")
flags.DEFINE_integer("epochs", 3, "Epochs per run; the first is not counted.", lower_bound=2)
flags.DEFINE_integer("rounds", 2, "Rounds of the three runs; medians are reported.",
                     lower_bound=1)
flags.DEFINE_list("train_flags", ["--recipe=scratch"], "Extra train.py flags for every run.")
flags.DEFINE_string("json_out", None, "Also write the results here.")
flags.mark_flag_as_required("data_dir")

CASES = ("fit", "loop x1", "loop x2", "loop x2 local BN")
# Each ratio: (numerator, denominator) cases; reported when both ran.
RATIOS = {"loop_over_fit": ("loop x1", "fit"),
          "two_workers_over_one": ("loop x2", "loop x1"),
          "two_workers_local_bn_over_one": ("loop x2 local BN", "loop x1")}
flags.DEFINE_list("cases", list(CASES), f"Runs to time, of {', '.join(CASES)}.")
flags.register_validator("cases", lambda cases: cases and set(cases) <= set(CASES),
                         f"--cases must name some of: {', '.join(CASES)}")


def run_case(case: str, workdir: str) -> None:
    from tools.ports import free_ports

    args = [sys.executable, "train.py", f"--dataset={FLAGS.dataset}",
            f"--data_dir={FLAGS.data_dir}", f"--workdir={workdir}", f"--epochs={FLAGS.epochs}",
            "--gallery_per_artist=0", *FLAGS.train_flags]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CONFIG", None)
    if case == "fit":
        commands = [(["taskset", "-c", "0", *args, "--strategy=default"], env)]
    elif case == "loop x1":
        commands = [(["taskset", "-c", "0", *args, "--strategy=multi_worker"], env)]
    else:
        if case == "loop x2 local BN":
            args.append("--sync_batch_norm=false")
        cluster = {"worker": [f"localhost:{port}" for port in free_ports(2)]}
        commands = [(["taskset", "-c", str(index), *args, "--strategy=multi_worker"],
                     {**env, "TF_CONFIG": json.dumps(
                         {"cluster": cluster, "task": {"type": "worker", "index": index}})})
                    for index in range(2)]
    processes = [subprocess.Popen(command, cwd=ROOT, env=command_env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for command, command_env in commands]
    for process in processes:
        _, stderr = process.communicate()
        if process.returncode:
            raise RuntimeError(f"{case} failed:\n{stderr[-3000:]}")


def epoch_speed(workdir: str) -> tuple[float, float]:
    """(training images per second of wall time, CPU seconds an epoch) over the epochs
    after the first, from the run's metrics.csv."""
    import tensorflow_datasets as tfds

    from trainer import callbacks as callbacks_lib

    config = json.load(open(os.path.join(workdir, "config.json"), encoding="utf-8"))
    builder = tfds.builder(FLAGS.dataset, data_dir=FLAGS.data_dir)
    batch = config["data"]["batch_size"]
    per_epoch = builder.info.splits["train"].num_examples // batch * batch
    rows = callbacks_lib.csv_rows(os.path.join(workdir, callbacks_lib.METRICS_CSV))[1:]
    return (per_epoch * len(rows) / sum(float(row["epoch_seconds"]) for row in rows),
            statistics.mean(float(row["epoch_cpu_seconds"]) for row in rows))


def main(argv):
    del argv
    import artist_tfds  # noqa: F401  Registers the builders.

    cases = [case for case in CASES if case in FLAGS.cases]
    speeds = {case: [] for case in cases}
    cpu = {case: [] for case in cases}
    for round_index in range(FLAGS.rounds):
        for case in cases:
            workdir = os.path.join(FLAGS.workdir, f"{case.replace(' ', '_')}_{round_index}")
            shutil.rmtree(workdir, ignore_errors=True)
            run_case(case, workdir)
            images_per_s, cpu_seconds = epoch_speed(workdir)
            speeds[case].append(images_per_s)
            cpu[case].append(cpu_seconds)
            print(f"round {round_index + 1}: {case:<8} {images_per_s:7.1f} images/s "
                  f"{cpu_seconds:7.1f} CPU s an epoch", flush=True)
    median = {case: statistics.median(values) for case, values in speeds.items()}
    ratios = {name: round(median[top] / median[bottom], 3)
              for name, (top, bottom) in RATIOS.items() if top in median and bottom in median}
    summary = {"images_per_s": {case: round(v, 1) for case, v in median.items()},
               "cpu_s_per_epoch": {case: round(statistics.median(values), 1)
                                   for case, values in cpu.items()}, **ratios,
               "runs": {case: [round(v, 1) for v in values] for case, values in speeds.items()}}
    print(f"\n{'case':<17}{'images/s':>10}{'CPU s/epoch':>13}   (one core per worker, "
          f"median of {FLAGS.rounds})")
    for case in cases:
        print(f"{case:<17}{median[case]:>10.1f}{summary['cpu_s_per_epoch'][case]:>13.1f}")
    print("    ".join(f"{RATIOS[name][0]} / {RATIOS[name][1]}: {value:.3f}"
                       for name, value in ratios.items()), "(two workers: 2.0 is perfect scaling)")
    json_result.emit(summary, FLAGS.json_out)


if __name__ == "__main__":
    app.run(main)
