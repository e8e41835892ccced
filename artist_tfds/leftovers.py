"""Folders that killed builds leave behind: named, with their size, never read.

TFDS builds into `incomplete.XXXXXX_<version>/` beside the version's folder
and renames it when the build succeeds. An exception (Ctrl-C included)
removes it; a build killed outright (SIGKILL, the OOM killer, a lost machine)
leaves it. Such a folder is never loaded and a rerun builds afresh in a new
one, so it only takes space: each build names the ones it finds. They are
not deleted here, since another build of the same dataset may be writing one.

A build's own scratch folder (decoded and re-encoded images, in the system's
temporary directory) is different: it records its owner's process id, so
`work_dir` can delete those whose owner is gone.
"""

import contextlib
import os
import shutil
import tempfile

from absl import logging
from etils import epath
from tensorflow_datasets.core import constants


def find(build_dir: str | os.PathLike) -> list[epath.Path]:
    """Incomplete folders of the same version beside `build_dir` (the running build's own)."""
    build_dir = epath.Path(build_dir)
    prefix, name = constants.INCOMPLETE_PREFIX, build_dir.name
    if not name.startswith(prefix) or "_" not in name:
        return []
    version = name.split("_", 1)[1]  # incomplete.AB12CD_1.0.0 -> 1.0.0
    return sorted(path for path in build_dir.parent.glob(f"{prefix}*_{version}")
                  if path.name != name and path.is_dir())


def size_bytes(path: str | os.PathLike) -> int:
    """Bytes in the files under `path`."""
    return sum(os.path.getsize(os.path.join(root, file))
               for root, _, files in os.walk(path) for file in files)


def warn(build_dir: str | os.PathLike) -> list[epath.Path]:
    """Logs one warning per folder `find` returns (path, size, what to do); returns them."""
    stale = find(build_dir)
    for path in stale:
        logging.warning(
            "%s (%.1f MB) was left by an interrupted build; it is not used and this build "
            "starts afresh. Delete it to reclaim the space, unless another build of this "
            "dataset is running now.", path, size_bytes(path) / 1e6)
    return stale


OWNER_FILE = "owner.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # Someone else's live process.
        return True
    return True


def remove_orphans(prefix: str, parent: str | None = None) -> list[str]:
    """Deletes `prefix`* scratch folders in `parent` (default: the temp dir) whose owner died."""
    parent = parent or tempfile.gettempdir()
    removed = []
    for name in sorted(n for n in os.listdir(parent) if n.startswith(prefix)):
        path = os.path.join(parent, name)
        try:
            with open(os.path.join(path, OWNER_FILE), encoding="utf-8") as f:
                owner = int(f.read().strip())
        except (OSError, ValueError):  # Not a build's scratch folder: leave it.
            continue
        if not _alive(owner):
            size = size_bytes(path)
            shutil.rmtree(path, ignore_errors=True)
            logging.info("Removed %s (%.1f MB), the scratch folder of an interrupted build.",
                         path, size / 1e6)
            removed.append(path)
    return removed


@contextlib.contextmanager
def work_dir(prefix: str):
    """A scratch folder for one build, removed at the end, and by a later build if this one is killed."""
    remove_orphans(prefix)
    with tempfile.TemporaryDirectory(prefix=prefix) as path:
        with open(os.path.join(path, OWNER_FILE), "w", encoding="utf-8") as f:
            f.write(str(os.getpid()))
        yield path
