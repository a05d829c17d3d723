"""The metrics a run reports: per-class numbers, macro F1 and calibration error, against direct counts."""

import csv
import itertools
import json
from pathlib import Path

import pytest
import torch
from helpers import read_events

from mnist_cnn.images import DIGITS
from mnist_cnn.metrics import CALIBRATION_BINS, stage_metrics


def confusion_of(run_dir: Path) -> torch.Tensor:
    with (run_dir / "test_confusion_matrix.csv").open() as file:
        rows = list(csv.reader(file))[1:]
    return torch.tensor([[int(count) for count in row[1:]] for row in rows], dtype=torch.float64)


def test_per_class_numbers_and_macro_f1_agree_with_the_confusion_matrix(tiny_run: Path) -> None:
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    counts = confusion_of(tiny_run)  # rows: true class, columns: predicted
    hits = counts.diag()
    recall = hits / counts.sum(dim=1)
    precision = torch.nan_to_num(hits / counts.sum(dim=0))  # a class never predicted: precision 0
    f1 = torch.nan_to_num(2 * precision * recall / (precision + recall))

    assert list(metrics["test_per_class"]) == list(DIGITS)
    for digit, numbers in metrics["test_per_class"].items():
        index = int(digit)
        assert numbers["recall"] == pytest.approx(float(recall[index]), abs=1e-6)
        assert numbers["accuracy"] == pytest.approx(float(recall[index]), abs=1e-6)  # a class's share read right
        assert numbers["precision"] == pytest.approx(float(precision[index]), abs=1e-6)
    assert metrics["test_macro_f1"] == pytest.approx(float(f1.mean()), abs=1e-6)
    assert metrics["test_acc"] == pytest.approx(float(hits.sum() / counts.sum()), abs=1e-6)
    assert 0 <= metrics["test_calibration_error"] <= 1


def expected_calibration_error(probabilities: torch.Tensor, labels: torch.Tensor, bins: int) -> float:
    """ECE written out: per confidence bin, |accuracy - mean confidence|, weighted by the bin's share."""
    confidence, predicted = probabilities.max(dim=1)
    correct = (predicted == labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    error = 0.0
    for low, high in itertools.pairwise(edges):
        chosen = (confidence.double() > low) & (confidence.double() <= high)
        if chosen.any():
            gap = correct[chosen].mean() - confidence[chosen].double().mean()
            error += float(chosen.double().mean() * gap.abs())
    return error


def test_calibration_error_is_the_binned_gap_between_confidence_and_accuracy() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 10, generator=generator) * 3
    labels = torch.randint(0, 10, (500,), generator=generator)
    labels[:300] = logits[:300].argmax(dim=1)  # 60%+ right, with a spread of confidences
    probabilities = logits.softmax(dim=1)
    metrics = stage_metrics("test", 10)
    metrics.update(probabilities, labels)
    values = metrics.compute()

    assert float(values["test/calibration_error"]) == pytest.approx(
        expected_calibration_error(probabilities, labels, CALIBRATION_BINS), abs=1e-5
    )
    assert set(values) >= {"test/acc", "test/macro_f1", "test/class_precision/9", "test/class_recall/0"}


def test_tensorboard_has_the_per_class_scalars_of_every_validation_and_the_test(tiny_run: Path) -> None:
    scalars = set(read_events(tiny_run / "tensorboard").Tags()["scalars"])
    for stage in ("val", "test"):
        assert {f"{stage}/macro_f1", f"{stage}/calibration_error"} <= scalars
        for measure in ("accuracy", "precision", "recall"):
            assert {f"{stage}/class_{measure}/{digit}" for digit in DIGITS} <= scalars
    assert len(read_events(tiny_run / "tensorboard").Scalars("val/class_recall/7")) == 2  # one per epoch
