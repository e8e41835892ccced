"""The exported SavedModel as a server sees it: signatures, bad requests, REST format, TFLite."""

import base64
import io
import json
import os
import struct
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipeline import ops
from pipeline import views as views_lib
from serving import explain, export
from serving import gallery as gallery_lib
from tests.conftest import (ARTIST_METADATA, ARTISTS, ENV, IMAGE_SIZE, METRICS, ROOT,
                            create_tiny_model, encode, picture, png_header)

@pytest.fixture(scope="module")
def saved_model_dir(tiny_saved_model) -> str:
    return tiny_saved_model


@pytest.fixture(scope="module")
def loaded(saved_model_dir):
    return tf.saved_model.load(saved_model_dir)


@pytest.fixture(scope="module")
def serve(loaded):
    return loaded.signatures["serving_default"]


def call(signature, **inputs) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in signature(**inputs).items()}


def test_signatures_shapes_and_dtypes(loaded, serve):
    # A dense head: no artist directions, so no `verify` (claims); pairs need embeddings only.
    assert set(loaded.signatures) == {"serving_default", "serve_pixels", "serve_float_pixels",
                                      "embed", "explain", "explain_artist", "similar", "panel",
                                      "verify_pair", "metadata"}
    (name, spec), = serve.structured_input_signature[1].items()
    assert (name, spec.dtype, spec.shape.as_list()) == ("images", tf.string, [None])
    for signature, dtype in (("serve_pixels", tf.uint8), ("serve_float_pixels", tf.float32)):
        (name, spec), = loaded.signatures[signature].structured_input_signature[1].items()
        assert (name, spec.dtype, spec.shape.as_list()) == ("pixels", dtype, [None, None, None, 3])
    expected = {"probabilities": (tf.float32, [None, 6]), "top_k_ids": (tf.int32, [None, 5]),
                "top_k_artists": (tf.string, [None, 5]),
                "top_k_probabilities": (tf.float32, [None, 5]), "unknown": (tf.bool, [None]),
                # Exported with a gallery: how like its training paintings an image is.
                "familiarity": (tf.float32, [None])}
    for signature in ("serving_default", "serve_pixels", "serve_float_pixels"):
        outputs = loaded.signatures[signature].structured_outputs
        assert {k: (v.dtype, v.shape.as_list()) for k, v in outputs.items()} == expected

    out = call(serve, images=tf.constant([encode(picture(0)), encode(picture(1), "PNG")]))
    assert out["probabilities"].shape == (2, 6)
    np.testing.assert_allclose(out["probabilities"].sum(axis=1), 1.0, atol=1e-5)
    assert np.all(np.diff(out["top_k_probabilities"], axis=1) <= 0)
    np.testing.assert_array_equal(
        out["top_k_probabilities"], np.take_along_axis(out["probabilities"], out["top_k_ids"], 1))
    assert [[a.decode() for a in row] for row in out["top_k_artists"]] == [
        [ARTISTS[i] for i in row] for row in out["top_k_ids"]]


def test_formats_of_the_same_picture_agree(serve):
    image = picture(3)
    blobs = [encode(image, "JPEG", quality=95), encode(image, "PNG"), encode(image, "GIF"),
             encode(image, "BMP")]
    out = call(serve, images=tf.constant(blobs))
    assert len(set(out["top_k_ids"][:, 0])) == 1, out["probabilities"]
    # PNG, GIF (few colours) and BMP are lossless: the same pixels, the same outputs (up
    # to float rounding that may differ between rows of one batch).
    np.testing.assert_allclose(out["probabilities"][1], out["probabilities"][2], rtol=1e-6)
    np.testing.assert_allclose(out["probabilities"][1], out["probabilities"][3], rtol=1e-6)
    np.testing.assert_allclose(out["probabilities"][0], out["probabilities"][1], atol=0.05)


def test_gif_serves_its_first_frame(serve):
    first, second = Image.fromarray(picture(4)), Image.fromarray(picture(5))
    buffer = io.BytesIO()
    first.save(buffer, "GIF", save_all=True, append_images=[second])
    out = call(serve, images=tf.constant([buffer.getvalue(), encode(picture(4), "PNG")]))
    np.testing.assert_allclose(out["probabilities"][0], out["probabilities"][1], rtol=1e-6)


