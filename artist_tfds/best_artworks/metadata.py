"""artists.csv: each artist's years, genre, nationality and Wikipedia link."""

import csv
import dataclasses
import io
import pathlib

from artist_tfds.best_artworks import naming

# Columns copied into every example; `bio` and `paintings` are not.
FIELDS = ("name", "years", "genre", "nationality", "wikipedia")


@dataclasses.dataclass(frozen=True)
class Artist:
    """An artist as stored with each example; fields other than `name` may be empty."""

    name: str
    years: str = ""
    genre: str = ""
    nationality: str = ""
    wikipedia: str = ""

    def as_feature(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def _clean(value: str | None) -> str:
    return " ".join(naming.repair(value or "").split())


def read_artists_csv(path: str | pathlib.Path) -> tuple[list[Artist], list[str]]:
    """The rows of artists.csv, and problems found (unreadable, no `name` column, …)."""
    try:
        return _parse(_decode(pathlib.Path(path).read_bytes()))
    except (OSError, csv.Error) as error:
        return [], [f"artists.csv ignored: {error}"]


def _parse(text: str) -> tuple[list[Artist], list[str]]:
    reader = csv.DictReader(io.StringIO(text))
    columns = {(field or "").strip().lower(): field for field in reader.fieldnames or []}
    if "name" not in columns:
        return [], [f"artists.csv ignored: it has no `name` column (columns: {sorted(columns)})."]
    missing = [field for field in FIELDS if field not in columns]
    problems = [f"artists.csv has no column {field!r}; stored empty." for field in missing]
    artists = []
    for row in reader:
        values = {f: _clean(row.get(columns[f])) for f in FIELDS if f in columns}
        if values["name"]:
            artists.append(Artist(**values))
    return artists, problems


def resolve(
    display_names: list[str], rows: list[Artist]
) -> tuple[dict[str, Artist], list[str], list[str]]:
    """Matches each display name to its artists.csv row.

    Returns `{display name: Artist}` (the csv row, or a bare Artist when there
    is none), the display names without a row, and the csv names without images.
    """
    by_key: dict[str, Artist] = {}
    for row in rows:
        by_key.setdefault(naming.match_key(row.name), row)
    resolved, unmatched, used = {}, [], set()
    for display in sorted(set(display_names)):
        row = by_key.get(naming.match_key(display))
        if row is None:
            unmatched.append(display)
            row = Artist(name=display)
        else:
            used.add(naming.match_key(row.name))
        resolved[display] = row
    without_images = sorted(r.name for k, r in by_key.items() if k not in used)
    return resolved, unmatched, without_images
