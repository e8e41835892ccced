"""predict.py as a user runs it: a folder with a bad file in it, every output format, --info."""

import csv
import io
import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import (ARTIST_METADATA, ARTISTS, ENV, GALLERY_SIZE, METRICS, ROOT, encode,
                            picture, png_header)

GOOD = ["a.jpg", "nested/b.png", "nested/deeper/c.gif", "d.bmp"]
# The last one passes the model's header checks and fails in the PNG decoder,
# which does not say which image of the batch it was.
BAD = {"broken.jpg": "not an image", "empty.png": "empty input", "cut.jpg": "truncated JPEG",
       "nested/header_only.png": "Invalid PNG"}


@pytest.fixture(scope="module")
def model_dir(tiny_saved_model) -> str:
    return tiny_saved_model


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("paintings")
    for i, name in enumerate(GOOD):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        fmt = {".jpg": "JPEG", ".png": "PNG", ".gif": "GIF", ".bmp": "BMP"}[name[-4:]]
        (root / name).write_bytes(encode(picture(i), fmt))
    (root / "broken.jpg").write_bytes(b"not an image at all")
    (root / "empty.png").write_bytes(b"")
    (root / "cut.jpg").write_bytes(encode(picture(9))[:300])
    (root / "nested" / "header_only.png").write_bytes(png_header(64, 48))
    (root / "notes.txt").write_text("not an image extension: never read")
    return root


def predict(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(ROOT, "predict.py"), *args], cwd=ROOT,
                          env=ENV, capture_output=True, text=True, timeout=300)


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("predict.py: error")]


def assert_bad_files_reported(result, folder) -> None:
    assert result.returncode == 1
    errors = error_lines(result)
    assert len(errors) == len(BAD), errors
    for name, problem in BAD.items():
        assert any(f"{folder / name}: not a readable image: {problem}" in e for e in errors), errors


def test_json_lines_and_html_page(model_dir, folder, tmp_path):
    page = tmp_path / "out.html"
    # Batch size 2: bad files share batches with good ones, which must still be served.
    result = predict(f"--model_dir={model_dir}", "--format=json", "--top_k=2", "--batch_size=2",
                     f"--html={page}", str(folder))
    assert_bad_files_reported(result, folder)
    records = {os.path.relpath(r["file"], folder): r for r in map(
        json.loads, result.stdout.splitlines())}
    assert set(records) == set(GOOD) | set(BAD)
    for name in GOOD:
        predictions = records[name]["predictions"]
        assert [p["rank"] for p in predictions] == [1, 2]
        assert all(p["artist"] == ARTISTS[p["id"]] for p in predictions)
        assert predictions[0]["probability"] >= predictions[1]["probability"] > 0
        assert "details" not in predictions[0]
    for name, problem in BAD.items():
        assert problem in records[name]["error"]

    html = page.read_text(encoding="utf-8")
    panels = dict(re.findall(r'<section class="panel"><h2>(.*?)</h2>(.*?)</section>', html))
    assert set(panels) == {str(folder / name) for name in GOOD}
    for panel in panels.values():
        assert panel.count('<img class="painting" src="data:image/jpeg;base64,') == 1
        assert panel.count('<img class="heatmap" src="data:image/jpeg;base64,') == 1
        assert panel.count('class="bar"') == 5  # The model's top 5 artists.
        assert panel.count("<figure><img src=") == 4  # Similar training paintings...
        assert len(re.findall(r"<figcaption>(?:" + "|".join(ARTISTS) + r") \(-?[01]\.\d\d\)",
                              panel)) == 4  # ...with their artists and similarity.
        assert '<div class="card"><h3>' in panel
    # The tiny model's card data: Piet Gridwell's and Vincent van Swirl's.
    for panel in panels.values():
        top = re.search(r'<div class="card"><h3>(.*?)</h3>', panel).group(1)
        if top in ARTIST_METADATA:
            assert f"years: {ARTIST_METADATA[top]['years']}" in panel
            assert ARTIST_METADATA[top]["wikipedia"] in panel
    errors = re.findall(r'<section class="panel error"><h2>(.*?)</h2><p class="message">(.*?)'
                        "</p>", html)
    assert {os.path.relpath(path, folder): message for path, message in errors}.keys() == set(BAD)
    assert all(problem in dict(errors)[str(folder / name)] for name, problem in BAD.items())
    assert f"wrote {page} ({len(GOOD)} paintings)" in result.stderr


