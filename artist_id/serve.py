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
import base64
import binascii
import contextlib
import dataclasses
import json
import os
import re
import sys
import threading
import urllib.parse
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import uvicorn
from absl import app, flags, logging
from starlette import applications, exceptions, requests, responses, routing

from serving import panel
from serving.errors import error_message, without_index

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "Exported SavedModel directory (WORKDIR/saved_model).")
flags.DEFINE_string("host", "127.0.0.1", "Address to listen on; 0.0.0.0 for every interface.")
flags.DEFINE_integer("port", 8000, "Port to listen on.", lower_bound=0)
flags.DEFINE_string("model_name", "artist", "The model's name in the URLs: /v1/models/<name>.")
flags.DEFINE_integer("max_batch", 64, "Most instances run in one call of a signature.",
                     lower_bound=1)
flags.DEFINE_integer("max_request_mb", 64, "Largest request body, in MiB (413 above it).",
                     lower_bound=1)
flags.mark_flag_as_required("model_dir")

DEFAULT_MODEL_NAME = "artist"
DEFAULT_SIGNATURE = "serving_default"
VERSION = "1"
DEFAULT_MAX_BATCH = 64
# A 40 MP JPEG (the export's default pixel limit) is about 20 MB, 27 MB as base64.
DEFAULT_MAX_REQUEST_BYTES = 64 * 2**20
# Signature calls running at once: one per core; a third would only share them.
MAX_IN_FLIGHT = 2
PREDICT_METHOD = "tensorflow/serving/predict"
# /v1/models/<target>: name, then an optional version or label, then /metadata or :verb.
TARGET = re.compile(r"(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
                    r"(?:(?P<metadata>/metadata)|:(?P<verb>[a-z]+))?")
# What a JSON value was, by the kind of the numpy array it made.
JSON_KINDS = {"b": "true/false", "i": "integer", "u": "integer", "f": "non-integer",
              "U": "string"}

Arrays = dict[str, np.ndarray]


