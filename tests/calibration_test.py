"""Temperature scaling, calibration error and the abstention rule, on numbers worked by hand."""

import numpy as np
import pytest
import tensorflow as tf

from serving import abstention
from trainer import calibration


def test_temperature_recovers_the_one_that_made_the_labels():
    # Labels drawn from softmax(logits / 2.5): the NLL is lowest at T = 2.5.
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (20000, 6))
    cumulative = calibration.softmax(logits, 2.5).cumsum(axis=1)
    labels = (rng.random((len(logits), 1)) > cumulative).sum(axis=1)
    assert calibration.fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.05)


def test_uncalibrated_probabilities_come_back_from_calibrated_ones():
    logits = np.array([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]])
    calibrated = calibration.softmax(logits, 1.7)
    np.testing.assert_allclose(calibration.uncalibrated(calibrated, 1.7),
                               calibration.softmax(logits), atol=1e-9)


def test_ece_and_reliability_bins():
    # Two bins used of 15: confidence 0.9 (4 answers, 3 right) and 0.5 (2 answers, 2 right).
    probabilities = np.array([[0.9, 0.1]] * 4 + [[0.5, 0.5]] * 2)
    labels = np.array([0, 0, 0, 1, 0, 0])
    table = calibration.reliability(probabilities, labels)
    assert table["count"][13] == 4 and table["count"][7] == 2 and table["count"].sum() == 6
    assert table["accuracy"][13] == 0.75 and table["confidence"][13] == pytest.approx(0.9)
    # |0.75 - 0.9| x 4/6 + |1.0 - 0.5| x 2/6
    assert calibration.expected_calibration_error(probabilities, labels) == pytest.approx(
        0.15 * 4 / 6 + 0.5 * 2 / 6)
    assert calibration.negative_log_likelihood(probabilities, labels) == pytest.approx(
        -(3 * np.log(0.9) + np.log(0.1) + 2 * np.log(0.5)) / 6)


def test_abstention_threshold_keeps_the_most_answers_at_the_precision():
    # Confidences 0.99 .. 0.80, most confident first; the 12th and 15th answers are wrong.
    confidence = np.linspace(0.99, 0.80, 20)
    probabilities = np.stack([confidence, 1 - confidence], axis=1)
    labels = np.zeros(20, int)
    labels[[11, 14]] = 1
    thresholds, coverage, accuracy = calibration.accuracy_coverage(probabilities, labels)
    assert coverage[-1] == 1 and accuracy[10] == 1 and accuracy[11] == pytest.approx(11 / 12)
    # 90 %: 20 kept would be 18/20 = 0.9 -> everything is kept.
    assert calibration.abstention_threshold(probabilities, labels, precision=0.9) == \
        pytest.approx(0.80)
    # 95 %: 14 kept is 13/14 = 0.929, 11 kept is 11/11: the lowest threshold keeps 11.
    assert calibration.abstention_threshold(probabilities, labels, precision=0.95) == \
        pytest.approx(confidence[10])
    # Never reached with at least 10 answers kept: answer nothing.
    labels[:3] = 1
    assert calibration.abstention_threshold(probabilities, labels, precision=0.99) == 1.0


def test_the_distance_test_goes_first_and_the_probability_threshold_fits_on_the_rest():
    # As above: confidences 0.99 .. 0.80, the 12th and 15th answers wrong; those two are
    # also the least like the training paintings (familiarity 0.1 and 0.2, the rest 0.5+).
    confidence = np.linspace(0.99, 0.80, 20)
    probabilities = np.stack([confidence, 1 - confidence], axis=1)
    labels = np.zeros(20, int)
    labels[[11, 14]] = 1
    familiarity = np.linspace(0.5, 0.9, 20)
    familiarity[[11, 14]] = [0.1, 0.2]
    rule = calibration.fit_abstention(probabilities, labels, precision=0.95,
                                      familiarity=familiarity, novelty_reject=0.1)
    # 10 % of 20: the two least familiar fall below the 3rd lowest familiarity, 0.5; the
    # 18 left are all right, so every one of them is answered.
    assert rule == {"min_familiarity": 0.5, "min_confidence": pytest.approx(0.80)}
    unknown = calibration.is_unknown(probabilities, familiarity=familiarity, **rule)
    assert np.flatnonzero(unknown).tolist() == [11, 14]
    # Probabilities alone (novelty_reject 0) keep 11 answers at 95 %, as the test above.
    alone = calibration.fit_abstention(probabilities, labels, precision=0.95,
                                       familiarity=familiarity, novelty_reject=0.0)
    assert alone == {"min_familiarity": None, "min_confidence": pytest.approx(confidence[10])}
    assert calibration.is_unknown(probabilities, **alone).sum() == 9


