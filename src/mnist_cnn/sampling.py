"""Shuffled training batches that a checkpoint can stop and restart mid-epoch, exactly.

Lightning saves and restores a training DataLoader that has `state_dict` / `load_state_dict` (its
"stateful" loaders). `ResumableDataLoader` is such a loader: it remembers the seed of the epoch's shuffle
and how many batches the trainer has taken, and after a restore it replays the same order from the next
batch. Each batch of indices also carries a seed of its own (`SeededBatch`) from which the dataset draws
that batch's augmentation, so the augmentation replays too, whatever else used torch's RNG meanwhile.
Batches are built in the main process (the tensor data path has no workers), and Lightning fetches ahead only
from loaders without a length, so every batch handed out when a checkpoint is saved has been trained on.
"""

import hashlib
from collections.abc import Iterator, Sized
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, Sampler


class SeededBatch(list):
    """A batch of indices with a `seed` for its random augmentation."""

    def __init__(self, indices: list[int], seed: int) -> None:
        super().__init__(indices)
        self.seed = seed


def batch_seed(*parts: int) -> int:
    """A 63-bit seed mixed from the epoch's shuffle seed, the epoch, the rank and the batch number."""
    digest = hashlib.blake2b(b"".join(part.to_bytes(8, "little", signed=True) for part in parts), digest_size=8)
    return int.from_bytes(digest.digest(), "little") & (2**63 - 1)


class ResumableRandomSampler(Sampler[int]):
    """A new random order every epoch, seeded from torch's global RNG like `RandomSampler`; restartable."""

    def __init__(self, data_source: Sized) -> None:
        self.size = len(data_source)
        self.seed: int | None = None
        self.epoch = 0
        self._restored_seed: int | None = None

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        if self._restored_seed is not None:
            self.seed, self._restored_seed = self._restored_seed, None
        else:
            self.seed = int(torch.empty((), dtype=torch.int64).random_().item())
        generator = torch.Generator().manual_seed(self.seed)
        yield from torch.randperm(self.size, generator=generator).tolist()

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._restored_seed = state["seed"]


class ResumableBatchSampler(BatchSampler):
    """`BatchSampler` that counts the batches handed out this epoch and can skip them after a restore.

    It keeps BatchSampler's signature, so Lightning can still swap in a DistributedSampler for DDP.
    """

    def __init__(self, sampler: Sampler[int], batch_size: int, drop_last: bool) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.handed_out = 0
        self._restored: dict[str, Any] | None = None

    def __iter__(self) -> Iterator[SeededBatch]:
        skip = self._take_restored_position()
        self.handed_out = 0
        for number, batch in enumerate(super().__iter__()):
            self.handed_out = number + 1
            if number >= skip:
                yield SeededBatch(batch, batch_seed(*self._epoch_identity(), number))

    def _take_restored_position(self) -> int:
        """Batches to skip: those a checkpoint of this same epoch had used (an epoch-end one: none)."""
        state, self._restored = self._restored, None
        if not state or not state["batches_used"] or state["epoch"] != self._epoch():
            return 0
        if hasattr(self.sampler, "load_state_dict"):
            self.sampler.load_state_dict(state["sampler"])  # replay that epoch's order
        return state["batches_used"]

    def _epoch(self) -> int:
        return getattr(self.sampler, "epoch", 0)

    def _epoch_identity(self) -> tuple[int, int, int]:
        """(shuffle seed, epoch, rank): ours, or a DistributedSampler's when Lightning swapped one in for DDP."""
        sampler = self.sampler
        return (getattr(sampler, "seed", None) or 0, self._epoch(), getattr(sampler, "rank", 0))

    def state_dict(self) -> dict[str, Any]:
        used = 0 if self.handed_out >= len(self) else self.handed_out
        sampler = self.sampler.state_dict() if hasattr(self.sampler, "state_dict") else {}
        return {"epoch": self._epoch(), "batches_used": used, "sampler": sampler}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._restored = state


class ResumableDataLoader(DataLoader):
    """A DataLoader whose position Lightning saves in checkpoints and restores on resume."""

    def state_dict(self) -> dict[str, Any]:
        return self.batch_sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batch_sampler.load_state_dict(state)