def test_csv_with_details_and_globs(model_dir, folder):
    result = predict(f"--model_dir={model_dir}", "--format=csv", "--details", "--top_k=6",
                     str(folder / "*.jpg"), str(folder / "nested" / "**" / "*.gif"),
                     str(folder / "missing.png"))
    assert result.returncode == 1
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == ["file", "rank", "artist_id", "artist", "probability", "unknown",
                             "error", "years", "genre", "nationality", "wikipedia"]
    # The tiny model's rule (min_confidence 0) never abstains.
    assert {r["unknown"] for r in rows if not r["error"]} == {"false"}
    by_file = {}
    for row in rows:
        by_file.setdefault(os.path.basename(row["file"]), []).append(row)
    assert set(by_file) == {"a.jpg", "c.gif", "broken.jpg", "cut.jpg", "missing.png"}
    assert [int(r["rank"]) for r in by_file["a.jpg"]] == [1, 2, 3, 4, 5]  # The exported k is 5.
    swirl = next(r for r in by_file["a.jpg"] if r["artist"] == "Vincent van Swirl")
    assert {k: swirl[k] for k in ARTIST_METADATA["Vincent van Swirl"]} == ARTIST_METADATA[
        "Vincent van Swirl"]
    assert by_file["missing.png"][0]["error"] == "no such file or directory"
    assert "truncated JPEG" in by_file["cut.jpg"][0]["error"]
    assert "returns 5 artists per image" in result.stderr


def test_min_confidence_says_unknown_artist_in_every_format(model_dir, folder, tmp_path):
    files = [str(folder / name) for name in GOOD[:2]]
    args = [f"--model_dir={model_dir}", "--top_k=2"]
    # The untrained tiny model is never 99% sure and always at least 1% sure.
    records = [json.loads(line) for line in predict(
        *args, "--format=json", "--min_confidence=0.99", *files).stdout.splitlines()]
    assert [r["unknown"] for r in records] == [True, True]
    assert all(not r["unknown"] for r in map(json.loads, predict(
        *args, "--format=json", "--min_confidence=0.01", *files).stdout.splitlines()))
    table = predict(*args, "--min_confidence=0.99", f"--html={tmp_path / 'page.html'}", *files)
    closest = [r["predictions"][0] for r in records]
    for best in closest:
        line = f"unknown artist (closest: {best['artist']}, {best['probability']:.1%})"
        assert f"  {line}" in table.stdout
        assert line in (tmp_path / "page.html").read_text(encoding="utf-8")
    csv_rows = list(csv.DictReader(io.StringIO(predict(
        *args, "--format=csv", "--min_confidence=0.99", *files).stdout)))
    assert [r["unknown"] for r in csv_rows] == ["true"] * 4


def test_min_familiarity_replaces_the_distance_test(model_dir, folder):
    files = [str(folder / name) for name in GOOD[:2]]
    args = [f"--model_dir={model_dir}", "--format=json"]

    def unknown(*flags):
        return [json.loads(line)["unknown"] for line in predict(*args, *flags, *files)
                .stdout.splitlines()]

    # Any painting's familiarity is finite: below 1e9, above -1e9 (-inf: never).
    assert unknown("--min_familiarity=1e9") == [True, True]
    assert unknown("--min_familiarity=-inf") == [False, False]
    # The probability test still holds beside it.
    assert unknown("--min_familiarity=-1e9", "--min_confidence=0.99") == [True, True]


def test_table_with_details(model_dir, folder):
    result = predict(f"--model_dir={model_dir}", "--details", "--top_k=6", str(folder))
    assert_bad_files_reported(result, folder)
    blocks = result.stdout.split(str(folder))[1:]
    assert len(blocks) == len(GOOD)
    assert all(len(re.findall(r"^  \d\. ", block, re.M)) == 5 for block in blocks)
    assert "genre: Post-Impressionism; nationality: Dutch" in result.stdout


def test_info(model_dir):
    result = predict(f"--model_dir={model_dir}", "--info")
    assert result.returncode == 0, result.stderr
    for text in ("Dataset: full_name sample_paintings/tiny/1.0.0, name sample_paintings, "
                 "config tiny, version 1.0.0", "Image size: 32", "Resize: stretch",
                 "Metric test_accuracy: 0.7500", f"Artists ({len(ARTISTS)}):",
                 "5  Vincent van Swirl  (years: 1853 - 1890; genre: Post-Impressionism",
                 "Preprocessing max_pixels: 40000000",
                 f"Gallery: {GALLERY_SIZE} training paintings",
                 "Familiarity: the squared Mahalanobis distance"):
        assert text in result.stdout, result.stdout
    as_json = json.loads(predict(f"--model_dir={model_dir}", "--info", "--format=json").stdout)
    assert as_json["metrics"] == METRICS and as_json["image_size"] == 32


