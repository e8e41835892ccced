"""Enrolment on open-set draws: a model trained without some artists learns them from k paintings.

    python -m benchmarks.enroll_bench --draws=RUNS/open_set/seed0,RUNS/open_set/seed1 \
        [--k=5,10,20] [--retrained=RUNS/full] [--json_out=results/enroll.json]

Each of `--draws` is a finished `open_set.py` work directory: a model trained
without its held-out artists (`benchmarks/draws.py`). For each draw and each
k, the held-out artists are enrolled one after another into a fresh copy of
the model (`serving.enrolment`, in memory), each from k of its paintings
chosen by `--seed`; then the model answers:

* the held-out artists' other paintings (the same ones for every k: all but
  the first max(k) of each artist's draw): the share named for their artist;
* the known artists' test split, before and after: accuracy;
* the "unknown artist" rule, before and after, on both.

Seconds: each enrolment in memory (embedding its paintings, the head,
gallery and familiarity), and writing one enrolled model to disk.
`--retrained`: a run of the same recipe on every artist (a work directory):
its test accuracy on the held-out artists' test paintings, and its training
CPU seconds, beside enrolment. The last line is one JSON object.
"""

import json
import os
import statistics
import tempfile
import time

import numpy as np
import tensorflow as tf
from absl import app, flags, logging

import pipeline
from artist_id import memory
from artist_tfds.best_artworks import naming
from benchmarks import draws as draws_lib
from benchmarks import json_result
from serving import enrolment

FLAGS = flags.FLAGS
flags.DEFINE_list("draws", None, "open_set.py work directories (finished).")
flags.DEFINE_list("k", ["5", "10", "20"], "Paintings each new artist is enrolled from.")
flags.DEFINE_integer("seed", 0, "Seed of the choice of each artist's paintings.")
flags.DEFINE_string("retrained", None, "Work directory of a run on every artist, to compare.")
flags.DEFINE_string("json_out", None, "Also write the result, with the command, commit and "
                    "machine, to this file (e.g. results/enroll.json).")
flags.mark_flag_as_required("draws")

BATCH = 32
# The goal at k = 10: these shares named, known accuracy within this drop.
GOAL_K, GOAL_NAMED, GOAL_KNOWN_DROP = 10, 0.75, 0.02


def answer(model, images: list[bytes]) -> dict[str, np.ndarray]:
    """serving_default's top-1 id and `unknown` of each painting."""
    parts = [model.signatures["serving_default"](images=tf.constant(images[i:i + BATCH]))
             for i in range(0, len(images), BATCH)]
    return {"top1": np.concatenate([p["top_k_ids"].numpy()[:, 0] for p in parts]),
            "unknown": np.concatenate([p["unknown"].numpy() for p in parts])}


def choose(files: list[str], seed: int) -> list[str]:
    return [files[i] for i in np.random.default_rng(seed).permutation(len(files))]


def measure_draw(draw: draws_lib.Draw, ks: list[int], seed: int) -> dict:
    known_files, known_labels = draw.split("test")
    known_images = draws_lib.read(known_files)
    chosen = {folder: choose(files, seed) for folder, files in sorted(draw.held_out_files.items())}
    rest = {folder: draws_lib.read(files[max(ks):]) for folder, files in chosen.items()}
    served = enrolment.load(draw.model_dir)
    before_known = answer(served.loaded, known_images)
    before_new = {folder: answer(served.loaded, images) for folder, images in rest.items()}
    figures = {"held_out": list(chosen), "known_test_paintings": len(known_files),
               "other_paintings": {folder: len(images) for folder, images in rest.items()},
               "before": {
                   "known_accuracy": _share(before_known["top1"] == known_labels),
                   "known_unknown": _share(before_known["unknown"]),
                   "new_unknown": _share(np.concatenate([a["unknown"]
                                                         for a in before_new.values()]))},
               "k": {}}
    for k in ks:
        served = enrolment.load(draw.model_dir)  # A fresh copy for each k.
        seconds, ids = [], {}
        for folder, files in chosen.items():
            start = time.perf_counter()
            done = enrolment.enroll(served, artist=naming.display_name(folder),
                                    images=draws_lib.read(files[:k]), file_names=files[:k])
            seconds.append(time.perf_counter() - start)
            ids[folder] = done["id"]
        known = answer(served.loaded, known_images)
        new = {folder: answer(served.loaded, images) for folder, images in rest.items()}
        named = np.concatenate([new[f]["top1"] == ids[f] for f in chosen])
        figures["k"][str(k)] = {
            "named": _share(named),
            "named_per_artist": {f: _share(new[f]["top1"] == ids[f]) for f in chosen},
            "known_accuracy": _share(known["top1"] == known_labels),
            "known_unknown": _share(known["unknown"]),
            "new_unknown": _share(np.concatenate([a["unknown"] for a in new.values()])),
            "seconds_per_enrolment": round(statistics.fmean(seconds), 2)}
        logging.info("%s k=%d: %s", draw.workdir, k, figures["k"][str(k)])
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        enrolment.write(served, os.path.join(out, "enrolled"))
        figures["seconds_to_write"] = round(time.perf_counter() - start, 2)
    return figures


