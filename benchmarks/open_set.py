"""Open-set rejection: does a model trained without some artists call their paintings "unknown"?

    python -m benchmarks.open_set --source_dir=PAINTINGS --workdir=DIR --held_out=3
    python -m benchmarks.open_set --source_dir=PAINTINGS --workdir=DIR --held_out_artists=A,B

1. Holds out N artists of PAINTINGS (one folder per artist), chosen by `--seed`,
   or the ones named, and makes DIR/source: symlinks to the other artists' folders.
2. Builds DIR/source with the `best_artworks` builder into DIR/data and trains
   `--recipe` (with `--set` overrides) into DIR/run, as recipe_compare.py does.
3. Through the SavedModel's signatures alone (`serving_default`, `embed`),
   runs the source files of the known artists' splits and every painting of
   the held-out artists, and scores each painting (higher: more like a known artist):
   - `msp`: the top calibrated probability, the score of the stored rule;
   - `class_mean`: cosine similarity of its embedding to the nearest mean of
     one artist's training embeddings;
   - `knn`: cosine similarity to its 5th nearest training painting (the
     served familiarity of older exports);
   - `familiarity`: the served one, against the gallery (at most 100 training
     paintings an artist): minus the relative Mahalanobis distance to the
     nearest artist (`serving.gallery.Familiarity`), which the stored rule's
     distance test uses.
   The stored rule combines `msp` with the gallery's familiarity.
   The energy score (logsumexp of the logits) is not among them: the
   SavedModel serves only softmax(logits / T), which drops each row's
   logsumexp, the very quantity the energy is. Also tried on devset, none
   better everywhere: the entropy of the probabilities, k from 1 to 50, and,
   from a run's kept weights, the energy and the largest cosine to an
   artist's learnt direction (docs/confidence.md).
4. Measures each score's AUROC (known test paintings positive, held-out ones
   negative) and the rejection rates, on both sets, at the stored rule
   (`unknown`) and at thresholds set on the validation split: one rejecting as
   many validation paintings as the stored rule does, one `--known_reject`;
   and per held-out artist, the AUROCs and the artist the model answers.
   Prints a table; the last line is one JSON object (also `--json_out`).

Reruns reuse DIR's folder, dataset and finished run; other held-out artists
need another DIR.
"""

import json
import os
import random

import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from artist_id import configs
import pipeline
from artist_tfds.best_artworks import layout, naming
from benchmarks import draws, json_result
from benchmarks import recipe_compare
from serving import gallery as gallery_lib
from artist_id import memory
from trainer import calibration
from trainer import config as config_lib
from trainer import train_lib

BATCH_SIZE = 32
HELD_OUT_RECORD = draws.HELD_OUT_RECORD
# Issue 11's targets, with 3 artists held out of devset.
TARGET_AUROC = 0.80
TARGET_UNKNOWN_REJECTED = 0.50
TARGET_KNOWN_REJECTED = 0.15

FLAGS = flags.FLAGS
flags.DEFINE_string("source_dir", None, "Folder of paintings, one subfolder per artist.")
flags.DEFINE_string("workdir", None, "Where the reduced source folder (symlinks), the dataset "
                    "and the run go.")