class RequestError(Exception):
    """A request the server refuses: its HTTP status and the message of `{"error": ...}`."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message, self.status = message, status


def http_status(error: Exception) -> int:
    """400 for what the request got wrong (as TensorFlow Serving maps these codes), else 500."""
    import tensorflow as tf  # Loaded by create_app already.

    client_errors = (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError,
                     tf.errors.FailedPreconditionError)
    return 400 if isinstance(error, client_errors) else 500


# --- The model ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Signature:
    """One callable signature: its input and output specs, and numpy in, numpy out."""

    name: str
    function: Callable  # Keyword tensors in, a dict of tensors out (a loaded signature).
    inputs: Mapping  # Input name -> tf.TensorSpec.
    outputs: Mapping  # Output name -> tf.TensorSpec.

    @property
    def batchable(self) -> bool:
        """Whether every input and output has a batch dimension, so calls can be concatenated."""
        specs = [*self.inputs.values(), *self.outputs.values()]
        return bool(self.inputs) and all(
            spec.shape.rank is not None and spec.shape.rank >= 1 and spec.shape[0] is None
            for spec in specs)

    def run(self, inputs: Arrays) -> Arrays:
        import tensorflow as tf  # Loaded by create_app already.

        outputs = self.function(**{name: tf.constant(value) for name, value in inputs.items()})
        arrays = {}
        for name, tensor in outputs.items():
            value = tensor.numpy()
            # A scalar string comes out as bytes: make it an object array, as other strings are.
            arrays[name] = np.array(value, object) if isinstance(value, bytes) else np.array(value)
        return arrays


@dataclasses.dataclass(frozen=True)
class ServedModel:
    """What the routes need of the loaded SavedModel."""

    name: str
    model_dir: str
    loaded: object  # tf.saved_model.load's result, for routes that need more of it.
    signatures: dict[str, Signature]
    signature_defs: dict  # TensorFlow Serving's metadata JSON for each signature.


def load_model(model_dir: str, name: str) -> ServedModel:
    """Loads the SavedModel once and describes its signatures."""
    import tensorflow as tf  # Here, not at the top: `--help` answers without it.

    loaded = tf.saved_model.load(model_dir)
    signatures = {
        key: Signature(key, function, dict(function.structured_input_signature[1]),
                       dict(function.structured_outputs))
        for key, function in loaded.signatures.items()}
    return ServedModel(name, model_dir, loaded, signatures,
                       read_signature_defs(model_dir, list(signatures)))


def read_signature_defs(model_dir: str, names: list[str]) -> dict:
    """The signature_def map of saved_model.pb as TensorFlow Serving writes it in JSON."""
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(model_dir, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    graph = next((g for g in proto.meta_graphs if "serve" in g.meta_info_def.tags),
                 proto.meta_graphs[0])

    def tensor_info(info) -> dict:
        shape = info.tensor_shape
        return {"dtype": types_pb2.DataType.Name(info.dtype),
                "tensor_shape": {"dim": [{"size": str(d.size), "name": d.name} for d in shape.dim],
                                 "unknown_rank": shape.unknown_rank},
                "name": info.name}

    # Only the signatures a client can call (not "__saved_model_init_op").
    return {name: {"inputs": {k: tensor_info(v) for k, v in sorted(sig.inputs.items())},
                   "outputs": {k: tensor_info(v) for k, v in sorted(sig.outputs.items())},
                   "method_name": sig.method_name or PREDICT_METHOD}
            for name, sig in sorted(graph.signature_def.items()) if name in names}


# --- Batching -------------------------------------------------------------------------


@dataclasses.dataclass
class _Job:
    inputs: Arrays
    rows: int
    key: tuple | None  # Jobs with the same key concatenate; None runs alone.
    future: asyncio.Future


class Batcher:
    """Runs signature calls in worker threads, batching requests that wait together.

    `await batcher.predict(signature_name, {input: array})` returns the outputs
    as numpy arrays, or raises what the signature raised (a TensorFlow error:
    `error_message` and `http_status` turn it into an answer). A queue per
    signature; while every worker is busy, requests wait, and the next free
    worker runs all the compatible waiting ones (up to `max_batch` instances)
    as one call, so an idle server adds no latency and a busy one batches.
    """

    def __init__(self, signatures: Mapping[str, Signature], *, max_batch: int = DEFAULT_MAX_BATCH,
                 max_in_flight: int = MAX_IN_FLIGHT):
        self.signatures = dict(signatures)
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.calls = 0  # Signature calls made, batched or not (tests and logs read it).
        self.requests = 0
        self._count_lock = threading.Lock()
        self._loop = None
        self._queues: dict[str, asyncio.Queue] = {}
        self._tasks: set[asyncio.Task] = set()

    async def predict(self, signature_name: str, inputs: Arrays) -> Arrays:
        """The signature's outputs for these inputs (a KeyError for an unknown signature)."""
        signature = self.signatures[signature_name]
        rows = {value.shape[0] if value.ndim else None for value in inputs.values()}
        batchable = signature.batchable and len(rows) == 1 and None not in rows
        key = tuple((name, value.dtype.str, value.shape[1:])
                    for name, value in sorted(inputs.items())) if batchable else None
        job = _Job(inputs, rows.pop() if batchable else 0, key,
                   asyncio.get_running_loop().create_future())
        self.requests += 1
        await self._queue(signature_name).put(job)
        return await job.future

    async def close(self) -> None:
        """Stops the collecting loops (the app's shutdown calls this)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._queues.clear()
        self._loop = None

    def _queue(self, name: str) -> asyncio.Queue:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # First request, or a server started again.
            self._loop, self._queues = loop, {}
            self._slots = asyncio.Semaphore(self.max_in_flight)
        if name not in self._queues:
            self._queues[name] = asyncio.Queue()
            self._spawn(self._collect(name, self._queues[name]))
        return self._queues[name]

    def _spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)  # A reference, so the task is not collected mid-run.
        task.add_done_callback(self._tasks.discard)

    async def _collect(self, name: str, queue: asyncio.Queue) -> None:
        pending: list[_Job] = []
        while True:
            if not pending:
                pending.append(await queue.get())
            await self._slots.acquire()
            # Whatever arrived while every worker was busy joins this batch.
            while not queue.empty():
                pending.append(queue.get_nowait())
            batch, pending = self._take_batch(pending)
            batch = [job for job in batch if not job.future.done()]  # Clients gone.
            if batch:
                self._spawn(self._run(name, batch))
            else:
                self._slots.release()

    def _take_batch(self, pending: list[_Job]) -> tuple[list[_Job], list[_Job]]:
        """The first job and the later ones that concatenate with it, up to max_batch rows."""
        first, batch, rest = pending[0], [pending[0]], []
        rows = first.rows
        for job in pending[1:]:
            if first.key is not None and job.key == first.key and rows + job.rows <= self.max_batch:
                batch.append(job)
                rows += job.rows
            else:
                rest.append(job)
        return batch, rest

    async def _run(self, name: str, batch: list[_Job]) -> None:
        try:
            results = await asyncio.to_thread(self._call_batch, self.signatures[name], batch)
        except Exception as e:  # noqa: BLE001  Every waiting request gets the failure.
            results = [e] * len(batch)
        finally:
            self._slots.release()
        for job, result in zip(batch, results):
            if job.future.done():
                continue
            if isinstance(result, Exception):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)

    def _call_batch(self, signature: Signature, batch: list[_Job]) -> list[Arrays | Exception]:
        """In a worker thread: one call for the whole batch, else one call per request."""
        if len(batch) == 1:
            return [self._call(signature, batch[0].inputs)]
        inputs = {name: np.concatenate([job.inputs[name] for job in batch])
                  for name in batch[0].inputs}
        outputs = self._call(signature, inputs)
        total = sum(job.rows for job in batch)
        if not isinstance(outputs, Exception) and all(
                value.shape[:1] == (total,) for value in outputs.values()):
            logging.debug("%s: %d requests, %d instances in one call", signature.name,
                          len(batch), total)
            bounds = np.cumsum([job.rows for job in batch])[:-1]
            parts = {name: np.split(value, bounds) for name, value in outputs.items()}
            return [{name: parts[name][i] for name in parts} for i in range(len(batch))]
        # One bad request fails the whole call: run each on its own, so only that
        # one gets the error, with its own indices in the message.
        return [self._call(signature, job.inputs) for job in batch]

    def _call(self, signature: Signature, inputs: Arrays) -> Arrays | Exception:
        with self._count_lock:
            self.calls += 1
        try:
            return signature.run(inputs)
        except Exception as e:  # noqa: BLE001  Returned, to be answered per request.
            return e


# --- Requests -> arrays ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PredictRequest:
    signature: Signature
    inputs: Arrays
    row_format: bool  # "instances" (answer "predictions") rather than "inputs" ("outputs").
    rows: int | None  # Instances of a row-format request.


def _is_b64(value) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _shape_text(shape) -> str:
    return "unknown" if shape.rank is None else str([-1 if d is None else d for d in shape])


def _to_bytes(value, where: str):
    """Nested lists of strings and {"b64": ...} -> the same lists of bytes."""
    if isinstance(value, list):
        return [_to_bytes(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, str):
        return value.encode("utf-8")
    if _is_b64(value) and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except binascii.Error as e:
            raise RequestError(f"{where}: invalid base64 ({e})") from None
    raise RequestError(
        f"{where}: expected a string or {{\"b64\": ...}}, got {json.dumps(value)[:80]}")


def to_array(value, spec, name: str) -> np.ndarray:
    """A JSON value -> an array of the input's dtype and shape (RequestError if it does not fit)."""
    import tensorflow as tf  # Loaded by create_app already.

    if spec.dtype == tf.string:
        array = np.array(_to_bytes(value, name), dtype=object)
        if any(isinstance(item, list) for item in array.flat):
            raise RequestError(f"{name}: lists of different lengths")
    else:
        try:
            raw = np.asarray(value)
        except ValueError:
            raise RequestError(f"{name}: lists of different lengths") from None
        target = np.dtype(spec.dtype.as_numpy_dtype)
        # JSON numbers of the kinds that convert without loss: no floats into ints.
        kinds = "b" if spec.dtype.is_bool else "iu" if spec.dtype.is_integer else "iuf"
        if raw.size and raw.dtype.kind not in kinds:
            raise RequestError(f"{name}: the signature takes {spec.dtype.name} values; got "
                               f"{JSON_KINDS.get(raw.dtype.kind, 'non-numeric')} values")
        if raw.size and spec.dtype.is_integer and (
                raw.min() < np.iinfo(target).min or raw.max() > np.iinfo(target).max):
            raise RequestError(f"{name}: values out of the range of {spec.dtype.name}")
        array = raw.astype(target)
    if not spec.shape.is_compatible_with(array.shape):
        raise RequestError(f"{name}: the signature takes {spec.dtype.name} of shape "
                           f"{_shape_text(spec.shape)}; got shape {list(array.shape)}")
    return array


