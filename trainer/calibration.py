"""Confidence a user can read: temperature scaling, calibration error, and when to say "unknown".

All fitted on the validation split after training (numpy only), stored in the
SavedModel by `serving.export`, and measured on the test split by the report.
"""

import numpy as np

from serving import abstention

# Equal-width confidence bins of the expected calibration error (Guo et al. 2017).
ECE_BINS = 15
# Temperatures searched, log-spaced; then refined around the best.
_LOG_T_RANGE = (-3.0, 3.0)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def log_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """log p, with p = 0 (float32 underflow) kept finite."""
    return np.log(np.maximum(np.asarray(probabilities, np.float64), 1e-30))


def uncalibrated(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits) back from softmax(logits / T): log p = logits / T + constant."""
    return softmax(log_probabilities(probabilities) * temperature)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    rows = np.arange(len(labels))
    return float(-log_probabilities(probabilities)[rows, np.asarray(labels)].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 that minimises the NLL of softmax(logits / T) on (logits, labels).

    NLL is smooth and has one minimum in log T, so a coarse log-spaced search
    then a fine one around its best point is exact to ~0.1%.
    """
    if len(labels) == 0:
        return 1.0
    low, high = _LOG_T_RANGE
    for _ in range(3):
        grid = np.linspace(low, high, 61)
        losses = [negative_log_likelihood(softmax(logits, np.exp(t)), labels) for t in grid]
        best = int(np.argmin(losses))
        step = grid[1] - grid[0]
        low, high = grid[max(best - 1, 0)] - step, grid[min(best + 1, len(grid) - 1)] + step
    return float(np.exp(grid[best]))


def bin_index(confidence: np.ndarray, bins: int) -> np.ndarray:
    """Bin i holds confidences in (i/bins, (i+1)/bins]; exactly 0 falls in bin 0."""
    return np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)


def bin_totals(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
               ) -> dict[str, np.ndarray]:
    """Per equal-width confidence bin: paintings, their summed top probability, and right
    answers. All an ECE needs, and they add up across splits or runs (report.json keeps
    them; `benchmarks/calibration_pool.py` pools them)."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    index = bin_index(confidence, bins)
    return {"count": np.bincount(index, minlength=bins),
            "confidence": np.bincount(index, confidence, bins),
            "right": np.bincount(index, correct.astype(float), bins)}


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
                ) -> dict[str, np.ndarray]:
    """Per equal-width confidence bin: count, mean confidence, accuracy (NaN when empty)."""
    totals = bin_totals(probabilities, labels, bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"count": totals["count"], "confidence": totals["confidence"] / totals["count"],
                "accuracy": totals["right"] / totals["count"]}


def ece_of_totals(totals: dict) -> float:
    """sum over bins of (bin share) x |accuracy - mean confidence|, from `bin_totals`."""
    gaps = np.abs(np.asarray(totals["right"], float) - np.asarray(totals["confidence"], float))
    return float(gaps.sum() / max(int(np.sum(totals["count"])), 1))


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray,
                               bins: int = ECE_BINS) -> float:
    """sum over bins of (bin share) x |accuracy - mean confidence|."""
    return ece_of_totals(bin_totals(probabilities, labels, bins))


def ece_noise_floor(totals: dict, *, draws: int = 200, seed: int = 0) -> tuple[float, float]:
    """(mean, standard deviation) of the ECE a perfectly calibrated model would show with
    these bins' confidences (`bin_totals`: counts and summed confidence) on this many
    paintings: each bin's right answers drawn binomially at its mean confidence, `draws`
    times.

    ECE is biased upwards on small splits (each bin's accuracy is a noisy
    estimate): on a few hundred paintings the floor is a few points, so an ECE
    near it is as calibrated as the split can tell.
    """
    count = np.asarray(totals["count"], np.int64)
    confidence = np.asarray(totals["confidence"], float)
    mean = np.divide(confidence, count, out=np.zeros(len(count)), where=count > 0)
    right = np.random.default_rng(seed).binomial(count, np.clip(mean, 0.0, 1.0),
                                                  size=(draws, len(count)))
    values = np.abs(right - confidence).sum(axis=1) / max(int(count.sum()), 1)
    return float(values.mean()), float(values.std())


def accuracy_coverage(probabilities: np.ndarray, labels: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, coverage, accuracy of the answers kept) when answering only where the top
    probability is >= threshold, for each distinct threshold, most confident first."""
    confidence = probabilities.max(axis=1)
    order = np.argsort(-confidence, kind="stable")
    correct = (probabilities.argmax(axis=1) == np.asarray(labels))[order]
    kept = np.arange(1, len(order) + 1)
    return confidence[order], kept / len(order), np.cumsum(correct) / kept