flags.DEFINE_string("dataset_config", None, "best_artworks config (default: the builder's).")
flags.DEFINE_integer("seed", 0, "Seed of the held-out artists' choice and of the run.")
flags.DEFINE_list("set", [], "Settings of the run, as name=value (e.g. epochs=15).")
flags.DEFINE_integer("held_out", None, "Artists to hold out, chosen by --seed.", lower_bound=1)
flags.DEFINE_list("held_out_artists", None, "Artists to hold out, by folder or display name.")
flags.DEFINE_string("recipe", "default", "Recipe trained on the known artists.")
flags.DEFINE_float("known_reject", TARGET_KNOWN_REJECTED, "Share of known validation "
                   "paintings the second threshold of each score rejects.",
                   lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_string("json_out", None, "Also write the JSON result here.")
flags.mark_flags_as_required(["source_dir", "workdir"])
flags.mark_flags_as_mutual_exclusive(["held_out", "held_out_artists"], required=True)


# --- The reduced source folder -----------------------------------------------------------


def choose_held_out(folders: list[str], *, count: int | None, names: list[str] | None,
                    seed: int) -> list[str]:
    """Folder names of the held-out artists: `names` (folder or display names) or `count`
    drawn by `seed`; at least two artists stay known."""
    if names:
        by_name = {**{naming.display_name(f): f for f in folders}, **{f: f for f in folders}}
        unknown = [name for name in names if name not in by_name]
        if unknown:
            raise app.UsageError(f"--held_out_artists: no folder {unknown} in --source_dir "
                                 f"(it holds {', '.join(folders)})")
        chosen = sorted({by_name[name] for name in names})
    else:
        chosen = sorted(random.Random(seed).sample(folders, min(count, len(folders))))
    if len(folders) - len(chosen) < 2:
        raise app.UsageError(f"holding out {len(chosen)} of {len(folders)} artists leaves "
                             "fewer than 2 to train on")
    return chosen


def source_folders(source_dir: str) -> layout.Scan:
    """The builder's scan of `source_dir`, which must hold one folder per artist."""
    scan = layout.scan(source_dir)
    if scan.layout != layout.ARTIST_FOLDERS:
        raise app.UsageError(f"--source_dir={source_dir}: expected one folder per artist, "
                             f"found the {scan.layout!r} layout")
    return scan


def link_known(source_dir: str, target: str, known: list[str], artists_csv: str | None) -> None:
    """`target`: a symlink to each known artist's folder, and to artists.csv if there is one."""
    os.makedirs(target, exist_ok=True)
    for name in known + ([os.path.basename(artists_csv)] if artists_csv else []):
        link = os.path.join(target, name)
        if not os.path.lexists(link):
            os.symlink(os.path.abspath(os.path.join(source_dir, name)), link)


def prepare_run(workdir: str, source_dir: str, held_out: list[str], scan: layout.Scan
                ) -> tuple[str, dict]:
    """Steps 1 and 2: (the known artists' built dataset name, the run's test metrics)."""
    known = sorted({f.folder for f in scan.files} - set(held_out))
    recipe_compare.claim(workdir, HELD_OUT_RECORD,
                         {"source_dir": os.path.abspath(source_dir), "held_out": held_out,
                          "known": known}, other="a run without other artists")
    link_known(source_dir, os.path.join(workdir, "source"), known, scan.artists_csv)
    data_dir = os.path.join(workdir, "data")
    dataset = recipe_compare.build_dataset(os.path.join(workdir, "source"), data_dir,
                                           FLAGS.dataset_config)
    config = configs.resolve(FLAGS.recipe, {"dataset": dataset, "data_dir": data_dir,
                                            "seed": FLAGS.seed,
                                            **config_lib.parse_assignments(FLAGS.set)})
    logging.info("Training %s without %s: %s", FLAGS.recipe, ", ".join(held_out), config)
    return dataset, train_lib.train_and_evaluate(config, os.path.join(workdir, draws.RUN))


# --- Paintings through the SavedModel -----------------------------------------------------


def forward(model, paths: list[str]) -> dict[str, np.ndarray]:
    """serving_default's probabilities, `unknown` and (with a gallery) `familiarity`, and
    embed's embeddings, of files."""
    data = []
    for path in paths:
        with open(path, "rb") as f:
            data.append(f.read())
    batch = tf.constant(data)
    served = model.signatures["serving_default"](images=batch)
    return {"probabilities": served["probabilities"].numpy(),
            "unknown": served["unknown"].numpy(),
            **({"familiarity": served["familiarity"].numpy()} if "familiarity" in served else {}),
            "embeddings": model.signatures["embed"](images=batch)["embeddings"].numpy()}


def run_files(model, paths: list[str]) -> tuple[dict[str, np.ndarray], list[str]]:
    """`forward` in batches, plus "index" (of each answered file in `paths`); the files the
    model refuses (InvalidArgument: a format it does not serve) are returned apart."""
    parts, refused = [], []
    for start in range(0, len(paths), BATCH_SIZE):
        indices = range(start, min(start + BATCH_SIZE, len(paths)))
        try:
            parts.append({**forward(model, [paths[i] for i in indices]), "index": list(indices)})
        except tf.errors.InvalidArgumentError:  # Find the refused ones: one file a call.
            for i in indices:
                try:
                    parts.append({**forward(model, [paths[i]]), "index": [i]})
                except tf.errors.InvalidArgumentError as e:
                    logging.warning("refused %s: %s", paths[i], e.message.splitlines()[0])
                    refused.append(paths[i])
    if not parts:
        raise RuntimeError(f"the model refused all {len(paths)} files")
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}, refused