def _named_values(value, signature: Signature, where: str) -> dict:
    """A request's value for the signature -> {input name: JSON value}."""
    names = sorted(signature.inputs)
    if isinstance(value, dict) and not _is_b64(value):
        if set(value) != set(names):
            raise RequestError(
                f"{where}: signature '{signature.name}' takes inputs {names}, got {sorted(value)}")
        return value
    if len(names) != 1:
        raise RequestError(f"{where}: signature '{signature.name}' takes inputs {names}: send an "
                           "object of input name -> value")
    return {names[0]: value}


def parse_predict(body: bytes, signatures: Mapping[str, Signature]) -> PredictRequest:
    """A :predict body -> the signature and its input arrays (RequestError if malformed)."""
    try:
        request = json.loads(body)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and bad UTF-8 are ValueErrors.
        raise RequestError(f"JSON Parse error: {e}") from None
    if not isinstance(request, dict):
        raise RequestError("the request must be a JSON object")
    name = request.get("signature_name") or DEFAULT_SIGNATURE
    if not isinstance(name, str) or name not in signatures:
        raise RequestError(f'Serving signature name: "{name}" not found in signature def')
    signature = signatures[name]
    if ("instances" in request) == ("inputs" in request):
        raise RequestError("Missing 'inputs' or 'instances' key" if "inputs" not in request
                           else "Send either 'instances' or 'inputs', not both")
    if "inputs" in request:
        values = request["inputs"]
        if not signature.inputs:
            if values not in ({}, [], None):
                raise RequestError(f"signature '{name}' takes no inputs: send \"inputs\": {{}}")
            values = {}
        else:
            values = _named_values(values, signature, "inputs")
        return PredictRequest(signature, {k: to_array(v, signature.inputs[k], k)
                                          for k, v in values.items()}, row_format=False, rows=None)
    instances = request["instances"]
    if not isinstance(instances, list):
        raise RequestError("'instances' must be a list")
    if not signature.inputs and instances not in ([], [{}]):
        raise RequestError(f"signature '{name}' takes no inputs: send \"instances\": []")
    rows = [_named_values(item, signature, f"instances[{i}]")
            for i, item in enumerate(instances)] if signature.inputs else []
    inputs = {k: to_array([row[k] for row in rows], spec, k)
              for k, spec in signature.inputs.items()} if rows else {}
    return PredictRequest(signature, inputs, row_format=True, rows=len(rows))


