"""Adding an artist to an exported model, and taking one out, without retraining."""

import base64
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest
import tensorflow as tf

from artist_tfds.sample_paintings import sample_paintings_dataset_builder as sample_builder
from serving import enrolment, versions
from tests.conftest import ENV, KNOWN, NEWCOMER, ROOT, export_tiny_model, painting, running


@pytest.fixture
def model_base(cosine_model_base) -> str:
    return cosine_model_base

def answers(model_dir: str, images: list[bytes]) -> dict[str, np.ndarray]:
    panel = tf.saved_model.load(model_dir).signatures["panel"]
    return {k: v.numpy() for k, v in panel(images=tf.constant(images)).items()}


def own_base(model_base: str, path) -> str:
    """A model base of its own whose version 1 is the fixture's (the tests add versions)."""
    os.makedirs(path)
    os.symlink(os.path.join(model_base, "1"), os.path.join(path, "1"))
    return str(path)


def test_an_enrolled_artist_is_named_for_its_other_paintings_and_removal_restores_the_model(
        model_base, newcomer_files, tmp_path):
    model_base = own_base(model_base, tmp_path / "base")
    first = os.path.join(model_base, "1")
    served = enrolment.load(model_base)
    assert served.model_dir == first
    enrol, recognise = newcomer_files[:10], newcomer_files[10:]
    done = enrolment.enroll(served, artist=NEWCOMER, images=[open(f, "rb").read() for f in enrol],
                            file_names=enrol, metadata={"years": "1900 - 1970"})
    assert (done["id"], done["paintings"], done["gallery_paintings"], done["refused"]) == (
        KNOWN, 10, 6, {})
    second = enrolment.write(served, versions.next_version(first))
    assert second == os.path.join(model_base, "2") and versions.resolve(model_base) == second

    new = answers(second, [open(f, "rb").read() for f in recognise])
    assert (new["top_k_ids"][:, 0] == KNOWN).sum() >= 8  # Named for its other paintings.
    assert new["probabilities"].shape == (10, KNOWN + 1)
    assert {a.decode() for a in new["similar_artists"][:, 0]} == {NEWCOMER}
    known = [painting(a, 200 + i) for a in range(KNOWN) for i in range(3)]
    before, after = answers(first, known), answers(second, known)
    assert (after["top_k_ids"][:, 0] == before["top_k_ids"][:, 0]).mean() >= 0.9
    document = tf.saved_model.load(second).signatures["metadata"]()
    assert document["artists"].numpy()[-1].decode() == NEWCOMER
    assert b'"years": "1900 - 1970"' in document["metadata"].numpy()
    with open(os.path.join(second, "assets.extra", "artists.txt"), encoding="utf-8") as f:
        assert f.read().splitlines()[-1] == NEWCOMER

    served = enrolment.load(model_base)
    enrolment.remove(served, artist=NEWCOMER)
    third = enrolment.write(served, str(tmp_path / "elsewhere"))
    restored = answers(third, known)
    for key, value in before.items():
        np.testing.assert_array_equal(restored[key], value, err_msg=key)
    assert os.path.exists(os.path.join(first, "saved_model.pb"))  # The old one stays.


def test_bad_paintings_are_left_out_and_named(model_base, newcomer_files, tmp_path):
    served = enrolment.load(model_base)
    files = [*newcomer_files[:4], str(tmp_path / "broken.jpg")]
    images = [open(f, "rb").read() for f in files[:4]] + [b"\xff\xd8\xff\xe0 not a jpeg"]
    done = enrolment.enroll(served, artist=NEWCOMER, images=images, file_names=files)
    assert done["paintings"] == 4 and list(done["refused"]) == [files[-1]]


@pytest.mark.parametrize("artist, count, message", [
    (sample_builder.ARTIST_NAMES[0], 5, "is already one of the model's 5 artists"),
    (NEWCOMER, 2, "2 readable paintings of 'Vincent van Swirl', at least 3 needed"),
    (" ", 5, "the artist needs a name"),
])
def test_enrolment_refuses_with_one_line(model_base, newcomer_files, artist, count, message):
    served = enrolment.load(model_base)
    with pytest.raises(enrolment.EnrolmentError, match=message) as error:
        enrolment.enroll(served, artist=artist, file_names=newcomer_files[:count],
                         images=[open(f, "rb").read() for f in newcomer_files[:count]])
    assert "\n" not in str(error.value)


def test_models_enrolment_cannot_change_say_why(tmp_path):
    dense = export_tiny_model(str(tmp_path / "dense"))  # A dense head, with a gallery.
    with pytest.raises(enrolment.EnrolmentError, match="dense classifier"):
        enrolment.load(dense)
    with pytest.raises(ValueError, match="no SavedModel there"):
        enrolment.load(str(tmp_path / "nothing"))