# --- Scores and what they measure ----------------------------------------------------------


def class_means(embeddings: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Each class's mean embedding, L2-normalised [classes, D]."""
    sums = np.zeros((num_classes, embeddings.shape[1]))
    np.add.at(sums, labels, embeddings)
    return sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)


def score_paintings(outputs: dict[str, np.ndarray], train: dict[str, np.ndarray], *,
                    means: np.ndarray) -> dict[str, np.ndarray]:
    """Per painting, each score (higher: more like a known artist)."""
    return {"msp": outputs["probabilities"].max(axis=1),
            "class_mean": (outputs["embeddings"] @ means.T).max(axis=1),
            "knn": gallery_lib.nearest_similarity(train["embeddings"], outputs["embeddings"]),
            # The served one: the same against the gallery (the stored rule's distance test).
            **({"familiarity": outputs["familiarity"]} if "familiarity" in outputs else {})}


def rejection(threshold: float, known: np.ndarray, unknown: np.ndarray) -> dict:
    """Shares of known and unknown paintings scoring below `threshold` (rejected)."""
    return {"threshold": round(threshold, 4) if np.isfinite(threshold) else None,
            "unknown_rejected": round(float((unknown < threshold).mean()), 4),
            "known_rejected": round(float((known < threshold).mean()), 4)}


def measure_score(validation: np.ndarray, test: np.ndarray, held_out: np.ndarray, *,
                  rule_rate: float, known_reject: float) -> dict:
    """AUROC, and the rejections at two thresholds set on the validation split: one that
    rejects `rule_rate` of it (as the stored rule does), one `known_reject`."""
    return {"auroc": round(draws.auroc(test, held_out), 4),
            "matched_rule": rejection(calibration.threshold_rejecting(validation, rule_rate),
                                      test, held_out),
            "at_known_reject": rejection(calibration.threshold_rejecting(validation,
                                                                         known_reject),
                                         test, held_out)}


def load_model(model_dir: str, artists: list[str]):
    """The SavedModel, and its metadata document; it must name `artists`, in order."""
    model = tf.saved_model.load(model_dir)
    described = model.signatures["metadata"]()
    if [name.decode() for name in described["artists"].numpy()] != artists:
        raise RuntimeError(f"{model_dir} names other artists than its dataset")
    return model, json.loads(described["metadata"].numpy())


def run_sets(model, builder, source_dir: str, held_out_files: list[layout.SourceFile]
             ) -> tuple[dict[str, dict[str, np.ndarray]], list[str]]:
    """The model's outputs over each known split (with "labels") and over the held-out
    paintings ("held_out", with "folders"); and the files it refused."""
    sets, refused = {}, []
    for split in ("train", "validation", "test"):
        paths, labels = draws.split_files(builder, split, source_dir)
        sets[split], split_refused = run_files(model, paths)
        sets[split]["labels"] = labels[sets[split]["index"]]
        refused += split_refused
    sets["held_out"], held_out_refused = run_files(model, [f.path for f in held_out_files])
    sets["held_out"]["folders"] = np.array([f.folder for f in held_out_files])[
        sets["held_out"]["index"]]
    return sets, refused + held_out_refused


