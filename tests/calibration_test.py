"""Temperature scaling, calibration error and the abstention rule, on numbers worked by hand."""

import json

import numpy as np
import pytest
import tensorflow as tf

from serving import abstention
from tests.conftest import encode
from trainer import calibration, evaluation, report


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
    # Never reached with at least 10 answers kept: no threshold (fit_abstention falls back).
    labels[:3] = 1
    assert calibration.abstention_threshold(probabilities, labels, precision=0.99) is None


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
    assert rule == {"min_familiarity": 0.5, "min_confidence": pytest.approx(0.80),
                    "target_met": True}
    unknown = calibration.is_unknown(probabilities, familiarity=familiarity,
                                     min_confidence=rule["min_confidence"],
                                     min_familiarity=rule["min_familiarity"])
    assert np.flatnonzero(unknown).tolist() == [11, 14]
    # Probabilities alone (novelty_reject 0) keep 11 answers at 95 %, as the test above.
    alone = calibration.fit_abstention(probabilities, labels, precision=0.95,
                                       familiarity=familiarity, novelty_reject=0.0)
    assert alone == {"min_familiarity": None, "min_confidence": pytest.approx(confidence[10]),
                     "target_met": True}
    assert calibration.is_unknown(probabilities, min_confidence=alone["min_confidence"]).sum() == 9


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


def drawn_split(rng, n: int, *, factor: float = 1.0, classes: int = 8):
    """(logits the model reports, labels): labels drawn from softmax(true logits), the
    model's logits `factor` times those (1: calibrated; more: over-confident)."""
    true = rng.normal(0, 1.5, (n, classes))
    true[np.arange(n), rng.integers(0, classes, n)] += 1.5
    cumulative = calibration.softmax(true).cumsum(axis=1)
    labels = np.minimum((rng.random((n, 1)) > cumulative).sum(axis=1), classes - 1)
    return factor * true, labels


def test_a_tiny_validation_split_never_gets_a_temperature_that_raises_the_test_nll():
    # A calibrated model (T = 1 is right): on 40 validation paintings the NLL-fitted T
    # fits their noise and raises the NLL of 5,000 test paintings from the same
    # distribution; the chosen T does not, on any of 20 draws.
    raised = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        validation, test = drawn_split(rng, 40), drawn_split(rng, 5000)
        choice = calibration.choose_temperature(*validation)

        def test_nll(temperature):
            return calibration.negative_log_likelihood(
                calibration.softmax(test[0], temperature), test[1])

        raised += test_nll(choice["fitted_temperature"]) > test_nll(1.0)
        assert test_nll(choice["temperature"]) <= test_nll(1.0)
        assert choice["temperature"] == 1.0
        assert choice["held_out_nll_gain"] <= choice["held_out_nll_gain_se"]
        assert choice["method"].startswith("T = 1 (no temperature): the NLL-fitted temperature")
    assert raised >= 15  # The plain fit would have raised it on most draws.


def test_a_temperature_the_data_show_is_kept_on_small_and_large_splits():
    # The model reports 3 x the true logits: T = 3 undoes it. 3,000 paintings find it
    # closely; 60 still show it beyond the noise, and the test NLL falls.
    rng = np.random.default_rng(0)
    large = calibration.choose_temperature(*drawn_split(rng, 3000, factor=3.0))
    assert large["temperature"] == large["fitted_temperature"] == pytest.approx(3.0, rel=0.05)
    assert large["method"].startswith("temperature scaling") and "kept because" in large["method"]
    small = calibration.choose_temperature(*drawn_split(rng, 60, factor=3.0))
    logits, labels = drawn_split(rng, 5000, factor=3.0)
    assert small["temperature"] == small["fitted_temperature"] == pytest.approx(3.0, rel=0.3)
    assert small["held_out_nll_gain"] > small["held_out_nll_gain_se"] > 0
    assert (calibration.negative_log_likelihood(calibration.softmax(logits, small["temperature"]),
                                                labels)
            < calibration.negative_log_likelihood(calibration.softmax(logits), labels) - 0.3)


def test_too_few_paintings_to_cross_fit_keep_t_1():
    logits, labels = drawn_split(np.random.default_rng(0), 9, factor=3.0)
    choice = calibration.choose_temperature(logits, labels)
    assert choice["temperature"] == 1.0 and choice["held_out_nll_gain"] == 0.0
    assert choice["method"].startswith("T = 1: 9 validation paintings are too few")


def hard_split():
    """20 paintings of 2 artists, confidences 0.99 .. 0.80, every third answer wrong: the
    answers kept are at most 8/11 right with 10 or more kept, never 90 %."""
    confidence = np.linspace(0.99, 0.80, 20)
    probabilities = np.stack([confidence, 1 - confidence], axis=1)
    labels = np.where(np.arange(20) % 3 == 2, 1, 0)
    return confidence, probabilities, labels


