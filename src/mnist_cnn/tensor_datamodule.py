"""The fast data path: MNIST held as one uint8 tensor, augmented a whole batch at a time.

The classic path decodes and augments each image on its own with PIL, which on a small CPU costs about as
much as the model. Here a batch is one tensor index plus one `grid_sample` (per-image random parameters,
see `mnist_cnn.augment`), on the device that trains: the whole dataset (47 MB) moves to the GPU when
there is one.
"""

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, SequentialSampler

from mnist_cnn.augment import normalize, to_unit_float
from mnist_cnn.datamodule import MNISTDataModuleBase
from mnist_cnn.idx import load_split
from mnist_cnn.sampling import ResumableBatchSampler, ResumableDataLoader, ResumableRandomSampler

Batch = tuple[torch.Tensor, torch.Tensor]


class TensorMNIST(Dataset):
    """uint8 images (N, 28, 28) and labels; indexing a list of indices returns one transformed batch.

    The DataLoader calls `__getitems__` with a whole batch of sampled indices, so a batch is built by
    tensor ops rather than per-sample calls and a collate step.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, augmentation: nn.Module | None = None) -> None:
        if images.dtype != torch.uint8 or images.dim() != 3 or len(images) != len(labels):
            raise ValueError(f"expected uint8 images (N, H, W) and N labels, got {tuple(images.shape)} {images.dtype}")
        self.images = images.unsqueeze(1)  # (N, 1, H, W)
        self.labels = labels
        self.augmentation = augmentation

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, indices: list[int]) -> Batch:
        index = torch.as_tensor(indices)
        if self.images.device.type == "cuda":  # a plain copy would make the host wait for the GPU every batch
            index = index.pin_memory().to(self.images.device, non_blocking=True)
        images = to_unit_float(self.images[index])
        if self.augmentation is not None:
            images = self.augmentation(images, generator=self._generator_for(indices))
        return normalize(images), self.labels[index]

    def _generator_for(self, indices: list[int]) -> torch.Generator | None:
        """A generator seeded by the batch (`SeededBatch`), so a resumed epoch redraws the same augmentation."""
        seed = getattr(indices, "seed", None)
        return None if seed is None else torch.Generator(self.images.device).manual_seed(seed)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        images, labels = self.__getitems__([index])
        return images[0], int(labels[0])

    def to(self, device: torch.device) -> "TensorMNIST":
        self.images, self.labels = self.images.to(device), self.labels.to(device)
        return self


def whole_batch(batch: Batch) -> Batch:
    """The DataLoader's collate step: `TensorMNIST.__getitems__` already returns a batch."""
    return batch


class MNISTTensorDataModule(MNISTDataModuleBase):
    """MNIST as tensors on the training device; `augmentation` (e.g. RandomAffine) acts on whole batches.

    Same split, same normalisation and, with `RandomAffine(0.5, 10)`, the same augmentation distribution
    as the classic `MNISTDataModule`. No worker processes: a batch is a few tensor ops in the main process.
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
        augmentation: nn.Module | None = None,
        dataset: str = "MNIST",
        train_size: int | None = None,
    ) -> None:
        super().__init__(
            data_dir, batch_size, eval_batch_size, val_size, split_seed, download, augment_eval, dataset, train_size
        )
        self.save_hyperparameters(ignore=["augmentation"], logger=False)
        self.augmentation = augmentation

    def setup(self, stage: str | None = None) -> None:
        eval_augmentation = self.augmentation if self.hparams.augment_eval else None
        if stage in ("fit", "validate", None) and self.train_set is None:
            images, labels = load_split(self.raw_dir, "train")
            train_indices, val_indices = self.split_indices(len(labels))
            train_idx, val_idx = (torch.tensor(i, dtype=torch.long) for i in (train_indices, val_indices))
            self.train_set = TensorMNIST(images[train_idx], labels[train_idx], self.augmentation)
            self.val_set = TensorMNIST(images[val_idx], labels[val_idx], eval_augmentation)
        if stage in ("test", "predict", None) and self.test_set is None:
            self.test_set = TensorMNIST(*load_split(self.raw_dir, "test"), eval_augmentation)

    @property
    def device(self) -> torch.device:
        """Where batches are made: the trainer's device once a Trainer uses this module, else the CPU."""
        trainer = self.trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def _loader(self, dataset: Dataset | None, batch_size: int, shuffle: bool = False) -> DataLoader:
        tensors = self._require(dataset).to(self.device)
        # Every loader gets its own generator for the base seed it draws per epoch: torch's global RNG then
        # only drives the shuffle, so a resumed run (which adds a sanity validation) draws what it would have.
        generator = torch.Generator().manual_seed(0)
        if not shuffle:
            sampler = self.eval_sampler(tensors)
            return DataLoader(tensors, batch_size, sampler=sampler, collate_fn=whole_batch, generator=generator)
        # Training: an order that a mid-epoch checkpoint can restore (see mnist_cnn.sampling). Lightning's
        # overfit_batches means "the same first batches every epoch", which it cannot arrange for our sampler.
        overfit = self.trainer is not None and self.trainer.overfit_batches > 0
        order = SequentialSampler(tensors) if overfit else ResumableRandomSampler(tensors)
        batches = ResumableBatchSampler(order, batch_size, drop_last=False)
        return ResumableDataLoader(tensors, batch_sampler=batches, collate_fn=whole_batch, generator=generator)
