"""Shared fixtures and helpers: tiny built datasets made once per session, encoders, runners."""

import contextlib
import dataclasses
import io
import os
import socket
import struct
import subprocess
import sys
import threading
import zlib

import keras
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import artist_tfds  # noqa: F401  Registers the builders.
from artist_tfds import features as features_lib
from artist_tfds.sample_paintings import sample_paintings_dataset_builder as sample_builder
from artist_id import configs
import pipeline
from pipeline import views as views_lib
from serving import explain, export
from serving import head as head_lib
from serving import gallery as gallery_lib
from trainer import config as config_lib
from trainer import models, verification
from trainer import train_lib

TINY = "sample_paintings/tiny"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
# The original recipe's augmentation: every transform on, the widest ranges.
FULL_AUGMENT = configs.resolve("original", {}).augment
DATA_FIELDS = {f.name for f in dataclasses.fields(pipeline.DataConfig)}


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> str:
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    tfds.builder(TINY, data_dir=data_dir).download_and_prepare()
    return data_dir


@pytest.fixture(scope="session")
def tiny_builder(tiny_data_dir):
    return tfds.builder(TINY, data_dir=tiny_data_dir)


# --- A skewed dataset (registered with TFDS as "skewed_paintings") ---------------------

# Paintings per artist in `train`: as skewed as the Kaggle set's tail.
SKEWED_COUNTS = (60, 12, 6)


class SkewedPaintings(tfds.core.GeneratorBasedBuilder):
    """Three artists, 60 / 12 / 6 tiny training paintings; 2 each in `test`."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, features=features_lib.painting_features(["A", "B", "C"]),
            supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples(SKEWED_COUNTS),
                "test": self._generate_examples((2,) * 3)}

    def _generate_examples(self, counts):
        for label, count in enumerate(counts):
            for i in range(count):
                # A distinct flat grey per painting: its mean identifies it.
                image = np.full((12, 16, 3), 3 * i + 1, np.uint8)
                yield f"{label}/{i}", {"image": encode(image, "PNG"), "label": label,
                                       "file_name": f"{label}_{i}.png"}


@pytest.fixture(scope="session")
def skewed_builder(tmp_path_factory):
    builder = SkewedPaintings(data_dir=str(tmp_path_factory.mktemp("skewed")))
    builder.download_and_prepare()
    return builder


def encode(array: np.ndarray, fmt: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **options)
    return buffer.getvalue()


def make_split(builder, split: str, *, training: bool, deterministic: bool = True,
               augment_on: str = "host", **options):
    """`pipeline.create_split` with DataConfig fields and other options as keywords.

    Training splits get `FULL_AUGMENT` (on `augment_on`) unless `augment` is given;
    deterministic unless told otherwise, so tests can compare runs; one view of each
    painting (not the declared multi-scale) unless `eval_scale` is given.
    """
    options.setdefault("eval_scale", 0.0)
    data = pipeline.DataConfig(**{k: v for k, v in options.items() if k in DATA_FIELDS})
    rest = {k: v for k, v in options.items() if k not in DATA_FIELDS}
    if training and "augment" not in rest:
        rest["augment"] = dataclasses.replace(FULL_AUGMENT, on=augment_on)
    return pipeline.create_split(builder, split, data, training=training,
                                 deterministic=deterministic, **rest)


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """A project command line (`[script, flags...]`) in a subprocess, from the project root."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, **kwargs)