# --- Arrays -> JSON -------------------------------------------------------------------


def _json_value(value, output_name: str):
    """One output value as TensorFlow Serving writes it: *_bytes and non-UTF-8 strings as b64."""
    if isinstance(value, list):
        return [_json_value(v, output_name) for v in value]
    if isinstance(value, bytes):
        try:
            if not output_name.endswith("_bytes"):
                return value.decode("utf-8")
        except UnicodeDecodeError:
            pass
        return {"b64": base64.b64encode(value).decode("ascii")}
    return value


def format_outputs(outputs: Arrays, request: PredictRequest) -> dict:
    """{"predictions": [...]} for row requests, {"outputs": ...} for columnar ones.

    A single output is given bare, not in an object (as TensorFlow Serving does).
    Outputs without the request's batch dimension (the `metadata` signature's)
    answer a row request whole: {"predictions": {name: value}}.
    """
    columns = {name: _json_value(outputs[name].tolist(), name) for name in sorted(outputs)}
    whole = next(iter(columns.values())) if len(columns) == 1 else columns
    if not request.row_format:
        return {"outputs": whole}
    if not request.rows or any(value.shape[:1] != (request.rows,) for value in outputs.values()):
        return {"predictions": whole}
    rows = [{name: column[i] for name, column in columns.items()} for i in range(request.rows)]
    return {"predictions": [next(iter(row.values())) if len(row) == 1 else row for row in rows]}


# --- The upload page -----------------------------------------------------------------

