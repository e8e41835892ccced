"""TensorFlow Serving's REST API as data: routes, request JSON -> arrays, arrays -> answer JSON.

What https://www.tensorflow.org/tfx/serving/api_rest specifies, for one model
version ("1"): the status and metadata answers, the `{"instances"}` (row) and
`{"inputs"}` (columnar) bodies of :predict, `{"b64": ...}` for binary values both
ways, and the wording of its errors. No web framework here, and TensorFlow only
where a dtype or saved_model.pb is read, so a command that imports this starts fast.
"""

import base64
import binascii
import dataclasses
import json
import os
import re
from collections.abc import Mapping

import numpy as np

from serving import batcher

DEFAULT_SIGNATURE = "serving_default"
VERSION = "1"
PREDICT_METHOD = "tensorflow/serving/predict"
# /v1/models/<target>: name, then an optional version or label, then /metadata or :verb.
TARGET = re.compile(r"(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
                    r"(?:(?P<metadata>/metadata)|:(?P<verb>[a-z]+))?")
# What a JSON value was, by the kind of the numpy array it made.
JSON_KINDS = {"b": "true/false", "i": "integer", "u": "integer", "f": "non-integer",
              "U": "string"}
MODEL_STATUS = {"model_version_status": [{
    "version": VERSION, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}


class RequestError(Exception):
    """A request the server refuses: its HTTP status and the message of `{"error": ...}`."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message, self.status = message, status


def http_status(error: Exception) -> int:
    """400 for what the request got wrong (as TensorFlow Serving maps these codes), else 500."""
    import tensorflow as tf  # Loaded with the model already.

    client_errors = (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError,
                     tf.errors.FailedPreconditionError)
    return 400 if isinstance(error, client_errors) else 500


def resolve(target: str, method: str, model_name: str) -> re.Match:
    """The parsed /v1/models/<target>, or RequestError 404 as TF Serving words it."""
    found = TARGET.fullmatch(target)
    if not found or (method == "GET") != (found["verb"] is None) or (
            method == "POST" and found["metadata"]):
        raise RequestError(f"Malformed request: {method} /v1/models/{target}", status=404)
    if found["label"] is not None:
        raise RequestError(f"Unrecognized servable version label: {found['label']}", status=404)
    if found["name"] != model_name:
        raise RequestError(f"Servable not found for request: Latest({found['name']})", status=404)
    if found["version"] not in (None, VERSION):
        raise RequestError(f"Servable not found for request: Specific({found['name']}, "
                           f"{found['version']})", status=404)
    return found


# --- Signature metadata ---------------------------------------------------------------


def model_metadata(model: batcher.ServedModel) -> dict:
    """The answer to GET .../metadata: every signature's inputs and outputs."""
    return {"model_spec": {"name": model.name, "signature_name": "", "version": VERSION},
            "metadata": {"signature_def": {"signature_def": read_signature_defs(
                model.model_dir, list(model.signatures))}}}


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


# --- Requests -> arrays ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PredictRequest:
    signature: batcher.Signature
    inputs: batcher.Arrays
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
    import tensorflow as tf  # Loaded with the model already.

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


def _named_values(value, signature: batcher.Signature, where: str) -> dict:
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


def parse_predict(body: bytes, signatures: Mapping[str, batcher.Signature]) -> PredictRequest:
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


def _string_json(value, *, as_b64: bool):
    """One string element: text, or {"b64": ...} when asked to or when it is not UTF-8."""
    if not isinstance(value, bytes):
        return value
    if not as_b64:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return {"b64": base64.b64encode(value).decode("ascii")}


def _column_json(name: str, array: np.ndarray):
    """One output array as nested JSON lists; only string (object) arrays are walked, element
    by element (`_string_json`), numbers go to lists in one step."""
    if array.dtype != object:
        return array.tolist()
    encode = np.vectorize(lambda value: _string_json(value, as_b64=name.endswith("_bytes")),
                          otypes=[object])
    return encode(array).tolist()


def format_outputs(outputs: batcher.Arrays, request: PredictRequest) -> dict:
    """{"predictions": [...]} for row requests, {"outputs": ...} for columnar ones.

    A single output is given bare, not in an object (as TensorFlow Serving does).
    Outputs without the request's batch dimension (the `metadata` signature's)
    answer a row request whole: {"predictions": {name: value}}.
    """
    columns = {name: _column_json(name, outputs[name]) for name in sorted(outputs)}
    whole = next(iter(columns.values())) if len(columns) == 1 else columns
    if not request.row_format:
        return {"outputs": whole}
    if not request.rows or any(value.shape[:1] != (request.rows,) for value in outputs.values()):
        return {"predictions": whole}
    rows = [{name: column[i] for name, column in columns.items()} for i in range(request.rows)]
    return {"predictions": [next(iter(row.values())) if len(row) == 1 else row for row in rows]}
