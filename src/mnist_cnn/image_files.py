"""People's own digit images as a LightningDataModule for `trainer.predict`: files, a folder or a glob.

Every file goes through the MNIST-style preprocessing (`mnist_cnn.preprocess`). A file that cannot be read,
or holds no digit, stays in the batch with its error, so one bad file never stops the others.
"""

import glob
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from mnist_cnn.errors import ConfigError, UserError, first_line, is_integer
from mnist_cnn.images import IMAGE_SIZE
from mnist_cnn.preprocess import normalise, to_mnist

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")


def find_images(inputs: str | Path) -> list[Path]:
    """The image files that `inputs` names: one file, every image in a folder (sorted), or a glob's matches."""
    path = Path(inputs)
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(file for file in path.iterdir() if file.suffix.lower() in EXTENSIONS)
        if not found:
            raise ConfigError(f"inputs={inputs}: the folder holds no images ({', '.join(EXTENSIONS)})")
        return found
    if glob.has_magic(str(inputs)):
        found = sorted(Path(match) for match in glob.glob(str(inputs), recursive=True) if Path(match).is_file())
        if not found:
            raise ConfigError(f"inputs={inputs}: the pattern matches no files")
        return found
    raise ConfigError(f"inputs={inputs}: no such file or folder")


class ImageFiles(Dataset):
    """One item per file: the model's input, the 28x28 image it saw, and the error if there is none."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        file = self.files[index]
        try:
            with Image.open(file) as image:
                image.load()
                digit = to_mnist(image)
        except (OSError, UnidentifiedImageError, UserError, ValueError, Image.DecompressionBombError) as error:
            blank = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
            return {"file": str(file), "image": normalise(blank), "digit": blank, "error": _describe(error)}
        return {"file": str(file), "image": normalise(digit), "digit": digit, "error": ""}


def _describe(error: Exception) -> str:
    if isinstance(error, UserError):
        return str(error)
    if isinstance(error, UnidentifiedImageError):
        return "not an image file this program can read"
    if isinstance(error, Image.DecompressionBombError):  # Pillow's guard against a file that unpacks to gigabytes
        return " ".join(f"image too large: {first_line(error)}".split())
    return " ".join(f"unreadable image: {error}".split())


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "file": [item["file"] for item in items],
        "image": torch.stack([item["image"] for item in items]),
        "digit": np.stack([item["digit"] for item in items]),
        "error": [item["error"] for item in items],
    }


def find_all_images(inputs: str | Path | Sequence[str | Path]) -> list[Path]:
    """`find_images` of one input, or of each of a list (`inputs=[a.png,scans/]`) in order, each file once."""
    if isinstance(inputs, str | Path):
        return find_images(inputs)
    found = [file for entry in inputs for file in find_images(str(entry))]
    unique: dict[Path, Path] = {}
    for file in found:  # the same file however its folder is spelled (a/../a/x.png): once, as first named
        unique.setdefault(_folder_resolved(file), file)
    return list(unique.values())


def _folder_resolved(file: Path) -> Path:
    """`file` in its folder's real path; its own name kept, so two links to one image stay two inputs."""
    try:
        return file.parent.resolve() / file.name
    except (OSError, RuntimeError):  # a folder in a symlink loop: its row will say the file is unreadable
        return file


class ImageFilesDataModule(L.LightningDataModule):
    """`inputs`: a file, a folder, a glob, or a list of them; batches of `batch_size` preprocessed images."""

    def __init__(self, inputs: str | Sequence[str], batch_size: int = 64, num_workers: int = 0) -> None:
        super().__init__()
        if isinstance(inputs, int | float):  # Hydra reads inputs=2024 or inputs=true as a number or a bool
            value = str(inputs).lower() if isinstance(inputs, bool) else inputs
            raise ConfigError(
                f"inputs={value} was read as a {type(inputs).__name__}; quote a path: inputs=\"'{value}'\""
            )
        if not inputs:
            raise ConfigError("mnist-cnn-predict needs inputs=<an image file, a folder of images, or a glob>")
        if not (is_integer(batch_size) and batch_size >= 1):
            raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.files = find_all_images(inputs)
        self.batch_size, self.num_workers = batch_size, num_workers

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(
            ImageFiles(self.files), batch_size=self.batch_size, num_workers=self.num_workers, collate_fn=collate
        )
