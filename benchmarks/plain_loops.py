"""Plain PyTorch training loops (no Lightning), timed: the chapter's own, ours over the fast data path, and bare.

    python benchmarks/plain_loops.py chapter --data-dir ../shared/data --epochs 5
    python benchmarks/plain_loops.py fast --data-dir ../shared/data --epochs 5
    python benchmarks/plain_loops.py bare --data-dir ../shared/data --epochs 5

`bare` is the compute floor: the same network, batch 64, channels_last, fused Adam, on the training split's
images normalised once up front; no augmentation, no validation, no DataLoader, no Lightning. Each prints one
JSON line: seconds per epoch, images trained per second, test accuracy and test-set inference images per
second. `train_speed.py` runs the first two beside `mnist-cnn-train`, `recipes.py` the third.
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

from mnist_cnn.augment import RandomAffine, normalize, to_unit_float
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
        augmentation=RandomAffine(0.5, 10),
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


def bare_batches(data_dir: str, val_size: int) -> tuple[torch.Tensor, torch.Tensor, DataLoader]:
    """The training split as one normalised float tensor and its labels (no data work left), and the test loader."""
    datamodule = MNISTTensorDataModule(data_dir, BATCH_SIZE, eval_batch_size=1000, val_size=val_size, download=False)
    datamodule.setup()
    train = datamodule.train_set
    return normalize(to_unit_float(train.images)), train.labels, datamodule.test_dataloader()


def run_bare(data_dir: str, epochs: int, seed: int, val_size: int) -> dict:
    """The compute floor: forward, backward and fused Adam over batches indexed out of a ready tensor.

    On a GPU when there is one (as `mnist-cnn-train`'s default trainer would use), data and all.
    """
    torch.manual_seed(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    images, labels, test_loader = bare_batches(data_dir, val_size)
    images, labels = images.to(device), labels.to(device)
    net = ConvolutionalMNISTClassifier().to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE, fused=True)
    criterion = nn.CrossEntropyLoss()
    epoch_seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(len(labels), device=device)
        for batch in order.split(BATCH_SIZE):
            optimizer.zero_grad()
            loss = criterion(net(images[batch].contiguous(memory_format=torch.channels_last)), labels[batch])
            loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()  # the epoch's kernels have run, not only been queued
        epoch_seconds.append(time.perf_counter() - start)
    return summary(net.cpu(), test_loader, torch.channels_last, epoch_seconds, len(labels))


def summary(
    net: nn.Module, test_loader: DataLoader, memory_format: torch.memory_format, epoch_seconds: list, images: int
) -> dict:
    test_acc, test_images_per_s = accuracy(net, test_loader, memory_format)
    return {
        "epoch_seconds": [round(s, 2) for s in epoch_seconds],
        "train_images_per_s": round(images * len(epoch_seconds) / sum(epoch_seconds), 1),
        "test_acc": test_acc,
        "test_images_per_s": round(test_images_per_s, 1),
    }


def run(kind: str, data_dir: str, epochs: int, seed: int, val_size: int) -> dict:
    if kind == "bare":
        return run_bare(data_dir, epochs, seed, val_size)
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
    return summary(net, test_loader, memory_format, epoch_seconds, len(train_loader.dataset))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["chapter", "fast", "bare"])
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--val-size", type=int, default=5000, help="fast, bare: images held out of training")
    args = parser.parse_args()
    print(json.dumps(run(args.kind, args.data_dir, args.epochs, args.seed, args.val_size)))


if __name__ == "__main__":
    main()
