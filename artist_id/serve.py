"""The web app: an upload page, and the SavedModel behind TensorFlow Serving's REST API, batched.

    python serve.py --model_dir=WORKDIR/saved_model [--port=8000] [--model_name=artist]
    # open http://127.0.0.1:8000/ and drop paintings on the page, or:
    curl -d '{"instances": [{"b64": "'"$(base64 -w0 painting.jpg)"'"}]}' \\
        http://127.0.0.1:8000/v1/models/artist:predict

The page (`GET /`) sends each chosen or dropped file to `POST /panel` (the
file's bytes as the body) and shows the answer as `predict.py --html` does
(`serving.panel`): top artists, the Grad-CAM heatmap, similar training
paintings, the artist's card; a file the model refuses shows its error.

REST routes, as https://www.tensorflow.org/tfx/serving/api_rest gives them (one version, "1"):

* `GET /v1/models/<name>[/versions/1]`: the model's status.
* `GET /v1/models/<name>[/versions/1]/metadata`: every signature's inputs and outputs.
* `POST /v1/models/<name>[/versions/1]:predict`: `{"signature_name"?, "instances": [...]}`
  (row format) -> `{"predictions": [...]}`, or `{"signature_name"?, "inputs": ...}`
  (columnar) -> `{"outputs": ...}`. Binary values as `{"b64": ...}`; outputs named
  `*_bytes`, and strings that are not UTF-8, come back the same way.

Any bad request is HTTP 400 `{"error": "..."}` (an image the model refuses: the
model's own message, "images[i]: ..."), a body over --max_request_mb is 413.

Requests that arrive while the model is busy are queued and then run as one
batch (up to --max_batch instances, two batches in flight on two cores). If a
batch fails, each of its requests runs again on its own, so only the bad one
gets the error. Other routes (an upload page, say) pass `extra_routes` to
`create_app` and submit work through `request.app.state.batcher.predict`.
"""

import asyncio
import contextlib
import json
import sys
import urllib.parse
from collections.abc import Sequence

import numpy as np
import uvicorn
from absl import app, flags, logging
from starlette import applications, exceptions, requests, responses, routing

from artist_id import web_enroll
from serving import batcher as batcher_lib
from serving import errors, panel, rest, upload, versions

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "Exported SavedModel directory (WORKDIR/saved_model).")
flags.DEFINE_string("host", "127.0.0.1", "Address to listen on; 0.0.0.0 for every interface.")
flags.DEFINE_integer("port", 8000, "Port to listen on.", lower_bound=0)
flags.DEFINE_string("model_name", "artist", "The model's name in the URLs: /v1/models/<name>.")
flags.DEFINE_integer("max_batch", batcher_lib.DEFAULT_MAX_BATCH,
                     "Most instances run in one call of a signature.", lower_bound=1)
flags.DEFINE_integer("max_request_mb", 64, "Largest request body, in MiB (413 above it).",
                     lower_bound=1)
flags.DEFINE_bool("allow_enroll", False, "Offer 'add as a new artist' under an unknown "
                  "answer: writes the next version into the model base (--model_dir "
                  "MODEL_BASE or MODEL_BASE/N) and serves it. Off: the server writes nothing.")
flags.mark_flag_as_required("model_dir")

DEFAULT_MODEL_NAME = "artist"
# A 40 MP JPEG (the export's default pixel limit) is about 20 MB, 27 MB as base64.
DEFAULT_MAX_REQUEST_BYTES = 64 * 2**20


# --- The upload page ------------------------------------------------------------------


async def upload_page(request: requests.Request) -> responses.Response:
    return responses.HTMLResponse(upload.page_html(
        request.app.state.document, allow_enroll=request.app.state.allow_enroll))


async def panel_endpoint(request: requests.Request) -> responses.Response:
    """One file's bytes -> {"html": its panel}, or 400/413 {"error", "html": the error panel}."""
    name = urllib.parse.unquote(request.headers.get("x-file-name", "painting"))
    model: batcher_lib.ServedModel = request.app.state.model
    signature = "panel" if "panel" in model.signatures else rest.DEFAULT_SIGNATURE
    try:
        body = await read_body(request, request.app.state.max_request_bytes)
        outputs = await request.app.state.batcher.predict(
            signature, {"images": np.array([body], object)})
    except Exception as e:  # noqa: BLE001  Any failure is shown in this file's panel.
        refused = isinstance(e, rest.RequestError)
        status = e.status if refused else rest.http_status(e)
        message = errors.without_index(e.message if refused else errors.error_message(e))
        return json_response({"error": message, "html": panel.error_html(name, message)}, status)
    row = {key: value[0] for key, value in outputs.items()}
    claimed = urllib.parse.unquote(request.headers.get("x-claimed-artist", "")).strip()
    if claimed and "verify" in model.signatures:
        try:
            verdict = await request.app.state.batcher.predict(
                "verify", {"images": np.array([body], object),
                           "artists": np.array([claimed.encode()], object)})
            row.update({key: value[0] for key, value in verdict.items()},
                       claimed_artist=claimed)
        except Exception as e:  # noqa: BLE001  The panel stands; the claim says why not.
            name = f"{name} (said to be by {claimed}: {errors.error_message(e)})"
    html = await asyncio.to_thread(panel.panel_html, name, body, row, request.app.state.document)
    return json_response({"html": html, "unknown": bool(row.get("unknown", False))})


