"""From scanned files and their inspections to the candidates worth decoding, by artist.

Decides, before any pixel is decoded: each file's artist (repaired name,
artists.csv row), which byte-identical copies collapse, which artists make
the config's cut, and hence the class names.
"""

import collections
import dataclasses

from artist_tfds.best_artworks import images
from artist_tfds.best_artworks import layout
from artist_tfds.best_artworks import metadata
from artist_tfds.best_artworks import naming


class NoValidImagesError(ValueError):
    """Nothing in manual_dir can be stored."""


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A file to decode and store: one per (artist, content)."""

    key: str
    path: str
    sha256: str
    artist: metadata.Artist
    shared: bool = False  # The same bytes are also stored under another artist.

    def example(self, jpeg: bytes) -> dict:
        """The features of this painting, stored as `jpeg`."""
        return {
            "image": jpeg,
            "label": self.artist.name,
            "file_name": self.key,
            "artist": self.artist.as_feature(),
        }


@dataclasses.dataclass(frozen=True)
class Catalog:
    """Everything known before decoding; `candidates` are sorted by key."""

    layout: str
    files_found: int
    candidates: tuple[Candidate, ...]
    class_names: tuple[str, ...]
    folders: dict[str, list[str]]  # Artist -> folder names on disk (twins merged).
    found: dict[str, int]  # Artist -> files found in its folders.
    skipped: tuple[dict, ...]  # {"file", "reason", "artist"?}
    duplicates: tuple[dict, ...]  # Same bytes twice under one artist: one kept.
    shared: tuple[dict, ...]  # Same bytes under two or more artists.
    excluded: tuple[dict, ...]  # Artists left out by the config (`top_artists`).
    unmatched: tuple[str, ...]  # Artists without an artists.csv row.
    csv_without_images: tuple[str, ...]
    notes: tuple[str, ...]


def no_valid_images_error(manual_dir: str, skipped: list[dict] | tuple[dict, ...]) -> NoValidImagesError:
    reasons = collections.Counter(images.reason_of(s["reason"]) for s in skipped)
    listed = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common()) or "no files at all"
    return NoValidImagesError(
        f"No valid painting found under {manual_dir} ({listed}). Point --manual_dir "
        "at the folder holding the paintings (see MANUAL_DOWNLOAD_INSTRUCTIONS); "
        "every image must be a JPEG/PNG/GIF/BMP/TIFF/WebP of at least "
        f"{images.MIN_SIDE} px a side."
    )


def _collapse_duplicates(files: list[tuple[layout.SourceFile, str]]) -> tuple[list, list[dict]]:
    """Keeps the first key (in sorted order) of each content within one artist."""
    by_sha = collections.defaultdict(list)
    for source, sha256 in files:
        by_sha[sha256].append(source)
    kept, duplicates = [], []
    for sha256, sources in sorted(by_sha.items()):
        sources.sort(key=lambda s: s.key)
        kept.append((sources[0], sha256))
        if len(sources) > 1:
            duplicates.append({"sha256": sha256, "kept": sources[0].key,
                               "dropped": [s.key for s in sources[1:]]})
    return kept, duplicates


def _keep_top(kept_by_artist: dict, top_artists: int | None) -> tuple[dict, list[dict], tuple]:
    """The `top_artists` artists with the most distinct valid paintings (ties: by name)."""
    if top_artists is None or len(kept_by_artist) <= top_artists:
        return kept_by_artist, [], ()
    ranked = sorted(kept_by_artist, key=lambda a: (-len(kept_by_artist[a]), a.name))
    keep, drop = ranked[:top_artists], ranked[top_artists:]
    excluded = [{"artist": a.name, "paintings": len(kept_by_artist[a]),
                 "reason": f"not among the {top_artists} artists with the most paintings"}
                for a in drop]
    fewest = keep[-1]
    note = (f"Kept the {top_artists} artists with the most paintings; the fewest: "
            f"{fewest.name} with {len(kept_by_artist[fewest])}, the next left out: "
            f"{drop[0].name} with {len(kept_by_artist[drop[0]])}.")
    return {a: kept_by_artist[a] for a in keep}, excluded, (note,)


def _split_valid(scan: layout.Scan, inspections: list[images.Inspection]) -> tuple[list, list]:
    """(skipped entries, [(source, sha256)] of files worth decoding)."""
    skipped = [{"file": key, "reason": "no artist: the file name is not <Artist>_<n>"}
               for key in scan.unattributed]
    valid = []
    for source, inspection in zip(scan.files, inspections):
        if inspection.skip:
            skipped.append({"file": source.key, "reason": inspection.skip, "source": source})
        else:
            valid.append((source, inspection.sha256))
    return skipped, valid


def _shared_contents(kept_by_artist: dict) -> tuple[dict, list[dict]]:
    """{sha256: {artist: key}}, and the contents stored under more than one artist."""
    artists_of_sha = collections.defaultdict(dict)
    for artist, kept in kept_by_artist.items():
        for source, sha256 in kept:
            artists_of_sha[sha256][artist.name] = source.key
    shared = [{"sha256": sha, "files": sorted(owners.values()), "artists": sorted(owners)}
              for sha, owners in sorted(artists_of_sha.items()) if len(owners) > 1]
    return artists_of_sha, shared


def build(
    scan: layout.Scan,
    inspections: list[images.Inspection],
    csv_rows: list[metadata.Artist],
    *,
    top_artists: int | None = None,
    notes: tuple[str, ...] = (),
) -> Catalog:
    """Groups valid files by artist, collapses duplicates, keeps the `top_artists`."""
    displays = sorted({naming.display_name(f.folder) for f in scan.files})
    resolved, unmatched, without_images = metadata.resolve(displays, csv_rows)

    def artist_of(source: layout.SourceFile) -> metadata.Artist:
        return resolved[naming.display_name(source.folder)]

    skipped, valid = _split_valid(scan, inspections)
    for entry in skipped:
        if "source" in entry:
            entry["artist"] = artist_of(entry.pop("source")).name
    folders, found = collections.defaultdict(set), collections.Counter()
    for source in scan.files:
        folders[artist_of(source).name].add(naming.printable(source.folder))
        found[artist_of(source).name] += 1

    by_artist = collections.defaultdict(list)
    for source, sha256 in valid:
        by_artist[artist_of(source)].append((source, sha256))
    kept_by_artist, duplicates = {}, []
    for artist in sorted(by_artist, key=lambda a: a.name):
        kept_by_artist[artist], artist_duplicates = _collapse_duplicates(by_artist[artist])
        duplicates += [{"artist": artist.name, **d} for d in artist_duplicates]
    kept_by_artist, excluded, top_note = _keep_top(kept_by_artist, top_artists)

    artists_of_sha, shared = _shared_contents(kept_by_artist)
    candidates = sorted(
        (Candidate(source.key, source.path, sha256, artist, len(artists_of_sha[sha256]) > 1)
         for artist, kept in kept_by_artist.items() for source, sha256 in kept),
        key=lambda c: c.key,
    )
    has_csv = scan.artists_csv is not None
    return Catalog(
        layout=scan.layout,
        files_found=len(scan.files) + len(scan.unattributed),
        candidates=tuple(candidates),
        class_names=tuple(sorted(a.name for a in kept_by_artist)),
        folders={name: sorted(f) for name, f in sorted(folders.items())},
        found=dict(sorted(found.items())),
        skipped=tuple(sorted(skipped, key=lambda s: s["file"])),
        duplicates=tuple(duplicates),
        shared=tuple(shared),
        excluded=tuple(excluded),
        unmatched=tuple(unmatched) if has_csv else (),
        csv_without_images=tuple(without_images) if has_csv else (),
        notes=tuple(scan.notes) + tuple(notes) + top_note,
    )
