"""Recipes and ablations on the same splits and CPU budget, over seeds.

    python -m benchmarks.recipe_compare --source_dir=PAINTINGS --workdir=DIR \
        [--recipes=original,default] [--ablations=bn_momentum=0,eval_crops=4+test_flips=true] \
        [--seeds=3]

1. Builds PAINTINGS (a folder of paintings sorted by artist, or the Kaggle
   download) with the `best_artworks` builder into DIR/data; or, with
   `--subsample=7x100`, a small collection made of it (7 artists x 100
   paintings, symlinks in DIR/source): the shape of a user's few hundred
   paintings, where a recipe tuned on a large collection can fail.
2. For each seed: trains the first of `--recipes` (the original recipe, by
   default) for `--original_epochs` and notes its training CPU time: the budget.
3. Trains every other recipe, and every ablation (the second recipe with the
   settings of one `--ablations` item changed; `+` joins several), with as many
   epochs as fit in that budget (estimated from training steps of both models,
   timed in turn, then enforced by `--cpu_budget_seconds`). An ablation that leaves
   the step's cost alone (none of `COST_SETTINGS`) trains the second recipe's
   epochs: it differs from it in its settings alone, not in a noisy estimate.
   One of views or export settings alone (e.g. `test_flips=true`, `eval_crops=4`)
   trains nothing: the second recipe's run is copied and re-evaluated with them.
4. Prints each variant's test accuracy and macro-F1 (mean and standard
   deviation over seeds) and the gain over the first recipe; the last line is
   one JSON object {variant: {"test_accuracy", "test_accuracy_sd", "macro_f1",
   "gain", "runs": [per seed: test_accuracy, macro_f1, seconds, cpu_seconds,
   epochs]}}.

Reruns reuse the built dataset and finished runs (each run's workdir,
DIR/<variant>/seed<N>) if they ran the same settings (their epochs and budget
aside); a run of other settings (the defaults changed since) is an error
naming the settings.
"""

import collections
import json
import os
import random
import shutil
import statistics
import time

from absl import app, flags, logging

from benchmarks import json_result


FLAGS = flags.FLAGS


