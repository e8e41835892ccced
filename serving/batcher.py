"""A loaded SavedModel's signatures as numpy in, numpy out, and a batcher in front of them.

Requests that arrive while the model is busy are queued and then run as one
batch (up to `max_batch` instances, `MAX_IN_FLIGHT` batches at once). If a
batch fails, each of its requests runs again on its own, so only the bad one
gets the error. TensorFlow is imported where a model is loaded or run, not
here: a command that imports this answers `--help` without it.
"""

import asyncio
import dataclasses
import json
import threading
from collections.abc import Callable, Mapping

import numpy as np
from absl import logging

DEFAULT_MAX_BATCH = 64
# Signature calls running at once: one per core; a third would only share them.
MAX_IN_FLIGHT = 2

Arrays = dict[str, np.ndarray]


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
        import tensorflow as tf  # Loaded by load_model already.

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


def load_model(model_dir: str, name: str) -> ServedModel:
    """Loads the SavedModel once and describes its signatures."""
    import tensorflow as tf  # Here, not at the top: `--help` answers without it.

    loaded = tf.saved_model.load(model_dir)
    signatures = {
        key: Signature(key, function, dict(function.structured_input_signature[1]),
                       dict(function.structured_outputs))
        for key, function in loaded.signatures.items()}
    return ServedModel(name, model_dir, loaded, signatures)


def load_document(model: ServedModel) -> dict:
    """The model's metadata document (artists and their cards, resize mode), once."""
    if "metadata" not in model.signatures:
        return {}
    value = model.signatures["metadata"].run({})["metadata"]
    return json.loads(value.item() if isinstance(value, np.ndarray) else value)


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
    `serving.errors.error_message` and `serving.rest.http_status` turn it into an
    answer). A queue per signature; while every worker is busy, requests wait,
    and the next free worker runs all the compatible waiting ones (up to
    `max_batch` instances) as one call, so an idle server adds no latency and a
    busy one batches.
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
