"""Recognises the layout of a manual_dir and lists every file under its artist's folder."""

import dataclasses
import os
import pathlib
import re

ARTISTS_CSV = "artists.csv"
KAGGLE = "kaggle"  # images/images/<Artist>/…, resized/resized/…, artists.csv
KAGGLE_RESIZED = "kaggle_resized"  # only the flat resized/resized/<Artist>_<n>.jpg
IMAGES_FOLDERS = "images_folders"  # images/<Artist>/…
ARTIST_FOLDERS = "artist_folders"  # <Artist>/…
# Folders that archive tools and operating systems add, never artists.
_SYSTEM_DIRS = frozenset({"__MACOSX", "$RECYCLE.BIN", "System Volume Information"})
# `Vincent_van_Gogh_12.jpg` -> `Vincent_van_Gogh`: the artist is all before the last `_<n>`.
_FLAT_NAME = re.compile(r"^(?P<artist>.+?)_(?P<index>\d+)$")
_MAX_LISTED = 20
EXPECTED_LAYOUTS = """\
  - the Kaggle download unzipped: images/images/<Artist_Name>/<Artist_Name>_<n>.jpg
    (with resized/resized/ and artists.csv next to images/);
  - only the flat Kaggle folder: resized/resized/<Artist_Name>_<n>.jpg;
  - images/<Artist>/<any files>;
  - <Artist>/<any files> (one folder per artist, directly in manual_dir).
An artists.csv (columns name, years, genre, nationality, wikipedia) next to
them is optional."""


class LayoutError(ValueError):
    """manual_dir holds no layout this builder recognises."""


@dataclasses.dataclass(frozen=True)
class SourceFile:
    """One file found under an artist."""

    key: str  # Path relative to manual_dir (POSIX, printable): the example key.
    path: str  # Absolute path to read.
    folder: str  # The artist's folder name as found on disk (flat layout: the name prefix).


@dataclasses.dataclass(frozen=True)
class Scan:
    """What manual_dir holds: its layout, every file by artist folder, and notes."""

    root: str
    layout: str
    files: tuple[SourceFile, ...]
    artists_csv: str | None
    notes: tuple[str, ...] = ()
    # Files whose artist cannot be told (flat layout, name not `<Artist>_<n>`).
    unattributed: tuple[str, ...] = ()


def _is_system(name: str) -> bool:
    return name.startswith(".") or name in _SYSTEM_DIRS


def _subdirs(path: pathlib.Path) -> list[pathlib.Path]:
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir() if p.is_dir() and not _is_system(p.name))


def _files_directly_in(path: pathlib.Path) -> list[pathlib.Path]:
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir() if p.is_file())


def _files_below(folder: pathlib.Path) -> list[pathlib.Path]:
    """Every file under `folder`, subfolders included, system folders skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not _is_system(d))
        found.extend(pathlib.Path(dirpath, name) for name in filenames)
    return sorted(found)


def _key(root: pathlib.Path, path: pathlib.Path) -> str:
    relative = path.relative_to(root).as_posix()
    return relative.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _scan_folders(root: pathlib.Path, parent: pathlib.Path) -> list[SourceFile]:
    return [
        SourceFile(key=_key(root, path), path=str(path), folder=folder.name)
        for folder in _subdirs(parent)
        for path in _files_below(folder)
    ]


def _scan_flat(root: pathlib.Path, folder: pathlib.Path) -> tuple[list[SourceFile], list[str]]:
    files, unattributed = [], []
    for path in _files_directly_in(folder):
        match = _FLAT_NAME.match(path.stem)
        if match:
            files.append(SourceFile(_key(root, path), str(path), match["artist"]))
        else:
            unattributed.append(_key(root, path))
    return files, unattributed


def describe(root: pathlib.Path) -> str:
    """A short listing of what a folder holds, for error messages."""
    if not root.is_dir():
        return f"{root} does not exist or is not a folder."
    entries = sorted(root.iterdir())
    if not entries:
        return f"{root} is empty."
    lines = []
    for entry in entries[:_MAX_LISTED]:
        if entry.is_dir():
            children = list(entry.iterdir())
            lines.append(f"  {entry.name}/  ({len(children)} entries)")
        else:
            lines.append(f"  {entry.name}")
    if len(entries) > _MAX_LISTED:
        lines.append(f"  … and {len(entries) - _MAX_LISTED} more")
    return f"{root} holds:\n" + "\n".join(lines)


def _layout_error(root: pathlib.Path) -> LayoutError:
    hint = ""
    if any(p.suffix.lower() == ".zip" for p in _files_directly_in(root)):
        hint = "\nIt holds a .zip: unzip it into this folder first."
    return LayoutError(
        f"No known layout of paintings in --manual_dir.\n{describe(root)}\n"
        f"Expected one of:\n{EXPECTED_LAYOUTS}{hint}"
    )


def scan(manual_dir: str | os.PathLike) -> Scan:
    """Detects the layout of `manual_dir` and lists its files; raises LayoutError."""
    root = pathlib.Path(manual_dir)
    if not root.is_dir():
        raise _layout_error(root)
    csv_path = root / ARTISTS_CSV
    artists_csv = str(csv_path) if csv_path.is_file() else None
    originals = root / "images" / "images"
    resized = root / "resized" / "resized"
    if _subdirs(originals):
        notes = ()
        if resized.is_dir():
            notes = ("resized/resized/ ignored: the originals in images/images/ are used.",)
        files = _scan_folders(root, originals)
        return Scan(str(root), KAGGLE, tuple(files), artists_csv, notes)
    for flat in (resized, root / "resized"):
        if _files_directly_in(flat):
            files, unattributed = _scan_flat(root, flat)
            return Scan(str(root), KAGGLE_RESIZED, tuple(files), artists_csv, (),
                        tuple(unattributed))
    if _subdirs(root / "images"):
        return Scan(str(root), IMAGES_FOLDERS, tuple(_scan_folders(root, root / "images")),
                    artists_csv)
    if _subdirs(root):
        files = _scan_folders(root, root)
        notes = tuple(
            f"{path.name} ignored: files directly in manual_dir belong to no artist."
            for path in _files_directly_in(root) if path.name != ARTISTS_CSV
        )
        return Scan(str(root), ARTIST_FOLDERS, tuple(files), artists_csv, notes)
    raise _layout_error(root)
