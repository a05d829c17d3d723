"""Reading a checkpoint given on the command line, with errors that say what is wrong with it."""

from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io import TorchCheckpointIO
from torch import nn

from mnist_cnn.errors import CheckpointError, first_line
from mnist_cnn.files import save_torch


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by `mnist-cnn-train` (safely: tensors and plain values only)."""
    path = Path(path)
    if path.is_dir():
        found = sorted(str(file.relative_to(path)) for file in [*path.glob("*.ckpt"), *path.glob("checkpoints/*.ckpt")])
        raise CheckpointError(
            f"checkpoint {path} is a folder: name a .ckpt file in it ({', '.join(found) or 'it has none'})"
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several unrelated types for a file it cannot read
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({first_line(error)})") from error
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not isinstance(hparams, dict) or "net" not in hparams or "state_dict" not in checkpoint:
        raise CheckpointError(
            f"{path} is not a checkpoint of mnist-cnn's MNISTClassifier (no state_dict or net config)"
        )
    return checkpoint


def check_matches(checkpoint: dict[str, Any], module: nn.Module, path: str | Path) -> None:
    """Raise unless the checkpoint's weights have exactly the names and shapes of `module`'s."""
    expected = {name: tuple(t.shape) for name, t in module.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in checkpoint["state_dict"].items()}
    if found == expected:
        return
    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    reshaped = sorted(name for name in expected.keys() & found.keys() if expected[name] != found[name])
    problems = [
        f"{label}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
        for label, names in (("missing", missing), ("unexpected", unexpected), ("other shape", reshaped))
        if names
    ]
    raise CheckpointError(f"{path} does not fit the configured model ({'; '.join(problems)})")


def check_resumable(checkpoint: dict[str, Any], hparams: dict[str, Any], path: str | Path) -> None:
    """Raise unless the config's optimizer and scheduler are the checkpoint's.

    Resuming restores the optimizer and scheduler state saved in the checkpoint (learning rate, cosine
    T_max, ...), which would silently win over a changed config.
    """
    for key in ("optimizer", "scheduler"):
        saved, wanted = checkpoint["hyper_parameters"].get(key) or None, hparams.get(key) or None
        if saved != wanted:
            raise CheckpointError(
                f"{path} was trained with {key} {saved}, the config asks for {wanted}; resuming restores the "
                f"saved {key} state, so resume with the same {key} settings"
            )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic on local disks.

    Lightning writes a local checkpoint to a file in the system temp folder and then `shutil.move`s it, which
    is a copy when that folder is another file system (a tmpfs /tmp, say): a kill mid-copy leaves a
    truncated `last.ckpt`. Here the file is written beside its target and renamed onto it.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        save_torch(checkpoint, Path(path))
