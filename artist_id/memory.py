"""Process-wide allocator settings for input pipelines that move large batches.

A training batch of 32 float32 images at 300 px is 34.6 MB: above glibc's
largest dynamic mmap threshold (32 MB), so by default every such batch is a
fresh `mmap` whose ~8,400 pages fault in one by one and are unmapped again
when the batch is freed. `tune_malloc` serves large blocks from the heap
instead and keeps freed memory for reuse, with few arenas so that the memory
kept stays bounded (`benchmarks/pipeline_bench.py --notune_malloc` measures
the difference; docs/pipeline.md).

Call it once, early, from an entry point (`train.py`, the benchmarks), not
from library code: it changes `malloc` for the whole process. A no-op where
the C library is not glibc.

Processes this project does not start (TensorFlow Serving, a script that
loads the SavedModel, `predict.py`) get the same settings from the
environment: `GLIBC_TUNABLES` below is the value to export (docs/serving.md).
"""

import ctypes
import ctypes.util
import os

from absl import logging

# mallopt(3) parameters.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

MMAP_THRESHOLD = 256 << 20  # Blocks up to this size come from the heap, not mmap.
TRIM_THRESHOLD = 128 << 20  # Free memory kept at the top of a heap before returning it.
MAX_ARENAS = 4  # glibc's default (8 per core) lets kept memory grow with threads.
# The same settings for any process, read by glibc at start-up (glibc >= 2.26):
#   GLIBC_TUNABLES=<this> tensorflow_model_server ...
GLIBC_TUNABLES = (f"glibc.malloc.mmap_threshold={MMAP_THRESHOLD}:"
                  f"glibc.malloc.trim_threshold={TRIM_THRESHOLD}:"
                  f"glibc.malloc.arena_max={MAX_ARENAS}")


def tune_malloc() -> bool:
    """Applies the settings above to this process; True if the C library took them."""
    if os.environ.get("ARTIST_ID_DEFAULT_MALLOC"):  # An escape hatch, e.g. to compare.
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    arenas = max(2, min(MAX_ARENAS, os.cpu_count() or 2))
    applied = all(mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (_M_ARENA_MAX, arenas)))
    logging.debug("malloc tuning %s", "applied" if applied else "refused")
    return applied
