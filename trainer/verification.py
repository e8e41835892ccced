"""Is this painting by the artist its label claims? Scores and thresholds for the `verify`
signatures, fitted on the validation split (numpy only).

Two questions, one measure, the cosine similarity of embeddings:

* a claim (painting, artist): the painting's embedding against the claimed
  artist's direction in the cosine head (the model's own idea of that hand,
  enrolled artists included);
* a pair (painting, painting): their embeddings against each other, for
  artists the model has never seen.

Each decision accepts at most `false_accept` of the false claims (or pairs of
different hands) on validation: the threshold is that quantile of their
scores. The share of true ones it then accepts is measured beside it.
"""

import numpy as np

# Pairs of validation paintings scored at most (all of them below this count).
MAX_PAIRS = 200_000


def unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, np.float64)
    return rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-12)


def claim_scores(embeddings: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """[n, artists]: each painting's score against every artist's claim."""
    return unit(embeddings) @ unit(directions).T


def threshold_at(false_scores: np.ndarray, false_accept: float) -> float:
    """The lowest threshold accepting at most `false_accept` of `false_scores` (score >= t)."""
    ordered = np.sort(np.asarray(false_scores, np.float64))[::-1]
    allowed = int(np.floor(false_accept * len(ordered)))
    if allowed >= len(ordered):
        return float(ordered[-1])
    # Just above the first rejected false score: ties with it stay rejected.
    return float(np.nextafter(ordered[allowed], np.inf))


def pair_scores(embeddings: np.ndarray, labels: np.ndarray, *, max_pairs: int = MAX_PAIRS,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(cosine similarity, same artist) of pairs of distinct paintings: all of them, or
    `max_pairs` drawn by `seed` when there are more."""
    n = len(labels)
    first, second = np.triu_indices(n, k=1)
    if len(first) > max_pairs:
        chosen = np.random.default_rng(seed).choice(len(first), max_pairs, replace=False)
        first, second = first[chosen], second[chosen]
    x = unit(embeddings)
    labels = np.asarray(labels)
    return (x[first] * x[second]).sum(axis=1), labels[first] == labels[second]


def fit(embeddings: np.ndarray, labels: np.ndarray, directions: np.ndarray | None, *,
        false_accept: float) -> dict:
    """The stored thresholds and what they do on the split they were fitted on:
    {"false_accept", "claim": {"threshold", "true_accepted"} (with directions),
    "pair": {"threshold", "true_accepted"}}."""
    labels = np.asarray(labels)
    fitted = {"false_accept": false_accept, "fitted_on_paintings": int(len(labels))}
    if directions is not None and len(labels):
        scores = claim_scores(embeddings, directions)
        true = scores[np.arange(len(labels)), labels]
        false = scores[np.arange(scores.shape[1])[None, :] != labels[:, None]]
        threshold = threshold_at(false, false_accept)
        fitted["claim"] = {"threshold": threshold,
                           "true_accepted": float((true >= threshold).mean())}
    if len(labels) >= 2:
        scores, same = pair_scores(embeddings, labels)
        if same.any() and (~same).any():
            threshold = threshold_at(scores[~same], false_accept)
            fitted["pair"] = {"threshold": threshold,
                              "true_accepted": float((scores[same] >= threshold).mean())}
    return fitted
