"""Names the artist of paintings with an exported SavedModel.

    python predict.py --model_dir=WORKDIR/saved_model painting.jpg folder/ 'more/*.png'
    python predict.py --model_dir=WORKDIR/saved_model --format=json --details folder/
    python predict.py --model_dir=WORKDIR/saved_model --html=out.html folder/
    python predict.py --model_dir=WORKDIR/saved_model --info

Needs only the SavedModel: no training code, no dataset (tensorflow, numpy,
Pillow and absl, plus this project's `serving.errors`, and `serving.panel` for
--html, neither of which imports TensorFlow; tqdm for the progress bar when
it is installed). A file the model refuses is reported by
name on stderr; the others are still classified, and the exit status is 1 if
any failed.

The --html page shows, per painting, what `serve.py`'s upload page shows: the
top artists as bars, the Grad-CAM heatmap over the painting, the most similar
training paintings and the artist's card (`serving.panel`), from the model's
`panel` signature.
"""

import concurrent.futures
import csv
import json
import os
import re
import sys

from absl import app, flags

from artist_id import paths
from serving import abstention, errors, versions

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "Exported SavedModel directory (WORKDIR/saved_model).")
flags.DEFINE_integer("top_k", 3, "Artists to show per image.", lower_bound=1)
flags.DEFINE_integer("batch_size", 32, "Images per call to the model.", lower_bound=1)
flags.DEFINE_enum("format", "table", ["table", "json", "csv"],
                  "table: readable text; json: one JSON object per line (per image); "
                  "csv: one row per image and rank.")
flags.DEFINE_bool("details", False, "Also print each artist's metadata (years, genre, "
                  "nationality, wikipedia) when the model carries it.")
flags.DEFINE_string("html", None, "Also write an HTML page to this file: per painting its "
                    "top artists, Grad-CAM heatmap, similar training paintings and artist card.")