UPLOAD_FORM = """
<form id="upload"><label id="drop">Drop paintings here, or
<input id="files" type="file" accept="image/*" multiple></label></form>
<div id="results"></div>
"""
UPLOAD_STYLE = """
#drop { display: block; border: 2px dashed #8aa3c8; border-radius: 8px; padding: 2em;
        text-align: center; background: #fff; margin-bottom: 1.2em; }
#drop.over { background: #eef3fb; }
.pending { color: #777; margin: 0.5em 0; }
"""
# Each file is its own request, all at once: the server batches those that arrive together.
UPLOAD_SCRIPT = """
const results = document.getElementById('results');
const drop = document.getElementById('drop');
function escapeHtml(text) {
  const div = document.createElement('div'); div.textContent = text; return div.innerHTML;
}
async function send(file) {
  const slot = document.createElement('div');
  slot.className = 'pending';
  slot.textContent = 'Looking at ' + file.name + '...';
  results.appendChild(slot);
  let html;
  try {
    const response = await fetch('panel', {method: 'POST', body: file,
                                           headers: {'X-File-Name': encodeURIComponent(file.name)}});
    html = (await response.json()).html;
  } catch (error) {
    html = '<section class="panel error"><h2>' + escapeHtml(file.name) +
           '</h2><p class="message">' + escapeHtml(String(error)) + '</p></section>';
  }
  slot.outerHTML = html;
}
function handle(files) { for (const file of files) send(file); }
document.getElementById('files').addEventListener('change', (e) => handle(e.target.files));
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault(); drop.classList.remove('over'); handle(e.dataTransfer.files);
});
"""


def load_document(model: "ServedModel") -> dict:
    """The model's metadata document (artists and their cards, resize mode), once."""
    if "metadata" not in model.signatures:
        return {}
    value = model.signatures["metadata"].run({})["metadata"]
    return json.loads(value.item() if isinstance(value, np.ndarray) else value)


async def upload_page(request: requests.Request) -> responses.Response:
    document = request.app.state.document
    dataset = (document.get("dataset") or {}).get("full_name", "")
    title = f"Who painted it? ({len(document.get('artists', []))} artists"
    title += f", {dataset})" if dataset else ")"
    page = panel.page_html(title, UPLOAD_FORM, script=UPLOAD_SCRIPT)
    return responses.HTMLResponse(page.replace("</style>", UPLOAD_STYLE + "</style>", 1))


async def panel_endpoint(request: requests.Request) -> responses.Response:
    """One file's bytes -> {"html": its panel}, or 400/413 {"error", "html": the error panel}."""
    name = urllib.parse.unquote(request.headers.get("x-file-name", "painting"))
    model: ServedModel = request.app.state.model
    signature = "panel" if "panel" in model.signatures else DEFAULT_SIGNATURE
    try:
        body = await read_body(request, request.app.state.max_request_bytes)
        outputs = await request.app.state.batcher.predict(
            signature, {"images": np.array([body], object)})
    except Exception as e:  # noqa: BLE001  Any failure is shown in this file's panel.
        status = e.status if isinstance(e, RequestError) else http_status(e)
        message = e.message if isinstance(e, RequestError) else error_message(e)
        message = without_index(message)
        return json_response({"error": message, "html": panel.error_html(name, message)}, status)
    row = {key: value[0] for key, value in outputs.items()}
    html = await asyncio.to_thread(panel.panel_html, name, body, row, request.app.state.document)
    return json_response({"html": html})


# --- Routes ---------------------------------------------------------------------------


def json_response(content, status: int = 200) -> responses.Response:
    # Not JSONResponse: it refuses NaN, which a float output may hold (TF Serving writes NaN).
    return responses.Response(json.dumps(content, ensure_ascii=False), status_code=status,
                              media_type="application/json")


async def read_body(request: requests.Request, limit: int) -> bytes:
    """The request body, or RequestError 413 once it is over `limit` bytes (chunked bodies too)."""
    too_large = RequestError(f"request body over the limit of {limit} bytes", status=413)
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


def _resolve(model: ServedModel, target: str, method: str) -> re.Match:
    """The parsed /v1/models/<target>, or RequestError 404 as TF Serving words it."""
    found = TARGET.fullmatch(target)
    if not found or (method == "GET") != (found["verb"] is None) or (
            method == "POST" and found["metadata"]):
        raise RequestError(f"Malformed request: {method} /v1/models/{target}", status=404)
    if found["label"] is not None:
        raise RequestError(f"Unrecognized servable version label: {found['label']}", status=404)
    if found["name"] != model.name:
        raise RequestError(f"Servable not found for request: Latest({found['name']})", status=404)
    if found["version"] not in (None, VERSION):
        raise RequestError(f"Servable not found for request: Specific({found['name']}, "
                           f"{found['version']})", status=404)
    return found


