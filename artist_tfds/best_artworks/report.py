"""The build report: counts per artist and split, skipped files, duplicates, unmatched artists."""

import collections
import json

from etils import epath

from artist_tfds.best_artworks import catalog as catalog_lib
from artist_tfds.best_artworks import images
from artist_tfds.best_artworks import splits

FILE_NAME = "build_report.json"
_MAX_NOTES = 3  # In the logged summary; the report holds them all.


def _artist_rows(catalog, split_of, skipped, unmatched) -> list[dict]:
    counts = collections.defaultdict(collections.Counter)
    for candidate in catalog.candidates:
        if candidate.key in split_of:
            counts[candidate.artist.name][split_of[candidate.key]] += 1
    skipped_by_artist = collections.Counter(s.get("artist") for s in skipped)
    dropped_by_artist = collections.Counter()
    for duplicate in catalog.duplicates:
        dropped_by_artist[duplicate["artist"]] += len(duplicate["dropped"])
    rows = []
    for name in sorted(catalog.folders):
        split_counts = {split: counts[name][split] for split in splits.SPLITS}
        rows.append({
            "name": name,
            "folders": catalog.folders[name],
            "in_artists_csv": name not in unmatched,
            "files_found": catalog.found.get(name, 0),
            "skipped": skipped_by_artist[name],
            "duplicates_dropped": dropped_by_artist[name],
            "is_class": name in catalog.class_names,
            "examples": sum(split_counts.values()),
            **split_counts,
        })
    return rows


def build(
    catalog: catalog_lib.Catalog,
    outcomes: list[images.Outcome],
    split_of: dict[str, str],
    moves: list[dict],
    unmet: list[dict],
    info: dict,
) -> dict:
    """The whole report as one JSON-ready dict."""
    artist_of = {c.key: c.artist.name for c in catalog.candidates}
    decode_skips = [{"file": o.key, "reason": o.skip, "artist": artist_of[o.key]}
                    for o in outcomes if o.skip]
    skipped = sorted(list(catalog.skipped) + decode_skips, key=lambda s: s["file"])
    unmatched = set(catalog.unmatched)
    artists = _artist_rows(catalog, split_of, skipped, unmatched)
    split_totals = collections.Counter(split_of.values())
    report = {
        **info,
        "layout": catalog.layout,
        "notes": list(catalog.notes),
        "totals": {
            "files_found": catalog.files_found,
            "examples": len(split_of),
            **{split: split_totals[split] for split in splits.SPLITS},
            "classes": len(catalog.class_names),
            "skipped": len(skipped),
            "skipped_by_reason": dict(collections.Counter(
                images.reason_of(s["reason"]) for s in skipped).most_common()),
            "duplicates_dropped": sum(len(d["dropped"]) for d in catalog.duplicates),
            "shared_between_artists": len(catalog.shared),
        },
        "class_names": list(catalog.class_names),
        "artists": artists,
        "classes_without_examples": [a["name"] for a in artists if a["is_class"] and not a["examples"]],
        "excluded_artists": list(catalog.excluded),
        "unmatched_artists": sorted(unmatched),
        "artists_csv_rows_without_images": list(catalog.csv_without_images),
        "skipped": skipped,
        "duplicates": list(catalog.duplicates),
        "shared_between_artists": [
            {**group, "split": split_of.get(group["files"][0])} for group in catalog.shared],
        "split_guarantee_moves": moves,
        "split_guarantee_unmet": unmet,
    }
    report["summary"] = summary_lines(report)
    return report


def _counts(counter: dict) -> str:
    return ", ".join(f"{n:,} {what}" for what, n in counter.items())


def summary_lines(report: dict) -> list[str]:
    """A few lines for the log: what was built and what needs the user's attention."""
    totals = report["totals"]
    split_text = ", ".join(f"{split} {totals[split]:,}" for split in splits.SPLITS)
    lines = [
        f"{report['dataset']}/{report['config']} {report['version']}: {totals['examples']:,} "
        f"examples of {totals['classes']} artists ({split_text}) from {totals['files_found']:,} "
        f"files in {report['manual_dir']} (layout {report['layout']}).",
        f"Skipped files: {totals['skipped']:,}"
        + (f" ({_counts(totals['skipped_by_reason'])})" if totals["skipped"] else "")
        + f"; duplicate copies collapsed: {totals['duplicates_dropped']:,}; "
        f"images under more than one artist: {totals['shared_between_artists']:,}.",
    ]
    notes = report["notes"]
    lines += notes[:_MAX_NOTES] + ([f"… and {len(notes) - _MAX_NOTES} more notes."]
                                   if len(notes) > _MAX_NOTES else [])
    if report["unmatched_artists"] or report["artists_csv_rows_without_images"]:
        lines.append(
            f"artists.csv: artists without a row: {len(report['unmatched_artists'])} "
            f"{report['unmatched_artists'][:5]}; rows without images: "
            f"{len(report['artists_csv_rows_without_images'])}.")
    if report["excluded_artists"]:
        lines.append(f"Artists left out by this config: {len(report['excluded_artists'])}.")
    if report["split_guarantee_moves"] or report["split_guarantee_unmet"]:
        lines.append(
            "Images moved to give small artists every split: "
            f"{len(report['split_guarantee_moves'])}; splits left empty: "
            f"{len(report['split_guarantee_unmet'])}.")
    if report["classes_without_examples"]:
        lines.append(f"Classes without any example: {report['classes_without_examples']}.")
    return lines


def write(report: dict, path: str) -> None:
    epath.Path(path).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")


def read(path: str) -> dict:
    return json.loads(epath.Path(path).read_text())
