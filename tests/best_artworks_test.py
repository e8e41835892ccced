"""The best_artworks builder end to end: dummy_data, every layout, stable splits, Beam, interruptions."""

import io
import json
import pathlib
import unicodedata

from apache_beam.options import pipeline_options
from apache_beam.runners.direct import direct_runner
from apache_beam.runners.portability import prism_runner
from apache_beam.runners.portability.fn_api_runner import fn_runner
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core import shuffle

from artist_tfds.best_artworks import beam_steps
from artist_tfds.best_artworks import best_artworks_dataset_builder as builder_lib
from artist_tfds.best_artworks import catalog
from artist_tfds.best_artworks import layout
from artist_tfds.best_artworks import report

DUMMY_DATA = pathlib.Path(builder_lib.__file__).parent / "dummy_data"
DUMMY_SPLITS = {"train": 10, "validation": 4, "test": 4}
DUMMY_NAMES = ["Albrecht Dürer", "Claude Monet", "Edvard Munch", "Vincent van Gogh"]
GOGH = "images/images/Vincent_van_Gogh/Vincent_van_Gogh_"
MUNCH = "images/images/Edvard_Munch/"


class BestArtworksTest(tfds.testing.DatasetBuilderTestCase):
    """The standard TFDS contract over dummy_data/, laid out like the Kaggle zip."""

    DATASET_CLASS = builder_lib.Builder
    # top_11 keeps all four dummy artists, so every config has the same counts.
    BUILDER_CONFIG_NAMES_TO_TEST = ["all", "top_11", "all_source_size"]
    SPLITS = DUMMY_SPLITS


# --- helpers -----------------------------------------------------------------

def _jpeg(seed: int, size: tuple[int, int] = (72, 64)) -> bytes:
    width, height = size
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def _write_collection(root: pathlib.Path, counts: dict[str, int], *, pattern: str,
                      seed: int = 0) -> None:
    """`counts[folder]` distinct JPEGs at `pattern.format(folder=…, index=…)`."""
    for artist_index, (folder, count) in enumerate(sorted(counts.items())):
        for index in range(count):
            path = root / pattern.format(folder=folder, index=index)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_jpeg(seed + 1000 * artist_index + index))


def _build(manual_dir, data_dir, config: str = "all", **download_options) -> tfds.core.DatasetBuilder:
    builder = builder_lib.Builder(data_dir=str(data_dir), config=config)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(manual_dir), **download_options))
    return builder


def _examples(builder) -> dict[str, dict[str, dict]]:
    """{split: {file_name: example}}, images left as stored JPEG bytes."""
    names = builder.info.features["label"].names
    found = {}
    for split in builder.info.splits:
        dataset = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
        found[split] = {
            ex["file_name"].decode(): {
                "label": names[ex["label"]],
                "image": ex["image"],
                "artist": {k: v.decode() for k, v in ex["artist"].items()},
            }
            for ex in tfds.as_numpy(dataset)
        }
    return found


def _split_of(examples: dict) -> dict[str, str]:
    return {key: split for split, by_key in examples.items() for key in by_key}


def _report(builder) -> dict:
    return report.read(str(builder.data_path / report.FILE_NAME))


def _pixels(jpeg: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(jpeg))
    assert image.format == "JPEG" and image.mode == "RGB"
    return np.asarray(image).astype(int)


# --- dummy_data: the Kaggle layout with every kind of bad file -------------------

