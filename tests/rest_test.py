"""serving.rest: TensorFlow Serving's JSON, without a server."""

import dataclasses

import numpy as np

from serving import rest


def test_outputs_are_encoded_like_tensorflow_serving():
    request_ = rest.PredictRequest(signature=None, inputs={}, row_format=True, rows=2)
    outputs = {"thumbnail_bytes": np.array([b"ok", b"\x00"], dtype=object),
               "names": np.array(["é".encode(), b"\xff"], dtype=object)}
    assert rest.format_outputs(outputs, request_) == {"predictions": [
        {"thumbnail_bytes": {"b64": "b2s="}, "names": "é"},
        {"thumbnail_bytes": {"b64": "AA=="}, "names": {"b64": "/w=="}}]}
    # A single output: bare values, not objects.
    scores = {"scores": np.array([[0.5], [0.25]], np.float32)}
    assert rest.format_outputs(scores, request_) == {"predictions": [[0.5], [0.25]]}
    columnar = dataclasses.replace(request_, row_format=False, rows=None)
    assert rest.format_outputs(scores, columnar) == {"outputs": [[0.5], [0.25]]}
