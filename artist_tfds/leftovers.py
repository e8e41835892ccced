"""Folders that killed builds leave behind: named, with their size, never read.

TFDS builds into `incomplete.XXXXXX_<version>/` beside the version's folder
and renames it when the build succeeds. An exception (Ctrl-C included)
removes it; a build killed outright (SIGKILL, the OOM killer, a lost machine)
leaves it. Such a folder is never loaded and a rerun builds afresh in a new
one, so it only takes space: each build names the ones it finds. They are
not deleted here, since another build of the same dataset may be writing one.
"""

import os

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
