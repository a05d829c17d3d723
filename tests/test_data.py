"""The DataModule and the IDX checks, on small IDX files written here."""

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TEST_SIZE, TRAIN_SIZE, write_mnist
from torchvision import transforms

from mnist_cnn.datamodule import MNISTDataModule
from mnist_cnn.errors import ConfigError, DataError
from mnist_cnn.idx import check_raw_files, raw_files

CHAPTER_AUGMENTATIONS = [transforms.RandomHorizontalFlip(0.5), transforms.RandomRotation(10)]


def datamodule(root: Path, **kwargs) -> MNISTDataModule:
    settings = {"data_dir": root, "download": False, "val_size": 40, "batch_size": 16, **kwargs}
    dm = MNISTDataModule(augmentation=CHAPTER_AUGMENTATIONS, **settings)
    dm.prepare_data()
    dm.setup()
    return dm


def test_split_sizes_and_batches(mnist_root: Path) -> None:
    dm = datamodule(mnist_root)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (TRAIN_SIZE - 40, 40, TEST_SIZE)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (16, 1, 28, 28) and images.dtype == torch.float32 and labels.shape == (16,)
    assert images.min() >= -1.0 and images.max() <= 1.0  # Normalize(0.5, 0.5) maps [0, 1] to [-1, 1]


def test_split_is_disjoint_and_fixed_by_its_seed(mnist_root: Path) -> None:
    first, again, other = (datamodule(mnist_root, split_seed=s) for s in (1, 1, 2))
    assert not set(first.train_set.indices) & set(first.val_set.indices)
    assert len(set(first.train_set.indices) | set(first.val_set.indices)) == TRAIN_SIZE
    assert first.val_set.indices == again.val_set.indices
    assert first.val_set.indices != other.val_set.indices


def test_eval_images_are_deterministic_and_training_images_are_augmented(mnist_root: Path) -> None:
    dm = datamodule(mnist_root)
    torch.manual_seed(0)
    assert torch.equal(dm.test_set[3][0], dm.test_set[3][0])
    assert torch.equal(dm.val_set[3][0], dm.val_set[3][0])
    draws = [dm.train_set[3][0] for _ in range(6)]
    assert any(not torch.equal(draws[0], other) for other in draws[1:])


def test_val_images_are_training_images_with_eval_transform(mnist_root: Path) -> None:
    dm = datamodule(mnist_root)
    index = dm.val_set.indices[0]
    raw = dm.val_set.dataset.data[index].float() / 255
    torch.testing.assert_close(dm.val_set[0][0][0], (raw - 0.5) / 0.5)


def test_augment_eval_reproduces_the_chapters_random_test_set(mnist_root: Path) -> None:
    dm = datamodule(mnist_root, augment_eval=True)
    torch.manual_seed(0)
    draws = [dm.test_set[5][0] for _ in range(6)]
    assert any(not torch.equal(draws[0], other) for other in draws[1:])


def test_val_size_zero_trains_on_everything_and_skips_validation(mnist_root: Path) -> None:
    dm = datamodule(mnist_root, val_size=0)
    assert len(dm.train_set) == TRAIN_SIZE and dm.val_dataloader() == []


