"""Attribution checks on open-set draws: same-hand scores for pairs and claims.

    python -m benchmarks.verify_bench --draws=RUNS/open_set/seed0,RUNS/open_set/seed1 \
        [--json_out=results/verify.json]

Each of `--draws` is a finished `open_set.py` work directory (`benchmarks/draws.py`).
Through the SavedModel's own signatures:

* pairs of paintings by the held-out artists, which the model never saw
  (artist-disjoint, as the published pair-verification protocols measure):
  same hand or not, scored as `verify_pair` scores them (cosine similarity of
  embeddings);
* pairs of the known artists' test paintings, scored the same way;
* claims on the known artists' test paintings: each painting with its true
  artist and with every other, scored as `verify` scores them (the embedding
  against the claimed artist's direction).

For each: AUROC, and at the threshold stored in the model (chosen on the
validation split for its false-accept rate) the false accepts and false
rejects. A model exported without stored thresholds has them fitted here
on its validation split, the same way (`trainer.verification`). The last
line is one JSON object.
"""

import json
import os
import statistics

import numpy as np
import tensorflow as tf
from absl import app, flags

from artist_id import memory
from benchmarks import draws as draws_lib
from benchmarks import json_result
from trainer import verification

FLAGS = flags.FLAGS
flags.DEFINE_list("draws", None, "open_set.py work directories (finished).")
flags.DEFINE_float("false_accept", 0.05, "For models without stored thresholds: the share "
                   "of false claims and pairs the fitted threshold accepts on validation.")
flags.DEFINE_string("json_out", None, "Also write the result, with the command, commit and "
                    "machine, to this file (e.g. results/verify.json).")
flags.mark_flag_as_required("draws")

BATCH = 32
GOAL_AUROC = 0.90  # On artist-disjoint pairs.


def embed(model, images: list[bytes]) -> np.ndarray:
    return np.concatenate([model.signatures["embed"](images=tf.constant(images[i:i + BATCH]))[
        "embeddings"].numpy() for i in range(0, len(images), BATCH)])


def errors_at(threshold: float, true: np.ndarray, false: np.ndarray) -> dict:
    """AUROC and the errors at `threshold` (None where a side is empty: one held-out artist
    makes no pair of two hands)."""
    both = len(true) > 0 and len(false) > 0
    return {"auroc": round(draws_lib.auroc(true, false), 4) if both else None,
            "threshold": round(threshold, 4),
            "false_accepted": round(float((false >= threshold).mean()), 4) if len(false) else None,
            "false_rejected": round(float((true < threshold).mean()), 4) if len(true) else None,
            "true": int(len(true)), "false": int(len(false))}


def mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.fmean(values), 4) if values else None


def thresholds(draw: draws_lib.Draw, model, document: dict) -> tuple[dict, str]:
    """The stored thresholds, or ones fitted here on validation; and which."""
    stored = document.get("verification") or {}
    if "pair" in stored:
        return stored, "stored"
    files, labels = draw.split("validation")
    directions = model.state_head_directions[0].numpy()
    return verification.fit(embed(model, draws_lib.read(files)), labels, directions,
                            false_accept=FLAGS.false_accept), "fitted here on validation"


def measure_draw(draw: draws_lib.Draw) -> dict:
    model = tf.saved_model.load(draw.model_dir)
    document = json.loads(model.signatures["metadata"]()["metadata"].numpy())
    fitted, where = thresholds(draw, model, document)
    test_files, test_labels = draw.split("test")
    test = embed(model, draws_lib.read(test_files))
    folders = sorted(draw.held_out_files)
    unseen_files = [path for folder in folders for path in draw.held_out_files[folder]]
    unseen_labels = np.array([i for i, folder in enumerate(folders)
                              for _ in draw.held_out_files[folder]])
    unseen = embed(model, draws_lib.read(unseen_files))
    figures = {"thresholds": where, "false_accept_target": fitted["false_accept"]}
    for name, embeddings, labels in (("unseen_pairs", unseen, unseen_labels),
                                     ("known_pairs", test, test_labels)):
        scores, same = verification.pair_scores(embeddings, labels)
        figures[name] = errors_at(fitted["pair"]["threshold"], scores[same], scores[~same])
    claims = verification.claim_scores(test, model.state_head_directions[0].numpy())
    true = claims[np.arange(len(test_labels)), test_labels]
    false = claims[np.arange(claims.shape[1])[None, :] != test_labels[:, None]]
    figures["claims"] = errors_at(fitted["claim"]["threshold"], true, false)
    return figures


def main(argv):
    del argv
    memory.tune_malloc()
    per_draw = {os.path.basename(os.path.normpath(workdir)): measure_draw(draws_lib.load(workdir))
                for workdir in FLAGS.draws}
    kinds = ("unseen_pairs", "known_pairs", "claims")
    summary = {kind: {key: mean(figures[kind][key] for figures in per_draw.values())
                      for key in ("auroc", "false_accepted", "false_rejected")}
               for kind in kinds}
    for kind in kinds:
        aurocs = [f[kind]["auroc"] for f in per_draw.values() if f[kind]["auroc"] is not None]
        summary[kind]["auroc_min"] = min(aurocs, default=None)
    json_result.print_table(
        ["what", "AUROC (mean)", "worst draw", "false accepts", "false rejects"],
        [[kind, *(_text(row[key], "{:.3f}") for key in ("auroc", "auroc_min")),
          *(_text(row[key], "{:.1%}") for key in ("false_accepted", "false_rejected"))]
         for kind, row in summary.items()],
        note=f"({len(per_draw)} draws)")
    unseen = summary["unseen_pairs"]["auroc"]
    result = {"draws": per_draw, "summary": summary,
              "goal": {"auroc": unseen, "limit": GOAL_AUROC,
                       "met": unseen is not None and unseen >= GOAL_AUROC}}
    json_result.emit(result, FLAGS.json_out)


def _text(value: float | None, form: str) -> str:
    return "-" if value is None else form.format(value)


if __name__ == "__main__":
    app.run(main)
