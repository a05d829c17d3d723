"""Plain PyTorch training loops (no Lightning), timed: the chapter's own, and ours over the fast data path.

    python benchmarks/plain_loops.py chapter --data-dir ../shared/data --epochs 5
    python benchmarks/plain_loops.py fast --data-dir ../shared/data --epochs 5

Each prints one JSON line: seconds per epoch, images trained per second, test accuracy and test-set
inference images per second. `train_speed.py` runs both beside `mnist-cnn-train`.
"""

import argparse
import json
import time
from collections.abc import Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import MNIST

from mnist_cnn.augment import RandomFlipRotate
from mnist_cnn.cnn import ConvolutionalMNISTClassifier
from mnist_cnn.tensor_datamodule import MNISTTensorDataModule

BATCH_SIZE = 64
LEARNING_RATE = 1e-3


def chapter_loaders(data_dir: str, val_size: int) -> tuple[DataLoader, DataLoader, list[DataLoader]]:
    """The chapter's data: all training images (no validation split) through per-sample PIL augmentation."""
    to_tensor = [transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))]
    augment = [transforms.RandomHorizontalFlip(0.5), transforms.RandomRotation(10)]
    train = MNIST(data_dir, train=True, transform=transforms.Compose(augment + to_tensor))
    test = MNIST(data_dir, train=False, transform=transforms.Compose(to_tensor))
    return DataLoader(train, BATCH_SIZE, shuffle=True), DataLoader(test, BATCH_SIZE), []


def fast_loaders(data_dir: str, val_size: int) -> tuple[DataLoader, DataLoader, list[DataLoader]]:
    """Our default data: the tensor path with its train/val split, validated every epoch like our training."""
    datamodule = MNISTTensorDataModule(
        data_dir,
        BATCH_SIZE,
        eval_batch_size=1000,
        val_size=val_size,
        download=False,
        augmentation=RandomFlipRotate(0.5, 10),
    )
    datamodule.setup()
    return datamodule.train_dataloader(), datamodule.test_dataloader(), [datamodule.val_dataloader()]


def accuracy(net: nn.Module, batches: Iterable, memory_format: torch.memory_format) -> tuple[float, float]:
    """(accuracy, images per second) of `net` over `batches`."""
    net.eval()
    correct = total = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for images, labels in batches:
            correct += int((net(images.contiguous(memory_format=memory_format)).argmax(1) == labels).sum())
            total += len(labels)
    net.train()
    return correct / total, total / (time.perf_counter() - start)


def run(kind: str, data_dir: str, epochs: int, seed: int, val_size: int) -> dict:
    torch.manual_seed(seed)
    loaders = chapter_loaders if kind == "chapter" else fast_loaders
    train_loader, test_loader, val_loaders = loaders(data_dir, val_size)
    memory_format = torch.contiguous_format if kind == "chapter" else torch.channels_last
    net = ConvolutionalMNISTClassifier().to(memory_format=memory_format)
    optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
    criterion = nn.CrossEntropyLoss()
    epoch_seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        for images, labels in train_loader:
            optimizer.zero_grad()
            loss = criterion(net(images.contiguous(memory_format=memory_format)), labels)
            loss.backward()
            optimizer.step()
        for loader in val_loaders:
            accuracy(net, loader, memory_format)
        epoch_seconds.append(time.perf_counter() - start)
    test_acc, test_images_per_s = accuracy(net, test_loader, memory_format)
    train_images = len(train_loader.dataset)
    return {
        "epoch_seconds": [round(s, 2) for s in epoch_seconds],
        "train_images_per_s": round(train_images * epochs / sum(epoch_seconds), 1),
        "test_acc": test_acc,
        "test_images_per_s": round(test_images_per_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["chapter", "fast"])
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--val-size", type=int, default=5000, help="fast only: images held out for validation")
    args = parser.parse_args()
    print(json.dumps(run(args.kind, args.data_dir, args.epochs, args.seed, args.val_size)))


if __name__ == "__main__":
    main()
