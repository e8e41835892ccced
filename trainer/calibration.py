"""Confidence a user can read: temperature scaling, calibration error, and when to say "unknown".

All fitted on the validation split after training (numpy only), stored in the
SavedModel by `serving.export`, and measured on the test split by the report.
On a small or hard validation split the fitted temperature may not generalise and
no threshold may reach the target precision: both fits then fall back to what
does, and say so (docs/confidence.md).
"""

import numpy as np

from serving import abstention

# Equal-width confidence bins of the expected calibration error (Guo et al. 2017).
ECE_BINS = 15
# Temperatures searched, log-spaced; then refined around the best.
_LOG_T_RANGE = (-3.0, 3.0)
# Folds of the validation split the temperature is cross-fitted on (`choose_temperature`).
TEMPERATURE_FOLDS = 5
# The fitted temperature is served only if it beats T = 1 on held-out folds by more than this
# many standard errors of the gain (the one-standard-error rule: the simpler model unless
# the data show better).
TEMPERATURE_MARGIN_SE = 1.0
# Thresholds that keep fewer answers than this are not trusted (`abstention_threshold`).
MIN_TRUSTED_ANSWERS = 10
# When no threshold reaches the target precision, the rule still answers at least this
# share of the validation split (`fallback_threshold`).
FALLBACK_COVERAGE = 0.5
FALLBACK_TEXT = (f"the threshold whose answers were most often right among those answering "
                 f"at least {FALLBACK_COVERAGE:.0%} of the validation paintings")


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


def true_log_probabilities(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """log p of each painting's own artist."""
    rows = np.arange(len(labels))
    return log_probabilities(probabilities)[rows, np.asarray(labels)]


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(-true_log_probabilities(probabilities, labels).mean())


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


def held_out_gains(logits: np.ndarray, labels: np.ndarray, *, folds: int,
                   seed: int = 0) -> np.ndarray:
    """Per painting, how much the temperature fitted on the other folds raises log p of its
    artist over T = 1 (folds drawn by `seed`, as even as the split allows)."""
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels)
    fold = np.random.default_rng(seed).permutation(len(labels)) % folds
    gains = np.empty(len(labels))
    for k in range(folds):
        held = fold == k
        temperature = fit_temperature(logits[~held], labels[~held])
        gains[held] = (true_log_probabilities(softmax(logits[held], temperature), labels[held])
                       - true_log_probabilities(softmax(logits[held]), labels[held]))
    return gains


def choose_temperature(logits: np.ndarray, labels: np.ndarray, *,
                       folds: int = TEMPERATURE_FOLDS) -> dict:
    """The temperature to serve and why: {"temperature", "fitted_temperature",
    "held_out_nll_gain", "held_out_nll_gain_se", "folds", "method"}.

    The NLL-fitted T (`fit_temperature`) is served only if, cross-fitted over `folds`
    folds of the split, it lowers the held-out NLL by more than `TEMPERATURE_MARGIN_SE`
    standard errors of that gain; otherwise T = 1. A split of a few dozen paintings fits
    T to its own noise, and the test NLL then rises (docs/confidence.md).
    """
    labels = np.asarray(labels)
    fitted = fit_temperature(logits, labels)
    gain = margin = 0.0
    if len(labels) >= 2 * folds:
        gains = held_out_gains(logits, labels, folds=folds)
        gain, margin = float(gains.mean()), float(gains.std(ddof=1) / np.sqrt(len(gains)))
    kept = gain > TEMPERATURE_MARGIN_SE * margin
    choice = {"temperature": fitted if kept else 1.0, "fitted_temperature": fitted,
              "held_out_nll_gain": gain, "held_out_nll_gain_se": margin, "folds": folds}
    return {**choice, "method": temperature_method(choice, examples=len(labels))}


def temperature_method(choice: dict, *, examples: int) -> str:
    """`choose_temperature`'s choice in a sentence: which temperature and why."""
    if examples < 2 * choice["folds"]:
        return (f"T = 1: {examples} validation paintings are too few to test the "
                f"NLL-fitted temperature ({choice['fitted_temperature']:.3f})")
    test = (f"changed the NLL of held-out paintings ({choice['folds']}-fold cross-fitting of "
            f"the {examples} validation paintings) by {-choice['held_out_nll_gain']:+.4f} ± "
            f"{choice['held_out_nll_gain_se']:.4f} a painting against T = 1")
    if choice["temperature"] != 1.0:
        return ("temperature scaling (the logits are divided by it), fitted on the validation "
                f"split by NLL; kept because it {test}, a gain of more than "
                f"{TEMPERATURE_MARGIN_SE:g} standard error")
    return (f"T = 1 (no temperature): the NLL-fitted temperature "
            f"{choice['fitted_temperature']:.3f} {test}, not a gain of more than "
            f"{TEMPERATURE_MARGIN_SE:g} standard error, so on this split it would fit noise")


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


def trusted_thresholds(thresholds: np.ndarray, *, min_kept: int) -> np.ndarray:
    """Which of `accuracy_coverage`'s thresholds (most confident first) are rules: those
    that keep at least `min_kept` answers (all, if fewer), and of equal thresholds the
    last, since a threshold keeps every answer at its confidence."""
    kept = np.arange(1, len(thresholds) + 1)
    last_of_value = np.append(thresholds[1:] != thresholds[:-1], True)
    return last_of_value & (kept >= min(min_kept, len(thresholds)))


