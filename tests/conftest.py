"""Shared fixtures: a tiny built dataset, made once per test session."""

import io

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import artist_tfds  # noqa: F401  Registers the builders.

TINY = "sample_paintings/tiny"


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> str:
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    tfds.builder(TINY, data_dir=data_dir).download_and_prepare()
    return data_dir


@pytest.fixture(scope="session")
def tiny_builder(tiny_data_dir):
    return tfds.builder(TINY, data_dir=tiny_data_dir)


def encode(array: np.ndarray, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt)
    return buffer.getvalue()