def test_one_rule_for_numpy_tensorflow_and_single_numbers():
    # The served graph, the reports and predict.py's overrides call the same expression.
    top = np.array([0.9, 0.3, 0.9, 0.5], np.float32)
    familiarity = np.array([0.8, 0.8, 0.2, 0.5], np.float32)
    rule = {"min_confidence": 0.4, "min_familiarity": 0.5}
    expected = [False, True, True, False]  # The last: at both thresholds, answered.
    assert abstention.is_unknown(top, familiarity=familiarity, **rule).tolist() == expected
    graph = abstention.is_unknown(tf.constant(top), familiarity=tf.constant(familiarity), **rule)
    assert graph.dtype == tf.bool and graph.numpy().tolist() == expected
    assert [bool(abstention.is_unknown(float(t), familiarity=float(f), **rule))
            for t, f in zip(top, familiarity)] == expected
    # Without a distance test familiarity is not read: only the second is unknown.
    assert abstention.is_unknown(top, min_confidence=0.4).tolist() == [False, True, False,
                                                                       False]


def test_ties_are_kept_or_dropped_together():
    probabilities = np.array([[0.9, 0.1]] * 10 + [[0.6, 0.4]] * 10)
    labels = np.array([0] * 10 + [0, 1] * 5)
    # All of 0.6 or none: keeping them all gives 15/20 = 0.75.
    assert calibration.abstention_threshold(probabilities, labels, precision=0.75) == 0.6
    assert calibration.abstention_threshold(probabilities, labels, precision=0.8) == 0.9


def test_temperature_lowers_the_ece_of_an_over_confident_model():
    # True probabilities softmax(z); the model reports softmax(3 z): far too sure.
    rng = np.random.default_rng(1)
    true_logits = rng.normal(0, 1.5, (6000, 5))
    cumulative = calibration.softmax(true_logits).cumsum(axis=1)
    labels = (rng.random((len(true_logits), 1)) > cumulative).sum(axis=1)
    reported = 3 * true_logits
    validation, test = slice(0, 3000), slice(3000, None)
    temperature = calibration.fit_temperature(reported[validation], labels[validation])
    assert temperature == pytest.approx(3.0, rel=0.1)
    before = calibration.expected_calibration_error(calibration.softmax(reported[test]),
                                                    labels[test])
    after = calibration.expected_calibration_error(
        calibration.softmax(reported[test], temperature), labels[test])
    assert before > 0.2 and after < 0.05


def test_ece_noise_floor_is_what_a_calibrated_model_shows_and_shrinks_with_the_split():
    # Labels drawn from the model's own probabilities: perfectly calibrated, yet its ECE on
    # 256 paintings is not 0; the floor predicts it, and falls as 1/sqrt(n).
    rng = np.random.default_rng(2)

    def calibrated_split(n):
        probabilities = calibration.softmax(rng.normal(0, 2, (n, 15)))
        labels = (rng.random((n, 1)) > probabilities.cumsum(axis=1)).sum(axis=1)
        return probabilities, labels

    small = [calibrated_split(256) for _ in range(40)]
    measured = np.mean([calibration.expected_calibration_error(p, y) for p, y in small])
    def floor_of(probabilities):
        return calibration.ece_noise_floor(calibration.bin_totals(probabilities, 0))

    floor, sd = floor_of(small[0][0])
    assert 0.03 < floor < 0.15 and sd > 0
    assert measured == pytest.approx(floor, rel=0.25)
    large_floor, _ = floor_of(calibrated_split(256 * 16)[0])
    assert large_floor == pytest.approx(floor / 4, rel=0.35)
    # Deterministic: the same confidences give the same floor.
    assert floor_of(small[0][0]) == (floor, sd)


def test_bin_totals_add_up_across_splits_to_the_pooled_ece():
    rng = np.random.default_rng(3)
    parts = []
    for n, classes in ((200, 12), (300, 15)):  # Two runs, other artists.
        probabilities = calibration.softmax(rng.normal(0, 3, (n, classes)))
        parts.append((probabilities, rng.integers(0, classes, n)))
    totals = [calibration.bin_totals(p, y) for p, y in parts]
    pooled = {name: totals[0][name] + totals[1][name] for name in totals[0]}
    # The ECE of the pooled answers, top probability and right or wrong, counted directly.
    confidence = np.concatenate([p.max(axis=1) for p, _ in parts])
    right = np.concatenate([p.argmax(axis=1) == y for p, y in parts])
    index = calibration.bin_index(confidence, calibration.ECE_BINS)
    direct = sum(abs(right[index == b].sum() - confidence[index == b].sum())
                 for b in range(calibration.ECE_BINS)) / len(right)
    assert calibration.ece_of_totals(pooled) == pytest.approx(direct)
    assert calibration.ece_of_totals(totals[0]) == pytest.approx(
        calibration.expected_calibration_error(*parts[0]))
    # Pooling shrinks the floor about as 1/sqrt(paintings).
    floor_0, _ = calibration.ece_noise_floor(totals[0])
    floor_pooled, _ = calibration.ece_noise_floor(pooled)
    assert floor_pooled < floor_0 * 0.85
