"""The split rule: a stable hash of each image's bytes, plus a guarantee for small artists.

Every image gets u = the first 64 bits of sha256(file bytes) / 2**64, and
u < 0.8 -> train, u < 0.9 -> validation, else test. That depends on nothing
but the image itself, so adding or removing files never moves another image,
on any machine, and byte-identical copies always land in the same split.

Per artist this is 80/10/10 in expectation, not exactly: an artist with n
images can miss a split (probability ~0.9**n). So for an artist with at least
MIN_IMAGES_FOR_ALL_SPLITS images, each empty split takes the one image whose
u is nearest to that split's interval, from a split that keeps at least one.
The trade-off: only in such an artist can adding or removing an image move
one other image (the one the guarantee moved), and the report lists every
such move. Copies filed under two artists are never moved, so they stay in
one split together.

Folds, for cross-validation: fold k rotates u by k / FOLDS before the rule,
u_k = (u + k / FOLDS) mod 1. Fold 0 is the rule above. As the test fraction is
1 / FOLDS, the test splits of folds 0..FOLDS-1 are disjoint and together hold
every image (but for the guarantee's moves), so FOLDS runs are tested on
every painting once.
"""

import collections
import dataclasses

SPLITS = ("train", "validation", "test")
FRACTIONS = (0.8, 0.1, 0.1)
MIN_IMAGES_FOR_ALL_SPLITS = 3
FOLDS = round(1 / FRACTIONS[-1])
_HASH_BITS = 64


def _intervals() -> dict[str, tuple[float, float]]:
    bounds, low = {}, 0.0
    for split, fraction in zip(SPLITS, FRACTIONS):
        bounds[split] = (low, low + fraction)
        low += fraction
    bounds[SPLITS[-1]] = (bounds[SPLITS[-1]][0], 1.0)  # No float gap at the top.
    return bounds


INTERVALS = _intervals()


@dataclasses.dataclass(frozen=True)
class Item:
    """One stored image as the split rule sees it."""

    key: str
    artist: str
    sha256: str
    movable: bool = True  # False for bytes also filed under another artist.


def check_fold(fold: int) -> int:
    if not (isinstance(fold, int) and 0 <= fold < FOLDS):
        raise ValueError(f"split fold must be an integer in 0..{FOLDS - 1}, not {fold!r}")
    return fold


def hash_fraction(sha256: str, fold: int = 0) -> float:
    """u in [0, 1) from the first 64 bits of a hex sha256, rotated for `fold`."""
    rotated = int(sha256[: _HASH_BITS // 4], 16) + check_fold(fold) * 2**_HASH_BITS // FOLDS
    return rotated % 2**_HASH_BITS / 2**_HASH_BITS


def hash_split(sha256: str, fold: int = 0) -> str:
    u = hash_fraction(sha256, fold)
    for split in SPLITS:
        if u < INTERVALS[split][1]:
            return split
    return SPLITS[-1]


def _distance(u: float, split: str) -> float:
    low, high = INTERVALS[split]
    return 0.0 if low <= u < high else min(abs(u - low), abs(u - high))


def _fill_empty_splits(items: list[Item], split_of: dict[str, str], fold: int
                       ) -> tuple[list[dict], list[dict]]:
    moves, unmet = [], []
    for target in SPLITS:
        sizes = collections.Counter(split_of[item.key] for item in items)
        if sizes[target]:
            continue
        candidates = [i for i in items if i.movable and sizes[split_of[i.key]] >= 2]
        if not candidates:
            unmet.append({"artist": items[0].artist, "split": target})
            continue
        best = min(candidates,
                   key=lambda i: (_distance(hash_fraction(i.sha256, fold), target), i.key))
        moves.append({"artist": best.artist, "file": best.key,
                      "from": split_of[best.key], "to": target})
        split_of[best.key] = target
    return moves, unmet


def assign(items: list[Item], fold: int = 0) -> tuple[dict[str, str], list[dict], list[dict]]:
    """`{key: split}`, the guarantee's moves, and splits it could not fill."""
    split_of = {item.key: hash_split(item.sha256, fold) for item in items}
    by_artist = collections.defaultdict(list)
    for item in sorted(items, key=lambda i: i.key):
        by_artist[item.artist].append(item)
    moves, unmet = [], []
    for artist in sorted(by_artist):
        group = by_artist[artist]
        if len(group) >= MIN_IMAGES_FOR_ALL_SPLITS:
            artist_moves, artist_unmet = _fill_empty_splits(group, split_of, fold)
            moves += artist_moves
            unmet += artist_unmet
    return split_of, moves, unmet