def abstention_threshold(probabilities: np.ndarray, labels: np.ndarray, *,
                         precision: float) -> float | None:
    """The lowest top-probability threshold at which the answers kept are at least
    `precision` right (most coverage for that precision); None if none is.

    Thresholds that keep fewer than `MIN_TRUSTED_ANSWERS` answers are not trusted: on a
    small validation split a few lucky confident answers would set the rule.

    The point estimate, not a confidence bound: on devset's open-set draws a
    Clopper-Pearson lower bound kept answers a little more often right but rejected
    many more known paintings (docs/confidence.md).
    """
    thresholds, _, accuracy = accuracy_coverage(probabilities, labels)
    good = (accuracy >= precision) & trusted_thresholds(thresholds,
                                                        min_kept=MIN_TRUSTED_ANSWERS)
    return float(thresholds[np.flatnonzero(good)[-1]]) if good.any() else None


def fallback_threshold(probabilities: np.ndarray, labels: np.ndarray, *,
                       min_kept: int) -> float:
    """Among the thresholds that keep at least `min_kept` answers (all, if fewer), the one
    whose answers are most often right; of equals, the lowest (the most answered). 0.0 for
    no paintings: nothing to judge by, so everything is answered.

    The rule when the target precision is out of reach: still useful, as right as it can
    be while answering at least `min_kept`."""
    thresholds, _, accuracy = accuracy_coverage(probabilities, labels)
    if not len(thresholds):
        return 0.0
    candidates = np.flatnonzero(trusted_thresholds(thresholds, min_kept=min_kept))
    # argmax of the reversed candidates: the best precision, the most answers among equals.
    best = candidates[len(candidates) - 1 - np.argmax(accuracy[candidates][::-1])]
    return float(thresholds[best])


def threshold_rejecting(values: np.ndarray, share: float) -> float:
    """The threshold that the lowest `share` of `values` fall below (inf: all of them)."""
    ordered = np.sort(np.asarray(values))
    rejected = int(round(share * len(ordered)))
    return float(ordered[rejected]) if rejected < len(ordered) else np.inf


def fit_abstention(probabilities: np.ndarray, labels: np.ndarray, *, precision: float,
                   familiarity: np.ndarray | None = None, novelty_reject: float = 0.0
                   ) -> dict:
    """The "unknown artist" rule, fitted on a split of known artists (the validation split):
    {"min_familiarity", "min_confidence", "target_met"}, and "kept_instead" (`FALLBACK_TEXT`)
    when the target is out of reach.

    With `familiarity` (`serving.gallery.Familiarity`) and `novelty_reject` > 0, first the
    distance test: the `novelty_reject` share of the split least like the training paintings
    falls below `min_familiarity` (at most 1 - `FALLBACK_COVERAGE`: the test must leave
    most paintings to answer). Then, on the paintings that pass it, the lowest
    top-probability threshold at which the answers kept are `precision` right
    (`abstention_threshold`): so the answers the whole rule keeps are. If no threshold is,
    `fallback_threshold`: the whole rule still answers `FALLBACK_COVERAGE` of the split.
    Without the distance test, `min_familiarity` is None.
    """
    if novelty_reject > 1 - FALLBACK_COVERAGE:
        raise ValueError(f"novelty_reject={novelty_reject} would leave fewer than "
                         f"{FALLBACK_COVERAGE:.0%} of the paintings to answer")
    labels = np.asarray(labels)
    passed = np.ones(len(labels), bool)
    min_familiarity = None
    if familiarity is not None and novelty_reject > 0 and len(labels):
        min_familiarity = threshold_rejecting(familiarity, novelty_reject)
        passed = np.asarray(familiarity) >= min_familiarity
    min_confidence = abstention_threshold(probabilities[passed], labels[passed],
                                          precision=precision)
    if min_confidence is not None:
        return {"min_familiarity": min_familiarity, "min_confidence": min_confidence,
                "target_met": True}
    min_kept = int(np.ceil(FALLBACK_COVERAGE * len(labels)))
    return {"min_familiarity": min_familiarity, "target_met": False,
            "min_confidence": fallback_threshold(probabilities[passed], labels[passed],
                                                 min_kept=min_kept),
            "kept_instead": FALLBACK_TEXT}


def abstention_warning(fit: dict) -> str | None:
    """What a user must hear about a fitted rule (`fit_abstention`'s, with "target_precision"
    and "fitted_on": the validation split's coverage and precision), or None: the target
    precision out of reach, or a rule that answers fewer than `FALLBACK_COVERAGE` of the
    paintings."""
    target, fitted = fit["target_precision"], fit["fitted_on"]
    figures = (f"it answered {fitted['coverage']:.1%} of the {fitted['examples']} validation "
               f"paintings, {fitted['precision']:.1%} of them right")
    if fit.get("target_met") is False:
        return (f"the target precision {target:.0%} was not reachable on the validation "
                f"split (no threshold kept {MIN_TRUSTED_ANSWERS} or more answers that often "
                f"right); kept instead: {fit['kept_instead']}, top probability "
                f"{fit['min_confidence']:.3f}: {figures}")
    if fitted["coverage"] < FALLBACK_COVERAGE:
        return (f"the rule answers few paintings: at the target precision {target:.0%} {figures}; "
                "a lower --target_precision answers more")
    return None


def is_unknown(probabilities: np.ndarray, *, min_confidence: float,
               familiarity: np.ndarray | None = None,
               min_familiarity: float | None = None) -> np.ndarray:
    """The rule `fit_abstention` fits, per painting (bool [n]); the SavedModel's `unknown`
    (`serving.abstention`, on each row's top probability)."""
    return np.asarray(abstention.is_unknown(
        np.asarray(probabilities).max(axis=1), min_confidence=min_confidence,
        familiarity=None if familiarity is None else np.asarray(familiarity),
        min_familiarity=min_familiarity))