def retrained_figures(workdir: str, held_out: list[str]) -> dict:
    """A run on every artist: its test accuracy on `held_out`'s test paintings, CPU s."""
    with open(os.path.join(workdir, "report.json"), encoding="utf-8") as f:
        per_artist = json.load(f)["per_artist"]
    with open(os.path.join(workdir, "test_metrics.json"), encoding="utf-8") as f:
        metrics = json.load(f)
    names = [naming.display_name(folder) for folder in held_out]
    rows = [per_artist[name] for name in names if name in per_artist]
    right = sum(row["recall"] * row["support"] for row in rows)
    return {"held_out_accuracy": round(right / max(sum(row["support"] for row in rows), 1), 4),
            "train_cpu_seconds": metrics["train_cpu_seconds"],
            "known_accuracy": round(metrics["test_accuracy"], 4)}


def summarize(per_draw: dict, ks: list[int]) -> dict:
    summary = {}
    for k in ks:
        rows = [figures["k"][str(k)] for figures in per_draw.values()]
        drops = [figures["before"]["known_accuracy"] - figures["k"][str(k)]["known_accuracy"]
                 for figures in per_draw.values()]
        summary[str(k)] = {
            "named": round(statistics.fmean(r["named"] for r in rows), 4),
            "named_min": min(r["named"] for r in rows),
            "known_drop": round(statistics.fmean(drops), 4),
            "known_drop_max": round(max(drops), 4),
            "new_unknown": round(statistics.fmean(r["new_unknown"] for r in rows), 4),
            "known_unknown": round(statistics.fmean(r["known_unknown"] for r in rows), 4),
            "seconds_per_enrolment": round(statistics.fmean(r["seconds_per_enrolment"]
                                                            for r in rows), 2)}
    return summary


def goal(summary: dict) -> dict | None:
    row = summary.get(str(GOAL_K))
    if row is None:
        return None
    return {"k": GOAL_K, "named": row["named"], "named_limit": GOAL_NAMED,
            "known_drop": row["known_drop"], "known_drop_limit": GOAL_KNOWN_DROP,
            "met": row["named"] >= GOAL_NAMED and row["known_drop"] <= GOAL_KNOWN_DROP}


def main(argv):
    del argv
    memory.tune_malloc()
    ks = sorted(int(k) for k in FLAGS.k)
    per_draw, retrained = {}, {}
    for workdir in FLAGS.draws:
        draw = draws_lib.load(workdir)
        per_draw[os.path.basename(os.path.normpath(workdir))] = measure_draw(draw, ks, FLAGS.seed)
        if FLAGS.retrained:
            retrained[os.path.basename(os.path.normpath(workdir))] = retrained_figures(
                FLAGS.retrained, draw.held_out)
    summary = summarize(per_draw, ks)
    json_result.print_table(
        ["k", "named", "worst draw", "known drop", "new 'unknown'", "known 'unknown'", "s each"],
        [[k, f"{row['named']:.1%}", f"{row['named_min']:.1%}", f"{row['known_drop']:+.1%}",
          f"{row['new_unknown']:.1%}", f"{row['known_unknown']:.1%}",
          f"{row['seconds_per_enrolment']:.1f}"] for k, row in summary.items()],
        note=f"({len(per_draw)} draws)")
    result = {"draws": per_draw, "summary": summary, "goal": goal(summary),
              **({"retrained": retrained} if retrained else {})}
    json_result.emit(result, FLAGS.json_out)


def _share(mask: np.ndarray) -> float:
    return round(float(np.mean(mask)), 4) if len(mask) else 0.0


if __name__ == "__main__":
    app.run(main)
