"""The wheel as a user installs it: one command, no generic top-level modules."""

import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import ARTISTS, ENV, ROOT, encode, picture

# What the wheel may put at the top of site-packages: the commands' package and the stages.
PACKAGES = {"artist_id", "artist_tfds", "pipeline", "serving", "trainer"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> str:
    """A non-editable wheel built from a copy of the checkout (the build writes build/)."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    for name in files:
        if os.path.isfile(os.path.join(ROOT, name)):
            os.makedirs(os.path.dirname(source / name), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, name), source / name)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                             "--no-build-isolation", "--quiet", "-w", str(out), str(source)],
                            env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    [name] = os.listdir(out)
    return str(out / name)


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> str:
    """The wheel installed into a directory of its own (its dependencies: this venv's)."""
    target = tmp_path_factory.mktemp("site")
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet",
                             "--target", str(target), wheel], env=ENV, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return str(target)


def test_the_wheel_installs_only_the_projects_packages(wheel):
    with zipfile.ZipFile(wheel) as archive:
        top = {name.split("/")[0] for name in archive.namelist()}
        entry_points = next(archive.read(name).decode() for name in archive.namelist()
                            if name.endswith(".dist-info/entry_points.txt"))
    assert {name for name in top if not name.endswith(".dist-info")} == PACKAGES
    assert "artist-id = artist_id.cli:run" in entry_points
    # The recipes come with the package; tools/ and benchmarks/ stay in the clone.
    assert any(name == "artist_id/configs/original.py" for name in archive.namelist())


def test_the_installed_command_names_an_artist_from_another_directory(
        installed, tiny_saved_model, tmp_path):
    env = {**ENV, "PYTHONPATH": installed}
    (tmp_path / "painting.jpg").write_bytes(encode(picture(3, 40, 50)))
    command = os.path.join(installed, "bin", "artist-id")
    result = subprocess.run([sys.executable, command, "predict",
                             f"--model_dir={tiny_saved_model}", "--format=json",
                             str(tmp_path / "painting.jpg")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.splitlines()[-1])
    assert answer["file"].endswith("painting.jpg")
    assert answer["predictions"][0]["artist"] in ARTISTS
    where = subprocess.run([sys.executable, "-c", "import artist_id; print(artist_id.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True)
    assert where.stdout.strip().startswith(installed)
    for generic in ("train", "predict", "evaluate", "tools", "configs"):
        imported = subprocess.run([sys.executable, "-c", f"import {generic}"], cwd=tmp_path,
                                  env=env, capture_output=True, text=True)
        assert imported.returncode != 0 and "ModuleNotFoundError" in imported.stderr, generic


def test_the_command_lists_its_commands_and_refuses_an_unknown_one():
    from artist_id import cli

    result = subprocess.run([sys.executable, "-m", "artist_id", "--help"], env=ENV, cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert [line.split()[0] for line in result.stdout.splitlines()
            if line.startswith("  ")] == list(cli.COMMANDS)
    result = subprocess.run([sys.executable, "-m", "artist_id", "paint"], env=ENV, cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "unknown command 'paint'" in result.stderr
