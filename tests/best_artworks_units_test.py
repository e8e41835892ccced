"""best_artworks helpers on tiny inputs: names, layouts, artists.csv, Pillow checks, split rule, shards."""

import hashlib
import io
import pathlib
import struct
import unicodedata
import zlib

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from artist_tfds.best_artworks import images
from artist_tfds.best_artworks import layout
from artist_tfds.best_artworks import metadata
from artist_tfds.best_artworks import naming
from artist_tfds.best_artworks import shards
from artist_tfds.best_artworks import splits

STORED = images.StoredSize(short_side=320, long_side=640)
DURER_NFD = unicodedata.normalize("NFD", "Albrecht_Dürer")


def _pixels(seed: int, size: tuple[int, int] = (80, 64)) -> np.ndarray:
    width, height = size
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _encode(image: Image.Image, fmt: str = "JPEG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _write(path: pathlib.Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def _bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A ~60-byte PNG whose header claims width x height pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


# --- names -------------------------------------------------------------------

@pytest.mark.parametrize("folder", [
    "Albrecht_Du╠êrer",  # UTF-8 (NFD) read as cp437: the Kaggle zip.
    "Albrecht_DuÌˆrer",  # The same bytes read as cp1252: a mirror's twin.
    "Albrecht_DuÌ\x88rer",  # ... read as latin-1.
    "Albrecht_D├╝rer",  # UTF-8 (NFC) read as cp437.
    "Albrecht_DÃ¼rer",  # UTF-8 (NFC) read as cp1252.
    DURER_NFD,  # macOS NFD.
    "Albrecht_Dürer",
    "Albrecht_D\udcfcrer",  # Raw latin-1 byte on a UTF-8 file system.
])
def test_display_name_repairs_every_spelling_of_durer(folder):
    name = naming.display_name(folder)
    assert name == "Albrecht Dürer"
    assert unicodedata.is_normalized("NFC", name)


@pytest.mark.parametrize("folder, expected", [
    ("Vincent_van_Gogh", "Vincent van Gogh"),
    ("Pierre-Auguste_Renoir", "Pierre-Auguste Renoir"),
    ("  Édouard__Manet ", "Édouard Manet"),  # Correct accents are left alone.
    ("Ilya_Repin_Илья_Репин", "Ilya Repin Илья Репин"),
])
def test_display_name_keeps_correct_names(folder, expected):
    assert naming.display_name(folder) == expected


def test_match_key_ignores_case_accents_and_punctuation():
    assert (naming.match_key("Albrecht_Durer") == naming.match_key("ALBRECHT DÜRER")
            == naming.match_key("Albrecht_Du╠êrer") == "albrecht durer")
    assert naming.match_key("Pierre-Auguste_Renoir") == "pierre auguste renoir"


# --- artists.csv -------------------------------------------------------------

def test_artists_csv_rows_match_repaired_folder_names(tmp_path):
    csv_path = tmp_path / "artists.csv"
    csv_path.write_text(
        "id,name,years,genre,nationality,bio,wikipedia,paintings\n"
        '0,Albrecht DÃ¼rer,1471 - 1528,Northern Renaissance,German,"Bio, with comma.",'
        "http://en.wikipedia.org/wiki/Albrecht_D%C3%BCrer,328\n"
        "1,Pablo Picasso,1881 - 1973,Cubism,Spanish,Bio,http://w/Picasso,439\n",
        encoding="utf-8")
    rows, problems = metadata.read_artists_csv(csv_path)
    assert problems == []
    assert rows[0] == metadata.Artist("Albrecht Dürer", "1471 - 1528", "Northern Renaissance",
                                      "German", "http://en.wikipedia.org/wiki/Albrecht_D%C3%BCrer")
    displays = [naming.display_name("Albrecht_Du╠êrer"), naming.display_name("Edvard_Munch")]
    resolved, unmatched, without_images = metadata.resolve(displays, rows)
    assert resolved["Albrecht Dürer"].nationality == "German"
    assert resolved["Edvard Munch"] == metadata.Artist("Edvard Munch")
    assert unmatched == ["Edvard Munch"]
    assert without_images == ["Pablo Picasso"]


def test_artists_csv_without_name_column_is_ignored_with_a_reason(tmp_path):
    csv_path = tmp_path / "artists.csv"
    csv_path.write_bytes("artist,years\nDürer,1471\n".encode("cp1252"))
    rows, problems = metadata.read_artists_csv(csv_path)
    assert rows == [] and "no `name` column" in problems[0]


def test_unreadable_artists_csv_is_ignored_with_a_reason(tmp_path):
    rows, problems = metadata.read_artists_csv(tmp_path / "missing.csv")
    assert rows == [] and problems[0].startswith("artists.csv ignored:")


# --- layouts -----------------------------------------------------------------

def _jpeg_tree(root: pathlib.Path, relative_paths: list[str]) -> None:
    for seed, relative in enumerate(relative_paths):
        _write(root / relative, _encode(Image.fromarray(_pixels(seed))))


def test_scan_kaggle_prefers_originals_and_notes_resized(tmp_path):
    _jpeg_tree(tmp_path, ["images/images/Claude_Monet/Claude_Monet_1.jpg",
                          "resized/resized/Claude_Monet_1.jpg"])
    (tmp_path / "artists.csv").write_text("name\nClaude Monet\n")
    scan = layout.scan(tmp_path)
    assert scan.layout == layout.KAGGLE
    assert [f.key for f in scan.files] == ["images/images/Claude_Monet/Claude_Monet_1.jpg"]
    assert scan.files[0].folder == "Claude_Monet"
    assert scan.artists_csv == str(tmp_path / "artists.csv")
    assert "resized/resized/ ignored" in scan.notes[0]


def test_scan_flat_resized_takes_artist_from_file_name(tmp_path):
    _jpeg_tree(tmp_path, ["resized/resized/Vincent_van_Gogh_12.jpg",
                          "resized/resized/Albrecht_Du╠êrer_3.jpg",
                          "resized/resized/cover.jpg"])
    scan = layout.scan(tmp_path)
    assert scan.layout == layout.KAGGLE_RESIZED
    assert sorted(f.folder for f in scan.files) == ["Albrecht_Du╠êrer", "Vincent_van_Gogh"]
    assert scan.unattributed == ("resized/resized/cover.jpg",)


def test_scan_images_folders_include_subfolders_and_skip_system_folders(tmp_path):
    _jpeg_tree(tmp_path, ["images/Frida_Kahlo/early/1.jpg", "images/Frida_Kahlo/2.png",
                          "images/__MACOSX/Frida_Kahlo/._2.png", "images/.git/x.jpg"])
    scan = layout.scan(tmp_path)
    assert scan.layout == layout.IMAGES_FOLDERS
    assert [f.key for f in scan.files] == ["images/Frida_Kahlo/2.png",
                                           "images/Frida_Kahlo/early/1.jpg"]
    assert {f.folder for f in scan.files} == {"Frida_Kahlo"}


def test_scan_plain_artist_folders_ignores_top_level_files(tmp_path):
    _jpeg_tree(tmp_path, ["Canaletto/a.jpg", f"{DURER_NFD}/b.jpg", "README.md"])
    scan = layout.scan(tmp_path)
    assert scan.layout == layout.ARTIST_FOLDERS
    assert len(scan.files) == 2 and "README.md ignored" in scan.notes[0]


def test_unknown_layout_error_lists_what_was_found(tmp_path):
    _write(tmp_path / "paintings.zip", b"PK\x03\x04")
    _write(tmp_path / "notes.txt", b"hello")
    with pytest.raises(layout.LayoutError) as error:
        layout.scan(tmp_path)
    message = str(error.value)
    assert "paintings.zip" in message and "notes.txt" in message
    assert "images/images/<Artist_Name>" in message and "unzip it" in message
    with pytest.raises(layout.LayoutError, match="does not exist"):
        layout.scan(tmp_path / "missing")


# --- Pillow checks -----------------------------------------------------------

@pytest.mark.parametrize("data, reason", [
    (b"", images.EMPTY),
    (b"\x00\x00\x00\x01Bud1" + bytes(40), images.NOT_AN_IMAGE),  # .DS_Store
    (b"Scream study, 1893\n", images.NOT_AN_IMAGE),
    (_bomb_png(), images.BOMB),  # Over 2x Pillow's limit: Pillow refuses to open it.
    (_bomb_png(10000, 9000), images.BOMB),  # Between 1x and 2x: only a warning in Pillow.
    (_encode(Image.fromarray(_pixels(0, (20, 90)))), images.TOO_SMALL),
    (_encode(Image.new("RGB", (80, 80)), "ICO"), images.UNSUPPORTED),
])
def test_inspect_skips_with_reason(tmp_path, data, reason):
    inspection = images.inspect_file(_write(tmp_path / "x.jpg", data))
    assert inspection.skip is not None and images.reason_of(inspection.skip) == reason
    assert inspection.sha256 == hashlib.sha256(data).hexdigest()


def test_truncated_jpeg_passes_inspection_but_is_skipped_when_decoded(tmp_path):
    full = _encode(Image.fromarray(_pixels(1, (200, 150))), quality=90)
    path = _write(tmp_path / "cut.jpg", full[: len(full) * 6 // 10])
    assert images.inspect_file(path).skip is None
    outcome, jpeg = images.process("cut.jpg", path, STORED)
    assert images.reason_of(outcome.skip) == images.CORRUPT and jpeg == b""


def test_unreadable_path_is_skipped(tmp_path):
    assert images.reason_of(images.inspect_file(str(tmp_path / "gone.jpg")).skip) == images.UNREADABLE


def _decoded(jpeg: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(jpeg))
    assert image.format == "JPEG" and image.mode == "RGB"
    return np.asarray(image)


def test_png_named_jpg_with_alpha_becomes_rgb_jpeg_over_white(tmp_path):
    rgba = np.zeros((64, 80, 4), np.uint8)
    rgba[..., 2] = 200  # Opaque blue on the right half, transparent on the left.
    rgba[:, 40:, 3] = 255
    path = _write(tmp_path / "painting.jpg", _encode(Image.fromarray(rgba), "PNG"))
    outcome, jpeg = images.process("painting.jpg", path, STORED)
    pixels = _decoded(jpeg).astype(int)
    assert outcome.skip is None and (outcome.width, outcome.height) == (80, 64)
    assert pixels[:, :30].min() > 240  # Transparent -> white.
    assert pixels[:, 50:, 2].mean() > 180 and pixels[:, 50:, 0].mean() < 30


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "1", "I;16", "LA"])
def test_every_mode_becomes_rgb(tmp_path, mode):
    source = Image.fromarray(_pixels(2)).convert("L" if mode == "I;16" else mode)
    if mode == "I;16":  # A 16-bit grayscale PNG: full range, not clipped at 255.
        source = Image.fromarray((np.asarray(source).astype(np.uint16) * 257))
    fmt = "JPEG" if mode in ("L", "CMYK") else "PNG"
    path = _write(tmp_path / "x", _encode(source, fmt))
    outcome, jpeg = images.process("x", path, STORED)
    pixels = _decoded(jpeg).astype(int)
    assert outcome.skip is None and pixels.shape == (64, 80, 3)
    if mode in ("L", "I;16", "LA", "1"):
        assert np.abs(pixels[..., 0] - pixels[..., 2]).max() <= 3  # Still gray.
    assert 40 < pixels.mean() < 215  # Not crushed to black or white.


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((72, 120, 3), np.uint8)
    pixels[:, :20] = 255  # A white band on the left of the stored (sideways) image.
    exif = Image.Exif()
    exif[0x0112] = 6  # "Rotate 90 CW to display".
    path = _write(tmp_path / "x.jpg", _encode(Image.fromarray(pixels), quality=95, exif=exif))
    decoded = _decoded(images.process("x.jpg", path, STORED)[1]).astype(int)
    assert decoded.shape == (120, 72, 3)  # Upright: portrait.
    assert decoded[:15].mean() > 200 and decoded[30:].mean() < 40  # The band is now on top.


@pytest.mark.parametrize("size, stored, expected", [
    ((1200, 900), STORED, (427, 320)),
    ((900, 1200), STORED, (320, 427)),
    ((3000, 1000), STORED, (640, 213)),  # Panorama: the long side is capped.
    ((300, 200), STORED, (300, 200)),  # Never upscaled.
    ((4000, 3000), images.StoredSize(), (4000, 3000)),  # Source resolution.
])
def test_target_size(size, stored, expected):
    assert images.target_size(size, stored) == expected


def test_large_jpeg_is_stored_at_target_size_with_same_content(tmp_path):
    y, x = np.mgrid[0:900, 0:1200]
    pixels = np.stack([x * 255 // 1200, y * 255 // 900, np.full_like(x, 90)], -1).astype(np.uint8)
    path = _write(tmp_path / "big.jpg", _encode(Image.fromarray(pixels), quality=92))
    decoded = _decoded(images.encode_file(path, STORED)).astype(int)
    assert decoded.shape == (320, 427, 3)
    expected = np.asarray(Image.fromarray(pixels).resize((427, 320)), dtype=int)
    assert np.abs(decoded - expected).mean() < 3  # Draft decoding + resize keep the picture.


def test_same_bytes_give_the_same_stored_jpeg(tmp_path):
    path = _write(tmp_path / "x.jpg", _encode(Image.fromarray(_pixels(3, (700, 500)))))
    assert images.encode_file(path, STORED) == images.encode_file(path, STORED)


# --- split rule --------------------------------------------------------------

def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _items(artist: str, count: int, start: int = 0) -> list[splits.Item]:
    return [splits.Item(f"{artist}/{i}", artist, _sha(f"{artist}{i}")) for i in range(start, start + count)]


def test_hash_split_thresholds():
    assert splits.hash_split("0" * 64) == "train"
    assert splits.hash_split("cc" + "0" * 62) == "train"  # 0xcc / 256 = 0.797
    assert splits.hash_split("d0" + "0" * 62) == "validation"  # 0.8125
    assert splits.hash_split("f" * 64) == "test"
    fractions = [splits.hash_fraction(_sha(str(i))) for i in range(20000)]
    shares = np.histogram(fractions, bins=[0, 0.8, 0.9, 1.0])[0] / len(fractions)
    np.testing.assert_allclose(shares, splits.FRACTIONS, atol=0.01)


def test_every_artist_with_three_images_is_in_every_split():
    items = _items("a", 3) + _items("b", 4) + _items("c", 2) + _items("d", 5)
    split_of, moves, unmet = splits.assign(items)
    for artist in "abd":
        assert {split_of[i.key] for i in items if i.artist == artist} == set(splits.SPLITS)
    assert unmet == [] and all(m["artist"] in "abd" for m in moves)


def test_adding_images_never_moves_others_of_a_large_artist():
    split_before, moves, _ = splits.assign(_items("big", 200))
    assert moves == []  # 200 images fill every split by hash alone.
    split_after, _, _ = splits.assign(_items("big", 230) + _items("other", 50))
    assert all(split_after[key] == split for key, split in split_before.items())


def test_only_a_guarantee_move_can_change_when_a_small_artist_grows():
    for size in range(3, 12):
        split_small, moves, _ = splits.assign(_items("s", size))
        split_grown, _, _ = splits.assign(_items("s", size + 1))
        moved = {m["file"] for m in moves}
        changed = {k for k, split in split_small.items() if split_grown[k] != split}
        assert changed <= moved


def test_copies_shared_between_artists_are_never_moved():
    shared = _sha("shared")
    items = [splits.Item("a/shared", "a", shared, movable=False),
             splits.Item("b/shared", "b", shared, movable=False)]
    items += _items("a", 3) + _items("b", 3)
    split_of, moves, _ = splits.assign(items)
    assert split_of["a/shared"] == split_of["b/shared"] == splits.hash_split(shared)
    assert all(m["file"] not in ("a/shared", "b/shared") for m in moves)


def test_unfillable_split_is_reported():
    shared = [splits.Item(f"a/{i}", "a", _sha(f"x{i}"), movable=False) for i in range(3)]
    split_of, moves, unmet = splits.assign(shared)
    assert moves == [] and {u["split"] for u in unmet} == set(splits.SPLITS) - set(split_of.values())


def test_folds_test_every_image_once():
    shas = [_sha(f"f{i}") for i in range(3000)]
    tested = [{sha for sha in shas if splits.hash_split(sha, fold) == "test"}
              for fold in range(splits.FOLDS)]
    assert splits.FOLDS == 10
    assert sum(len(t) for t in tested) == len(shas) and set().union(*tested) == set(shas)
    assert all(250 < len(t) < 350 for t in tested)
    # Fold 0 is the rule itself; fold k's test is the slice k tenths below the top.
    assert all(splits.hash_split(sha, 0) == splits.hash_split(sha) for sha in shas)
    u_0898 = "e6" + "0" * 62  # 0xe6 / 256 = 0.898
    assert [splits.hash_split(u_0898, fold) for fold in (0, 1, 2)] == [
        "validation", "test", "train"]  # 0.898, 0.998, then 1.098 wraps to 0.098.
    assert splits.hash_split("0" * 64, 9) == "test"  # 0.0 + 0.9
    for bad in (-1, 10, 1.5):
        with pytest.raises(ValueError, match="split fold must be an integer in 0..9"):
            splits.hash_fraction(shas[0], bad)


def test_guarantee_holds_in_every_fold():
    items = _items("a", 3) + _items("b", 4) + _items("d", 5)
    for fold in range(splits.FOLDS):
        split_of, _, unmet = splits.assign(items, fold)
        assert unmet == []
        for artist in "abd":
            assert {split_of[i.key] for i in items if i.artist == artist} == set(splits.SPLITS)


# --- shards ------------------------------------------------------------------

@pytest.mark.parametrize("total_size, num_examples, expected", [
    (250 << 20, 6700, 16),  # Kaggle train at ~38 KB an image: TFDS alone would write 2.
    (30 << 20, 845, 13),
    (10 << 20, 200, 3),
    (1 << 20, 10, 1),
    (300 << 30, 100_000, 1024),  # Huge: TFDS's size-based count wins.
])
def test_min_shards(total_size, num_examples, expected):
    assert shards.MinShardsConfig().get_number_shards(total_size, num_examples) == expected


def test_user_shard_count_wins_and_other_options_survive():
    config = shards.with_min_shards(tfds.download.DownloadConfig(num_shards=3, manual_dir="/m"))
    assert config.manual_dir == "/m"
    assert config.get_shard_config().get_number_shards(250 << 20, 6700) == 3
    assert shards.with_min_shards(tfds.download.DownloadConfig()).get_shard_config() \
        .get_number_shards(250 << 20, 6700) == 16
