"""robustness=true: the test accuracy of rotated and mirrored test images, as a table, a plot and in TensorBoard."""

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import VAL_SIZE, compose_config, metrics_of
from helpers import read_events
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image

from mnist_cnn.eval import evaluate
from mnist_cnn.insight import InsightPictures
from mnist_cnn.robustness import ROTATIONS, RobustnessCheck, transformed
from mnist_cnn.tensor_datamodule import MNISTTensorDataModule
from mnist_cnn.trained import classifier_from_checkpoint, classifier_from_weights


@pytest.fixture(scope="module")
def robustness_run(tiny_run: Path, mnist_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output_dir = tmp_path_factory.mktemp("robustness")
    cfg = compose_config(
        "eval",
        f"ckpt_path={metrics_of(tiny_run)['checkpoint']}",
        f"paths.data_dir={mnist_root}",
        f"paths.output_dir={output_dir}",
        "data.download=false",
        f"data.val_size={VAL_SIZE}",
        "trainer.accelerator=cpu",
        "export_onnx=false",
        "robustness=true",
    )
    evaluate(cfg)
    return output_dir


def read_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "robustness.csv").open() as file:
        return list(csv.DictReader(file))


def test_every_rotation_and_the_flip_has_a_row(robustness_run: Path) -> None:
    rows = read_rows(robustness_run)
    assert list(rows[0]) == ["transform", "parameter", "accuracy"]
    assert [int(row["parameter"]) for row in rows if row["transform"] == "rotation"] == list(range(-45, 50, 5))
    assert [row["transform"] for row in rows[len(ROTATIONS) :]] == ["horizontal_flip"]
    assert all(0 <= float(row["accuracy"]) <= 1 for row in rows)
    with Image.open(robustness_run / "robustness.png") as figure:
        assert figure.width > 400
    assert "test/robustness" in read_events(robustness_run / "tensorboard").Tags()["images"]


def test_no_rotation_is_the_test_accuracy_and_the_flip_is_a_mirror(
    robustness_run: Path, tiny_run: Path, mnist_root: Path
) -> None:
    rows = {(row["transform"], int(row["parameter"])): float(row["accuracy"]) for row in read_rows(robustness_run)}
    assert rows[("rotation", 0)] == pytest.approx(metrics_of(robustness_run)["test_acc"], abs=1e-4)

    data = MNISTTensorDataModule(mnist_root, val_size=VAL_SIZE, download=False)
    data.setup("test")
    images, labels = data.test_set.__getitems__(list(range(len(data.test_set))))
    model = classifier_from_weights(tiny_run / "mnist_classifier.pth").eval()
    with torch.no_grad():
        mirrored = (model(images.flip(-1)).argmax(dim=1) == labels).float().mean()
    assert rows[("horizontal_flip", 1)] == pytest.approx(float(mirrored), abs=1e-4)


def test_a_rotation_keeps_the_background_black_and_turns_the_digit() -> None:
    pixels = torch.zeros(1, 1, 28, 28)
    pixels[0, 0, 4:24, 13:15] = 1  # a vertical bar
    images = (pixels - 0.5) / 0.5
    turned = transformed(images, "rotation", 90) * 0.5 + 0.5
    assert turned.min() == 0 and turned[0, 0, 13:15, 4:24].mean() > 0.9  # now a horizontal bar
    pixels[0, 0, 4:8, 3:6] = 1  # and a mark on the left, so that a mirror shows
    images = (pixels - 0.5) / 0.5
    assert torch.equal(transformed(images, "horizontal_flip", 1), images.flip(-1))


def test_the_embedding_is_of_the_plain_images_whichever_callback_runs_first(
    tiny_run: Path, mnist_root: Path, tmp_path: Path
) -> None:
    module = classifier_from_checkpoint(metrics_of(tiny_run)["checkpoint"])
    data = MNISTTensorDataModule(mnist_root, val_size=VAL_SIZE, download=False)
    insight = InsightPictures(mistakes=0, pr_curves=False, reliability=False)
    trainer = L.Trainer(
        accelerator="cpu",
        logger=TensorBoardLogger(tmp_path, name="", version=""),
        callbacks=[RobustnessCheck(tmp_path), insight],  # the rotated passes run before the pictures' hook reads
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.test(module, datamodule=data)
    (embedded,) = tmp_path.glob("*/test%2fpenultimate/tensors.tsv")
    (reference,) = (tiny_run / "tensorboard").glob("*/test%2fpenultimate/tensors.tsv")
    assert embedded.read_text() == reference.read_text()
