"""Calibration measured on more paintings than one test split holds: the ECE of several runs,
pooled.

    python -m benchmarks.calibration_pool --reports=RUN_A/report.json,RUN_B/report.json

An ECE of 15 bins on a test split of a few hundred paintings cannot tell 0.05
from 0.07: a perfectly calibrated model would show about 0.05 there too (each
report's `ece_floor`). Each report.json (`train.py`'s, or `evaluate.py`'s)
keeps its split's per-bin totals (paintings, summed top probability, right
answers), and totals add up: this prints each report's ECE and floor, then the
ECE of all their paintings together against the floor of that many paintings
(binomial draws at each bin's mean confidence, `trainer/calibration.py`). Pool
runs tested on different paintings: the floor assumes independent answers, and
the same test paintings under several models are not. The split folds of
`best_artworks` give exactly that on one collection: the runs of
`--dataset=best_artworks/all`, `all_fold1`, ..., `all_fold9` are each tested on
a tenth of its paintings, no painting twice (the open-set draws of
`benchmarks/open_set.py` are not: their known artists' test paintings overlap).
The last line is one JSON object (also `--json_out`).
"""

import json

import numpy as np
from absl import app, flags

from benchmarks import json_result
from trainer import calibration

FLAGS = flags.FLAGS
flags.DEFINE_list("reports", None, "report.json files written by train.py or evaluate.py.")
flags.DEFINE_string("json_out", None, "Also write the JSON result here.")
flags.mark_flag_as_required("reports")


def read_totals(path: str) -> dict[str, np.ndarray]:
    """A report's per-bin totals; UsageError if it has none (written before they were kept:
    re-run `evaluate.py` on its SavedModel)."""
    try:
        with open(path, encoding="utf-8") as f:
            totals = json.load(f)["calibration"]["bin_totals"]
    except FileNotFoundError:
        raise app.UsageError(f"{path}: no such report") from None
    except (KeyError, TypeError, json.JSONDecodeError):
        raise app.UsageError(f"{path}: no calibration bin totals; reports written before "
                             "they were kept need `python evaluate.py --model_dir=RUN/"
                             "saved_model ...` again") from None
    return {name: np.asarray(values, float) for name, values in totals.items()}


def figures(totals: dict[str, np.ndarray]) -> dict:
    floor, floor_sd = calibration.ece_noise_floor(totals)
    return {"paintings": int(totals["count"].sum()),
            "accuracy": round(float(totals["right"].sum() / max(totals["count"].sum(), 1)), 6),
            "ece": round(calibration.ece_of_totals(totals), 6),
            "ece_floor": round(floor, 6), "ece_floor_sd": round(floor_sd, 6)}


def pool(all_totals: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    bins = {len(totals["count"]) for totals in all_totals}
    if len(bins) != 1:
        raise app.UsageError(f"the reports bin their confidences differently ({sorted(bins)})")
    return {name: sum(totals[name] for totals in all_totals) for name in all_totals[0]}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    all_totals = [read_totals(path) for path in FLAGS.reports]
    result = {"reports": {path: figures(totals)
                          for path, totals in zip(FLAGS.reports, all_totals)},
              "pooled": figures(pool(all_totals))}
    for path, row in [*result["reports"].items(), ("pooled", result["pooled"])]:
        print(f"{path}: {row['paintings']} paintings, accuracy {row['accuracy']:.1%}, ECE "
              f"{row['ece']:.3f} (a perfectly calibrated model: {row['ece_floor']:.3f} ± "
              f"{row['ece_floor_sd']:.3f})")
    json_result.emit(result, FLAGS.json_out)


if __name__ == "__main__":
    app.run(main)
