"""Evaluates an exported SavedModel on a dataset split and writes the report.

    python -m evaluate --model_dir=WORKDIR/saved_model --dataset=best_artworks --split=test

Writes report.json, report.md, confusion.png, mistakes.png, reliability.png and
coverage.png to --out_dir.
The split goes through the input pipeline as in training's evaluation
(`pipeline.create_split`, at the model's own image size and resize mode) and
into the model's `serve_float_pixels` signature: those are the pixels
`serving_default` makes from the same files, so the numbers are those of
the model as served. A model with multi-crop inference ("views" in its
metadata) is fed the split's encoded files through `serving_default`, which
makes the views itself.
"""

import os
import sys

from absl import app, flags

import pipeline
from artist_id import memory
from trainer import evaluation

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "Exported SavedModel directory.")
flags.DEFINE_string("dataset", "sample_paintings", "TFDS dataset as name[/config][:version].")
flags.DEFINE_string("data_dir", None, "TFDS data directory.")
flags.DEFINE_string("split", "test", "Split to evaluate (TFDS split syntax).")
flags.DEFINE_string("out_dir", None, "Where to write the report (default: MODEL_DIR/../report_SPLIT).")
flags.DEFINE_integer("batch_size", 64, "Images per call to the model.", lower_bound=1)
flags.mark_flag_as_required("model_dir")


def evaluate(model_dir: str, builder, split: str, out_dir: str, *, batch_size: int = 64) -> dict:
    predict_fn, document = evaluation.saved_model_predict_fn(model_dir)
    names = pipeline.artist_names(builder)
    if len(document["artists"]) != len(names):
        raise ValueError(f"the model knows {len(document['artists'])} artists but "
                         f"{builder.info.full_name} has {len(names)}")
    # One view of each painting at the model's size: a multi-view model makes its own views
    # from the encoded files, and the settings' default multi-scale must not leak in here.
    data = pipeline.DataConfig(image_size=document["image_size"],
                               resize_mode=document["resize_mode"],
                               batch_size=batch_size).single_view()
    calibration = document.get("calibration") or {}
    answer = {**calibration, **(document.get("abstention") or {})}
    return evaluation.evaluate_split(builder, split, data, predict_fn, out_dir,
                                     temperature=answer.get("temperature", 1.0),
                                     min_confidence=answer.get("min_confidence", 0.0),
                                     min_familiarity=answer.get("min_familiarity"),
                                     encoded=evaluation.multi_view(document),
                                     fitted={**answer, "calibration": calibration})


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    memory.tune_malloc()
    if not os.path.isdir(FLAGS.model_dir):
        sys.exit(f"evaluate: error: no SavedModel directory at {FLAGS.model_dir}")
    out_dir = FLAGS.out_dir or os.path.join(
        os.path.dirname(os.path.abspath(FLAGS.model_dir)), f"report_{FLAGS.split}")
    try:
        builder = pipeline.load_builder(FLAGS.dataset, data_dir=FLAGS.data_dir)
        metrics = evaluate(FLAGS.model_dir, builder, FLAGS.split, out_dir, batch_size=FLAGS.batch_size)
    except (pipeline.DatasetError, ValueError) as e:
        sys.exit(f"evaluate: error: {e}")
    print(f"accuracy {metrics['accuracy']:.1%}, balanced accuracy "
          f"{metrics['balanced_accuracy']:.1%}, macro-F1 {metrics['macro_f1']:.3f} "
          f"on {metrics['examples']} images; report in {out_dir}")


if __name__ == "__main__":
    app.run(main)
