"""A process pool for the default (non-Beam) build: Pillow work on every core, results in order."""

import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
# Small chunks keep every core busy to the end (one 1 MP JPEG takes ~10 ms);
# each result sent back is a few bytes, so the extra IPC costs little.
_CHUNKS_PER_WORKER = 16
_MAX_CHUNK = 4


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows.
        return os.cpu_count() or 1


def _call(job: Callable[[], T]) -> T:
    return job()


def run(jobs: Sequence[Callable[[], T]], *, processes: int | None = None) -> list[T]:
    """`[job() for job in jobs]`, spread over `processes` (default: every core)."""
    processes = min(processes or available_cpus(), len(jobs))
    if processes <= 1:
        return [job() for job in jobs]
    # fork: workers start in milliseconds, with the modules already imported
    # (spawn would re-import TensorFlow in each). They run only Pillow/hashlib.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    chunk = max(1, min(_MAX_CHUNK, len(jobs) // (processes * _CHUNKS_PER_WORKER)))
    with context.Pool(processes) as pool:
        return pool.map(_call, jobs, chunksize=chunk)
