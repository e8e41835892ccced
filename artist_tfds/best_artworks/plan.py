"""After decoding: the split of every stored image, and the report that explains it."""

import dataclasses

from artist_tfds.best_artworks import catalog as catalog_lib
from artist_tfds.best_artworks import images
from artist_tfds.best_artworks import report
from artist_tfds.best_artworks import splits


@dataclasses.dataclass(frozen=True)
class Plan:
    """`split_of` holds exactly the keys to write; the report describes the build."""

    split_of: dict[str, str]
    report: dict


def make_plan(
    catalog: catalog_lib.Catalog, outcomes: list[images.Outcome], *, info: dict, fold: int = 0
) -> Plan:
    """The same plan from the same outcomes, whatever order they arrive in (Beam)."""
    outcomes = sorted(outcomes, key=lambda o: o.key)
    failed = {o.key for o in outcomes if o.skip}
    stored = [c for c in catalog.candidates if c.key not in failed]
    if not stored:
        decode_skips = [{"file": o.key, "reason": o.skip} for o in outcomes if o.skip]
        raise catalog_lib.no_valid_images_error(
            info["manual_dir"], list(catalog.skipped) + decode_skips)
    items = [splits.Item(c.key, c.artist.name, c.sha256, movable=not c.shared) for c in stored]
    split_of, moves, unmet = splits.assign(items, fold)
    return Plan(split_of, report.build(catalog, outcomes, split_of, moves, unmet, info))
