"""TensorFlow Serving's model-base layout: MODEL_BASE/1, MODEL_BASE/2, ..., the highest served.

Commands given a SavedModel directory use it; given a model base, they use
its highest version (`resolve`). A new version is written beside the old
ones under a hidden name and renamed into place when whole (`publish`): a
crash leaves no numbered directory half-written, and TensorFlow Serving,
which watches the base for numbered directories, never loads a partial one.
"""

import os
import shutil

SAVED_MODEL_FILE = "saved_model.pb"
# Hidden from TensorFlow Serving (not a number) and from `versions`.
PARTIAL_PREFIX = ".partial-"


def is_saved_model(path: str) -> bool:
    return os.path.isfile(os.path.join(path, SAVED_MODEL_FILE))


def versions(base: str) -> list[int]:
    """The numbered SavedModels in `base`, ascending."""
    if not os.path.isdir(base):
        return []
    return sorted(int(name) for name in os.listdir(base)
                  if name.isdigit() and is_saved_model(os.path.join(base, name)))


def resolve(path: str) -> str:
    """A SavedModel directory as given, or a model base's highest version; ValueError if neither."""
    if is_saved_model(path):
        return path
    numbered = versions(path)
    if numbered:
        return os.path.join(path, str(numbered[-1]))
    raise ValueError(f"{path}: no SavedModel there ({SAVED_MODEL_FILE}) and no numbered "
                     "versions of one (MODEL_BASE/1, MODEL_BASE/2, ...)")


def next_version(model_dir: str) -> str | None:
    """MODEL_BASE/N+1 for a SavedModel at MODEL_BASE/N (N the highest there); None for a
    SavedModel outside that layout."""
    base, name = os.path.split(os.path.normpath(model_dir))
    if not name.isdigit():
        return None
    return os.path.join(base, str(max([int(name), *versions(base)]) + 1))


def partial_dir(target: str) -> str:
    """Where `target` is written before `publish` renames it into place."""
    base, name = os.path.split(os.path.normpath(target))
    return os.path.join(base, f"{PARTIAL_PREFIX}{name}-{os.getpid()}")


def publish(partial: str, target: str) -> None:
    """Renames a whole directory into place (atomic on one file system); never overwrites."""
    if os.path.exists(target):
        shutil.rmtree(partial, ignore_errors=True)
        raise FileExistsError(f"{target} exists already; nothing was written")
    os.rename(partial, target)


def stale_partials(base: str) -> list[str]:
    """Leftovers of writes that were killed (not this process's)."""
    if not os.path.isdir(base):
        return []
    mine = f"-{os.getpid()}"
    return sorted(os.path.join(base, name) for name in os.listdir(base)
                  if name.startswith(PARTIAL_PREFIX) and not name.endswith(mine))
