"""The augmentation contact sheet."""

import numpy as np
from PIL import Image

from artist_id import preview


def test_preview_writes_a_labelled_sheet_of_the_expected_size(tmp_path, tiny_builder):
    out = str(tmp_path / "sheet.png")
    size = preview.write_preview(tiny_builder, "train", out, n=3, paintings=2, image_size=32)
    sheet = np.asarray(Image.open(out).convert("RGB"))
    assert size == preview.sheet_size(2, 3, 32) == (sheet.shape[1], sheet.shape[0])
    top = preview.PAD + preview.LABEL_HEIGHT
    for column in range(4):  # The stored view and 3 augmentations: painted, not blank.
        left = preview.PAD + column * (32 + preview.PAD)
        assert np.std(sheet[top:top + 32, left:left + 32]) > 5
    label = sheet[preview.PAD:top, :200]
    assert (label < 128).any() and (label == 255).any()  # Dark text on white.
    tiles = [sheet[top:top + 32, preview.PAD + c * 38:preview.PAD + c * 38 + 32] for c in (1, 2)]
    assert not np.array_equal(*tiles)  # Different draws.