def top1_right(outputs: dict[str, np.ndarray]) -> np.ndarray:
    return outputs["probabilities"].argmax(axis=1) == outputs["labels"]


def kept_accuracy(outputs: dict[str, np.ndarray]) -> float | None:
    """The share of the answers the stored rule keeps (not `unknown`) that are right."""
    kept, right = ~outputs["unknown"], top1_right(outputs)
    return round(float(right[kept].mean()), 4) if kept.any() else None


def rule_figures(sets: dict[str, dict[str, np.ndarray]], abstention: dict) -> dict:
    """What the stored rule (`unknown`) does to each set, and the answers it keeps."""
    return {"min_confidence": abstention["min_confidence"],
            "min_familiarity": abstention.get("min_familiarity"),
            "target_precision": abstention["target_precision"],
            "validation_rejected": round(float(sets["validation"]["unknown"].mean()), 4),
            "unknown_rejected": round(float(sets["held_out"]["unknown"].mean()), 4),
            "known_rejected": round(float(sets["test"]["unknown"].mean()), 4),
            "kept_accuracy": kept_accuracy(sets["test"]),
            # As chosen on: the gap to kept_accuracy is how optimistic validation was.
            "validation_kept_accuracy": kept_accuracy(sets["validation"])}


def per_held_out_artist(held_out: dict[str, np.ndarray], scores_of: dict[str, dict],
                        artists: list[str]) -> dict:
    """Each held-out artist's paintings: each score's AUROC (against the known test paintings),
    the share the stored rule rejects, and the known artist most often answered."""
    figures = {}
    for folder in sorted(set(held_out["folders"])):
        mine = held_out["folders"] == folder
        answers = np.bincount(held_out["probabilities"][mine].argmax(axis=1),
                              minlength=len(artists))
        figures[folder] = {
            "paintings": int(mine.sum()),
            "auroc": {name: round(draws.auroc(scores_of["test"][name],
                                        scores_of["held_out"][name][mine]), 4)
                      for name in scores_of["test"]},
            "rule_rejected": round(float(held_out["unknown"][mine].mean()), 4),
            "taken_for": artists[int(answers.argmax())],
            "taken_for_share": round(float(answers.max() / mine.sum()), 4)}
    return figures


def measure(model_dir: str, builder, source_dir: str,
            held_out_files: list[layout.SourceFile], *,
            known_reject: float) -> dict:
    """Steps 3 and 4: every figure of the JSON line but the run's."""
    artists = pipeline.artist_names(builder)
    model, document = load_model(model_dir, artists)
    sets, refused = run_sets(model, builder, source_dir, held_out_files)
    means = class_means(sets["train"]["embeddings"], sets["train"]["labels"], len(artists))
    by_set = {name: score_paintings(sets[name], sets["train"], means=means)
              for name in ("validation", "test", "held_out")}
    rule = rule_figures(sets, document["abstention"])
    return {
        "paintings": {**{name: len(outputs["index"]) for name, outputs in sets.items()},
                      "refused": refused},
        "known_accuracy": round(float(top1_right(sets["test"]).mean()), 4),
        "validation_accuracy": round(float(top1_right(sets["validation"]).mean()), 4),
        "rule": rule,
        "scores": {name: measure_score(by_set["validation"][name], by_set["test"][name],
                                       by_set["held_out"][name],
                                       rule_rate=rule["validation_rejected"],
                                       known_reject=known_reject)
                   for name in by_set["test"]},
        "per_held_out_artist": per_held_out_artist(sets["held_out"], by_set, artists),
    }