def test_pixel_signatures_match_encoded_bytes(loaded, serve):
    for height, width in ((48, 64), (IMAGE_SIZE, IMAGE_SIZE)):  # Resized, and already sized.
        image = picture(6, height, width)
        reference = call(serve, images=tf.constant([encode(image, "PNG")] * 2))["probabilities"]
        uint8 = call(loaded.signatures["serve_pixels"], pixels=tf.constant(np.stack([image, image])))
        as_float = call(loaded.signatures["serve_float_pixels"],
                        pixels=tf.constant(np.stack([image, image]) / np.float32(255)))
        np.testing.assert_array_equal(uint8["probabilities"], reference)
        np.testing.assert_array_equal(as_float["probabilities"], reference)


def test_two_calls_give_identical_outputs(loaded, serve):
    batch = tf.constant([encode(picture(i)) for i in range(4)])
    first, second = call(serve, images=batch), call(serve, images=batch)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    pixels = tf.constant(np.stack([picture(i, IMAGE_SIZE, IMAGE_SIZE) for i in range(4)]))
    signature = loaded.signatures["serve_pixels"]
    np.testing.assert_array_equal(call(signature, pixels=pixels)["probabilities"],
                                  call(signature, pixels=pixels)["probabilities"])


def _jpeg_with_size(width: int, height: int) -> bytes:
    """A real JPEG whose frame header (SOF0) claims another size."""
    data = bytearray(encode(picture(0)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _gif_with_size(width: int, height: int) -> bytes:
    data = encode(picture(0), "GIF")
    return data[:6] + struct.pack("<HH", width, height) + data[10:]


def _bmp_with_size(width: int, height: int) -> bytes:
    data = encode(picture(0), "BMP")
    return data[:18] + struct.pack("<ii", width, -height) + data[26:]


def _jpeg_with_thumbnail() -> bytes:
    """A JPEG whose APP1 segment holds a whole small JPEG, as an EXIF thumbnail does."""
    main, thumbnail = encode(picture(0, 96, 128)), encode(picture(1, 16, 16))
    payload = b"Exif\x00\x00" + thumbnail
    return main[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + main[2:]


BAD_REQUESTS = {
    "empty": (b"", r"empty input \(0 bytes\)"),
    "not_an_image": (b"Hello, I am a text file, not a painting.", r"not an image"),
    "truncated_jpeg": (encode(picture(0))[:400], r"truncated JPEG"),
    "jpeg_without_end_marker": (encode(picture(0))[:-2], r"truncated JPEG"),
    "png_bomb": (png_header(100_000, 100_000), r"image too large: 100000x100000 = 10000000000"),
    "jpeg_bomb": (_jpeg_with_size(60_000, 60_000), r"image too large: 60000x60000"),
    "gif_bomb": (_gif_with_size(65_535, 65_535), r"image too large: 65535x65535"),
    "bmp_bomb": (_bmp_with_size(50_000, 50_000), r"image too large: 50000x50000"),
    "webp": (encode(picture(0), "WEBP"), r"unsupported image format WebP"),
    "tiff": (encode(picture(0), "TIFF"), r"unsupported image format TIFF"),
    # The header checks pass these; the decoders refuse them, less eloquently.
    "png_header_only": (png_header(64, 48), r"Invalid PNG"),
    "truncated_jpeg_with_thumbnail": (_jpeg_with_thumbnail()[:-600], r"Invalid JPEG data"),
}
DECODER_CASES = {"png_header_only", "truncated_jpeg_with_thumbnail"}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_request_is_invalid_argument_and_serving_goes_on(serve, case):
    blob, message = BAD_REQUESTS[case]
    good = tf.constant([encode(picture(7))])
    before = call(serve, images=good)
    with pytest.raises(tf.errors.InvalidArgumentError, match=message) as raised:
        serve(images=tf.constant([encode(picture(7)), blob]))
    if case not in DECODER_CASES:  # Our own checks name the element; decoders do not.
        assert "images[1]: " in raised.value.message
    after = call(serve, images=good)
    np.testing.assert_array_equal(before["probabilities"], after["probabilities"])


def test_jpeg_with_thumbnail_or_bytes_after_its_end_is_served(serve):
    jpeg = encode(picture(0, 96, 128))
    out = call(serve, images=tf.constant([
        jpeg, jpeg + b"\x00" * 64 + b"trailer \xff\xda data", _jpeg_with_thumbnail()]))
    np.testing.assert_allclose(out["probabilities"][0], out["probabilities"][1], rtol=1e-6)
    np.testing.assert_allclose(out["probabilities"][0], out["probabilities"][2], rtol=1e-6)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """An export with a small pixel limit."""
    path = export.export_model(create_tiny_model(), str(tmp_path_factory.mktemp("tuned")),
                               artist_names=ARTISTS, views=views_lib.Views(IMAGE_SIZE),
                               max_pixels=120_000)
    return tf.saved_model.load(path)


def test_large_jpeg_is_served_exactly_as_evaluation_decodes_it(loaded, serve):
    # Shorter side 288 >= 4 x 2 x 32: libjpeg decodes it at 1/4 scale, in evaluation too.
    image = picture(12, 288, 352)
    jpeg = encode(image, "JPEG", quality=95)
    assert ops.decode_for_size(tf.constant(jpeg), IMAGE_SIZE).shape == (72, 88, 3)
    evaluated = ops.decode_resized(tf.constant(jpeg), IMAGE_SIZE)
    served = call(serve, images=tf.constant([jpeg, encode(image, "PNG")]))
    as_pixels = call(loaded.signatures["serve_pixels"], pixels=tf.constant(
        np.stack([evaluated, ops.resize(image, IMAGE_SIZE)])))
    np.testing.assert_allclose(served["probabilities"], as_pixels["probabilities"], rtol=1e-6)
    # The PNG of the same picture decodes at full size: close, not equal.
    assert not np.array_equal(served["probabilities"][0], served["probabilities"][1])
    np.testing.assert_allclose(served["probabilities"][0], served["probabilities"][1], atol=0.02)
    assert served["top_k_ids"][0, 0] == served["top_k_ids"][1, 0]


def test_max_pixels_is_set_at_export(tuned):
    serve = tuned.signatures["serving_default"]
    assert call(serve, images=tf.constant([encode(picture(0, 300, 400), "PNG")]))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="404x300 = 121200 pixels, over the limit of 120000"):
        serve(images=tf.constant([encode(picture(0, 300, 404), "PNG")]))


def test_pixel_signatures_refuse_bad_pixels(loaded):
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"values in \[0, 1\].*serve_pixels"):
        loaded.signatures["serve_float_pixels"](pixels=tf.fill([1, 8, 8, 3], 255.0))
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least 1x1"):
        loaded.signatures["serve_pixels"](pixels=tf.zeros([1, 0, 8, 3], tf.uint8))


def test_metadata_in_graph_and_in_assets(loaded, saved_model_dir):
    out = loaded.signatures["metadata"]()
    document = json.loads(out["metadata"].numpy().decode("utf-8"))
    assert [a.decode() for a in out["artists"].numpy()] == ARTISTS
    with open(os.path.join(saved_model_dir, "assets.extra", "metadata.json"), encoding="utf-8") as f:
        assert json.load(f) == document
    with open(os.path.join(saved_model_dir, "assets.extra", "artists.txt"), encoding="utf-8") as f:
        assert f.read().splitlines() == ARTISTS
    assert [a["name"] for a in document["artists"]] == ARTISTS
    assert document["artists"][5] == {"id": 5, "name": "Vincent van Swirl",
                                      **ARTIST_METADATA["Vincent van Swirl"]}
    assert document["artists"][1] == {"id": 1, "name": "Jackson Splatterby"}
    assert document["dataset"] == {"full_name": "sample_paintings/tiny/1.0.0",
                                   "name": "sample_paintings", "config": "tiny", "version": "1.0.0"}
    assert document["metrics"] == METRICS
    assert (document["image_size"], document["resize_mode"], document["top_k"]) == (32, "stretch", 5)
    assert document["preprocessing"]["max_pixels"] == export.DEFAULT_MAX_PIXELS
    assert "1/8 scale (libjpeg) when its shorter side stays >= 64 px" in (
        document["preprocessing"]["decode"])


def run_in_fresh_process(args: list[str], cwd) -> subprocess.CompletedProcess:
    """Runs a script and fails if it imported any module of this project."""
    wrapper = textwrap.dedent("""
        import runpy, sys
        script, sys.argv = sys.argv[1], sys.argv[1:]
        try:
            runpy.run_path(script, run_name="__main__")
            code = 0
        except SystemExit as e:
            code = e.code
        ours = [m for m in sys.modules if m.split(".")[0] in
                ("pipeline", "trainer", "artist_tfds", "tests", "train", "predict")]
        assert not ours, ours
        sys.exit(code)
    """)
    return subprocess.run([sys.executable, "-c", wrapper, *args], cwd=str(cwd), env=ENV,
                          capture_output=True, text=True, timeout=300)


def test_rest_client_request_runs_like_tensorflow_serving(serve, saved_model_dir, tmp_path):
    blobs = [encode(picture(9)), encode(picture(10), "PNG")]
    for name, blob in zip(("a.jpg", "b.png"), blobs):
        (tmp_path / name).write_bytes(blob)
    result = run_in_fresh_process(
        [os.path.join(ROOT, "serving_client_example.py"), f"--model_dir={saved_model_dir}",
         "--print_request", "a.jpg", "b.png"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    request, response = [json.loads(line) for line in result.stdout.splitlines()[-2:]]
    assert request == {"signature_name": "serving_default", "instances": [
        {"b64": base64.b64encode(blob).decode("ascii")} for blob in blobs]}
    expected = call(serve, images=tf.constant(blobs))
    assert len(response["predictions"]) == 2
    for i, row in enumerate(response["predictions"]):
        assert set(row) == set(expected)
        np.testing.assert_allclose(row["probabilities"], expected["probabilities"][i], rtol=1e-6)
        assert row["top_k_ids"] == expected["top_k_ids"][i].tolist()
        assert row["top_k_artists"] == [a.decode() for a in expected["top_k_artists"][i]]

    (tmp_path / "empty.jpg").write_bytes(b"")
    result = run_in_fresh_process(
        [os.path.join(ROOT, "serving_client_example.py"), f"--model_dir={saved_model_dir}",
         "a.jpg", "empty.jpg"], cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "images[1]: empty input" in json.loads(result.stdout.splitlines()[-1])["error"]


def test_saved_model_cli_shows_and_runs_the_signature(saved_model_dir, tmp_path):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run([cli, "show", "--dir", saved_model_dir, "--tag_set", "serve",
                            "--signature_def", "serving_default"], env=ENV, capture_output=True,
                           text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr
    assert "inputs['images'] tensor_info:\n      dtype: DT_STRING\n      shape: (-1)" in shown.stdout
    for output in ("probabilities", "top_k_ids", "top_k_artists", "top_k_probabilities"):
        assert f"outputs['{output}']" in shown.stdout
    np.save(tmp_path / "images.npy", np.array([encode(picture(11))], dtype=object))
    ran = subprocess.run([cli, "run", "--dir", saved_model_dir, "--tag_set", "serve",
                          "--signature_def", "serving_default",
                          "--inputs", f"images={tmp_path / 'images.npy'}"],
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr
    assert "Result for output key top_k_artists" in ran.stdout
    assert any(name in ran.stdout for name in ARTISTS)


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
def test_tflite_gives_the_saved_model_top1(loaded, tmp_path):
    model = create_tiny_model()  # The same seed: the same weights as the SavedModel's.
    files = export.export_tflite(model, str(tmp_path / "tflite"), image_size=IMAGE_SIZE,
                                 artist_names=ARTISTS)
    # The float file holds every weight; the quantised one about a byte per weight.
    assert os.path.getsize(files["float32"]) > 4 * model.count_params()
    assert os.path.getsize(files["dynamic_range"]) < os.path.getsize(files["float32"]) / 2
    with open(tmp_path / "tflite" / "artists.txt", encoding="utf-8") as f:
        assert f.read().splitlines() == ARTISTS
    images = np.stack([ops.resize(picture(i, 40 + i, 64), IMAGE_SIZE).numpy() for i in range(8)])
    saved = call(loaded.signatures["serve_pixels"], pixels=tf.constant(images))["probabilities"]
    float_lite = export.tflite_predict(files["float32"], ops.rescale(images).numpy())
    quantised = export.tflite_predict(files["dynamic_range"], ops.rescale(images).numpy())
    np.testing.assert_allclose(float_lite, saved, atol=1e-5)
    np.testing.assert_array_equal(quantised.argmax(1), saved.argmax(1))


def test_serving_bench_runs_and_ends_with_its_json_line(saved_model_dir, tmp_path):
    # A smoke run on the tiny model: the figures mean nothing here, their shape does.
    for i in range(8):
        (tmp_path / f"{i}.jpg").write_bytes(encode(picture(i, 48 + i, 64)))
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.serving_bench",
         f"--model_dir={saved_model_dir}", f"--images={tmp_path}", "--batch_size=4",
         "--rounds=1", "--calls=2", "--latency_calls=3"],
        env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert any(line.startswith("CPU ms per image: decode ") for line in lines)
    figures = json.loads(lines[-1])
    assert list(figures) == ["p50_ms", "p95_ms", "bytes_images_per_s", "tensor_images_per_s",
                             "ratio", "bytes_cpu_ms_per_image", "views"]
    assert all(value > 0 for value in figures.values())
    assert figures["views"] == 1
    # Against a baseline SavedModel (here itself): its figures and the cost ratio join.
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.serving_bench",
         f"--model_dir={saved_model_dir}", f"--baseline_dir={saved_model_dir}",
         f"--images={tmp_path}", "--batch_size=4", "--rounds=2", "--calls=2",
         "--latency_calls=3"], env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert sum("against the baseline's" in line for line in lines) == 2  # One per round.
    figures = json.loads(lines[-1])
    assert list(figures)[-3:] == ["baseline_p50_ms", "baseline_cpu_ms_per_image",
                                  "baseline_cost_ratio"]
    assert all(figures[key] > 0 for key in list(figures)[-3:])


def test_saved_model_holds_the_keras_models_weights(tmp_path):
    model = create_tiny_model()
    rng = np.random.default_rng(1)
    for weight in model.trainable_weights:  # Not their initial values: what training left.
        weight.assign(rng.normal(0.0, 0.05, weight.shape).astype(np.float32))
    path = export.export_model(model, str(tmp_path / "weights"), artist_names=ARTISTS,
                               views=views_lib.Views(IMAGE_SIZE))
    loaded = tf.saved_model.load(path)
    saved = {v.name.removesuffix(":0"): v.numpy() for v in loaded.trainable_variables}
    assert sorted(saved) == sorted(weight.path for weight in model.trainable_weights)
    for weight in model.trainable_weights:
        np.testing.assert_array_equal(saved[weight.path], weight.numpy())
    pixels = np.stack([picture(i, IMAGE_SIZE, IMAGE_SIZE) for i in range(4)])
    expected = tf.nn.softmax(model(pixels.astype(np.float32) / 255.0, training=False)).numpy()
    assert expected.max(axis=1).min() < 0.9  # Not saturated: a wrong weight would show.
    served = call(loaded.signatures["serve_pixels"], pixels=tf.constant(pixels))
    np.testing.assert_allclose(served["probabilities"], expected, rtol=1e-5, atol=1e-7)


def test_temperature_and_abstention_rule_are_applied_and_stated(tmp_path, caplog):
    model = create_tiny_model()
    # As trainer.evaluation.fit_answer gives them: how the temperature was chosen goes in
    # "calibration", the rest (here a target out of reach) in "abstention".
    fitted = {"target_precision": 0.9, "target_met": False, "kept_instead": "a fallback",
              "warning": "the target precision 90% was not reachable",
              "calibration": {"method": "kept because it beat T = 1", "fitted_temperature": 2.0}}
    with caplog.at_level("WARNING"):
        path = export.export_model(model, str(tmp_path / "calibrated"), artist_names=ARTISTS,
                                   views=views_lib.Views(IMAGE_SIZE),
                                   answer=export.Answer(temperature=2.0, min_confidence=0.3),
                                   abstention=fitted)
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"
            and "rule" in r.getMessage()] == [
        "the exported 'unknown artist' rule: the target precision 90% was not reachable"]
    loaded = tf.saved_model.load(path)
    pixels = np.stack([picture(i, IMAGE_SIZE, IMAGE_SIZE) for i in range(8)])
    logits = model(pixels.astype(np.float32) / 255.0, training=False)
    expected = tf.nn.softmax(logits / 2.0).numpy()
    for name in ("serve_pixels", "panel"):
        inputs = ({"pixels": tf.constant(pixels)} if name == "serve_pixels" else
                  {"images": tf.constant([encode(p, "PNG") for p in pixels])})
        out = call(loaded.signatures[name], **inputs)
        np.testing.assert_allclose(out["probabilities"], expected, atol=1e-5)
        np.testing.assert_array_equal(out["unknown"], expected.max(axis=1) < 0.3)
    document = json.loads(call(loaded.signatures["metadata"])["metadata"])
    assert document["calibration"] == {"temperature": 2.0, "fitted_temperature": 2.0,
                                       "method": "kept because it beat T = 1"}
    assert document["abstention"] == {
        "min_confidence": 0.3, "target_precision": 0.9, "target_met": False,
        "kept_instead": "a fallback", "warning": "the target precision 90% was not reachable",
        "rule": "unknown when the top probability < min_confidence"}
    # Without a fit (a hand-made rule): the plain method, no warning.
    plain = export.build_metadata(artist_names=ARTISTS, views=views_lib.Views(IMAGE_SIZE),
                                  answer=export.Answer(temperature=1.5))
    assert plain["calibration"] == {"temperature": 1.5, "method": export.TEMPERATURE_TEXT}
    assert "warning" not in plain["abstention"]


def colour_model() -> keras.Model:
    """Logit k = 20 x (mean of channel k - 0.5): a pure red, green or blue painting is its
    artist's beyond doubt; a grey one is anyone's (1/3 each)."""
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3))
    maps = keras.layers.Conv2D(3, 1, name="identity")(inputs)
    logits = keras.layers.Dense(3, name="logits")(keras.layers.GlobalAveragePooling2D()(maps))
    model = keras.Model(inputs, logits)
    model.get_layer("identity").set_weights([np.eye(3, dtype=np.float32)[None, None],
                                             np.zeros(3, np.float32)])
    model.get_layer("logits").set_weights([20 * np.eye(3, dtype=np.float32),
                                           np.full(3, -10, np.float32)])
    return model


def test_the_rule_rejects_out_of_distribution_and_keeps_confident_answers(tmp_path):
    from trainer import calibration

    model = colour_model()
    rng = np.random.default_rng(0)

    def paintings(colours):
        return np.stack([np.broadcast_to(c, (IMAGE_SIZE, IMAGE_SIZE, 3)) for c in colours])

    # Validation: pure colours (right) and muddy ones labelled at random (right a third
    # of the time): 90 % precision needs the rule to drop the muddy ones.
    pure = np.eye(3)[rng.integers(0, 3, 30)]
    muddy = rng.uniform(0.4, 0.6, (30, 3))
    images = paintings(np.concatenate([pure, muddy])).astype(np.float32)
    labels = np.concatenate([pure.argmax(axis=1), rng.integers(0, 3, 30)])
    probabilities = tf.nn.softmax(model(images)).numpy()
    threshold = calibration.abstention_threshold(probabilities, labels, precision=0.9)
    assert 0.34 < threshold < 0.999
    path = export.export_model(model, str(tmp_path / "colours"), artist_names=ARTISTS[:3],
                               views=views_lib.Views(IMAGE_SIZE),
                               answer=export.Answer(min_confidence=threshold))
    serve = tf.saved_model.load(path).signatures["serve_pixels"]
    in_distribution = paintings(np.eye(3) * 255).astype(np.uint8)
    out_of_distribution = paintings(np.full((3, 3), 128)).astype(np.uint8)
    assert call(serve, pixels=tf.constant(in_distribution))["unknown"].tolist() == [False] * 3
    assert call(serve, pixels=tf.constant(out_of_distribution))["unknown"].tolist() == [True] * 3


def test_the_distance_test_rejects_a_confident_answer_unlike_any_training_painting(tmp_path):
    from trainer import calibration

    model = colour_model()  # Its embedding: the direction of the three channel means.
    rng = np.random.default_rng(0)
    # The gallery: 5 paintings an artist, pure colours off by <= 0.05.
    labels = np.repeat(np.arange(3), 5)
    colours = np.clip(np.eye(3)[labels] + rng.uniform(0, 0.05, (15, 3)), 0, 1)
    images = np.stack([np.broadcast_to(c, (IMAGE_SIZE, IMAGE_SIZE, 3)) for c in colours])
    embed = gallery_lib.embedding_fn(explain.explainable(model))
    gallery = gallery_lib.Gallery(
        embeddings=embed(images.astype(np.float32)), labels=labels.astype(np.int32),
        file_names=np.array([f"{i}.jpg".encode() for i in range(15)], object),
        thumbnails=np.array([encode(picture(i)) for i in range(15)], object))
    # Its own paintings' familiarity lies in [-4, 2]; the rule allows far less.
    assert -4 < gallery.familiarity(gallery.embeddings).min() < 0
    rule = {"min_confidence": 0.5, "min_familiarity": -100.0}
    path = export.export_model(model, str(tmp_path / "colours"), artist_names=ARTISTS[:3],
                               views=views_lib.Views(IMAGE_SIZE), gallery=gallery,
                               answer=export.Answer(**rule))
    serve = tf.saved_model.load(path).signatures["serve_pixels"]
    # Orange: red beyond doubt for the classifier (p > 0.999), yet unlike every red painting.
    pixels = np.stack([np.broadcast_to(c, (IMAGE_SIZE, IMAGE_SIZE, 3)) for c in (
        [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 153, 0])]).astype(np.uint8)
    out = call(serve, pixels=tf.constant(pixels))
    assert out["top_k_probabilities"][:, 0].min() > 0.999
    assert out["top_k_ids"][:, 0].tolist() == [0, 1, 2, 0]
    assert out["unknown"].tolist() == [False, False, False, True]
    # Pure colours sit in their artist's spread; orange, 0.6 of green off red, far outside.
    assert out["familiarity"][:3].min() > -20
    assert out["familiarity"][3] < -1000
    # Evaluation's numpy functions decide as the served ones do. Familiarity is a difference
    # of squared distances in the hundreds, in float32: equal to about 1e-3 absolute.
    np.testing.assert_allclose(out["familiarity"], gallery.familiarity(embed(pixels / 255.0)),
                               rtol=1e-4, atol=5e-3)
    np.testing.assert_array_equal(out["unknown"], calibration.is_unknown(
        out["probabilities"], familiarity=out["familiarity"], **rule))
    document = json.loads(call(tf.saved_model.load(path).signatures["metadata"])["metadata"])
    assert document["abstention"]["min_familiarity"] == -100.0
    assert "familiarity < min_familiarity" in document["abstention"]["rule"]
    # Without the distance test, the same model calls orange red.
    plain = export.export_model(model, str(tmp_path / "plain"), artist_names=ARTISTS[:3],
                                views=views_lib.Views(IMAGE_SIZE),
                                answer=export.Answer(min_confidence=0.5))
    out = call(tf.saved_model.load(plain).signatures["serve_pixels"], pixels=tf.constant(pixels))
    assert out["unknown"].tolist() == [False] * 4 and "familiarity" not in out
    with pytest.raises(ValueError, match="needs a gallery"):
        export.export_model(model, str(tmp_path / "none"), artist_names=ARTISTS[:3],
                            views=views_lib.Views(IMAGE_SIZE), answer=export.Answer(**rule))
