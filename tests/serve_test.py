"""serve.py as a client sees it: TF Serving's REST routes, errors, size limits, batching."""

import base64
import concurrent.futures
import dataclasses
import http.client
import json
import os
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
import tensorflow as tf

from artist_id import serve
from serving import errors
from tests.conftest import ARTISTS, ROOT, encode, picture, png_header, run, running

MODEL = "artist"
MAX_REQUEST_BYTES = 256 * 1024  # Small, so the 413 tests send little.


@dataclasses.dataclass(frozen=True)
class Server:
    url: str
    app: object  # The Starlette app: its state holds the model and the batcher.

    @property
    def signatures(self):
        return self.app.state.model.loaded.signatures


@pytest.fixture(scope="module")
def server(tiny_saved_model):
    """create_app on the tiny model, served by uvicorn in a thread on a free port."""
    application = serve.create_app(tiny_saved_model, model_name=MODEL, max_batch=16,
                                   max_request_bytes=MAX_REQUEST_BYTES)
    with running(application) as url:
        yield Server(url, application)


def request(server: Server, path: str, body=None) -> tuple[int, dict]:
    """(HTTP status, JSON answer) of a GET, or a POST of `body` (a dict, or raw bytes)."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(server.url + path, data=data),
                                    timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def predict(server: Server, body, path: str = f"/v1/models/{MODEL}:predict") -> tuple[int, dict]:
    return request(server, path, body)


def b64(blob: bytes) -> dict:
    return {"b64": base64.b64encode(blob).decode("ascii")}


def call(signature, **inputs) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in signature(**inputs).items()}


def assert_rows_match(predictions: list[dict], expected: dict[str, np.ndarray]) -> None:
    assert len(predictions) == len(expected["probabilities"])
    for i, row in enumerate(predictions):
        assert set(row) == set(expected)
        # Rows of different batches may differ by float rounding, no more.
        np.testing.assert_allclose(row["probabilities"], expected["probabilities"][i], rtol=1e-5,
                                   atol=1e-7)
        assert row["top_k_ids"] == expected["top_k_ids"][i].tolist()
        assert row["top_k_artists"] == [a.decode() for a in expected["top_k_artists"][i]]


# --- Status and metadata ----------------------------------------------------------------


def test_model_status_and_unknown_models_and_routes(server):
    available = {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                           "status": {"error_code": "OK", "error_message": ""}}]}
    assert request(server, f"/v1/models/{MODEL}") == (200, available)
    assert request(server, f"/v1/models/{MODEL}/versions/1") == (200, available)
    assert request(server, "/v1/models/nope") == (
        404, {"error": "Servable not found for request: Latest(nope)"})
    assert request(server, "/v1/models/nope:predict", {"instances": []}) == (
        404, {"error": "Servable not found for request: Latest(nope)"})
    assert request(server, f"/v1/models/{MODEL}/versions/2") == (
        404, {"error": f"Servable not found for request: Specific({MODEL}, 2)"})
    assert request(server, "/v2/nothing")[0] == 404


def test_metadata_describes_every_signature_like_tensorflow_serving(server):
    status, answer = request(server, f"/v1/models/{MODEL}/metadata")
    assert status == 200
    assert answer["model_spec"] == {"name": MODEL, "signature_name": "", "version": "1"}
    signatures = answer["metadata"]["signature_def"]["signature_def"]
    assert set(signatures) == set(server.signatures)

    def dims(info):
        return [d["size"] for d in info["tensor_shape"]["dim"]]

    default = signatures["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    (name, images), = default["inputs"].items()
    assert (name, images["dtype"], images["tensor_shape"]) == (
        "images", "DT_STRING", {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False})
    assert images["name"].endswith(":0")
    assert {k: (v["dtype"], dims(v)) for k, v in default["outputs"].items()} == {
        "probabilities": ("DT_FLOAT", ["-1", "6"]), "top_k_ids": ("DT_INT32", ["-1", "5"]),
        "top_k_artists": ("DT_STRING", ["-1", "5"]),
        "top_k_probabilities": ("DT_FLOAT", ["-1", "5"]), "unknown": ("DT_BOOL", ["-1"]),
        "familiarity": ("DT_FLOAT", ["-1"])}
    pixels = signatures["serve_pixels"]["inputs"]["pixels"]
    assert (pixels["dtype"], dims(pixels)) == ("DT_UINT8", ["-1", "-1", "-1", "3"])
    assert signatures["metadata"]["inputs"] == {}
    # The artists are a variable (enrolment adds and removes them): their count is open.
    assert dims(signatures["metadata"]["outputs"]["artists"]) == ["-1"]
    assert request(server, f"/v1/models/{MODEL}/versions/1/metadata") == (200, answer)


# --- Predict ----------------------------------------------------------------------------


def test_row_format_predictions_equal_the_signature(server):
    blobs = [encode(picture(0)), encode(picture(1), "PNG")]
    expected = call(server.signatures["serving_default"], images=tf.constant(blobs))
    status, answer = predict(server, {"signature_name": "serving_default",
                                      "instances": [b64(blob) for blob in blobs]})
    assert status == 200, answer
    assert_rows_match(answer["predictions"], expected)
    # Instances may name their input; the version may be in the path.
    status, named = predict(server, {"instances": [{"images": b64(blob)} for blob in blobs]},
                            path=f"/v1/models/{MODEL}/versions/1:predict")
    assert status == 200, named
    assert_rows_match(named["predictions"], expected)
    assert predict(server, {"instances": []}) == (200, {"predictions": []})


def test_columnar_format_and_pixel_inputs(server):
    blobs = [encode(picture(2)), encode(picture(3), "GIF")]
    expected = call(server.signatures["serving_default"], images=tf.constant(blobs))
    status, answer = predict(server, {"inputs": [b64(blob) for blob in blobs]})
    assert status == 200, answer
    assert set(answer["outputs"]) == set(expected)
    np.testing.assert_allclose(answer["outputs"]["probabilities"], expected["probabilities"],
                               rtol=1e-5, atol=1e-7)
    assert answer["outputs"]["top_k_ids"] == expected["top_k_ids"].tolist()

    pixels = np.stack([picture(4, 24, 40), picture(5, 24, 40)])
    expected = call(server.signatures["serve_pixels"], pixels=tf.constant(pixels))
    status, answer = predict(server, {"signature_name": "serve_pixels",
                                      "inputs": {"pixels": pixels.tolist()}})
    assert status == 200, answer
    np.testing.assert_allclose(answer["outputs"]["probabilities"], expected["probabilities"],
                               rtol=1e-5, atol=1e-7)
    status, rows = predict(server, {"signature_name": "serve_pixels",
                                    "instances": pixels.tolist()})
    assert status == 200, rows
    assert_rows_match(rows["predictions"], expected)


def test_metadata_signature_takes_no_inputs(server):
    status, answer = predict(server, {"signature_name": "metadata", "inputs": {}})
    assert status == 200, answer
    assert answer["outputs"]["artists"] == ARTISTS
    document = json.loads(answer["outputs"]["metadata"])
    assert [artist["name"] for artist in document["artists"]] == ARTISTS
    # Its outputs have no batch dimension: a row request gets them whole.
    assert predict(server, {"signature_name": "metadata", "instances": []}) == (
        200, {"predictions": answer["outputs"]})


# --- Errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("refused, message", [
    (b"", "images[1]: empty input (0 bytes)"),
    (b"Hello, I am a text file.", "images[1]: not an image"),
    (png_header(64, 48), "Invalid PNG"),  # Refused by the decoder, which names no element.
])
def test_refused_image_is_400_with_the_signature_message_and_serving_goes_on(
        server, refused, message):
    blobs = [encode(picture(7)), refused]
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        server.signatures["serving_default"](images=tf.constant(blobs))
    expected = errors.error_message(raised.value)
    assert expected.startswith(message) and "\n" not in expected
    assert predict(server, {"instances": [b64(blob) for blob in blobs]}) == (
        400, {"error": expected})
    status, answer = predict(server, {"instances": [b64(blobs[0])]})
    assert status == 200 and len(answer["predictions"]) == 1


PIXEL = [[[1, 2, 3]]]  # One 1x1 image.
BAD_REQUESTS = {
    "not_json": (b"{nope", "JSON Parse error"),
    "neither_key": ({"signature_name": "serving_default"}, "Missing 'inputs' or 'instances' key"),
    "both_keys": ({"instances": [], "inputs": []}, "either 'instances' or 'inputs'"),
    "unknown_signature": ({"signature_name": "nope", "instances": []},
                          'Serving signature name: "nope" not found in signature def'),
    "wrong_input_name": ({"inputs": {"pictures": []}}, "takes inputs ['images'], got ['pictures']"),
    "number_as_image": ({"instances": [3]}, "images[0]: expected a string or {\"b64\": ...}"),
    "bad_base64": ({"instances": [{"b64": "not base64!"}]}, "images[0]: invalid base64"),
    "strings_as_pixels": ({"signature_name": "serve_pixels", "instances": ["abc"]},
                          "pixels: the signature takes uint8 values; got string values"),
    "pixels_of_wrong_rank": ({"signature_name": "serve_pixels", "inputs": {"pixels": PIXEL}},
                             "takes uint8 of shape [-1, -1, -1, 3]; got shape [1, 1, 3]"),
    "pixel_out_of_range": ({"signature_name": "serve_pixels", "instances": [[[[1, 2, 300]]]]},
                           "pixels: values out of the range of uint8"),
    "ragged_pixels": ({"signature_name": "serve_pixels", "instances": [PIXEL, [[[1, 2]]]]},
                      "pixels: lists of different lengths"),
    # The model's own check, in another signature.
    "float_pixels_over_1": ({"signature_name": "serve_float_pixels", "instances": [PIXEL]},
                            "pixels: serve_float_pixels takes float32 values in [0, 1]"),
    "inputs_to_metadata": ({"signature_name": "metadata", "instances": [b64(b"x")]},
                           "signature 'metadata' takes no inputs"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_request_is_400_with_a_message(server, case):
    body, message = BAD_REQUESTS[case]
    status, answer = predict(server, body)
    assert status == 400, answer
    assert message in answer["error"], answer


def test_body_over_the_limit_is_413_declared_or_chunked(server):
    host, port = server.url.removeprefix("http://").split(":")
    path = f"/v1/models/{MODEL}:predict"
    # Declared too large: refused from the header, before any of the body is read.
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    connection.putrequest("POST", path)
    connection.putheader("Content-Length", str(MAX_REQUEST_BYTES + 1))
    connection.endheaders()
    response = connection.getresponse()
    assert (response.status, json.load(response)) == (
        413, {"error": f"request body over the limit of {MAX_REQUEST_BYTES} bytes"})
    connection.close()
    # Chunked, no length declared: refused once what arrived passes the limit.
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    connection.putrequest("POST", path)
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    for size in (MAX_REQUEST_BYTES // 2, MAX_REQUEST_BYTES // 2 + 10):
        connection.send(b"%x\r\n%s\r\n" % (size, b" " * size))
    response = connection.getresponse()
    assert response.status == 413 and "over the limit" in json.load(response)["error"]
    connection.close()
    status, answer = predict(server, {"instances": [b64(encode(picture(8)))]})
    assert status == 200 and len(answer["predictions"]) == 1


# --- Batching ---------------------------------------------------------------------------


def post_together(server: Server, bodies: list[dict]) -> list[tuple[int, dict]]:
    """Sends the requests from as many threads, all released at once."""
    barrier = threading.Barrier(len(bodies))

    def send(body):
        barrier.wait()
        return predict(server, body)

    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(send, bodies))


def test_concurrent_requests_are_batched_and_each_gets_its_answer(server):
    blobs = [encode(picture(20 + i)) for i in range(8)]
    expected = call(server.signatures["serving_default"], images=tf.constant(blobs))
    batcher = server.app.state.batcher
    calls = batcher.calls
    answers = post_together(server, [{"instances": [b64(blob)]} for blob in blobs])
    assert batcher.calls - calls < len(blobs), "no request shared a call"
    for i, (status, answer) in enumerate(answers):
        assert status == 200, answer
        assert_rows_match(answer["predictions"], {k: v[i:i + 1] for k, v in expected.items()})

    # One bad request among them: it alone fails, with its own index in the message.
    bodies = [{"instances": [b64(blob)]} for blob in blobs]
    bodies[5] = {"instances": [b64(blobs[5]), b64(b"")]}
    answers = post_together(server, bodies)
    assert answers[5] == (400, {"error": "images[1]: empty input (0 bytes)"})
    for i, (status, answer) in enumerate(answers):
        if i != 5:
            assert status == 200, answer
            assert_rows_match(answer["predictions"], {k: v[i:i + 1] for k, v in expected.items()})


# --- Command lines ----------------------------------------------------------------------


def test_serving_client_example_works_against_the_server(server, tmp_path):
    blobs = [encode(picture(30)), encode(picture(31), "PNG")]
    paths = []
    for name, blob in zip(("a.jpg", "b.png"), blobs):
        (tmp_path / name).write_bytes(blob)
        paths.append(str(tmp_path / name))
    result = run(["serving_client_example.py", f"--server={server.url}", f"--model_name={MODEL}",
                  *paths], timeout=120)
    assert result.returncode == 0, result.stderr
    expected = call(server.signatures["serving_default"], images=tf.constant(blobs))
    assert_rows_match(json.loads(result.stdout.splitlines()[-1])["predictions"], expected)

    (tmp_path / "empty.jpg").write_bytes(b"")
    result = run(["serving_client_example.py", f"--server={server.url}", paths[0],
                  str(tmp_path / "empty.jpg")], timeout=120)
    assert result.returncode == 1
    assert json.loads(result.stdout.splitlines()[-1]) == {
        "error": "images[1]: empty input (0 bytes)"}


def test_importing_serve_does_not_load_tensorflow():
    # `python serve.py --help` stays fast: TensorFlow loads only in create_app.
    result = run(["-c", "import sys, serve; assert 'tensorflow' not in sys.modules, 'tensorflow'"],
                 timeout=120)
    assert result.returncode == 0, result.stderr
    result = run([os.path.join(ROOT, "serve.py"), "--help"], timeout=120)
    assert "--max_request_mb" in result.stdout, result.stderr  # absl's --help exits 1.