@contextlib.contextmanager
def running(application):
    """An ASGI `application` served by uvicorn in a thread, on a localhost socket bound
    first (no port race); yields its URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(application, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:  # Set by uvicorn once it listens.
            assert thread.is_alive(), "the server did not start"
            thread.join(timeout=0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


# --- A tiny exported model (untrained) with made-up artists -----------------------------

IMAGE_SIZE = 32
ARTISTS = ["Piet Gridwell", "Jackson Splatterby", "Georges Pointelle", "Marko Hazeworth",
           "Vasily Orbisky", "Vincent van Swirl"]
ARTIST_METADATA = {
    "Piet Gridwell": {"years": "1872 - 1944", "genre": "Neoplasticism",
                      "nationality": "Dutch", "wikipedia": "https://example.org/gridwell"},
    "Vincent van Swirl": {"years": "1853 - 1890", "genre": "Post-Impressionism",
                          "nationality": "Dutch", "wikipedia": "https://example.org/swirl"},
}
METRICS = {"test_accuracy": 0.75, "test_loss": 0.5, "test_examples": 12}


def create_tiny_model() -> keras.Model:
    """Untrained, but with augmentation and dropout that would change outputs if active."""
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3)),
        keras.layers.RandomFlip("horizontal_and_vertical"),
        keras.layers.RandomContrast(0.5),
        keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(len(ARTISTS)),
    ])


GALLERY_SIZE = 8


def tiny_gallery(model: keras.Model) -> gallery_lib.Gallery:
    """Pictures 100..107 as the training paintings `similar` finds, artist i % 6."""
    pictures = [picture(100 + i, 32, 32) for i in range(GALLERY_SIZE)]
    embed = gallery_lib.embedding_fn(explain.explainable(model))
    return gallery_lib.Gallery(
        embeddings=embed(np.stack(pictures).astype(np.float32) / 255),
        labels=np.arange(GALLERY_SIZE, dtype=np.int32) % len(ARTISTS),
        file_names=np.array([f"gallery/{i}.jpg".encode() for i in range(GALLERY_SIZE)], object),
        thumbnails=np.array([encode(p) for p in pictures], object))


def export_tiny_model(path: str) -> str:
    model = create_tiny_model()
    return export.export_model(
        model, path, artist_names=ARTISTS, views=views_lib.Views(IMAGE_SIZE),
        artist_metadata=ARTIST_METADATA, gallery=tiny_gallery(model),
        metadata={"dataset": "sample_paintings/tiny/1.0.0", "metrics": METRICS})


def picture(seed: int = 0, height: int = 48, width: int = 64) -> np.ndarray:
    """Flat colour blocks: few colours (GIF keeps them exactly) and little JPEG ringing."""
    blocks = np.random.default_rng(seed).integers(0, 256, (4, 4, 3)).astype(np.uint8)
    return np.kron(blocks, np.ones((height // 4, width // 4, 1))).astype(np.uint8)


@pytest.fixture(scope="session")
def tiny_saved_model(tmp_path_factory) -> str:
    """`export_tiny_model` once per session (serving and predict.py tests read it)."""
    return export_tiny_model(str(tmp_path_factory.mktemp("export") / "saved_model"))


def png_header(width: int, height: int) -> bytes:
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))


# --- Training runs ---------------------------------------------------------------------


def tiny_config(data_dir: str, **overrides) -> config_lib.TrainConfig:
    """The scratch recipe shrunk to seconds: the original's small CNN (a fraction of
    resnet_small's graph to trace), 32 px, batches of 8, 2 epochs, on TINY."""
    return configs.resolve("scratch", {"dataset": TINY, "data_dir": data_dir, "model": "seed_cnn",
                                       "image_size": 32, "batch_size": 8, "epochs": 2,
                                       "warmup_epochs": 1, **overrides})


@pytest.fixture(scope="session")
def trained_run(tiny_data_dir, tmp_path_factory):
    """(config, workdir, metrics) of one finished `tiny_config` run, shared by the tests."""
    workdir = str(tmp_path_factory.mktemp("run"))
    config = tiny_config(tiny_data_dir)
    return config, workdir, train_lib.train_and_evaluate(config, workdir)


# --- A model base of a cosine-head model, for enrolment and verification ----------------

COSINE_SIZE = 64
KNOWN = 5  # sample_paintings' first five artists are trained; the sixth is the newcomer.
PER_ARTIST = 16
NEWCOMER = sample_builder.ARTIST_NAMES[KNOWN]


def painting(artist: int, index: int) -> bytes:
    """A procedural painting of `artist` as JPEG bytes, as the dataset stores it."""
    return sample_builder.create_example("default", "train", artist, index)[1]["image"]


def pixels(encoded: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(encoded)).convert("RGB").resize((COSINE_SIZE, COSINE_SIZE))
    return np.asarray(image, np.float32) / 255.0


@pytest.fixture(scope="session")
def cosine_model_base(tmp_path_factory) -> str:
    """MODEL_BASE/1: five artists, a cosine head on EfficientNet-Lite0's ImageNet features."""
    keras.utils.set_random_seed(0)
    model = models.create_model("backbone", backbone="efficientnet_lite0", weights="imagenet",
                                num_classes=KNOWN, image_size=COSINE_SIZE, head="cosine")
    models.set_backbone_trainable(model, False)
    encoded = [painting(a, i) for a in range(KNOWN) for i in range(PER_ARTIST)]
    x = np.stack([pixels(e) for e in encoded])
    y = np.repeat(np.arange(KNOWN), PER_ARTIST)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=8, batch_size=16, verbose=0)
    embed = gallery_lib.embedding_fn(explain.explainable(model))
    gallery = gallery_lib.Gallery(
        embeddings=embed(x), labels=y.astype(np.int32),
        file_names=np.array([f"{i}.jpg".encode() for i in range(len(y))], object),
        thumbnails=np.array([encode(picture(i, 16, 16)) for i in range(len(y))], object))
    # Verification's thresholds from paintings the head did not train on, as from validation.
    validation = np.stack([pixels(painting(a, 300 + i)) for a in range(KNOWN) for i in range(8)])
    fitted = verification.fit(embed(validation), np.repeat(np.arange(KNOWN), 8),
                              head_lib.CosineHead.of(model).directions.numpy(),
                              false_accept=0.05)
    base = tmp_path_factory.mktemp("models")
    export.export_model(model, str(base / "1"), artist_names=list(sample_builder.ARTIST_NAMES[
        :KNOWN]), views=views_lib.Views(COSINE_SIZE), answer=export.Answer(top_k=3),
                        gallery=gallery, verification=fitted,
                        metadata={"config": {"export": {"gallery_per_artist": 6}}})
    return str(base)


@pytest.fixture(scope="session")
def newcomer_files(tmp_path_factory) -> list[str]:
    """20 paintings of the sixth artist on disk: 10 to enrol from, 10 to recognise."""
    folder = tmp_path_factory.mktemp("newcomer")
    files = []
    for i in range(20):
        path = folder / f"newcomer_{i:02d}.jpg"
        path.write_bytes(painting(KNOWN, 100 + i))
        files.append(str(path))
    return files