def test_info_states_a_target_out_of_reach_and_how_the_temperature_was_chosen():
    # A validation split on which no threshold is 90 % right (every third answer wrong),
    # fitted and stored as training does (train_lib.finish), then read as --info reads it.
    import numpy as np

    from pipeline import views
    from serving import export
    from trainer import evaluation

    confidence = np.linspace(0.99, 0.80, 20)
    fitted = evaluation.fit_answer_on(np.stack([confidence, 1 - confidence], axis=1),
                                      np.where(np.arange(20) % 3 == 2, 1, 0),
                                      split="validation", target_precision=0.9)
    rule = {key: fitted.pop(key) for key in ("temperature", "min_confidence", "min_familiarity")}
    document = export.build_metadata(artist_names=ARTISTS, views=views.Views(32),
                                     answer=export.Answer(**rule), abstention=fitted)
    code = ("import json, sys; from artist_id import predict; "
            "print(predict.format_info('m', json.loads(sys.argv[1])))")
    result = subprocess.run([sys.executable, "-c", code, json.dumps(document)], cwd=ROOT,
                            env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert (f"Calibration: temperature 1.000 ({fitted['calibration']['method']})") in lines
    assert (f"Unknown artist: top probability < {confidence[10]:.3f} (kept instead: the "
            "threshold whose answers were most often right among those answering at least "
            "50% of the validation paintings)") in lines
    assert (f"WARNING: {fitted['warning']}") in lines
    assert "it answered 55.0% of the 20 validation paintings, 72.7% of them right" in \
        fitted["warning"]


@pytest.fixture(scope="module")
def old_saved_model(tmp_path_factory) -> str:
    """A SavedModel as exported before `unknown`, `panel` and the other new signatures:
    serving_default's four outputs and metadata only."""
    import json as json_lib

    import keras
    import tensorflow as tf

    from pipeline import ops, views
    from serving import export
    from tests.conftest import IMAGE_SIZE, create_tiny_model

    model = create_tiny_model()
    artists = tf.constant(ARTISTS)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serve(images):
        pixels = export.decode_batch(images, views.Views(IMAGE_SIZE))
        probabilities = tf.nn.softmax(model(ops.rescale(pixels), training=False))
        top = tf.math.top_k(probabilities, k=5)
        return {"probabilities": probabilities, "top_k_ids": top.indices,
                "top_k_artists": tf.gather(artists, top.indices),
                "top_k_probabilities": top.values}

    document = tf.constant(json_lib.dumps({"artists": [{"id": i, "name": name}
                                                       for i, name in enumerate(ARTISTS)]}))

    @tf.function(input_signature=[])
    def metadata():
        return {"metadata": document, "artists": artists}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name="serving_default", fn=serve)
    archive.add_endpoint(name="metadata", fn=metadata)
    path = str(tmp_path_factory.mktemp("old") / "saved_model")
    archive.write_out(path, verbose=False)
    return path


def test_a_model_exported_before_the_new_outputs_still_predicts(old_saved_model, folder,
                                                                  tmp_path):
    files = [str(folder / name) for name in GOOD[:2]]
    result = predict(f"--model_dir={old_saved_model}", "--format=json",
                     f"--html={tmp_path / 'page.html'}", *files)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["unknown"] for r in records] == [False, False]  # No rule stored: never.
    page = (tmp_path / "page.html").read_text(encoding="utf-8")
    # Bars and the card from serving_default and metadata; no heatmap or similar paintings.
    assert page.count('<section class="panel">') == 2 and page.count('class="bar"') == 10
    assert 'class="heatmap"' not in page and "Similar training paintings" not in page
    # --min_confidence works on any model.
    records = [json.loads(line) for line in predict(
        f"--model_dir={old_saved_model}", "--format=json", "--min_confidence=0.99",
        *files).stdout.splitlines()]
    assert [r["unknown"] for r in records] == [True, True]
    # It has no gallery, so no familiarity to test: said, and ignored.
    result = predict(f"--model_dir={old_saved_model}", "--format=json", "--min_familiarity=1",
                     *files)
    assert [json.loads(line)["unknown"] for line in result.stdout.splitlines()] == [False] * 2
    assert "--min_familiarity: this model has no gallery" in result.stderr