flags.DEFINE_float("min_confidence", None, "Say 'unknown artist' when the top probability "
                   "is below this (0-1; 0: never). Default: the model's own rule, chosen on its "
                   "validation split for a stated precision (--info shows it).",
                   lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_float("min_familiarity", None, "Also say 'unknown artist' when the painting's "
                   "familiarity (how much it looks like the training paintings of the artist "
                   "nearest to it; --info gives the model's measure and its own threshold) is "
                   "below this (-inf: never). Default: the model's own distance test, if it "
                   "has one (models exported with a gallery).")
flags.DEFINE_string("claim", None, "Also check that each painting is by this artist, as "
                    "its label says (the model's `verify` signature: same hand or not, at the "
                    "threshold stored in the model; --info gives it).")
flags.DEFINE_bool("info", False, "Print what the model knows about itself (artists, image "
                  "size, preprocessing, dataset, metrics) and exit.")
flags.DEFINE_enum("progress", "auto", ["auto", "on", "off"],
                  "Progress bar on stderr; auto: when stderr is a terminal and there is more "
                  "than one batch of files.")
flags.mark_flag_as_required("model_dir")

HTML_TOP = 5
# Fields shown by --details, in this order, when an artist has them.
DETAIL_FIELDS = ("years", "genre", "nationality", "wikipedia")


# --- The model ------------------------------------------------------------------------


def load_metadata(loaded, model_dir: str) -> dict:
    """The model's own description: the `metadata` signature, else assets.extra files."""
    if "metadata" in loaded.signatures:
        return json.loads(loaded.signatures["metadata"]()["metadata"].numpy().decode("utf-8"))
    extra = os.path.join(model_dir, "assets.extra")
    document = {}
    if os.path.exists(os.path.join(extra, "metadata.json")):
        with open(os.path.join(extra, "metadata.json"), encoding="utf-8") as f:
            document = json.load(f)
    if "artists" not in document and os.path.exists(os.path.join(extra, "artists.txt")):
        with open(os.path.join(extra, "artists.txt"), encoding="utf-8") as f:
            names = f.read().splitlines()
        document["artists"] = [{"id": i, "name": name} for i, name in enumerate(names)]
    return document


def error_message(error: Exception) -> str:
    """The line of a TensorFlow error that names the problem, without "images[i]: "."""
    return errors.without_index(errors.error_message(error))


def classify(signature, paths: list[str]) -> list[tuple[str, dict | str]]:
    """(path, outputs) per image the model accepts, (path, error message) otherwise."""
    import tensorflow as tf  # Loaded in main() already; here so this function stands alone.

    blobs = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                blobs.append(f.read())
        except OSError as e:
            return _split_and_retry(signature, paths) if len(paths) > 1 else [
                (path, f"cannot read the file ({e.strerror})")]
    try:
        outputs = signature(images=tf.constant(blobs))
    except tf.errors.InvalidArgumentError as e:
        if len(paths) == 1:
            return [(paths[0], f"not a readable image: {error_message(e)}")]
        named = re.search(r"images\[(\d+)\]", e.message)
        if named and int(named.group(1)) < len(paths):
            # The model's header checks name the element: set it aside, retry the rest.
            bad = int(named.group(1))
            rest = classify(signature, paths[:bad] + paths[bad + 1:])
            return rest[:bad] + [(paths[bad], f"not a readable image: {error_message(e)}")] + rest[bad:]
        return _split_and_retry(signature, paths)
    outputs = {k: v.numpy() for k, v in outputs.items()}
    return [(path, {k: v[i] for k, v in outputs.items()}) for i, path in enumerate(paths)]


def _split_and_retry(signature, paths: list[str]) -> list[tuple[str, dict | str]]:
    # A decoder's error does not say which file: halve until the bad one stands
    # alone, so a batch of 32 with one such file costs about 11 calls, not 33.
    middle = len(paths) // 2
    return classify(signature, paths[:middle]) + classify(signature, paths[middle:])


def is_unknown(outputs: dict, rule: dict) -> bool:
    """The model's `unknown` (models without one: never); with --min_confidence or
    --min_familiarity, the model's `rule` (its metadata's "abstention") with those parts
    replaced."""
    if FLAGS.min_confidence is None and FLAGS.min_familiarity is None:
        return bool(outputs.get("unknown", False))
    min_confidence = (FLAGS.min_confidence if FLAGS.min_confidence is not None
                      else rule.get("min_confidence", 0.0))
    min_familiarity = (FLAGS.min_familiarity if FLAGS.min_familiarity is not None
                       else rule.get("min_familiarity"))
    if "familiarity" not in outputs:
        min_familiarity = None  # A model without a gallery has no distance test.
    return bool(abstention.is_unknown(outputs["top_k_probabilities"][0],
                                      min_confidence=min_confidence,
                                      familiarity=outputs.get("familiarity"),
                                      min_familiarity=min_familiarity))


def ranked(outputs: dict, top_k: int, artists: list[dict]) -> list[dict]:
    """The top-k predictions of one image, best first, with each artist's metadata."""
    rows = []
    for rank, (artist_id, name, probability) in enumerate(zip(
            outputs["top_k_ids"][:top_k], outputs["top_k_artists"][:top_k],
            outputs["top_k_probabilities"][:top_k]), 1):
        info = artists[artist_id] if 0 <= artist_id < len(artists) else {}
        rows.append({"rank": rank, "id": int(artist_id), "artist": name.decode("utf-8"),
                     "probability": float(probability),
                     "details": {k: info[k] for k in DETAIL_FIELDS if info.get(k)}})
    return rows


# --- Output ---------------------------------------------------------------------------


def unknown_text(predictions: list[dict]) -> str:
    """How an abstention reads, in the table and on the page."""
    best = predictions[0]
    return f"unknown artist (closest: {best['artist']}, {best['probability']:.1%})"


def with_claim(loaded, signature, artist: str, document: dict):
    """`signature` with `verify`'s outputs for `artist` added to each painting's."""
    import tensorflow as tf

    if "verify" not in loaded.signatures:
        sys.exit("predict.py: error: --claim: this model cannot check attributions (it has "
                 "no `verify` signature: a dense head, or an older export)")
    if artist not in [entry["name"] for entry in document.get("artists", [])]:
        sys.exit(f"predict.py: error: --claim: the model knows no artist named {artist!r} "
                 "(--info lists its artists)")
    verify = loaded.signatures["verify"]

    def answer(images):
        claimed = tf.fill(tf.shape(images), artist)
        return {**signature(images=images), **verify(images=images, artists=claimed),
                "claimed_artist": claimed}

    return answer


def claim_of(outputs: dict, artist: str) -> dict:
    return {"artist": artist, "same_hand": round(float(outputs["same_hand"]), 4),
            "accepted": bool(outputs["same_hand_accepted"])}


def format_table(path: str, predictions: list[dict], *, unknown: bool, details: bool,
                 claim: dict | None = None) -> str:
    lines = [path] + ([f"  {unknown_text(predictions)}"] if unknown else [])
    if claim:
        verdict = "the same hand" if claim["accepted"] else "not the same hand"
        lines.append(f"  said to be by {claim['artist']}: {verdict} "
                     f"(score {claim['same_hand']:.2f})")
    for p in predictions:
        lines.append(f"  {p['rank']}. {p['artist']:<32} {p['probability']:6.1%}")
        if details and p["details"]:
            lines.append("     " + "; ".join(f"{k}: {v}" for k, v in p["details"].items()))
    return "\n".join(lines)


def format_json(path: str, result: list[dict] | str, *, unknown: bool = False,
                details: bool, claim: dict | None = None) -> str:
    if isinstance(result, str):
        return json.dumps({"file": path, "error": result}, ensure_ascii=False)
    predictions = [p if details else {k: v for k, v in p.items() if k != "details"}
                   for p in result]
    return json.dumps({"file": path, "unknown": unknown, "predictions": predictions,
                       **({"claim": claim} if claim else {})}, ensure_ascii=False)


class CsvWriter:
    """One row per image and rank (`unknown` repeated on each); a failed image is one row
    with `error` set."""

    def __init__(self, stream, *, details: bool):
        self.details = details
        self.writer = csv.writer(stream, lineterminator="\n")
        self.writer.writerow(["file", "rank", "artist_id", "artist", "probability", "unknown",
                              "error", *(DETAIL_FIELDS if details else ())])

    def write(self, path: str, result: list[dict] | str, *, unknown: bool = False) -> None:
        if isinstance(result, str):
            self.writer.writerow([path, "", "", "", "", "", result,
                                  *([""] * len(DETAIL_FIELDS) if self.details else [])])
            return
        for p in result:
            self.writer.writerow([
                path, p["rank"], p["id"], p["artist"], f"{p['probability']:.6f}",
                str(unknown).lower(), "",
                *([p["details"].get(k, "") for k in DETAIL_FIELDS] if self.details else [])])


def write_html(out_path: str, results: list[tuple[str, dict | str]], document: dict, *,
               title: str) -> int:
    """One `serving.panel` per painting, refused files with their error; returns the
    number of paintings shown."""
    from serving import panel  # Only for --html.

    panels, failures = [], []
    for path, outputs in results:
        if isinstance(outputs, str):
            failures.append(panel.error_html(path, outputs))
            continue
        with open(path, "rb") as f:
            panels.append(panel.panel_html(path, f.read(), outputs, document, top_k=HTML_TOP))
    errors = f"<h2>Not classified</h2>{''.join(failures)}" if failures else ""
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(panel.page_html(title, "\n".join(panels) + errors))
    return len(panels)


def answer_lines(document: dict) -> list[str]:
    """--info's lines on the temperature and the "unknown artist" rule: what is stored, how
    it was chosen, and the warning the export gave, if any."""
    lines = []
    if calibration := document.get("calibration"):
        lines.append(f"Calibration: temperature {calibration['temperature']:.3f}"
                     + (f" ({calibration['method']})" if "method" in calibration else ""))
    rule = document.get("abstention") or {}
    if (rule.get("min_confidence") or rule.get("min_familiarity") is not None
            or "target_met" in rule):
        chosen = ""
        if rule.get("target_met") is False:  # The target was out of reach: a fallback.
            chosen = f" (kept instead: {rule['kept_instead']})"
        elif "target_precision" in rule:
            chosen = (f" (chosen for {rule['target_precision']:.0%} precision on the "
                      "validation split)")
        lines.append(f"Unknown artist: top probability < {rule['min_confidence']:.3f}"
                     + (f" or familiarity < {rule['min_familiarity']:.3f}"
                        if rule.get("min_familiarity") is not None else "") + chosen)
    if rule.get("warning"):
        lines.append(f"WARNING: {rule['warning']}")
    return lines


def format_info(model_dir: str, document: dict) -> str:
    """--info as readable text."""
    dataset = document.get("dataset") or {}
    if isinstance(dataset, str):
        dataset = {"full_name": dataset}
    lines = [f"Model: {model_dir}"]
    if dataset:
        lines.append("Dataset: " + ", ".join(f"{k} {v}" for k, v in dataset.items()))
    for key, label in (("image_size", "Image size"), ("resize_mode", "Resize"), ("top_k", "Top k")):
        if key in document:
            lines.append(f"{label}: {document[key]}")
    for key, value in (document.get("preprocessing") or {}).items():
        lines.append(f"Preprocessing {key}: {value}")
    gallery = document.get("gallery") or {}
    if gallery:
        lines.append(f"Gallery: {gallery['paintings']} training paintings "
                     f"({gallery['megabytes']} MB)")
    if gallery.get("familiarity"):
        lines.append(f"Familiarity: {gallery['familiarity']}")
    views = document.get("views") or {}
    if views.get("count", 1) > 1:
        sizes = views.get("sizes") or []
        lines.append(f"Views: {views['count']} per image (the whole painting"
                     + (f" at {' and '.join(map(str, sizes))} px" if len(sizes) > 1 else "")
                     + (f", {views['crops']} crops at {views['scale']}" if views["crops"] else "")
                     + (", mirrored too" if views["flips"] else "") + "), probabilities averaged")
    lines += answer_lines(document)
    for key, value in (document.get("metrics") or {}).items():
        shown = f"{value:.4f}" if isinstance(value, float) else value
        lines.append(f"Metric {key}: {shown}")
    artists = document.get("artists", [])
    lines.append(f"Artists ({len(artists)}):")
    for artist in artists:
        extra = "; ".join(f"{k}: {artist[k]}" for k in DETAIL_FIELDS if artist.get(k))
        lines.append(f"  {artist.get('id', '?'):>3}  {artist.get('name', '')}"
                     + (f"  ({extra})" if extra else ""))
    return "\n".join(lines)


# --- Main -----------------------------------------------------------------------------


def progress_bar(total: int):
    """A tqdm bar on stderr, or a no-op stand-in when not wanted or not installed."""
    wanted = FLAGS.progress == "on" or (
        FLAGS.progress == "auto" and sys.stderr.isatty() and total > FLAGS.batch_size)
    try:
        import tqdm
    except ImportError:
        wanted = False
    if not wanted:
        class NoBar:
            def update(self, n):
                pass

            def close(self):
                pass
        return NoBar()
    return tqdm.tqdm(total=total, unit="img", file=sys.stderr, dynamic_ncols=True)


def main(argv):
    if len(argv) < 2 and not FLAGS.info:
        raise app.UsageError("Name at least one image file, folder or glob pattern.")
    if FLAGS.claim and FLAGS.format == "csv":
        raise app.UsageError("--claim prints with --format=table or json")
    try:  # A SavedModel, or a model base's highest version (TF Serving's layout).
        model_dir = versions.resolve(FLAGS.model_dir)
    except ValueError as e:
        sys.exit(f"predict.py: error: {e}")
    # TensorFlow loads only once the arguments are checked: `--help` and usage errors
    # come back at once, not after seconds of start-up.
    import tensorflow as tf

    loaded = tf.saved_model.load(model_dir)
    document = load_metadata(loaded, model_dir)
    if FLAGS.info:
        print(json.dumps(document, indent=2, ensure_ascii=False) if FLAGS.format == "json"
              else format_info(model_dir, document))
        return
    # The panel signature answers everything serving_default does, plus the heatmap
    # and similar paintings, at the cost of a backward pass: only for --html.
    signature = loaded.signatures[
        "panel" if FLAGS.html and "panel" in loaded.signatures else "serving_default"]
    exported_k = signature.structured_outputs["top_k_artists"].shape[-1]
    familiar = "familiarity" in signature.structured_outputs
    if FLAGS.claim:
        signature = with_claim(loaded, signature, FLAGS.claim, document)
    if FLAGS.top_k > exported_k:
        print(f"predict.py: the model returns {exported_k} artists per image; showing "
              f"{exported_k}", file=sys.stderr)
    artists = document.get("artists", [])
    rule = document.get("abstention") or {}
    if FLAGS.min_familiarity is not None and not familiar:
        print("predict.py: --min_familiarity: this model has no gallery, so no familiarity "
              "(export it with --gallery_per_artist > 0); ignored", file=sys.stderr)

    files, errors = paths.expand(argv[1:])
    csv_writer = CsvWriter(sys.stdout, details=FLAGS.details) if FLAGS.format == "csv" else None
    for path, message in errors:  # Missing paths belong in machine-readable output too.
        if FLAGS.format == "json":
            print(format_json(path, message, details=FLAGS.details))
        elif csv_writer:
            csv_writer.write(path, message)
    page = []  # (path, the model's outputs or an error) for --html.
    bar = progress_bar(len(files))
    batches = [files[start:start + FLAGS.batch_size]
               for start in range(0, len(files), FLAGS.batch_size)]
    # Two batches in flight, results in order: one call's decoding and the
    # model's less parallel ops leave cores idle that the other call fills.
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        for batch, results in zip(batches, pool.map(lambda b: classify(signature, b), batches)):
            for path, outputs in results:
                failed = isinstance(outputs, str)
                result = outputs if failed else ranked(outputs, FLAGS.top_k, artists)
                unknown = not failed and is_unknown(outputs, rule)
                if FLAGS.html:
                    page.append((path, outputs if failed else {**outputs, "unknown": unknown}))
                if failed:
                    errors.append((path, result))
                claim = None if failed or not FLAGS.claim else claim_of(outputs, FLAGS.claim)
                if FLAGS.format == "table" and not failed:
                    print(format_table(path, result, unknown=unknown, details=FLAGS.details,
                                       claim=claim))
                elif FLAGS.format == "json":
                    print(format_json(path, result, unknown=unknown, details=FLAGS.details,
                                      claim=claim))
                elif csv_writer:
                    csv_writer.write(path, result, unknown=unknown)
            sys.stdout.flush()
            bar.update(len(batch))
    bar.close()
    if FLAGS.html:
        count = write_html(FLAGS.html, page, document, title=f"Artists by {model_dir}")
        print(f"predict.py: wrote {FLAGS.html} ({count} paintings)", file=sys.stderr)
    for path, message in errors:
        print(f"predict.py: error: {path}: {message}", file=sys.stderr)
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
