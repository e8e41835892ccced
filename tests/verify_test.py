"""Is this painting by the artist named? The `verify` and `verify_pair` signatures."""

import numpy as np
import pytest
import tensorflow as tf

from artist_tfds.sample_paintings import sample_paintings_dataset_builder as sample_builder
from serving import enrolment
from tests.conftest import KNOWN, NEWCOMER, painting
from trainer import verification

ARTISTS = list(sample_builder.ARTIST_NAMES[:KNOWN])


@pytest.fixture(scope="module")
def model(cosine_model_base):
    return tf.saved_model.load(f"{cosine_model_base}/1")


def claims(model, images: list[bytes], artists: list[str]) -> dict[str, np.ndarray]:
    outputs = model.signatures["verify"](images=tf.constant(images), artists=tf.constant(artists))
    return {key: value.numpy() for key, value in outputs.items()}


def test_true_claims_score_above_false_ones_and_the_stored_threshold_parts_them(model):
    images = [painting(a, 400 + i) for a in range(KNOWN) for i in range(4)]
    truth = [ARTISTS[a] for a in range(KNOWN) for _ in range(4)]
    wrong = [ARTISTS[(a + 1 + i) % KNOWN] for a in range(KNOWN) for i in range(4)]
    true, false = claims(model, images, truth), claims(model, images, wrong)
    assert list(true["claimed_ids"]) == [a for a in range(KNOWN) for _ in range(4)]
    assert (true["same_hand"] > false["same_hand"]).all()
    assert true["same_hand_accepted"].mean() >= 0.9 and false["same_hand_accepted"].mean() <= 0.1
    document = model.signatures["metadata"]()["metadata"].numpy().decode()
    assert '"false_accept": 0.05' in document and '"claim": {"threshold"' in document


def test_a_claim_naming_an_artist_the_model_lacks_is_an_error(model):
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="artists: this model knows no artist named Nobody"):
        claims(model, [painting(0, 400), painting(1, 400)], [ARTISTS[0], "Nobody"])


def test_pairs_of_an_unseen_hand_score_above_pairs_of_two_hands(model):
    # The newcomer and the first known artist: the pair form needs no direction of theirs.
    unseen = [painting(KNOWN, 500 + i) for i in range(6)]
    known = [painting(0, 500 + i) for i in range(6)]
    same = model.signatures["verify_pair"](images=tf.constant(unseen[:3]),
                                           other_images=tf.constant(unseen[3:]))
    apart = model.signatures["verify_pair"](images=tf.constant(unseen[:3]),
                                            other_images=tf.constant(known[:3]))
    assert same["same_hand"].numpy().min() > apart["same_hand"].numpy().max()


def test_an_enrolled_artist_can_be_claimed(cosine_model_base, newcomer_files, tmp_path):
    served = enrolment.load(f"{cosine_model_base}/1")
    enrolment.enroll(served, artist=NEWCOMER, images=[open(f, "rb").read()
                                                      for f in newcomer_files[:10]],
                     file_names=newcomer_files[:10])
    enrolled = tf.saved_model.load(enrolment.write(served, str(tmp_path / "2")))
    images = [open(f, "rb").read() for f in newcomer_files[10:]]
    out = claims(enrolled, images, [NEWCOMER] * len(images))
    assert (out["claimed_ids"] == KNOWN).all() and out["same_hand_accepted"].mean() >= 0.8


def test_thresholds_accept_at_most_the_stated_share_of_false_claims():
    rng = np.random.default_rng(0)
    directions = np.eye(4, 16)
    labels = np.repeat(np.arange(4), 25)
    embeddings = directions[labels] * 2 + rng.normal(0, 0.6, (100, 16))
    fitted = verification.fit(embeddings, labels, directions, false_accept=0.05)
    scores = verification.claim_scores(embeddings, directions)
    false = scores[np.arange(4)[None, :] != labels[:, None]]
    assert (false >= fitted["claim"]["threshold"]).mean() <= 0.05
    assert (false >= np.nextafter(fitted["claim"]["threshold"], -np.inf)).mean() > 0.04
    pair_scores, same = verification.pair_scores(embeddings, labels)
    assert (pair_scores[~same] >= fitted["pair"]["threshold"]).mean() <= 0.05
    assert fitted["claim"]["true_accepted"] > 0.9 and 0 < fitted["pair"]["true_accepted"] <= 1
    assert verification.threshold_at(np.array([0.1, 0.2, 0.3, 0.4]), 0.25) == np.nextafter(
        0.3, np.inf)


def test_predict_checks_a_claim_and_names_a_claim_it_cannot_check(cosine_model_base,
                                                                  tmp_path):
    import json

    from tests.conftest import run

    for i in range(2):
        (tmp_path / f"{i}.jpg").write_bytes(painting(1, 600 + i))
    result = run(["predict.py", f"--model_dir={cosine_model_base}", f"--claim={ARTISTS[1]}",
                  "--format=json", str(tmp_path)], timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    claims_made = [json.loads(line)["claim"] for line in result.stdout.splitlines()]
    assert [c["artist"] for c in claims_made] == [ARTISTS[1]] * 2
    assert all(c["accepted"] and 0 < c["same_hand"] <= 1 for c in claims_made)
    result = run(["predict.py", f"--model_dir={cosine_model_base}", "--claim=Nobody",
                  str(tmp_path)], timeout=300)
    assert result.returncode != 0 and result.stderr.strip().splitlines()[-1] == (
        "predict.py: error: --claim: the model knows no artist named 'Nobody' "
        "(--info lists its artists)")