def test_train_size_takes_a_nested_subset_and_keeps_the_validation_images(mnist_root: Path) -> None:
    small, larger, full = (datamodule(mnist_root, train_size=size) for size in (30, 60, None))
    assert (len(small.train_set), len(larger.train_set), len(full.train_set)) == (30, 60, TRAIN_SIZE - 40)
    assert (
        small.train_set.indices == full.train_set.indices[:30]
        and larger.train_set.indices == full.train_set.indices[:60]
    )
    assert small.val_set.indices == larger.val_set.indices == full.val_set.indices
    assert len(datamodule(mnist_root, val_size=0, train_size=TRAIN_SIZE).train_set) == TRAIN_SIZE


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"train_size": 0}, "data.train_size must be an integer >= 1, got 0"),
        ({"train_size": 2.5}, "data.train_size must be an integer >= 1, got 2.5"),
        ({"batch_size": 0}, "data.batch_size must be an integer >= 1, got 0"),
        ({"batch_size": -3}, "data.batch_size must be an integer >= 1, got -3"),
        ({"num_workers": -1}, "data.num_workers must be an integer >= 0"),
        ({"val_size": -1}, "data.val_size must be an integer >= 0"),
    ],
)
def test_bad_values_are_refused_at_construction(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MNISTDataModule(data_dir=tmp_path, **kwargs)


@pytest.mark.parametrize("val_size", [TRAIN_SIZE, TRAIN_SIZE + 1])
def test_val_size_must_leave_training_images(mnist_root: Path, val_size: int) -> None:
    with pytest.raises(ConfigError, match=f"data.val_size={val_size} leaves no training images"):
        datamodule(mnist_root, val_size=val_size)


def test_train_size_beyond_the_images_left_is_refused(mnist_root: Path) -> None:
    too_many = TRAIN_SIZE - 40 + 1
    message = f"data.train_size={too_many} and data.val_size=40 need {TRAIN_SIZE + 1} images: the training set has"
    with pytest.raises(ConfigError, match=message):
        datamodule(mnist_root, train_size=too_many)


def test_missing_data_without_download_names_the_files(tmp_path: Path) -> None:
    with pytest.raises(DataError) as error:
        datamodule(tmp_path)
    message = str(error.value)
    assert "\n" not in message and "data.download=true" in message
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        assert name in message


def corrupt_copy(source: Path, target: Path, split: str, which: int, edit) -> Path:
    """Copy the small dataset to `target` and rewrite one file's bytes with `edit`."""
    shutil.copytree(source, target)
    path = raw_files(target / "MNIST" / "raw")[split][which]
    path.write_bytes(edit(path.read_bytes()))
    return target


def set_byte(offset: int, value: int):
    return lambda data: data[:offset] + bytes([value]) + data[offset + 1 :]


@pytest.mark.parametrize(
    ("split", "which", "edit", "message"),
    [
        ("train", 0, lambda data: data[:-100], "train-images-idx3-ubyte is truncated or corrupt"),
        ("test", 1, lambda data: data[:5], "t10k-labels-idx1-ubyte is truncated: 5 bytes"),
        ("train", 0, lambda data: data + b"\0", "train-images-idx3-ubyte is truncated or corrupt"),
        ("train", 0, set_byte(3, 0x01), "train-images-idx3-ubyte is not an IDX file of this kind: magic number"),
        ("test", 1, set_byte(8, 10), "t10k-labels-idx1-ubyte holds label 10, outside 0-9"),
    ],
)
def test_corrupt_idx_files_are_named_with_their_fault(
    mnist_root: Path, tmp_path: Path, split: str, which: int, edit, message: str
) -> None:
    root = corrupt_copy(mnist_root, tmp_path / "data", split, which, edit)
    with pytest.raises(DataError, match=message):
        datamodule(root)


def test_count_mismatch_and_wrong_image_size_are_reported(tmp_path: Path) -> None:
    root = write_mnist(tmp_path / "a", train_size=30, test_size=20)
    raw = root / "MNIST" / "raw"
    shutil.copy(write_mnist(tmp_path / "b", train_size=30, test_size=21) / "MNIST/raw/t10k-labels-idx1-ubyte", raw)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte has 21 labels but .*t10k-images-idx3-ubyte has 20"):
        check_raw_files(raw)
    header = np.array([0x803, 20, 14, 56], dtype=">u4").tobytes()  # right byte count, wrong shape
    (raw / "t10k-images-idx3-ubyte").write_bytes(header + bytes(20 * 28 * 28))
    with pytest.raises(DataError, match="holds 14x56 images, expected 28x28"):
        check_raw_files(raw)


def test_download_failure_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(self) -> None:
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://mirror, got:\nno route")

    monkeypatch.setattr("torchvision.datasets.MNIST.download", no_network)
    dm = MNISTDataModule(data_dir=tmp_path, download=True)
    with pytest.raises(DataError, match=r"could not download MNIST into .* \(Error downloading train-images"):
        dm.prepare_data()


def test_a_failed_download_leaves_nothing_a_later_run_would_take_for_the_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def cut_off(self) -> None:  # one file whole, the next one cut off mid-transfer, as a dropped connection does
        raw = Path(self.raw_folder)
        raw.mkdir(parents=True)
        (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(b"whole")
        (raw / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b partial")
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nconnection reset")

    root = tmp_path / "data"
    (root / "MNIST").mkdir(parents=True)
    (root / "MNIST" / "notes.txt").write_text("the user's, kept")
    monkeypatch.setattr("torchvision.datasets.MNIST.download", cut_off)
    with pytest.raises(DataError, match="connection reset"):
        MNISTDataModule(data_dir=root, download=True).prepare_data()
    assert sorted(path.name for path in root.rglob("*")) == ["MNIST", "notes.txt"]


def test_runs_starting_at_once_download_the_data_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    downloads = []

    def slow_download(self) -> None:  # as a real one: the files appear one by one, over a while
        downloads.append(self.root)
        time.sleep(0.5)
        write_mnist(Path(self.root), train_size=60, test_size=20)

    monkeypatch.setattr("torchvision.datasets.MNIST.download", slow_download)
    start = threading.Barrier(2)
    errors = []

    def prepare() -> None:  # two sweep jobs, or two terminals, on a machine without the data yet
        start.wait()
        try:
            MNISTDataModule(data_dir=tmp_path / "data", download=True).prepare_data()
        except Exception as error:
            errors.append(error)

    runs = [threading.Thread(target=prepare) for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    assert errors == [] and len(downloads) == 1  # the second waited for the first, then found the files


def test_download_is_skipped_when_the_files_are_there(mnist_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(self) -> None:
        raise AssertionError("must not download")

    monkeypatch.setattr("torchvision.datasets.MNIST.download", fail)
    MNISTDataModule(data_dir=mnist_root, download=True).prepare_data()