def define_flags():
    """Defines the command line (here, not at import: the tests import this module
    beside others that define --seed)."""
    flags.DEFINE_string("source_dir", None, "Folder of paintings sorted by artist (manual_dir).")
    flags.DEFINE_string("workdir", None, "Where the dataset and both runs go.")
    flags.DEFINE_string("json_out", None, "Also write the result, with the command, commit and machine, to this file (e.g. results/NAME.json).")
    flags.DEFINE_string("dataset_config", None, "best_artworks config (default: the builder's).")
    flags.DEFINE_list("recipes", ["original", "default"], "Recipes to compare; the first sets "
                      "the CPU budget, the second is the base of the ablations.")
    flags.DEFINE_list("ablations", [], "Variants of the second recipe, each name=value (several "
                      "joined by '+'), e.g. bn_momentum=0,crop_probability=0.5+eval_crops=4.")
    flags.DEFINE_integer("seeds", 1, "Seeds (from --seed): each recipe and ablation runs once "
                         "per seed, against that seed's budget.", lower_bound=1)
    flags.DEFINE_integer("original_epochs", 20, "Epochs of the first recipe (20 is the original "
                         "recipe; fewer for a quick, proportionally budgeted comparison).",
                         lower_bound=1)
    flags.DEFINE_integer("max_default_epochs", 60, "Upper bound on the default recipe's epochs.",
                         lower_bound=1)
    flags.DEFINE_integer("seed", 0, "First seed.")
    flags.DEFINE_string("subsample", None, "ARTISTSxPAINTINGS, e.g. 7x100: compare on a small "
                        "collection made of --source_dir (that many artists among those with "
                        "enough paintings, that many paintings of each, chosen by "
                        "--subsample_seed), linked into DIR/source.")
    flags.DEFINE_integer("subsample_seed", 0, "Seed of --subsample's choice.")
    flags.DEFINE_list("set", [], "Settings applied to every run, as name=value (e.g. "
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


SUBSAMPLE_RECORD = "subsample.json"


def subsample(source_dir: str, target: str, *, artists: int, paintings: int,
              seed: int) -> str:
    """Links a small collection into `target` and returns it: `artists` of `source_dir`'s
    artist folders holding at least `paintings` paintings, and `paintings` of each,
    chosen by `seed`. A target linked for another choice is refused."""
    from artist_tfds.best_artworks import layout

    scan = layout.scan(source_dir)
    if scan.layout != layout.ARTIST_FOLDERS:
        raise app.UsageError(f"--subsample needs one folder per artist in {source_dir}, "
                             f"found the {scan.layout!r} layout")
    by_folder = collections.defaultdict(list)
    for file in sorted(scan.files, key=lambda f: f.key):
        by_folder[file.folder].append(file)
    eligible = sorted(name for name, files in by_folder.items() if len(files) >= paintings)
    if len(eligible) < artists:
        raise app.UsageError(f"--subsample={artists}x{paintings}: {len(eligible)} artists of "
                             f"{source_dir} have {paintings} paintings or more")
    rng = random.Random(seed)
    chosen = [file for name in sorted(rng.sample(eligible, artists))
              for file in sorted(rng.sample(by_folder[name], paintings), key=lambda f: f.key)]
    record = {"source_dir": os.path.abspath(source_dir), "artists": artists,
              "paintings": paintings, "seed": seed, "files": [f.key for f in chosen]}
    claim(target, SUBSAMPLE_RECORD, record, other="another subsample")
    for file in chosen:
        link = os.path.join(target, *file.key.split("/"))
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if not os.path.lexists(link):
            os.symlink(os.path.abspath(file.path), link)
    if scan.artists_csv and not os.path.lexists(
            csv_link := os.path.join(target, os.path.basename(scan.artists_csv))):
        os.symlink(os.path.abspath(scan.artists_csv), csv_link)
    return target


def claim(directory: str, record_file: str, record: dict, *, other: str) -> None:
    """Marks `directory` as made for `record` (kept in `record_file`), or refuses it when
    it was made for another (`other` names what it then holds)."""
    path = os.path.join(directory, record_file)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            if json.load(f) != record:
                raise app.UsageError(f"{directory} holds {other} ({path}); use another "
                                     "--workdir")
    os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)


# Settings that change what a training step costs: an ablation of any of them has its
# epochs estimated from its own step cost; any other trains its base's epochs.
COST_SETTINGS = ("model", "backbone", "image_size", "batch_size", "precision", "jit_compile")


def step_cost_ratio(config, baseline, num_classes: int, *, repeats: int = 5,
                    steps: int = 4) -> float:
    """CPU seconds per training step of `config`'s model over `baseline`'s, on random data.

    The two are timed in turn, `repeats` rounds of `steps` steps each, and the ratio
    is of their medians: on a shared machine the load drifts, and each round sees
    the same drift for both.
    """
    import keras
    import numpy as np

    from trainer import optim, train_lib

    def timed_step(each):
        model = train_lib.build_model(each, num_classes)
        loss, _ = optim.create_loss_and_metrics(each, num_classes)
        model.compile(optimizer=optim.create_optimizer(each.optimizer, 1e-3, steps_per_epoch=1),
                      loss=loss)
        batch, size = each.data.batch_size, each.data.image_size
        x = np.random.default_rng(0).random((batch, size, size, 3), dtype=np.float32)
        y = np.zeros((batch, num_classes) if optim.uses_one_hot(each) else batch)
        model.train_on_batch(x, y)  # Trace and warm up.

        def seconds():
            start = time.process_time()
            for _ in range(steps):
                model.train_on_batch(x, y)
            return (time.process_time() - start) / steps
        return seconds

    timers = [timed_step(config), timed_step(baseline)]
    rounds = [[timer() for timer in timers] for _ in range(repeats)]
    keras.backend.clear_session()
    ours, theirs = (statistics.median(column) for column in zip(*rounds))
    return ours / theirs


# Set for each run from the budget: a finished run is reused whatever they were.
BUDGETED = ("epochs", "warmup_epochs", "cpu_budget_seconds")


