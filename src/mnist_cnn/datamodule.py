"""MNIST (or a sibling: Fashion-MNIST, KMNIST) as LightningDataModules: what both data paths share, and the
classic torchvision + PIL path."""

from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, Subset
from torchvision import transforms
from torchvision.datasets import KMNIST, MNIST, FashionMNIST

from mnist_cnn.errors import ConfigError, DataError, is_integer
from mnist_cnn.files import folder_lock, removed_if_failed
from mnist_cnn.idx import check_raw_files, load_split, local_copy_hint, missing_files
from mnist_cnn.images import DIGITS, IMAGE_SIZE, PIXEL_MEAN, PIXEL_STD

Transform = Callable[[object], object]

# The 28x28 grey 10-class datasets: torchvision's class (it downloads into <data_dir>/<name>/raw) and class names.
DATASETS = {"MNIST": MNIST, "FashionMNIST": FashionMNIST, "KMNIST": KMNIST}
CLASS_NAMES = {"MNIST": DIGITS, "FashionMNIST": tuple(FashionMNIST.classes), "KMNIST": tuple(KMNIST.classes)}


def _check_non_negative_int(name: str, value: int, minimum: int = 0) -> None:
    if not (is_integer(value) and value >= minimum):
        raise ConfigError(f"data.{name} must be an integer >= {minimum}, got {value!r}")