@pytest.fixture(scope="module")
def dummy(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("dummy")
    builder = _build(DUMMY_DATA, data_dir)
    return {"data_dir": data_dir, "builder": builder, "examples": _examples(builder),
            "report": _report(builder)}


def test_names_are_repaired_and_reload_without_manual_dir(dummy):
    assert dummy["builder"].info.features["label"].names == DUMMY_NAMES
    reloaded = tfds.builder("best_artworks", data_dir=str(dummy["data_dir"]))
    assert reloaded.info.features["label"].names == DUMMY_NAMES
    assert {s: reloaded.info.splits[s].num_examples for s in DUMMY_SPLITS} == DUMMY_SPLITS
    assert _split_of(_examples(reloaded)) == _split_of(dummy["examples"])


def test_mojibake_twins_merge_into_one_artist_with_csv_metadata(dummy):
    durer = [ex for by_key in dummy["examples"].values() for key, ex in by_key.items()
             if ex["label"] == "Albrecht Dürer"]
    assert len(durer) == 4  # 5 files in two twin folders, one byte-identical copy.
    assert durer[0]["artist"] == {
        "name": "Albrecht Dürer", "years": "1471 - 1528", "genre": "Northern Renaissance",
        "nationality": "German", "wikipedia": "http://en.wikipedia.org/wiki/Albrecht_D%C3%BCrer"}
    assert unicodedata.is_normalized("NFC", durer[0]["artist"]["name"])
    rows = {a["name"]: a for a in dummy["report"]["artists"]}
    assert rows["Albrecht Dürer"]["folders"] == ["Albrecht_DuÌˆrer", "Albrecht_Du╠êrer"]
    assert rows["Albrecht Dürer"]["duplicates_dropped"] == 1


def test_artist_without_csv_row_is_kept_and_reported(dummy):
    munch = [ex for by_key in dummy["examples"].values() for ex in by_key.values()
             if ex["label"] == "Edvard Munch"]
    assert len(munch) == 3
    assert munch[0]["artist"] == {"name": "Edvard Munch", "years": "", "genre": "",
                                  "nationality": "", "wikipedia": ""}
    assert dummy["report"]["unmatched_artists"] == ["Edvard Munch"]
    assert dummy["report"]["artists_csv_rows_without_images"] == ["Pablo Picasso"]


def test_every_artist_in_every_split(dummy):
    for row in dummy["report"]["artists"]:
        assert all(row[split] >= 1 for split in DUMMY_SPLITS), row
    labels = {s: {ex["label"] for ex in by_key.values()} for s, by_key in dummy["examples"].items()}
    assert all(found == set(DUMMY_NAMES) for found in labels.values())


def test_bad_files_are_skipped_each_with_its_reason(dummy):
    reasons = {s["file"]: s["reason"].split(":")[0] for s in dummy["report"]["skipped"]}
    assert reasons == {
        f"{GOGH}4.jpg": "truncated or corrupt",
        "images/images/Vincent_van_Gogh/.DS_Store": "not an image",
        f"{MUNCH}Edvard_Munch_4.jpg": "too small",
        f"{MUNCH}Edvard_Munch_5.png": "decompression bomb",
        f"{MUNCH}Edvard_Munch_6.jpg": "empty file",
        f"{MUNCH}Thumbs.db": "not an image",
        f"{MUNCH}notes.txt": "not an image",
    }
    stored = set(_split_of(dummy["examples"]))
    assert not stored & set(reasons)


def test_odd_images_are_stored_upright_rgb_jpeg(dummy):
    by_key = {k: ex for split in dummy["examples"].values() for k, ex in split.items()}
    gray = _pixels(by_key[f"{GOGH}1.jpg"]["image"])
    assert np.abs(gray[..., 0] - gray[..., 2]).max() <= 3
    png_named_jpg = _pixels(by_key[f"{GOGH}2.jpg"]["image"])
    assert png_named_jpg[:16, :16].min() > 235  # Its transparent corner, over white.
    cmyk = _pixels(by_key[f"{GOGH}6.jpg"]["image"])
    assert cmyk.shape == (72, 96, 3) and 30 < cmyk.mean() < 225
    assert _pixels(by_key[f"{GOGH}7.jpg"]["image"]).shape == (96, 64, 3)  # EXIF rotation.
    assert all(k.startswith("images/images/") for k in by_key)  # Keys are relative.


def test_duplicates_collapse_and_shared_copies_share_a_split(dummy):
    split_of = _split_of(dummy["examples"])
    duplicate, = dummy["report"]["duplicates"]
    assert duplicate["kept"] in split_of and duplicate["dropped"][0] not in split_of
    shared, = dummy["report"]["shared_between_artists"]
    assert shared["artists"] == ["Claude Monet", "Vincent van Gogh"]
    assert {split_of[f] for f in shared["files"]} == {shared["split"]}


def test_report_counts_add_up_and_resized_copy_is_ignored(dummy):
    rep = dummy["report"]
    assert {s: rep["totals"][s] for s in DUMMY_SPLITS} == DUMMY_SPLITS
    for split in DUMMY_SPLITS:
        assert sum(a[split] for a in rep["artists"]) == DUMMY_SPLITS[split]
    assert rep["totals"]["files_found"] == 26 and rep["totals"]["skipped"] == 7
    assert rep["layout"] == layout.KAGGLE and "resized/resized/ ignored" in rep["notes"][0]
    assert rep["summary"][0].startswith("best_artworks/all 1.0.0: 18 examples of 4 artists")
    assert not any("resized/" in key for key in _split_of(dummy["examples"]))


def test_stored_size_config(dummy, tmp_path):
    collection = tmp_path / "paintings"
    for index, size in enumerate([(1000, 700), (700, 1000), (400, 300)]):
        path = collection / "Big" / f"{index}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_jpeg(index, size))
    sizes = {}
    for config in ("all", "all_source_size"):
        examples = _examples(_build(collection, tmp_path / config, config))
        sizes[config] = sorted(_pixels(ex["image"]).shape[:2]
                               for by_key in examples.values() for ex in by_key.values())
    assert sizes["all"] == [(300, 400), (320, 457), (457, 320)]
    assert sizes["all_source_size"] == [(300, 400), (700, 1000), (1000, 700)]


# --- the other layouts -------------------------------------------------------

def test_flat_resized_layout(tmp_path):
    _write_collection(tmp_path / "in", {"Albrecht_Du╠êrer": 3, "Frida_Kahlo": 4},
                      pattern="resized/resized/{folder}_{index}.jpg")
    (tmp_path / "in/resized/resized/cover.jpg").write_bytes(_jpeg(99))
    builder = _build(tmp_path / "in", tmp_path / "data")
    assert builder.info.features["label"].names == ["Albrecht Dürer", "Frida Kahlo"]
    assert builder.info.splits.total_num_examples == 7
    rep = _report(builder)
    assert rep["layout"] == layout.KAGGLE_RESIZED
    assert rep["skipped"][0]["file"] == "resized/resized/cover.jpg"
    assert rep["unmatched_artists"] == []  # No artists.csv: nothing to match.


def test_images_folders_layout_with_csv(tmp_path):
    _write_collection(tmp_path / "in", {"Frida_Kahlo": 3, "Paul_Klee": 3},
                      pattern="images/{folder}/sub/{index}.png.jpg")
    (tmp_path / "in/artists.csv").write_text("name,years\nPaul Klee,1879 - 1940\n")
    builder = _build(tmp_path / "in", tmp_path / "data")
    examples = _examples(builder)
    klee = [ex for by_key in examples.values() for ex in by_key.values()
            if ex["label"] == "Paul Klee"]
    assert len(klee) == 3 and klee[0]["artist"]["years"] == "1879 - 1940"
    assert _report(builder)["unmatched_artists"] == ["Frida Kahlo"]


def test_plain_artist_folders_merge_nfd_and_nfc_twins(tmp_path):
    nfd = unicodedata.normalize("NFD", "Albrecht_Dürer")
    _write_collection(tmp_path / "in", {nfd: 2, "Albrecht_Dürer": 2, "Canaletto": 3},
                      pattern="{folder}/{index}.jpg")
    (tmp_path / "in/README.md").write_text("notes")
    builder = _build(tmp_path / "in", tmp_path / "data")
    assert builder.info.features["label"].names == ["Albrecht Dürer", "Canaletto"]
    assert builder.info.splits.total_num_examples == 7
    assert _report(builder)["layout"] == layout.ARTIST_FOLDERS


def test_unrecognisable_layout_and_no_valid_image_stop_with_a_message(tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat/painting.jpg").write_bytes(_jpeg(1))
    with pytest.raises(layout.LayoutError, match="painting.jpg"):
        _build(tmp_path / "flat", tmp_path / "data1")
    (tmp_path / "junk/Artist").mkdir(parents=True)
    (tmp_path / "junk/Artist/a.jpg").write_bytes(b"")
    (tmp_path / "junk/Artist/b.txt").write_text("hello")
    with pytest.raises(catalog.NoValidImagesError, match="1 empty file, 1 not an image"):
        _build(tmp_path / "junk", tmp_path / "data2")
    assert not (tmp_path / "data2/best_artworks/all/1.0.0").exists()


def test_top_artists_config_keeps_the_largest(tmp_path):
    _write_collection(tmp_path / "in", {f"Artist_{i:02d}": 3 + i for i in range(13)},
                      pattern="{folder}/{index}.jpg")
    builder = _build(tmp_path / "in", tmp_path / "data", config="top_11")
    assert builder.info.features["label"].names == [f"Artist {i:02d}" for i in range(2, 13)]
    assert [e["artist"] for e in _report(builder)["excluded_artists"]] == ["Artist 01", "Artist 00"]


# --- stability, shards, Beam, interruptions ------------------------------------

@pytest.fixture(scope="module")
def medium(tmp_path_factory):
    """Three artists with 60 images each: big enough for 2 train shards."""
    root = tmp_path_factory.mktemp("medium")
    _write_collection(root / "in", {"Artist_A": 60, "Artist_B": 60, "Artist_C": 60},
                      pattern="{folder}/{folder}_{index}.jpg")
    builder = _build(root / "in", root / "data")
    return {"root": root, "builder": builder, "examples": _examples(builder)}


def test_adding_an_image_moves_no_other_image(medium):
    assert _report(medium["builder"])["split_guarantee_moves"] == []
    root = medium["root"]
    (root / "in/Artist_B/Artist_B_new.jpg").write_bytes(_jpeg(424242))
    grown = _examples(_build(root / "in", root / "data_grown"))
    before, after = _split_of(medium["examples"]), _split_of(grown)
    assert len(after) == len(before) + 1
    assert {key: after[key] for key in before} == before
    # The stored bytes did not change either.
    assert all(grown[s][k]["image"] == medium["examples"][s][k]["image"] for k, s in before.items())


def test_enough_shards_for_interleave(medium):
    splits_info = medium["builder"].info.splits
    assert splits_info["train"].num_examples >= 128
    assert splits_info["train"].num_shards == splits_info["train"].num_examples // 64
    assert splits_info["test"].num_shards == 1


def test_spilled_shuffle_stores_the_same_splits_in_the_same_order(medium, tmp_path, monkeypatch):
    spilled = []
    add = shuffle._Bucket.add  # pylint: disable=protected-access
    monkeypatch.setattr(shuffle._Bucket, "add",  # pylint: disable=protected-access
                        lambda bucket, *args: (spilled.append(1), add(bucket, *args)))
    in_memory = _examples(_build(medium["root"] / "in", tmp_path / "in_memory"))
    assert not spilled
    monkeypatch.setattr(builder_lib, "SHUFFLE_MEMORY", 1)  # Spill from the first example.
    builder = _build(medium["root"] / "in", tmp_path / "spilled")
    assert len(spilled) == sum(split.num_examples for split in builder.info.splits.values())
    assert shuffle.MAX_MEM_BUFFER_SIZE == 1000 << 20  # TFDS's own, restored.
    examples = _examples(builder)
    assert examples == in_memory
    assert ({split: list(by_key) for split, by_key in examples.items()}
            == {split: list(by_key) for split, by_key in in_memory.items()})


def test_beam_build_equals_default_build(dummy, tmp_path):
    beam_builder = _build(DUMMY_DATA, tmp_path, beam_runner=fn_runner.FnApiRunner())
    assert beam_builder.info.features["label"].names == DUMMY_NAMES
    assert _examples(beam_builder) == dummy["examples"]
    beam_report = {k: v for k, v in _report(beam_builder).items() if k != "manual_dir"}
    assert beam_report == {k: v for k, v in dummy["report"].items() if k != "manual_dir"}


def test_fold_config_tests_other_paintings_and_reloads_by_name(medium, tmp_path):
    root = medium["root"]
    fold = _build(root / "in", tmp_path, config="all_fold3")
    assert fold.builder_config.split_fold == 3 and _report(fold)["split_fold"] == 3
    examples = _examples(fold)
    stored = {k: e["image"] for by_key in examples.values() for k, e in by_key.items()}
    stored_fold0 = {k: e["image"] for by_key in medium["examples"].values()
                    for k, e in by_key.items()}
    # The same stored bytes (another test may have added one painting to the folder).
    assert {k: stored[k] for k in stored_fold0} == stored_fold0
    assert not set(examples["test"]) & set(medium["examples"]["test"])
    assert len(examples["test"]) >= 9  # 180 paintings, ~18 a split.
    reloaded = tfds.builder("best_artworks/all_fold3", data_dir=str(tmp_path))
    assert reloaded.info.splits["test"].num_examples == len(examples["test"])
    for name in ("all_fold10", "all_fold03", "all_fold0", "nope_fold1"):
        with pytest.raises(ValueError, match=f"{name} not found"):
            tfds.builder(f"best_artworks/{name}", data_dir=str(tmp_path))


def test_beam_build_of_a_fold_equals_default_build(dummy, tmp_path):
    beam = _build(DUMMY_DATA, tmp_path / "beam", config="all_fold7",
                  beam_runner=fn_runner.FnApiRunner())
    default = _examples(_build(DUMMY_DATA, tmp_path / "default", config="all_fold7"))
    assert _examples(beam) == default
    assert _split_of(default) != _split_of(dummy["examples"])
    assert _report(beam)["split_fold"] == 7


@pytest.fixture
def runs(monkeypatch):
    """Every Beam runner that runs a pipeline, with its workers; Prism and DirectRunner refuse."""
    used = []
    run_pipeline = fn_runner.FnApiRunner.run_pipeline

    def record(self, pipeline, options):
        result = run_pipeline(self, pipeline, options)
        # Set by run_pipeline from direct_running_mode and direct_num_workers.
        used.append((type(self).__name__, type(self._default_environment).__name__,
                     self._num_workers))
        return result

    def refuse(self, pipeline, options):
        used.append(type(self).__name__)
        raise AssertionError(f"{type(self).__name__} ran: the runner is not pinned")

    monkeypatch.setattr(fn_runner.FnApiRunner, "run_pipeline", record)
    monkeypatch.setattr(direct_runner.SwitchingDirectRunner, "run_pipeline", refuse)
    monkeypatch.setattr(prism_runner.PrismRunner, "run_pipeline", refuse)
    return used


def test_two_process_beam_build_is_pinned_and_equals_default_build(dummy, tmp_path, runs):
    # What `tfds build --beam_pipeline_options=direct_running_mode=...` passes: no runner.
    options = pipeline_options.PipelineOptions(
        ["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    beam_builder = _build(DUMMY_DATA, tmp_path, beam_options=options)
    # One pipeline, on two worker processes, never DirectRunner's Prism attempt.
    assert runs == [("FnApiRunner", "SubprocessSDKEnvironment", 2)]
    found = _examples(beam_builder)
    assert {s: sorted(by_key) for s, by_key in found.items()} == {
        s: sorted(by_key) for s, by_key in dummy["examples"].items()}
    assert found == dummy["examples"]  # Labels, metadata and the stored JPEG bytes too.


@pytest.mark.parametrize("flags, pinned", [
    ([], True),
    (["--runner=DirectRunner"], True),
    (["--runner=direct"], True),
    (["--runner=FnApiRunner"], True),
    (["--runner=PrismRunner"], False),
    (["--runner=DataflowRunner", "--project=p"], False),
    (["--runner=FlinkRunner"], False),
])
def test_pin_runner_replaces_only_the_local_runner(flags, pinned):
    options = pipeline_options.PipelineOptions(
        [*flags, "--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    config = beam_steps.pin_runner(tfds.download.DownloadConfig(beam_options=options))
    assert isinstance(config.beam_runner, fn_runner.FnApiRunner) == pinned
    assert config.beam_options is options
    if pinned:  # Its workers get the options (the pickler...), as under DirectRunner.
        encoded = config.beam_runner._provision_info.provision_info.pipeline_options
        workers = pipeline_options.PipelineOptions.from_runner_api(encoded)
        direct = workers.view_as(pipeline_options.DirectOptions)
        assert direct.direct_running_mode == "multi_processing"


def test_pin_runner_replaces_a_direct_runner_object_and_keeps_others():
    direct = tfds.download.DownloadConfig(beam_runner=direct_runner.DirectRunner())
    assert isinstance(beam_steps.pin_runner(direct).beam_runner, fn_runner.FnApiRunner)
    own = tfds.download.DownloadConfig(beam_runner=fn_runner.FnApiRunner())
    assert beam_steps.pin_runner(own) is own


def test_interrupted_build_leaves_nothing_that_loads_and_rerun_finishes(tmp_path, monkeypatch):
    original = builder_lib.Builder._generate_examples

    def fail_after_two(self, *args, **kwargs):
        for count, example in enumerate(original(self, *args, **kwargs)):
            if count == 2:
                raise KeyboardInterrupt("interrupted")
            yield example

    monkeypatch.setattr(builder_lib.Builder, "_generate_examples", fail_after_two)
    with pytest.raises(KeyboardInterrupt):
        _build(DUMMY_DATA, tmp_path)
    assert not tfds.builder("best_artworks", data_dir=str(tmp_path)).is_prepared()
    assert list((tmp_path / "best_artworks/all").iterdir()) == []  # No half-written version.
    monkeypatch.setattr(builder_lib.Builder, "_generate_examples", original)
    rerun = _build(DUMMY_DATA, tmp_path)
    assert {s: rerun.info.splits[s].num_examples for s in DUMMY_SPLITS} == DUMMY_SPLITS
    assert json.loads((rerun.data_path / "build_report.json").read_text())["totals"]["examples"] == 18