async def models_endpoint(request: requests.Request) -> responses.Response:
    """Every /v1/models/... route: status, metadata and :predict."""
    model: ServedModel = request.app.state.model
    try:
        found = _resolve(model, request.path_params["target"], request.method)
        if found["verb"] is not None:
            return await _predict(request, found["verb"])
        if found["metadata"]:
            return json_response({
                "model_spec": {"name": model.name, "signature_name": "", "version": VERSION},
                "metadata": {"signature_def": {"signature_def": model.signature_defs}}})
        return json_response({"model_version_status": [{
            "version": VERSION, "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": ""}}]})
    except RequestError as e:
        return json_response({"error": e.message}, e.status)


async def _predict(request: requests.Request, verb: str) -> responses.Response:
    if verb != "predict":
        raise RequestError(f"':{verb}' is not served here: the signatures are predict "
                           "signatures, use ':predict'")
    body = await read_body(request, request.app.state.max_request_bytes)
    # Parsing a large JSON body takes a while: off the event loop, like the model calls.
    parsed = await asyncio.to_thread(parse_predict, body, request.app.state.model.signatures)
    if parsed.row_format and parsed.rows == 0 and parsed.signature.inputs:
        return json_response({"predictions": []})
    try:
        outputs = await request.app.state.batcher.predict(parsed.signature.name, parsed.inputs)
    except Exception as e:  # noqa: BLE001  Any failure is this request's answer.
        status = http_status(e)
        if status >= 500:
            logging.exception("%s failed", parsed.signature.name)
        return json_response({"error": error_message(e)}, status)
    return json_response(format_outputs(outputs, parsed))


async def _http_error(request: requests.Request, error: exceptions.HTTPException):
    return json_response({"error": error.detail}, error.status_code)


async def _server_error(request: requests.Request, error: Exception):
    # Starlette has logged the traceback; the client gets JSON like every other error.
    return json_response({"error": f"internal error: {error_message(error)}"}, 500)


def create_app(
    model_dir: str,
    *,
    model_name: str = DEFAULT_MODEL_NAME,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    extra_routes: Sequence[routing.BaseRoute] = (),
) -> applications.Starlette:
    """The server as an ASGI app; loads the SavedModel once.

    `app.state` holds `model` (ServedModel: `loaded`, `signatures`), `document`
    (its metadata), `batcher` (Batcher: `await app.state.batcher.predict(name,
    inputs)`) and `max_request_bytes`, for `extra_routes` to use.
    """
    model = load_model(model_dir, model_name)
    batcher = Batcher(model.signatures, max_batch=max_batch)

    @contextlib.asynccontextmanager
    async def lifespan(_):
        yield
        await batcher.close()

    application = applications.Starlette(
        routes=[routing.Route("/v1/models/{target:path}", models_endpoint, methods=["GET", "POST"]),
                routing.Route("/", upload_page), routing.Route("/panel", panel_endpoint,
                                                               methods=["POST"]),
                *extra_routes],
        exception_handlers={exceptions.HTTPException: _http_error, Exception: _server_error},
        lifespan=lifespan)
    application.state.model = model
    application.state.document = load_document(model)
    application.state.batcher = batcher
    application.state.max_request_bytes = max_request_bytes
    return application


def main(argv):
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    if not os.path.isdir(FLAGS.model_dir):
        sys.exit(f"serve.py: error: no SavedModel directory at {FLAGS.model_dir}")
    application = create_app(FLAGS.model_dir, model_name=FLAGS.model_name,
                             max_batch=FLAGS.max_batch,
                             max_request_bytes=FLAGS.max_request_mb * 2**20)
    logging.info("Serving %s (signatures: %s): upload page at http://%s:%d/, REST API at "
                 "http://%s:%d/v1/models/%s", FLAGS.model_dir,
                 ", ".join(application.state.model.signatures), FLAGS.host, FLAGS.port,
                 FLAGS.host, FLAGS.port, FLAGS.model_name)
    uvicorn.run(application, host=FLAGS.host, port=FLAGS.port, log_level="info")


if __name__ == "__main__":
    app.run(main)