def finished_run(workdir: str, config) -> dict | None:
    """The test metrics of the finished run in `workdir` (None if there is none), after
    checking that it ran `config`'s settings, apart from the `BUDGETED` ones."""
    from trainer import config as config_lib
    from trainer import train_lib

    finished = os.path.join(workdir, train_lib.TEST_METRICS)
    if not os.path.exists(finished):
        return None
    previous = config_lib.to_flat(train_lib.read_config(workdir))
    current = config_lib.to_flat(config)
    changed = sorted(k for k in current if k not in BUDGETED and previous.get(k) != current[k])
    if changed:
        raise train_lib.WorkdirError(
            f"{workdir} holds a finished run of other settings (differs in: "
            f"{', '.join(changed)}): the defaults changed since, or --set did; remove it "
            "or use another --workdir")
    with open(finished, encoding="utf-8") as f:
        return json.load(f)


# The test report's calibration and "unknown artist" figures each run also keeps.
REPORTED = ("temperature", "ece_before", "ece", "ece_floor", "nll_before", "nll", "coverage",
            "accuracy_answered")


def summary(metrics: dict) -> dict:
    return {"test_accuracy": round(metrics["test_accuracy"], 4),
            "macro_f1": round(metrics["test_macro_f1"], 4),
            "seconds": metrics["train_seconds"], "cpu_seconds": metrics["train_cpu_seconds"],
            "epochs": metrics["epochs_run"],
            **{key: round(metrics[f"test_{key}"], 4) for key in REPORTED
               if metrics.get(f"test_{key}") is not None}}


def variants() -> dict[str, tuple[str, dict]]:
    """{name: (recipe, settings)} for every recipe after the first and every ablation."""
    from trainer import config as config_lib

    found = {recipe: (recipe, {}) for recipe in FLAGS.recipes[1:]}
    for ablation in FLAGS.ablations:
        found[f"{FLAGS.recipes[1]}+{ablation}"] = (
            FLAGS.recipes[1], config_lib.parse_assignments(ablation.split("+")))
    return found


def views_of_base(base_dir: str, workdir: str, settings: dict) -> dict:
    """An ablation of views or export settings alone (`config_lib.after_training_settings`): the
    base run's kept weights, copied and re-evaluated with them (no training), so the two
    differ in those settings and nothing else, not even in a training run's luck."""
    from trainer import train_lib

    if not os.path.exists(workdir):  # Copied whole or not at all.
        shutil.rmtree(workdir + ".partial", ignore_errors=True)
        shutil.copytree(base_dir, workdir + ".partial", ignore=shutil.ignore_patterns(
            train_lib.SAVED_MODEL, train_lib.TFLITE, "tensorboard"))
        os.replace(workdir + ".partial", workdir)
    logging.info("%s: the run of %s, re-evaluated with %s", workdir, base_dir, settings)
    return train_lib.train_and_evaluate(train_lib.read_config(base_dir).replace(**settings),
                                        workdir)


