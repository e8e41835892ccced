"""Scratch folders of builds: a killed build's are removed by the next, a running build's kept."""

import os
import subprocess
import sys

from artist_tfds import leftovers


def _scratch(parent, name: str, owner: int | None) -> str:
    path = parent / name
    path.mkdir()
    (path / "spill-0.jpg").write_bytes(b"x" * 1000)
    if owner is not None:
        (path / leftovers.OWNER_FILE).write_text(str(owner))
    return str(path)


def test_remove_orphans_deletes_only_folders_whose_owner_died(tmp_path):
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()  # Its process id now names no process.
    orphan = _scratch(tmp_path, "best_artworks_a1", finished.pid)
    running = _scratch(tmp_path, "best_artworks_b2", os.getpid())
    unowned = _scratch(tmp_path, "best_artworks_c3", None)
    other = _scratch(tmp_path, "something_else", finished.pid)
    assert leftovers.remove_orphans("best_artworks_", str(tmp_path)) == [orphan]
    assert not os.path.exists(orphan)
    assert all(os.path.exists(p) for p in (running, unowned, other))


def test_work_dir_names_its_owner_and_is_removed_after(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(leftovers.tempfile, "tempdir", None)  # Re-read TMPDIR.
    with leftovers.work_dir("best_artworks_") as path:
        assert os.path.dirname(path) == str(tmp_path)
        with open(os.path.join(path, leftovers.OWNER_FILE)) as f:
            assert int(f.read()) == os.getpid()
    assert not os.path.exists(path)
