"""Pictures of the test in TensorBoard and the run folder: mistakes, PR curves, embedding, reliability diagram."""

import csv
from pathlib import Path

import pytest
import torch
from conftest import compose_config, metrics_of
from helpers import read_events
from PIL import Image
from torchmetrics.classification import MulticlassCalibrationError

from mnist_cnn.eval import evaluate
from mnist_cnn.images import DIGITS
from mnist_cnn.insight import mistakes_figure, penultimate_layer, reliability_bins
from mnist_cnn.metrics import CALIBRATION_BINS
from mnist_cnn.tensor_datamodule import MNISTTensorDataModule
from mnist_cnn.trained import classifier_from_weights


def embedding_dir(run_dir: Path) -> Path:
    (folder,) = (run_dir / "tensorboard").glob("*/test%2fpenultimate")
    return folder


def test_tensorboard_has_every_picture_of_the_test(tiny_run: Path) -> None:
    events = read_events(tiny_run / "tensorboard")
    tags = events.Tags()
    assert {"test/mistakes", "test/reliability_diagram"} <= set(tags["images"])
    assert {f"test/pr_curve/{digit}" for digit in DIGITS} <= set(tags["tensors"])
    for name in ("test_mistakes.png", "test_reliability.png"):
        with Image.open(tiny_run / name) as image:
            assert image.width > 400
    config = (tiny_run / "tensorboard" / "projector_config.pbtxt").read_text()
    assert 'tensor_name: "test/penultimate' in config and "sprite" in config


def test_the_embedding_is_the_penultimate_layer_of_the_first_test_images(tiny_run: Path, mnist_root: Path) -> None:
    folder = embedding_dir(tiny_run)
    with (folder / "tensors.tsv").open() as file:
        features = torch.tensor([[float(value) for value in row] for row in csv.reader(file, delimiter="\t")])
    with (folder / "metadata.tsv").open() as file:
        header, *rows = list(csv.reader(file, delimiter="\t"))
    data = MNISTTensorDataModule(mnist_root, val_size=40, download=False)
    data.setup("test")
    images, labels = data.test_set.__getitems__(list(range(len(features))))
    model = classifier_from_weights(tiny_run / "mnist_classifier.pth").eval()
    expected = []
    hook = penultimate_layer(model.net).register_forward_hook(lambda _, inputs, __: expected.append(inputs[0]))
    with torch.no_grad():
        predicted = model(images).argmax(dim=1)
    hook.remove()

    assert features.shape == (len(data.test_set), 64)  # fewer test images here than the 2,000 embedded
    assert torch.allclose(features, expected[0], atol=1e-4)
    assert header == ["label", "predicted"]
    assert rows == [[str(int(label)), str(int(guess))] for label, guess in zip(labels, predicted, strict=True)]
    with Image.open(folder / "sprite.png") as sprite:
        assert sprite.width % 28 == 0 and sprite.width >= 28 * 9  # 80 digits: a 9x9 grid of 28x28 tiles


def test_mistakes_are_shown_most_confident_first_with_true_and_predicted_names() -> None:
    probabilities = torch.tensor([[0.1, 0.9], [0.4, 0.6], [0.05, 0.95]])
    labels = torch.tensor([0, 0, 0])
    figure = mistakes_figure(torch.zeros(3, 1, 28, 28), labels, probabilities, ["cat", "dog"], limit=2)
    (ax,) = figure.axes
    assert [text.get_text() for text in ax.texts] == ["cat\n→ dog (0.95)", "cat\n→ dog (0.90)"]
    assert "2 most confident of 3 mistakes" in ax.get_title()


def test_the_reliability_bins_give_the_calibration_error() -> None:
    generator = torch.Generator().manual_seed(1)
    probabilities = (torch.randn(400, 10, generator=generator) * 2).softmax(dim=1)
    labels = torch.randint(0, 10, (400,), generator=generator)
    binned = reliability_bins(probabilities, labels)
    share = binned["counts"] / binned["counts"].sum()
    gaps = (binned["accuracy"] - binned["confidence"]).abs().nan_to_num(0)
    calibration = MulticlassCalibrationError(10, n_bins=CALIBRATION_BINS)(probabilities, labels)
    assert float((share * gaps).sum()) == pytest.approx(float(calibration), abs=1e-5)
    assert int(binned["counts"].sum()) == 400


def test_pictures_can_be_switched_off_one_by_one(tiny_run: Path, mnist_root: Path, tmp_path: Path) -> None:
    cfg = compose_config(
        "eval",
        f"ckpt_path={metrics_of(tiny_run)['checkpoint']}",
        f"paths.data_dir={mnist_root}",
        f"paths.output_dir={tmp_path}",
        "data.download=false",
        "data.val_size=40",
        "trainer.accelerator=cpu",
        "export_onnx=false",
        "callbacks.insight.mistakes=0",
        "callbacks.insight.embeddings=0",
    )
    evaluate(cfg)
    tags = read_events(tmp_path / "tensorboard").Tags()
    assert "test/reliability_diagram" in tags["images"] and "test/mistakes" not in tags["images"]
    assert not (tmp_path / "test_mistakes.png").exists() and (tmp_path / "test_reliability.png").is_file()
    assert not (tmp_path / "tensorboard" / "projector_config.pbtxt").exists()
    assert "test/pr_curve/0" in tags["tensors"]