class MNISTDataModuleBase(L.LightningDataModule):
    """Train/val split of the 60k training images (seeded), test = the official 10k; download and checks.

    Subclasses decide how images become batches: `setup` fills `train_set`, `val_set` and `test_set`,
    `_loader` wraps one of them in a DataLoader.
    """

    def __init__(
        self,
        data_dir: str | Path = "data",
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        val_size: int = 5000,
        split_seed: int = 42,
        download: bool = True,
        augment_eval: bool = False,
        dataset: str = "MNIST",
        train_size: int | None = None,
    ) -> None:
        super().__init__()
        if dataset not in DATASETS:
            raise ConfigError(f"data.dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
        _check_non_negative_int("batch_size", batch_size, minimum=1)
        if eval_batch_size is not None:
            _check_non_negative_int("eval_batch_size", eval_batch_size, minimum=1)
        _check_non_negative_int("val_size", val_size)
        if train_size is not None:
            _check_non_negative_int("train_size", train_size, minimum=1)
        self.data_dir = Path(data_dir)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    @property
    def dataset(self) -> str:
        return self.hparams.dataset

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / self.dataset / "raw"

    @property
    def class_names(self) -> tuple[str, ...]:
        """The class of each label, in label order: used in every table, figure and prediction."""
        return CLASS_NAMES[self.dataset]

    def prepare_data(self) -> None:
        """Download the dataset if it is missing and allowed to, then validate its four IDX files."""
        if self.hparams.download and missing_files(self.raw_dir):
            with folder_lock(self.raw_dir):  # another run may be downloading them right now: one at a time
                if missing_files(self.raw_dir):  # ... and may have finished meanwhile
                    self._download()
        check_raw_files(self.raw_dir, self.dataset)

    def _download(self) -> None:
        try:  # fetches all four files; train=False then loads only the small test split
            with removed_if_failed(self.raw_dir):
                DATASETS[self.dataset](self.data_dir, train=False, download=True)
        except RuntimeError as error:
            lines = str(error).strip().splitlines()  # torchvision: what failed first, the cause last
            reason = " ".join(dict.fromkeys([lines[0], lines[-1]])) if lines else type(error).__name__
            raise DataError(
                f"could not download {self.dataset} into {self.raw_dir} ({reason}); {local_copy_hint(self.dataset)}"
            ) from error

    def split_indices(self, total: int) -> tuple[list[int], list[int]]:
        """Seeded (train, val) indices into the `total` training images; both data paths use the same split.

        `train_size` takes the first images of the seeded order after the validation ones, so a smaller
        training set is part of every larger one, and the validation images stay the same: a learning curve.
        """
        val_size, train_size = self.hparams.val_size, self.hparams.get("train_size")
        if val_size >= total:
            raise ConfigError(f"data.val_size={val_size} leaves no training images: the training set has {total}")
        if train_size is not None and val_size + train_size > total:
            raise ConfigError(
                f"data.train_size={train_size} and data.val_size={val_size} need {val_size + train_size} images: "
                f"the training set has {total}"
            )
        generator = torch.Generator().manual_seed(self.hparams.split_seed)
        order = torch.randperm(total, generator=generator).tolist()
        end = total if train_size is None else val_size + train_size
        return order[val_size:end], order[:val_size]

    @property
    def eval_batch_size(self) -> int:
        return self.hparams.eval_batch_size or self.hparams.batch_size

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        if not self.hparams.val_size:
            return []  # no validation split: Lightning skips validation
        return self._loader(self.val_set, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size)

    def _loader(self, dataset: Dataset | None, batch_size: int, shuffle: bool = False) -> DataLoader:
        raise NotImplementedError

    def eval_sampler(self, dataset: Dataset) -> Sampler | None:
        """Under DDP, each process's share of a validation or test set, every image in exactly one share.

        Lightning's default DistributedSampler pads the shares to equal length with repeated images, which
        would then count twice in the accuracy and the confusion matrix. Unequal shares are safe here: the
        networks have no buffers for DDP to sync, and metrics sync once per epoch.
        """
        trainer = self.trainer
        if trainer is None or trainer.world_size <= 1:
            return None
        return UnrepeatedDistributedSampler(
            dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
        )

    @staticmethod
    def _require(dataset: Dataset | None) -> Dataset:
        if dataset is None:
            raise RuntimeError("the data module's setup() must run before its dataloaders are requested")
        return dataset


class PILImages(Dataset):
    """uint8 images as PIL images through `transform`, with integer labels: what torchvision's MNIST gives,
    with its attribute names (`data`, `targets`)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Transform) -> None:
        self.data, self.targets, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[object, int]:
        return self.transform(Image.fromarray(self.data[index].numpy(), mode="L")), int(self.targets[index])


class MNISTDataModule(MNISTDataModuleBase):
    """The classic path: one PIL image at a time, as torchvision's MNIST Dataset gives them.

    Training images pass through `augmentation` (PIL transforms) then ToTensor and Normalize(0.5, 0.5).
    Validation and test images are only converted and normalised, unless `augment_eval` is set, which
    reproduces the chapter's protocol of augmenting the test set too (and makes its accuracy random).
    """

    def __init__(
        self,
        data_dir: str | Path = "data",
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        val_size: int = 5000,
        split_seed: int = 42,
        download: bool = True,
        augment_eval: bool = False,
        augmentation: Sequence[Transform] | None = (),
        pin_memory: bool = False,
        dataset: str = "MNIST",
        train_size: int | None = None,
    ) -> None:
        super().__init__(
            data_dir, batch_size, eval_batch_size, val_size, split_seed, download, augment_eval, dataset, train_size
        )
        _check_non_negative_int("num_workers", num_workers)
        self.save_hyperparameters(ignore=["augmentation"], logger=False)
        self.augmentation = list(augmentation or ())
        self._check_augmentation()

    def _check_augmentation(self) -> None:
        """Refuse probabilities outside [0, 1] (torchvision takes them), and run the pipeline on one blank image
        so a value torchvision only rejects when it is used fails now rather than in the first batch."""
        for number, transform in enumerate(self.augmentation):
            p = getattr(transform, "p", None)
            if isinstance(p, int | float) and not 0 <= p <= 1:
                raise ConfigError(f"data.augmentation.{number}.p must be within [0, 1], got {p}")
        try:
            with torch.random.fork_rng(devices=[]):  # the run's own random draws stay as its seed makes them
                self.train_transform()(Image.new("L", (IMAGE_SIZE, IMAGE_SIZE)))
        except Exception as error:
            raise ConfigError(f"data.augmentation fails on an image: {' '.join(str(error).split())}") from error

    def train_transform(self) -> Transform:
        return transforms.Compose([*self.augmentation, *self._to_normalized_tensor()])

    def eval_transform(self) -> Transform:
        return self.train_transform() if self.hparams.augment_eval else transforms.Compose(self._to_normalized_tensor())

    @staticmethod
    def _to_normalized_tensor() -> list[Transform]:
        return [transforms.ToTensor(), transforms.Normalize((PIXEL_MEAN,), (PIXEL_STD,))]

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", "validate", None) and self.train_set is None:
            images, labels = load_split(self.raw_dir, "train")
            train_view = PILImages(images, labels, self.train_transform())
            eval_view = PILImages(images, labels, self.eval_transform())
            train_indices, val_indices = self.split_indices(len(train_view))
            self.train_set, self.val_set = Subset(train_view, train_indices), Subset(eval_view, val_indices)
        if stage in ("test", "predict", None) and self.test_set is None:
            self.test_set = PILImages(*load_split(self.raw_dir, "test"), self.eval_transform())

    def _loader(self, dataset: Dataset | None, batch_size: int, shuffle: bool = False) -> DataLoader:
        dataset = self._require(dataset)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=None if shuffle else self.eval_sampler(dataset),
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
            pin_memory=self.hparams.pin_memory,
        )