def targets(result: dict) -> dict:
    """Issue 11's targets: the best score's AUROC, the stored rule's rejections."""
    best = max(result["scores"], key=lambda name: result["scores"][name]["auroc"])
    auroc_value = result["scores"][best]["auroc"]
    unknown, known = result["rule"]["unknown_rejected"], result["rule"]["known_rejected"]
    return {"auroc": {"score": best, "value": auroc_value, "limit": TARGET_AUROC,
                      "met": auroc_value >= TARGET_AUROC},
            "unknown_rejected": {"value": unknown, "limit": TARGET_UNKNOWN_REJECTED,
                                 "met": unknown >= TARGET_UNKNOWN_REJECTED},
            "known_rejected": {"value": known, "limit": TARGET_KNOWN_REJECTED,
                               "met": known <= TARGET_KNOWN_REJECTED}}


def print_table(result: dict) -> None:
    count, rule = result["paintings"], result["rule"]
    print(f"held out: {', '.join(result['held_out'])} ({count['held_out']} paintings); "
          f"known: {result['known_artists']} artists, test split {count['test']} paintings, "
          f"accuracy {result['known_accuracy']:.1%} (validation "
          f"{result['validation_accuracy']:.1%}); refused files: {len(count['refused'])}")
    distance = ("" if rule["min_familiarity"] is None
                else f" or familiarity below {rule['min_familiarity']:.3f}")
    print(f"stored rule (unknown below p {rule['min_confidence']:.3f}{distance}, target precision "
          f"{rule['target_precision']}): rejects {rule['unknown_rejected']:.1%} of unknown, "
          f"{rule['known_rejected']:.1%} of known paintings (validation "
          f"{rule['validation_rejected']:.1%}); kept answers right: {rule['kept_accuracy']} "
          f"(validation {rule['validation_kept_accuracy']})")
    print(f"{'score':<12}{'AUROC':>7}   as many rejected on validation as the rule"
          f"   {result['known_reject']:.0%} of validation rejected")
    for name, figures in result["scores"].items():
        cells = [f"{figures[key]['unknown_rejected']:>6.1%} unknown, "
                 f"{figures[key]['known_rejected']:>6.1%} known"
                 for key in ("matched_rule", "at_known_reject")]
        print(f"{name:<12}{figures['auroc']:>7.3f}   {cells[0]:<42}   {cells[1]}")
    for folder, figures in result["per_held_out_artist"].items():
        aurocs = ", ".join(f"{name} {value:.3f}" for name, value in figures["auroc"].items())
        print(f"{folder} ({figures['paintings']}): AUROC {aurocs}; rule rejects "
              f"{figures['rule_rejected']:.1%}; answered {figures['taken_for']} "
              f"({figures['taken_for_share']:.0%})")
    for name, target in result["targets"].items():
        print(f"target {name}: {target['value']} vs {target['limit']}: "
              f"{'met' if target['met'] else 'NOT met'}")


def main(argv):
    del argv
    memory.tune_malloc()  # As train.py.
    scan = source_folders(FLAGS.source_dir)
    held_out = choose_held_out(sorted({f.folder for f in scan.files}), count=FLAGS.held_out,
                               names=FLAGS.held_out_artists, seed=FLAGS.seed)
    dataset, metrics = prepare_run(FLAGS.workdir, FLAGS.source_dir, held_out, scan)
    builder = pipeline.load_builder(dataset, data_dir=os.path.join(FLAGS.workdir, "data"))
    result = {"held_out": held_out, "known_artists": pipeline.num_classes(builder),
              "run": {"recipe": FLAGS.recipe, "epochs": metrics["epochs_run"],
                      "test_accuracy": round(metrics["test_accuracy"], 4)},
              "known_reject": FLAGS.known_reject,
              **measure(os.path.join(FLAGS.workdir, draws.RUN, train_lib.SAVED_MODEL), builder,
                        os.path.join(FLAGS.workdir, "source"),
                        draws.held_out_paintings(scan, held_out),
                        known_reject=FLAGS.known_reject)}
    result["targets"] = targets(result)
    print_table(result)
    json_result.emit(result, FLAGS.json_out)


if __name__ == "__main__":
    app.run(main)
