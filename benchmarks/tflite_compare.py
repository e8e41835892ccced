"""TFLite vs SavedModel: file sizes and test accuracy of a finished run's best checkpoint.

    python -m benchmarks.tflite_compare --workdir=demo/workdir [--data_dir=demo/data]

Reads `WORKDIR/config.json` and `WORKDIR/checkpoints/best.weights.h5`, writes the
float32 and dynamic-range quantised TFLite models with `export.export_tflite`
(into `--out`, default a temporary folder), and classifies the test split of the
run's dataset three ways on the same pixels (the pipeline's decode, resize and
rescale): the SavedModel's `serve_pixels` (WORKDIR/saved_model) and both TFLite
files. Prints sizes, accuracies and top-1 agreement with the SavedModel; the
last line is one JSON object.
"""

import argparse
import os
import tempfile

import numpy as np
import tensorflow as tf

from benchmarks import json_result

# Run as a script from anywhere: the project's own code comes from this checkout.


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="A finished train.py work directory.")
    parser.add_argument("--data_dir", default=None, help="TFDS data dir (default: the run's).")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", default=None, help="Folder for the .tflite files.")
    parser.add_argument("--json_out", default=None, help="Also write the result, with the "
                        "command, commit and machine, to this file (e.g. results/NAME.json).")
    return parser.parse_args()


def directory_size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(path) for name in names)


def main() -> None:
    import tensorflow_datasets as tfds

    import artist_tfds  # noqa: F401  Registers the builders.
    from pipeline import ops
    from serving import export
    from trainer import train_lib

    args = parse_args()
    config, model = train_lib.load_run(args.workdir, data_dir=args.data_dir)
    size, mode = config.data.image_size, config.data.resize_mode
    out = args.out or tempfile.mkdtemp(prefix="tflite_")
    files = export.export_tflite(model, out, image_size=size)

    builder = tfds.builder(config.data.dataset, data_dir=config.data.data_dir)
    ds = builder.as_dataset(split=args.split, decoders={"image": tfds.decode.SkipDecoding()})
    pixels, labels = [], []
    for example in ds.as_numpy_iterator():
        pixels.append(ops.decode_resized(example["image"], size, mode=mode).numpy())
        labels.append(example["label"])
    pixels, labels = np.stack(pixels), np.array(labels)

    saved_model_dir = os.path.join(args.workdir, "saved_model")
    serve_pixels = tf.saved_model.load(saved_model_dir).signatures["serve_pixels"]
    reference = np.concatenate([
        serve_pixels(pixels=tf.constant(pixels[i:i + 64]))["probabilities"].numpy()
        for i in range(0, len(pixels), 64)])
    rows = {"saved_model": (directory_size(saved_model_dir), reference)}
    for kind, path in files.items():
        rows[f"tflite_{kind}"] = (os.path.getsize(path),
                                  export.tflite_predict(path, ops.rescale(pixels).numpy()))

    result = {"examples": len(labels), "dataset": builder.info.full_name}
    print(f"{len(labels)} {args.split} images of {builder.info.full_name}, {size} px")
    for name, (nbytes, probabilities) in rows.items():
        accuracy = float(np.mean(probabilities.argmax(1) == labels))
        agreement = float(np.mean(probabilities.argmax(1) == reference.argmax(1)))
        max_diff = float(np.abs(probabilities - reference).max())
        print(f"{name:22s} {nbytes / 1024:9.1f} KiB  accuracy {accuracy:.4f}  top-1 agrees with "
              f"SavedModel {agreement:.4f}  max |p - p_savedmodel| {max_diff:.4f}")
        result[name] = {"bytes": nbytes, "accuracy": round(accuracy, 4),
                        "top1_agreement": round(agreement, 4), "max_abs_diff": round(max_diff, 5)}
    json_result.emit(result, args.json_out)


if __name__ == "__main__":
    main()
