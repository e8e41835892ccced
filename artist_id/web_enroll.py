"""The web app's "add as a new artist" (`serve.py --allow_enroll`): POST /enroll.

The page sends the painter's name and the paintings (the one answered
"unknown artist" and a few more) as JSON: {"artist": "...", "images":
[{"name": "...", "b64": "..."}]}. The server adds the artist as `artist-id
enroll` does (`serving.enrolment`), writes the next version into the model
base and answers from it from then on; one enrolment at a time. The reply is
{"message", "version"} or {"error"} with status 400 (a bad request or a
refused enrolment) or 409 (the served model is not in a model base).
"""

import asyncio
import base64
import binascii
import json
import os

from starlette import requests, responses, routing

from serving import versions

ROUTE = "/enroll"
_LOCK = "enroll_lock"


def routes() -> list[routing.Route]:
    return [routing.Route(ROUTE, enroll_endpoint, methods=["POST"])]


class EnrollRequestError(ValueError):
    """A request that cannot be an enrolment; the message says which field is wrong."""


def parse(body: bytes) -> tuple[str, list[bytes], list[str]]:
    """The request's (artist, images, file names)."""
    try:
        request = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise EnrollRequestError(f"JSON Parse error: {e}") from None
    if not isinstance(request, dict) or not isinstance(request.get("artist"), str):
        raise EnrollRequestError('send {"artist": "name", "images": [{"name", "b64"}, ...]}')
    items = request.get("images")
    if not isinstance(items, list) or not items:
        raise EnrollRequestError("'images': a list of {\"name\", \"b64\"} of the paintings")
    images, names = [], []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("b64"), str):
            raise EnrollRequestError(f"images[{i}]: expected {{\"name\", \"b64\"}}")
        try:
            images.append(base64.b64decode(item["b64"], validate=True))
        except binascii.Error as e:
            raise EnrollRequestError(f"images[{i}]: invalid base64 ({e})") from None
        names.append(str(item.get("name") or f"painting_{i}.jpg"))
    return request["artist"], images, names


def add_artist(model_dir: str, artist: str, images: list[bytes], names: list[str]
               ) -> tuple[dict, str]:
    """In a worker thread: the enrolment, written as the next version; (what was done, its
    directory)."""
    from serving import enrolment  # TensorFlow: loaded by the server already.

    target = versions.next_version(model_dir)
    if target is None:
        raise FileNotFoundError(f"the served model ({model_dir}) is not in a model base "
                                "(MODEL_BASE/N): serve one to add artists")
    served = enrolment.load(model_dir)
    done = enrolment.enroll(served, artist=artist, images=images, file_names=names)
    return done, enrolment.write(served, target)


async def enroll_endpoint(request: requests.Request) -> responses.Response:
    from serving import enrolment

    state = request.app.state
    if not hasattr(state, _LOCK):
        setattr(state, _LOCK, asyncio.Lock())
    body = await request.body()
    if len(body) > state.max_request_bytes:
        return _json({"error": f"request body over the limit of {state.max_request_bytes} "
                               "bytes"}, 413)
    try:
        artist, images, names = parse(body)
        async with getattr(state, _LOCK):
            done, target = await asyncio.to_thread(add_artist, state.model.model_dir, artist,
                                                   images, names)
            await asyncio.to_thread(state.serve, target)
    except (EnrollRequestError, enrolment.EnrolmentError) as e:
        return _json({"error": str(e)}, 400)
    except FileNotFoundError as e:
        return _json({"error": str(e)}, 409)
    refused = (f"; left out: {', '.join(done['refused'])}" if done["refused"] else "")
    version = os.path.basename(target)
    return _json({"message": f"Added {artist} from {done['paintings']} paintings{refused}: "
                             f"serving version {version} with {done['id'] + 1} artists.",
                  "version": version, "refused": done["refused"]})


def _json(content: dict, status: int = 200) -> responses.Response:
    return responses.Response(json.dumps(content, ensure_ascii=False), status_code=status,
                              media_type="application/json")