def abstention_threshold(probabilities: np.ndarray, labels: np.ndarray, *,
                         precision: float) -> float:
    """The lowest top-probability threshold at which the answers kept are at least
    `precision` right (most coverage for that precision); 1.0 if none is.

    Thresholds that keep fewer than 10 answers are not trusted: on a small
    validation split a few lucky confident answers would set the rule.

    The point estimate, not a confidence bound: on devset's open-set draws a
    Clopper-Pearson lower bound kept answers a little more often right but rejected
    many more known paintings (docs/confidence.md).
    """
    thresholds, coverage, accuracy = accuracy_coverage(probabilities, labels)
    kept = np.arange(1, len(thresholds) + 1)
    good = (accuracy >= precision) & (kept >= min(10, len(thresholds)))
    # Ties: the threshold must keep every answer at that confidence, so check the
    # last of each run of equal confidences.
    last_of_value = np.append(thresholds[1:] != thresholds[:-1], True)
    good &= last_of_value
    return float(thresholds[np.flatnonzero(good)[-1]]) if good.any() else 1.0


def threshold_rejecting(values: np.ndarray, share: float) -> float:
    """The threshold that the lowest `share` of `values` fall below (inf: all of them)."""
    ordered = np.sort(np.asarray(values))
    rejected = int(round(share * len(ordered)))
    return float(ordered[rejected]) if rejected < len(ordered) else np.inf


def fit_abstention(probabilities: np.ndarray, labels: np.ndarray, *, precision: float,
                   familiarity: np.ndarray | None = None, novelty_reject: float = 0.0
                   ) -> dict[str, float | None]:
    """The "unknown artist" rule, fitted on a split of known artists (the validation split):
    {"min_familiarity", "min_confidence"}.

    With `familiarity` (`serving.gallery.Familiarity`) and `novelty_reject` > 0, first the
    distance test: the `novelty_reject` share of the split least like the training paintings
    falls below `min_familiarity`. Then, on the paintings that pass it, the lowest
    top-probability threshold at which the answers kept are `precision` right
    (`abstention_threshold`): so the answers the whole rule keeps are. Without the
    distance test, `min_familiarity` is None.
    """
    labels = np.asarray(labels)
    passed = np.ones(len(labels), bool)
    min_familiarity = None
    if familiarity is not None and novelty_reject > 0 and len(labels):
        min_familiarity = threshold_rejecting(familiarity, novelty_reject)
        passed = np.asarray(familiarity) >= min_familiarity
    min_confidence = abstention_threshold(probabilities[passed], labels[passed],
                                          precision=precision) if passed.any() else 1.0
    return {"min_familiarity": min_familiarity, "min_confidence": min_confidence}


def is_unknown(probabilities: np.ndarray, *, min_confidence: float,
               familiarity: np.ndarray | None = None,
               min_familiarity: float | None = None) -> np.ndarray:
    """The rule `fit_abstention` fits, per painting (bool [n]); the SavedModel's `unknown`
    (`serving.abstention`, on each row's top probability)."""
    return np.asarray(abstention.is_unknown(
        np.asarray(probabilities).max(axis=1), min_confidence=min_confidence,
        familiarity=None if familiarity is None else np.asarray(familiarity),
        min_familiarity=min_familiarity))
