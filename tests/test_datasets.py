"""MNIST's siblings (Fashion-MNIST, KMNIST), from uncompressed or distributed `.gz` files, on both data paths."""

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import FAST, VAL_SIZE, compose_config, write_mnist

from mnist_cnn.datamodule import CLASS_NAMES, MNISTDataModule
from mnist_cnn.errors import ConfigError, DataError
from mnist_cnn.photo_like import photo_of
from mnist_cnn.predict import predict
from mnist_cnn.tensor_datamodule import MNISTTensorDataModule
from mnist_cnn.train import train

FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def loaded(module_class: type, root: Path, dataset: str) -> MNISTDataModule | MNISTTensorDataModule:
    data = module_class(data_dir=root, dataset=dataset, download=False, val_size=VAL_SIZE)
    data.prepare_data()
    data.setup()
    return data


@pytest.mark.parametrize("dataset", ["FashionMNIST", "KMNIST"])
def test_gzipped_and_uncompressed_files_give_the_same_images_on_both_paths(tmp_path: Path, dataset: str) -> None:
    plain = write_mnist(tmp_path / "plain", dataset=dataset)
    packed = write_mnist(tmp_path / "packed", dataset=dataset, gzipped=True)
    assert sorted(path.suffix for path in (packed / dataset / "raw").iterdir()) == [".gz"] * 4

    reference = loaded(MNISTTensorDataModule, plain, dataset)
    reference_images, reference_labels = reference.test_set.__getitems__(list(range(len(reference.test_set))))
    for module_class in (MNISTTensorDataModule, MNISTDataModule):
        data = loaded(module_class, packed, dataset)
        assert len(data.test_set) == len(reference.test_set) and len(data.val_set) == VAL_SIZE
        image, label = data.test_set[5]
        assert torch.allclose(torch.as_tensor(image).reshape(1, 28, 28), reference_images[5].reshape(1, 28, 28))
        assert label == int(reference_labels[5])
        assert data.class_names == CLASS_NAMES[dataset]
    assert CLASS_NAMES["FashionMNIST"] == FASHION


def test_fashion_mnist_trains_from_the_distributed_gz_files_with_class_names_everywhere(tmp_path: Path) -> None:
    root = write_mnist(tmp_path / "data", dataset="FashionMNIST", gzipped=True)
    run_dir = tmp_path / "run"
    overrides = ["data=fashion_mnist", f"paths.data_dir={root}", f"paths.output_dir={run_dir}", *FAST]
    train(compose_config("train", *overrides, "export_onnx=true"))

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert list(metrics["test_per_class"]) == list(FASHION)
    with (run_dir / "test_confusion_matrix.csv").open() as file:
        header, *rows = list(csv.reader(file))
    assert header[1:] == list(FASHION) and [row[0] for row in rows] == list(FASHION)
    (metadata,) = (run_dir / "tensorboard").glob("*/test%2fpenultimate/metadata.tsv")
    names = {line.split("\t")[0] for line in metadata.read_text().splitlines()[1:]}
    assert names <= set(FASHION) and len(names) > 1
    classes = onnx.load(run_dir / "mnist_classifier.onnx").metadata_props
    assert {prop.key: prop.value for prop in classes}["classes"] == ",".join(FASHION)

    photos = tmp_path / "photos"
    photos.mkdir()
    photo_of(np.eye(28, dtype=np.uint8) * 255, np.random.default_rng(0)).save(photos / "diagonal.png")
    for model in (f"ckpt_path={metrics['checkpoint']}", f"onnx_path={run_dir / 'mnist_classifier.onnx'}"):
        (row,) = predict(compose_config("predict", model, f"inputs={photos}", f"paths.output_dir={tmp_path / 'p'}"))
        assert row["prediction"] in FASHION and row["top3"].split(":")[0] in FASHION


def test_data_kmnist_keeps_characters_unmirrored_and_fashion_flips() -> None:
    kmnist = compose_config("train", "data=kmnist").data
    fashion = compose_config("train", "data=fashion_mnist").data
    assert (kmnist.dataset, kmnist.augmentation.flip_p, kmnist.augmentation.degrees) == ("KMNIST", 0.0, 10)
    assert (fashion.dataset, fashion.augmentation.flip_p) == ("FashionMNIST", 0.5)


def test_missing_files_name_the_dataset_and_where_they_were_looked_for(tmp_path: Path) -> None:
    data = MNISTTensorDataModule(data_dir=tmp_path, dataset="KMNIST", download=False)
    with pytest.raises(DataError) as error:
        data.prepare_data()
    message = str(error.value)
    assert message.startswith(f"KMNIST not found: {tmp_path / 'KMNIST' / 'raw'} lacks train-images-idx3-ubyte")
    assert "(or .gz)" in message and "KMNIST/raw/" in message and "\n" not in message


def test_a_damaged_gz_file_is_named_with_its_fault(tmp_path: Path) -> None:
    root = write_mnist(tmp_path / "data", dataset="FashionMNIST", gzipped=True)
    archive = root / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    archive.write_bytes(archive.read_bytes()[:20])  # cut short
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz is not a readable gzip file"):
        loaded(MNISTTensorDataModule, root, "FashionMNIST")

    archive.write_bytes(gzip.compress(bytes(8)))  # a whole gzip file, holding a cut IDX file
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz is not an IDX file of this kind"):
        loaded(MNISTTensorDataModule, root, "FashionMNIST")


def test_an_unknown_dataset_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.dataset must be one of MNIST, FashionMNIST, KMNIST, got 'CIFAR10'"):
        MNISTTensorDataModule(data_dir=tmp_path, dataset="CIFAR10")


def test_a_failed_download_names_the_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(self) -> None:
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nno route")

    monkeypatch.setattr("torchvision.datasets.FashionMNIST.download", no_network)
    data = MNISTTensorDataModule(data_dir=tmp_path, dataset="FashionMNIST", download=True)
    with pytest.raises(DataError, match=r"could not download FashionMNIST into .*FashionMNIST/raw \(Error"):
        data.prepare_data()
