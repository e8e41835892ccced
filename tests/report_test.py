"""The report's numbers and files, the curves, and the artists' metadata it shows."""

import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from artist_tfds import features
from tests.conftest import ROOT, encode
from trainer import report


def test_report_numbers_match_hand_computed_confusion():
    names = ["A", "B", "C"]
    labels = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 2, 2])
    probabilities = np.full((6, 3), 0.1)
    probabilities[np.arange(6), predicted] = 0.8
    metrics = report.compute_metrics(labels, probabilities, names)
    assert metrics["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    # Recalls 2/3, 1/2, 1; precisions 1, 1/2, 1/2.
    assert metrics["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    f1 = [2 * 1 * (2 / 3) / (1 + 2 / 3), 0.5, 2 * 0.5 * 1 / 1.5]
    assert metrics["macro_f1"] == pytest.approx(np.mean(f1))
    assert metrics["per_artist"]["B"] == pytest.approx(
        {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert metrics["top3_accuracy"] == 1.0


def test_report_files(tmp_path):
    names = ["A", "B"]
    images = [encode(np.full((20, 30, 3), v, np.uint8)) for v in (10, 120, 240)]
    probabilities = np.array([[0.9, 0.1], [0.3, 0.7], [0.95, 0.05]])
    metrics = report.write_report(str(tmp_path), labels=np.array([0, 0, 1]),
                                  probabilities=probabilities, names=names, images=images, title="t")
    with open(tmp_path / "report.json") as f:
        assert json.load(f)["accuracy"] == pytest.approx(1 / 3) == metrics["accuracy"]
    assert "| A | 0.50 | 0.50 | 0.50 | 2 |" in (tmp_path / "report.md").read_text()
    for name in ("confusion.png", "mistakes.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_curves_plot_a_run_without_validation(tmp_path):
    # Keras' CSVLogger fills the val_* columns with "NA" when there is no validation split.
    metrics_csv = tmp_path / "metrics.csv"
    metrics_csv.write_text("epoch,accuracy,loss,val_accuracy,val_loss\n"
                           "0,0.5,1.2,NA,NA\n1,0.75,0.8,NA,NA\n")
    report.plot_curves(str(metrics_csv), str(tmp_path / "curves.png"))
    with open(tmp_path / "curves.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_artist_metadata_comes_from_the_dataset(tmp_path):
    dummy = os.path.join(ROOT, "artist_tfds", "best_artworks", "dummy_data")
    builder = tfds.builder("best_artworks/all", data_dir=str(tmp_path))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=dummy))
    metadata = features.artist_metadata(builder)
    assert set(metadata) == set(builder.info.features["label"].names)
    assert metadata["Albrecht Dürer"]["years"] == "1471 - 1528"
    assert metadata["Vincent van Gogh"]["nationality"] == "Dutch"
    assert metadata["Edvard Munch"]["genre"] == ""  # No artists.csv row: kept, empty.