def mean_and_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def main(argv):
    del argv
    from artist_id import configs
    from artist_id import memory
    from trainer import config as config_lib
    from trainer import train_lib

    if len(FLAGS.recipes) < 2 and not FLAGS.ablations:
        raise app.UsageError("--recipes needs a budget recipe and at least one to compare")
    if FLAGS.ablations and len(FLAGS.recipes) < 2:
        raise app.UsageError("--ablations vary the second of --recipes: name two")
    memory.tune_malloc()  # As train.py: every recipe runs with it.
    source_dir = FLAGS.source_dir
    if FLAGS.subsample:
        artists, _, paintings = FLAGS.subsample.partition("x")
        if not (artists.isdigit() and paintings.isdigit() and int(artists) >= 2
                and int(paintings) >= 1):
            raise app.UsageError(f"--subsample={FLAGS.subsample}: expected ARTISTSxPAINTINGS "
                                 "with at least 2 artists, e.g. 7x100")
        source_dir = subsample(source_dir, os.path.join(FLAGS.workdir, "source"),
                               artists=int(artists), paintings=int(paintings),
                               seed=FLAGS.subsample_seed)
    data_dir = os.path.join(FLAGS.workdir, "data")
    dataset = build_dataset(source_dir, data_dir, FLAGS.dataset_config)
    common = {"dataset": dataset, "data_dir": data_dir,
              **config_lib.parse_assignments(FLAGS.set)}
    first = FLAGS.recipes[0]
    runs: dict[str, list[dict]] = {first: [], **{name: [] for name in variants()}}
    ratios: dict[str, float] = {}
    for seed in range(FLAGS.seed, FLAGS.seed + FLAGS.seeds):
        budget_config = configs.resolve(first, {**common, "seed": seed,
                                                "epochs": FLAGS.original_epochs})
        logging.info("Seed %d: training %s, the budget", seed, first)
        budget_metrics = train_lib.train_and_evaluate(
            budget_config, os.path.join(FLAGS.workdir, first, f"seed{seed}"))
        runs[first].append(summary(budget_metrics))
        budget = budget_metrics["train_cpu_seconds"]
        num_classes = budget_metrics.get("num_classes") or len(
            json.load(open(os.path.join(FLAGS.workdir, first, f"seed{seed}", "report.json"),
                           encoding="utf-8"))["per_artist"])
        for name, (recipe, settings) in variants().items():
            workdir = os.path.join(FLAGS.workdir, name.replace("=", "_"), f"seed{seed}")
            if settings and set(settings) <= config_lib.after_training_settings():
                runs[name].append(summary(views_of_base(
                    os.path.join(FLAGS.workdir, FLAGS.recipes[1], f"seed{seed}"), workdir,
                    settings)))
                continue
            config = configs.resolve(recipe, {**common, **settings, "seed": seed})
            if (metrics := finished_run(workdir, config)) is not None:
                runs[name].append(summary(metrics))  # Epochs from an earlier estimate.
                continue
            if settings and not set(settings) & set(COST_SETTINGS):
                # Steps cost what the base recipe's cost: the same epochs (and schedule),
                # so the ablation differs from its base in its settings alone.
                base_recipe = FLAGS.recipes[1]
                epochs = train_lib.read_config(os.path.join(
                    FLAGS.workdir, base_recipe, f"seed{seed}")).training.epochs
                logging.info("%s, seed %d: the epochs of %s, %d, in %.0f CPU s",
                             name, seed, base_recipe, epochs, budget)
            else:
                if name not in ratios:
                    ratios[name] = step_cost_ratio(config, budget_config, num_classes)
                per_epoch = budget / budget_metrics["epochs_run"] * ratios[name]
                # 90%: evaluation passes and tracing also cost CPU inside the budget. At
                # least one epoch of the whole network after a frozen backbone's.
                epochs = max(2, config.training.freeze_epochs + 1,
                             min(FLAGS.max_default_epochs, int(0.9 * budget / per_epoch)))
                logging.info("%s, seed %d: step cost x%.2f of %s -> %d epochs in %.0f CPU s",
                             name, seed, ratios[name], first, epochs, budget)
            config = configs.resolve(recipe, {
                **common, **settings, "seed": seed, "epochs": epochs,
                "warmup_epochs": min(config.optimizer.warmup_epochs, epochs - 1),
                "cpu_budget_seconds": budget})
            runs[name].append(summary(train_lib.train_and_evaluate(config, workdir)))

    base, _ = mean_and_sd([run["test_accuracy"] for run in runs[first]])
    result, rows = {}, []
    for name, variant_runs in runs.items():
        accuracy, sd = mean_and_sd([run["test_accuracy"] for run in variant_runs])
        macro_f1, _ = mean_and_sd([run["macro_f1"] for run in variant_runs])
        result[name] = {"test_accuracy": round(accuracy, 4), "test_accuracy_sd": round(sd, 4),
                        "macro_f1": round(macro_f1, 4), "gain": round(accuracy - base, 4),
                        "runs": variant_runs}
        rows.append([name, f"{accuracy:.1%} ± {sd:.1%}", f"{macro_f1:.3f}",
                     f"{accuracy - base:+.1%}",
                     f"{statistics.fmean(r['epochs'] for r in variant_runs):.1f}",
                     f"{statistics.fmean(r['cpu_seconds'] for r in variant_runs):.0f}"])
    json_result.print_table(["variant", "test accuracy", "macro-F1", "gain", "epochs", "CPU s"],
                            rows, note=f"({FLAGS.seeds} seed{'s' * (FLAGS.seeds > 1)})")
    json_result.emit(result, FLAGS.json_out)


if __name__ == "__main__":
    define_flags()
    app.run(main)
