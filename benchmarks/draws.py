"""An open-set draw as later benchmarks read it: a work directory of `open_set.py`, whose model
was trained without some artists (`held_out.json` names them and the source folder).

`enroll_bench.py` and `verify_bench.py` take these directories: the trained
model, the known artists' built splits and the held-out artists' paintings,
without training anything again.
"""

import dataclasses
import json
import os

import numpy as np
import tensorflow_datasets as tfds

import pipeline
from artist_tfds.best_artworks import images, layout

HELD_OUT_RECORD = "held_out.json"
RUN = "run"


def split_files(builder, split: str, source_dir: str) -> tuple[list[str], np.ndarray]:
    """Source paths and labels of a built split's paintings, in stored order."""
    ds = builder.as_dataset(split=split, shuffle_files=False,
                            decoders={"image": tfds.decode.SkipDecoding()})
    rows = [(os.path.join(source_dir, r["file_name"].decode()), r["label"])
            for r in tfds.as_numpy(ds)]
    return [path for path, _ in rows], np.array([label for _, label in rows], np.int64)


def held_out_paintings(scan: layout.Scan, held_out: list[str]) -> list[layout.SourceFile]:
    """Every file of the held-out artists that the builder would have taken for a painting."""
    return [f for f in scan.files
            if f.folder in held_out and images.inspect_file(f.path).skip is None]


@dataclasses.dataclass
class Draw:
    """One finished open-set draw."""

    workdir: str
    held_out: list[str]  # Folder names.
    known: list[str]  # The model's artists' display names, in label order.
    model_dir: str
    builder: object  # The known artists' dataset.
    source_dir: str  # The known artists' folders (links), as the builder read them.
    held_out_files: dict[str, list[str]]  # Folder -> its paintings' paths, sorted.

    def split(self, split: str) -> tuple[list[str], np.ndarray]:
        return split_files(self.builder, split, self.source_dir)


def load(workdir: str) -> Draw:
    """The draw in `workdir` (open_set.py's --workdir), which must have finished."""
    with open(os.path.join(workdir, HELD_OUT_RECORD), encoding="utf-8") as f:
        record = json.load(f)
    model_dir = os.path.join(workdir, RUN, "saved_model")
    if not os.path.exists(os.path.join(model_dir, "saved_model.pb")):
        raise FileNotFoundError(f"{workdir}: its run has no SavedModel yet (run open_set.py)")
    with open(os.path.join(workdir, RUN, "config.json"), encoding="utf-8") as f:
        data = json.load(f)["data"]
    builder = pipeline.load_builder(data["dataset"], data_dir=os.path.join(workdir, "data"))
    scan = layout.scan(record["source_dir"])
    files: dict[str, list[str]] = {}
    for source in held_out_paintings(scan, record["held_out"]):
        files.setdefault(source.folder, []).append(source.path)
    return Draw(workdir, record["held_out"], pipeline.artist_names(builder), model_dir, builder,
                os.path.join(workdir, "source"), {k: sorted(v) for k, v in files.items()})


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counted half (Mann-Whitney U / n m)."""
    negative = np.sort(negative)
    below = np.searchsorted(negative, positive, "left")
    not_above = np.searchsorted(negative, positive, "right")
    return float((below + not_above).mean() / (2 * len(negative)))


def read(paths: list[str]) -> list[bytes]:
    out = []
    for path in paths:
        with open(path, "rb") as f:
            out.append(f.read())
    return out