# --- Routes ---------------------------------------------------------------------------


def json_response(content, status: int = 200) -> responses.Response:
    # Not JSONResponse: it refuses NaN, which a float output may hold (TF Serving writes NaN).
    return responses.Response(json.dumps(content, ensure_ascii=False), status_code=status,
                              media_type="application/json")


async def read_body(request: requests.Request, limit: int) -> bytes:
    """The request body, or RequestError 413 once it is over `limit` bytes (chunked bodies too)."""
    too_large = rest.RequestError(f"request body over the limit of {limit} bytes", status=413)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def models_endpoint(request: requests.Request) -> responses.Response:
    """Every /v1/models/... route: status, metadata and :predict."""
    try:
        found = rest.resolve(request.path_params["target"], request.method,
                             request.app.state.model.name)
        if found["verb"] is not None:
            return await _predict(request, found["verb"])
        if found["metadata"]:
            return json_response(request.app.state.metadata)
        return json_response(rest.MODEL_STATUS)
    except rest.RequestError as e:
        return json_response({"error": e.message}, e.status)


async def _predict(request: requests.Request, verb: str) -> responses.Response:
    if verb != "predict":
        raise rest.RequestError(f"':{verb}' is not served here: the signatures are predict "
                                "signatures, use ':predict'")
    body = await read_body(request, request.app.state.max_request_bytes)
    # Parsing a large JSON body takes a while: off the event loop, like the model calls.
    parsed = await asyncio.to_thread(rest.parse_predict, body,
                                     request.app.state.model.signatures)
    if parsed.row_format and parsed.rows == 0 and parsed.signature.inputs:
        return json_response({"predictions": []})
    try:
        outputs = await request.app.state.batcher.predict(parsed.signature.name, parsed.inputs)
    except Exception as e:  # noqa: BLE001  Any failure is this request's answer.
        status = rest.http_status(e)
        if status >= 500:
            logging.exception("%s failed", parsed.signature.name)
        return json_response({"error": errors.error_message(e)}, status)
    return json_response(rest.format_outputs(outputs, parsed))


async def _http_error(request: requests.Request, error: exceptions.HTTPException):
    return json_response({"error": error.detail}, error.status_code)


async def _server_error(request: requests.Request, error: Exception):
    # Starlette has logged the traceback; the client gets JSON like every other error.
    return json_response({"error": f"internal error: {errors.error_message(error)}"}, 500)


def create_app(
    model_dir: str,
    *,
    model_name: str = DEFAULT_MODEL_NAME,
    max_batch: int = batcher_lib.DEFAULT_MAX_BATCH,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    allow_enroll: bool = False,
    extra_routes: Sequence[routing.BaseRoute] = (),
) -> applications.Starlette:
    """The server as an ASGI app; loads the SavedModel once (again after an enrolment).

    `app.state` holds `model` (ServedModel: `loaded`, `signatures`), `document`
    (its metadata), `batcher` (Batcher: `await app.state.batcher.predict(name,
    inputs)`) and `max_request_bytes`, for `extra_routes` to use; `serve(model_dir)`
    switches to another SavedModel.
    """
    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await app.state.batcher.close()

    routes = [routing.Route("/v1/models/{target:path}", models_endpoint, methods=["GET", "POST"]),
              routing.Route("/", upload_page),
              routing.Route("/panel", panel_endpoint, methods=["POST"]),
              *(web_enroll.routes() if allow_enroll else []), *extra_routes]
    application = applications.Starlette(
        routes=routes,
        exception_handlers={exceptions.HTTPException: _http_error, Exception: _server_error},
        lifespan=lifespan)

    def serve(path: str) -> None:
        """Answers from the SavedModel at `path` from now on (requests already batched
        finish on the one before)."""
        model = batcher_lib.load_model(path, model_name)
        application.state.model = model
        application.state.metadata = rest.model_metadata(model)
        application.state.document = batcher_lib.load_document(model)
        application.state.batcher = batcher_lib.Batcher(model.signatures, max_batch=max_batch)

    serve(model_dir)
    application.state.serve = serve
    application.state.allow_enroll = allow_enroll
    application.state.max_request_bytes = max_request_bytes
    return application


def main(argv):
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    try:  # A SavedModel, or a model base's highest version (TF Serving's layout).
        model_dir = versions.resolve(FLAGS.model_dir)
    except ValueError as e:
        sys.exit(f"serve.py: error: {e}")
    application = create_app(model_dir, model_name=FLAGS.model_name,
                             max_batch=FLAGS.max_batch, allow_enroll=FLAGS.allow_enroll,
                             max_request_bytes=FLAGS.max_request_mb * 2**20)
    logging.info("Serving %s (signatures: %s): upload page at http://%s:%d/, REST API at "
                 "http://%s:%d/v1/models/%s", model_dir,
                 ", ".join(application.state.model.signatures), FLAGS.host, FLAGS.port,
                 FLAGS.host, FLAGS.port, FLAGS.model_name)
    uvicorn.run(application, host=FLAGS.host, port=FLAGS.port, log_level="info")


if __name__ == "__main__":
    app.run(main)
