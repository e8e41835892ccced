"""A TensorFlow Serving REST client for the exported model, and a local stand-in for the server.

Builds the exact request body TensorFlow Serving's REST API takes for the
`serving_default` signature (row format, binary input as base64):

    {"signature_name": "serving_default", "instances": [{"b64": "<JPEG bytes>"}, ...]}

then either POSTs it to a running server:

    docker run -p 8501:8501 -v $PWD/WORKDIR/saved_model:/models/artist/1 \\
        -e MODEL_NAME=artist tensorflow/serving
    python serving_client_example.py --server=http://localhost:8501 --model_name=artist a.jpg

or, with --model_dir, does what the server does with it, in this process: parse
the JSON, base64-decode each {"b64": ...}, make one tf.string tensor of the
signature's input, run the signature, and answer in the server's row format
{"predictions": [{"probabilities": [...], "top_k_artists": [...], ...}, ...]}
(a bad image: {"error": "..."}, as the server answers). Prints that response.

Imports nothing from the artist-id project: only the standard library, plus
tensorflow for --model_dir.
"""

import argparse
import base64
import json
import sys
import urllib.error
import urllib.request


def build_request(paths: list[str], *, signature_name: str = "serving_default") -> str:
    """The JSON body of a TensorFlow Serving REST predict request for these image files."""
    instances = []
    for path in paths:
        with open(path, "rb") as f:
            instances.append({"b64": base64.b64encode(f.read()).decode("ascii")})
    return json.dumps({"signature_name": signature_name, "instances": instances})


def post(server: str, model_name: str, body: str) -> dict:
    """POST /v1/models/<name>:predict to a running TensorFlow Serving."""
    request = urllib.request.Request(
        f"{server.rstrip('/')}/v1/models/{model_name}:predict", data=body.encode("utf-8"),
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)
    except urllib.error.HTTPError as e:  # The server puts its error text in the body.
        return json.load(e)


def _json_value(value, output_name: str):
    """One output value as the server writes it: *_bytes names and non-UTF-8 strings as b64."""
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


def serve_locally(model_dir: str, body: str) -> dict:
    """What TensorFlow Serving does with a row-format request, for one SavedModel."""
    import tensorflow as tf

    request = json.loads(body)
    signature = tf.saved_model.load(model_dir).signatures[
        request.get("signature_name", "serving_default")]
    (input_name, spec), = signature.structured_input_signature[1].items()
    # Row format with a single input: each instance is that input's value;
    # {"b64": ...} marks binary data to decode.
    values = [base64.b64decode(item["b64"]) if isinstance(item, dict) and "b64" in item
              else item for item in request["instances"]]
    try:
        outputs = signature(**{input_name: tf.constant(values, dtype=spec.dtype)})
    except tf.errors.InvalidArgumentError as e:
        return {"error": e.message}
    columns = {name: tensor.numpy().tolist() for name, tensor in outputs.items()}
    return {"predictions": [
        {name: _json_value(column[i], name) for name, column in sorted(columns.items())}
        for i in range(len(values))]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", help="Image files to send.")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--server", help="TensorFlow Serving REST address, http://host:8501.")
    target.add_argument("--model_dir", help="Run the request against this SavedModel here.")
    parser.add_argument("--model_name", default="artist", help="Model name on the server.")
    parser.add_argument("--signature_name", default="serving_default")
    parser.add_argument("--print_request", action="store_true",
                        help="Print the request body before the response.")
    args = parser.parse_args()

    body = build_request(args.images, signature_name=args.signature_name)
    if args.print_request:
        print(body)
    response = (post(args.server, args.model_name, body) if args.server
                else serve_locally(args.model_dir, body))
    print(json.dumps(response, ensure_ascii=False))
    return 1 if "error" in response else 0


if __name__ == "__main__":
    sys.exit(main())