def test_out_of_reach_target_falls_back_to_the_most_precise_threshold_answering_half():
    confidence, probabilities, labels = hard_split()
    assert calibration.abstention_threshold(probabilities, labels, precision=0.9) is None
    rule = calibration.fit_abstention(probabilities, labels, precision=0.9)
    # Kept 10..20 answers: 7/10, 8/11, 8/12, 9/13, 10/14, 10/15, ... 14/20; 8/11 is best.
    assert rule == {"min_familiarity": None, "min_confidence": pytest.approx(confidence[10]),
                    "target_met": False, "kept_instead": calibration.FALLBACK_TEXT}
    kept = ~calibration.is_unknown(probabilities, min_confidence=rule["min_confidence"])
    assert kept.sum() == 11 and (labels[kept] == 0).sum() == 8
    # Of equal precisions the one answering more: 2 right of 4, or 4 of 8 -> all 8.
    equal = np.array([[0.9, 0.1]] * 2 + [[0.8, 0.2]] * 2 + [[0.7, 0.3]] * 4)
    assert calibration.fallback_threshold(equal, np.array([0, 1, 1, 0, 0, 1, 1, 0]),
                                          min_kept=2) == 0.7
    assert calibration.fallback_threshold(equal[:0], np.array([], int), min_kept=1) == 0.0


def test_the_fallback_answers_half_the_split_with_the_distance_test_on():
    # As above, and 4 confident right answers (20 %) fall to the distance test. Of the 16
    # left, most confident first (W W R R W R R W R R W R R W R R), the best precision with
    # at least 10 kept (half of the split) is all 16 (10/16); half of the 16 alone would
    # have kept 9 (6/9).
    confidence, probabilities, labels = hard_split()
    familiarity = np.arange(20.0)
    familiarity[[0, 1, 3, 4]] = -1.0
    rule = calibration.fit_abstention(probabilities, labels, precision=0.9,
                                      familiarity=familiarity, novelty_reject=0.2)
    assert rule["target_met"] is False and rule["min_familiarity"] == 2.0
    assert rule["min_confidence"] == pytest.approx(confidence[19])
    kept = ~calibration.is_unknown(probabilities, familiarity=familiarity,
                                   min_confidence=rule["min_confidence"],
                                   min_familiarity=rule["min_familiarity"])
    assert kept.sum() == 16 and (labels[kept] == 0).sum() == 10
    with pytest.raises(ValueError, match="fewer than 50% of the paintings to answer"):
        calibration.fit_abstention(probabilities, labels, precision=0.9,
                                   familiarity=familiarity, novelty_reject=0.6)


def test_the_fitted_answer_states_an_out_of_reach_target_and_a_rule_answering_few():
    _, probabilities, labels = hard_split()
    answer = evaluation.fit_answer_on(probabilities, labels, split="validation",
                                      target_precision=0.9)
    assert answer["target_met"] is False and answer["temperature"] == 1.0  # 20: no T shown.
    assert answer["fitted_on"] == {"split": "validation", "examples": 20, "coverage": 0.55,
                                   "precision": pytest.approx(8 / 11)}
    assert answer["warning"] == (
        "the target precision 90% was not reachable on the validation split (no threshold "
        "kept 10 or more answers that often right); kept instead: " + calibration.FALLBACK_TEXT
        + f", top probability {answer['min_confidence']:.3f}: it answered 55.0% of the 20 "
        "validation paintings, 72.7% of them right")
    assert answer["calibration"]["method"].startswith("T = 1 (no temperature)")
    # Met, but on 10 answers of 40 (10 sure and right, 30 coin tosses): said too.
    confident = np.concatenate([probabilities[:10], np.full((30, 2), 0.5)])
    met = evaluation.fit_answer_on(confident, np.arange(40) % 2 * (np.arange(40) >= 10),
                                   split="validation", target_precision=0.8)
    assert met["target_met"] is True and met["fitted_on"]["coverage"] == 0.25
    assert met["warning"].startswith("the rule answers few paintings: at the target precision "
                                     "80% it answered 25.0% of the 40 validation paintings, "
                                     "100.0% of them right")
    easy = evaluation.fit_answer_on(probabilities, np.zeros(20, int), split="validation",
                                    target_precision=0.9)
    assert easy["target_met"] is True and "warning" not in easy


def test_the_report_states_the_fallback_and_the_temperature_choice(tmp_path):
    _, probabilities, labels = hard_split()
    fitted = evaluation.fit_answer_on(probabilities, labels, split="validation",
                                      target_precision=0.9)
    images = [encode(np.full((8, 8, 3), 10 * i, np.uint8)) for i in range(20)]
    metrics = report.write_report(
        str(tmp_path), labels=labels, probabilities=probabilities, names=["A", "B"],
        images=images, title="t", min_confidence=fitted["min_confidence"], fitted=fitted)
    assert metrics["abstention"]["coverage"] == 0.55
    with open(tmp_path / "report.json") as f:
        stored = json.load(f)["validation_fit"]
    assert stored["target_met"] is False and stored["warning"] == fitted["warning"]
    text = (tmp_path / "report.md").read_text()
    assert f"**Warning: {fitted['warning']}.**" in text
    assert f"temperature 1.000 ({fitted['calibration']['method']})" in text
    assert "of this split's paintings" not in text  # 55 % answered: not few.
    # A rule that answers a quarter of the split says so, with or without the fit.
    report.write_report(str(tmp_path), labels=labels, probabilities=probabilities,
                        names=["A", "B"], images=images, title="t", min_confidence=0.95)
    assert ("**Warning: the rule answers only 25.0% of this split's paintings; every other "
            "painting gets \"unknown artist\".**") in (tmp_path / "report.md").read_text()
