"""The fast tensor data path: same split and images as the PIL path, whole batches, seeded randomness."""

from pathlib import Path

import pytest
import torch
from conftest import TEST_SIZE, TRAIN_SIZE, VAL_SIZE
from torch.utils.data import DataLoader, DistributedSampler
from torchvision import transforms

from mnist_cnn.augment import RandomFlipRotate
from mnist_cnn.datamodule import MNISTDataModule
from mnist_cnn.errors import ConfigError
from mnist_cnn.tensor_datamodule import MNISTTensorDataModule, TensorMNIST, whole_batch


def tensor_datamodule(root: Path, **kwargs) -> MNISTTensorDataModule:
    settings = {"data_dir": root, "download": False, "val_size": VAL_SIZE, "batch_size": 16, **kwargs}
    dm = MNISTTensorDataModule(augmentation=RandomFlipRotate(0.5, 10), **settings)
    dm.prepare_data()
    dm.setup()
    return dm


def test_batches_are_normalised_float_images_with_labels(mnist_root: Path) -> None:
    dm = tensor_datamodule(mnist_root)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (TRAIN_SIZE - VAL_SIZE, VAL_SIZE, TEST_SIZE)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (16, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (16,) and labels.dtype == torch.int64
    assert images.min() >= -1.0 and images.max() <= 1.0
    image, label = dm.test_set[0]
    assert image.shape == (1, 28, 28) and isinstance(label, int)


def test_same_split_and_same_eval_images_as_the_pil_path(mnist_root: Path) -> None:
    fast = tensor_datamodule(mnist_root)
    classic = MNISTDataModule(data_dir=mnist_root, download=False, val_size=VAL_SIZE, batch_size=16)
    classic.setup()
    fast_images, fast_labels = next(iter(fast.val_dataloader()))
    classic_images, classic_labels = next(iter(classic.val_dataloader()))
    assert torch.equal(fast_labels, classic_labels)
    torch.testing.assert_close(fast_images, classic_images, rtol=0, atol=1e-6)  # ToTensor divides the same way
    torch.testing.assert_close(fast.test_set[7][0], classic.test_set[7][0], rtol=0, atol=1e-6)


def test_train_size_picks_the_same_images_as_the_pil_path(mnist_root: Path) -> None:
    fast = tensor_datamodule(mnist_root, train_size=20)
    fast.train_set.augmentation = None  # unaugmented, so the images themselves can be compared
    classic = MNISTDataModule(data_dir=mnist_root, download=False, val_size=VAL_SIZE, batch_size=16, train_size=20)
    classic.setup()
    assert len(fast.train_set) == len(classic.train_set) == 20
    for i in (0, 19):
        torch.testing.assert_close(fast.train_set[i][0], classic.train_set[i][0], rtol=0, atol=1e-6)


def test_an_epoch_visits_every_training_image_once(mnist_root: Path) -> None:
    dm = tensor_datamodule(mnist_root, batch_size=64)
    dm.augmentation = None  # unaugmented, so the images themselves can be compared
    dm.train_set.augmentation = None
    seen = torch.cat([images for images, _ in dm.train_dataloader()])
    everything = torch.stack([dm.train_set[i][0] for i in range(len(dm.train_set))])
    assert len(seen) == len(everything)
    assert torch.equal(seen.flatten(1).sort(0).values, everything.flatten(1).sort(0).values)


def test_training_batches_are_augmented_and_eval_batches_are_not(mnist_root: Path) -> None:
    dm = tensor_datamodule(mnist_root)
    torch.manual_seed(0)
    first, again = dm.train_set.__getitems__(list(range(16))), dm.train_set.__getitems__(list(range(16)))
    assert not torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert torch.equal(dm.val_set.__getitems__([1, 2])[0], dm.val_set.__getitems__([1, 2])[0])
    assert torch.equal(dm.test_set.__getitems__([3])[0], dm.test_set.__getitems__([3])[0])


def test_augment_eval_randomises_the_test_set(mnist_root: Path) -> None:
    dm = tensor_datamodule(mnist_root, augment_eval=True)
    torch.manual_seed(0)
    assert not torch.equal(dm.test_set.__getitems__(list(range(16)))[0], dm.test_set.__getitems__(list(range(16)))[0])


def test_first_batch_is_fixed_by_the_seed(mnist_root: Path) -> None:
    dm = tensor_datamodule(mnist_root)
    batches = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        batches.append(next(iter(dm.train_dataloader())))
    assert torch.equal(batches[0][0], batches[1][0]) and torch.equal(batches[0][1], batches[1][1])
    assert not torch.equal(batches[0][0], batches[2][0])


def test_a_distributed_sampler_shards_without_duplicates(mnist_root: Path) -> None:
    """Lightning's DDP swaps in a DistributedSampler; every rank then builds its own batches."""
    dataset = tensor_datamodule(mnist_root).train_set
    dataset.augmentation = None
    shards = []
    for rank in range(2):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=0)
        loader = DataLoader(dataset, batch_size=16, sampler=sampler, collate_fn=whole_batch)
        shards.append(torch.cat([images for images, _ in loader]).flatten(1))
    assert len(shards[0]) == len(shards[1]) == len(dataset) // 2
    together = torch.cat(shards)
    assert len(torch.unique(together, dim=0)) == len(dataset)  # random images: all distinct


def test_no_augmentation_gives_exactly_the_classic_normalisation(mnist_root: Path) -> None:
    dm = tensor_datamodule(mnist_root)
    raw = dm.train_set.images[:4].float()
    plain = TensorMNIST(dm.train_set.images[:4, 0], dm.train_set.labels[:4])
    expected = torch.stack([transforms.Normalize((0.5,), (0.5,))(image / 255) for image in raw])
    torch.testing.assert_close(plain.__getitems__([0, 1, 2, 3])[0], expected, rtol=0, atol=1e-6)


def test_bad_values_and_misuse_are_refused(mnist_root: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.batch_size must be an integer >= 1, got 0"):
        MNISTTensorDataModule(data_dir=mnist_root, batch_size=0)
    with pytest.raises(RuntimeError, match=r"setup\(\) must run before"):
        MNISTTensorDataModule(data_dir=mnist_root).train_dataloader()
    with pytest.raises(ValueError, match="expected uint8 images"):
        TensorMNIST(torch.zeros(3, 28, 28), torch.zeros(3, dtype=torch.long))