def test_removing_below_the_answers_top_k_is_refused(model_base):
    served = enrolment.load(model_base)
    for name in sample_builder.ARTIST_NAMES[:KNOWN - 3]:
        enrolment.remove(served, artist=name)
    with pytest.raises(enrolment.EnrolmentError, match="keeps at least 3"):
        enrolment.remove(served, artist=sample_builder.ARTIST_NAMES[KNOWN - 1])
    with pytest.raises(enrolment.EnrolmentError, match="is not one of the model's artists"):
        enrolment.remove(served, artist="Nobody")


# The command, killed while it writes: after the SavedModel, before the rename.
PAUSED_ENROL = """
import sys, time
from serving import versions
publish = versions.publish
def paused(partial, target):
    print("paused", flush=True)
    time.sleep(3600)
versions.publish = paused
from artist_id import cli, enroll
sys.argv[0] = "enroll.py"
cli.run_command(enroll)
"""


def test_a_killed_enrolment_leaves_no_version_and_a_rerun_completes(model_base, newcomer_files,
                                                                    tmp_path):
    base = own_base(model_base, tmp_path / "base")
    args = [f"--model_dir={base}", f"--artist={NEWCOMER}", *newcomer_files[:5]]
    process = subprocess.Popen([sys.executable, "-c", PAUSED_ENROL, *args], cwd=ROOT, env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:  # Its first line: the SavedModel is written, the rename not yet done.
        assert process.stdout.readline() == b"paused\n", process.stderr.read().decode()[-2000:]
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert versions.versions(base) == [1]  # No version 2, whole or half.
    assert len(versions.stale_partials(base)) == 1
    result = subprocess.run([sys.executable, "enroll.py", *args, "--metadata=years=1900-1970"],
                            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"Added '{NEWCOMER}' as artist 6 of 6, from 5 paintings" in result.stdout
    assert versions.versions(base) == [1, 2] and versions.stale_partials(base) == []
    again = subprocess.run([sys.executable, "enroll.py", *args], cwd=ROOT, env=ENV,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode != 0 and again.stderr.strip().splitlines()[-1] == (
        f"artist-id enroll: error: '{NEWCOMER}' is already one of the model's 6 artists "
        "(--remove it first to replace it)")
    assert versions.versions(base) == [1, 2]


def test_versions_of_a_model_base(tmp_path):
    for name in ("1", "3", "10", "notes", ".partial-11-1"):
        os.makedirs(tmp_path / name)
        if name != "notes":
            (tmp_path / name / "saved_model.pb").write_bytes(b"")
    assert versions.versions(str(tmp_path)) == [1, 3, 10]
    assert versions.resolve(str(tmp_path)) == str(tmp_path / "10")
    assert versions.resolve(str(tmp_path / "3")) == str(tmp_path / "3")
    assert versions.next_version(str(tmp_path / "3")) == str(tmp_path / "11")
    assert versions.next_version(str(tmp_path / "notes")) is None
    partial = versions.partial_dir(str(tmp_path / "11"))
    os.makedirs(partial)
    versions.publish(partial, str(tmp_path / "11"))
    assert os.path.isdir(tmp_path / "11") and not os.path.exists(partial)
    os.makedirs(partial)
    with pytest.raises(FileExistsError, match="exists already"):
        versions.publish(partial, str(tmp_path / "11"))


def post(url: str, body: dict | bytes) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data)) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_the_web_app_adds_an_unknown_painter_only_when_allowed(model_base, newcomer_files,
                                                                tmp_path):
    from artist_id import serve

    base = own_base(model_base, tmp_path / "base")
    images = [{"name": os.path.basename(f), "b64": base64.b64encode(open(f, "rb").read())
               .decode()} for f in newcomer_files[:5]]
    application = serve.create_app(os.path.join(base, "1"), allow_enroll=True)
    with running(application) as url:
        with urllib.request.urlopen(url + "/") as page:
            assert "const ALLOW_ENROLL = true;" in page.read().decode()
        status, answer = post(url + "/panel", open(newcomer_files[9], "rb").read())
        assert status == 200 and isinstance(answer["unknown"], bool)
        assert post(url + "/enroll", b"{") [0] == 400
        status, answer = post(url + "/enroll", {"artist": NEWCOMER, "images": images})
        assert status == 200 and answer["version"] == "2", answer
        assert answer["message"] == (f"Added {NEWCOMER} from 5 paintings: serving version 2 "
                                     "with 6 artists.")
        assert versions.versions(base) == [1, 2]
        request = {"instances": [{"b64": base64.b64encode(open(f, "rb").read()).decode()}
                                 for f in newcomer_files[10:14]]}
        status, answer = post(url + "/v1/models/artist:predict", request)
        assert [row["top_k_artists"][0] for row in answer["predictions"]] == [NEWCOMER] * 4
        status, answer = post(url + "/enroll", {"artist": NEWCOMER, "images": images})
        assert status == 400 and "already one of the model's 6 artists" in answer["error"]
    application = serve.create_app(os.path.join(base, "2"))
    with running(application) as url:
        with urllib.request.urlopen(url + "/") as page:
            assert "const ALLOW_ENROLL = false;" in page.read().decode()
        assert post(url + "/enroll", {"artist": "X", "images": images})[0] == 404
    assert versions.versions(base) == [1, 2]  # Writes only where allowed.
