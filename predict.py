"""Names the artist of paintings with an exported SavedModel.

    python predict.py --model_dir=WORKDIR/saved_model painting.jpg folder/ 'more/*.png'

Needs only the SavedModel: no training code, no dataset.
"""

import glob
import os
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "Exported SavedModel directory (WORKDIR/saved_model).")
flags.DEFINE_integer("top_k", 3, "Artists to show per image.", lower_bound=1)
flags.DEFINE_integer("batch_size", 32, "Images per call to the model.", lower_bound=1)
flags.mark_flag_as_required("model_dir")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")


def expand_paths(patterns: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Files, folders (recursive) and globs -> (image files, [(pattern, error)])."""
    files, errors = [], []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        if not matches or not os.path.exists(matches[0]):
            errors.append((pattern, "no such file or directory"))
            continue
        for path in matches:
            if os.path.isdir(path):
                files += sorted(
                    os.path.join(root, name)
                    for root, _, names in os.walk(path)
                    for name in names
                    if name.lower().endswith(IMAGE_EXTENSIONS)
                )
            else:
                files.append(path)
    return files, errors


def classify(signature, paths: list[str]) -> list[tuple[str, dict | str]]:
    """(path, outputs) per readable image, (path, error message) otherwise."""
    import tensorflow as tf

    blobs = []
    for path in paths:
        with open(path, "rb") as f:
            blobs.append(f.read())
    try:
        outputs = signature(images=tf.constant(blobs))
    except tf.errors.InvalidArgumentError as e:
        if len(paths) == 1:
            return [(paths[0], f"not a readable image ({e.message.splitlines()[0]})")]
        # One bad file fails the whole batch: retry one by one to name it.
        return [result for path in paths for result in classify(signature, [path])]
    outputs = {k: v.numpy() for k, v in outputs.items()}
    return [(path, {k: v[i] for k, v in outputs.items()}) for i, path in enumerate(paths)]


def format_result(path: str, outputs: dict, top_k: int) -> str:
    ranked = zip(outputs["top_k_artists"][:top_k], outputs["top_k_probabilities"][:top_k])
    return path + "\n" + "\n".join(
        f"  {rank}. {artist.decode():<32} {p:6.1%}" for rank, (artist, p) in enumerate(ranked, 1)
    )


def main(argv):
    if len(argv) < 2:
        raise app.UsageError("Name at least one image file, folder or glob pattern.")
    if not os.path.isdir(FLAGS.model_dir):
        sys.exit(f"predict.py: error: no SavedModel directory at {FLAGS.model_dir}")
    import tensorflow as tf

    signature = tf.saved_model.load(FLAGS.model_dir).signatures["serving_default"]
    exported_k = signature.structured_outputs["top_k_artists"].shape[-1]
    if FLAGS.top_k > exported_k:
        print(f"predict.py: the model returns {exported_k} artists per image; showing "
              f"{exported_k}", file=sys.stderr)

    files, errors = expand_paths(argv[1:])
    for start in range(0, len(files), FLAGS.batch_size):
        for path, result in classify(signature, files[start:start + FLAGS.batch_size]):
            if isinstance(result, str):
                errors.append((path, result))
            else:
                print(format_result(path, result, FLAGS.top_k))
    for path, message in errors:
        print(f"predict.py: error: {path}: {message}", file=sys.stderr)
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
