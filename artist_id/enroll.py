"""Adds an artist to an exported model from a few of its paintings, or takes one out,
without retraining:

    artist-id enroll --model_dir=MODELS/artist/1 --artist="Berthe Morisot" morisot/
    artist-id enroll --model_dir=MODELS/artist --remove="Berthe Morisot"

The new artist's paintings (files, folders or globs) are embedded by the
model itself; their mean direction becomes the artist's row of the cosine
head, and they join the gallery of similar paintings and the familiarity
statistics (`serving/enrolment.py`). The result is a new SavedModel: with
`--model_dir` in TensorFlow Serving's layout (MODEL_BASE/N, or MODEL_BASE for
its highest version) the next version MODEL_BASE/N+1, which TensorFlow
Serving, `artist-id serve` and `artist-id predict` given MODEL_BASE then
take; elsewhere the directory `--out`. The old version stays as it was, and
the new one appears whole or not at all. Paintings that cannot be read are
named and left out.
"""

import sys
import time

from absl import app, flags

from artist_id import paths

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "The SavedModel to start from, or a model base "
                    "(MODEL_BASE/1, MODEL_BASE/2, ...: its highest version).")
flags.DEFINE_string("artist", None, "Name of the artist to add, from the paintings named "
                    "as arguments.")
flags.DEFINE_string("remove", None, "Name of an artist to take out instead.")
flags.DEFINE_list("metadata", [], "The new artist's card, as key=value pairs (e.g. "
                  "years=1841-1895,nationality=French,genre=Impressionism,wikipedia=URL).")
flags.DEFINE_string("out", None, "Where to write the new SavedModel (default: the next version "
                    "beside --model_dir, when it sits in TensorFlow Serving's layout).")
flags.mark_flag_as_required("model_dir")

PROG = "artist-id enroll"


def parse_metadata(pairs: list[str]) -> dict[str, str]:
    fields = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise app.UsageError(f"--metadata: expected key=value, got {pair!r}")
        fields[key.strip()] = value.strip()
    return fields


def main(argv):
    if bool(FLAGS.artist) == bool(FLAGS.remove):
        raise app.UsageError("Name an --artist to add (with paintings) or one to --remove.")
    if FLAGS.artist and len(argv) < 2:
        raise app.UsageError("Name the new artist's paintings: files, folders or globs.")
    if FLAGS.remove and len(argv) > 1:
        raise app.UsageError("--remove takes no paintings.")
    metadata = parse_metadata(FLAGS.metadata)
    files, missing = paths.expand(argv[1:])
    for pattern, message in missing:
        print(f"{PROG}: {pattern}: {message}", file=sys.stderr)
    from serving import enrolment, versions  # TensorFlow: once the arguments are checked.

    start = time.perf_counter()
    try:
        served = enrolment.load(FLAGS.model_dir)
        target = FLAGS.out or versions.next_version(served.model_dir)
        if target is None:
            raise enrolment.EnrolmentError(
                f"{served.model_dir} is not in TensorFlow Serving's layout (MODEL_BASE/N): "
                "name where the new model goes with --out")
        if FLAGS.remove:
            done = enrolment.remove(served, artist=FLAGS.remove)
        else:
            images = [open(path, "rb").read() for path in files]
            done = enrolment.enroll(served, artist=FLAGS.artist, images=images,
                                    file_names=files, metadata=metadata)
        enrolment.write(served, target)
    except (enrolment.EnrolmentError, ValueError, FileExistsError, OSError) as e:
        sys.exit(f"{PROG}: error: {e}")
    for name, why in done.get("refused", {}).items():
        print(f"{PROG}: {name}: left out: {why}", file=sys.stderr)
    if FLAGS.remove:
        print(f"Removed {done['artist']!r}: {len(served.artists)} artists left; wrote {target} "
              f"({time.perf_counter() - start:.1f} s)")
    else:
        print(f"Added {done['artist']!r} as artist {done['id'] + 1} of {len(served.artists)}, "
              f"from {done['paintings']} paintings ({done['gallery_paintings']} in the gallery); "
              f"wrote {target} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    app.run(main)
