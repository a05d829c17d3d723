"""Reads, checks and writes the IDX files of MNIST and its siblings (Fashion-MNIST, KMNIST).

Each file may be stored uncompressed (as torchvision leaves it after a download) or gzipped, exactly as the
datasets are distributed (`train-images-idx3-ubyte.gz`). A truncated or corrupt file is a message naming
the file and the fault, where torchvision's own reader fails with a bare `AssertionError` or a reshape error.
"""

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from mnist_cnn.errors import DataError, first_line
from mnist_cnn.images import IMAGE_SIZE, NUM_CLASSES

IMAGE_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
LABEL_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
SPLIT_PREFIXES = {"train": "train", "test": "t10k"}


def local_copy_hint(dataset: str = "MNIST") -> str:
    return f"point paths.data_dir at a folder holding {dataset}/raw/ with the four IDX files (or their .gz)"


def raw_files(raw_dir: Path) -> dict[str, tuple[Path, Path]]:
    """The (images, labels) file paths torchvision expects for each split."""
    return {
        split: (raw_dir / f"{prefix}-images-idx3-ubyte", raw_dir / f"{prefix}-labels-idx1-ubyte")
        for split, prefix in SPLIT_PREFIXES.items()
    }


def stored(path: Path) -> Path | None:
    """Where the file is: uncompressed at `path`, or gzipped beside it as distributed; None if neither."""
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def missing_files(raw_dir: Path) -> list[Path]:
    return [path for pair in raw_files(raw_dir).values() for path in pair if stored(path) is None]


def _contents(path: Path) -> bytes:
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        return gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as error:  # gzip's errors for a cut or damaged archive
        raise DataError(f"{path} is not a readable gzip file ({first_line(error)})") from error


def _parse(path: Path, data: bytes, magic: int, ndim: int) -> tuple[int, ...]:
    """The dimensions in the IDX header of `data` (the contents of `path`), after checking them."""
    header = data[: 4 * (ndim + 1)]
    if len(header) < 4 * (ndim + 1):
        raise DataError(f"{path} is truncated: {len(header)} bytes, shorter than an IDX header")
    found, *dims = np.frombuffer(header, dtype=">u4").tolist()
    if found != magic:
        raise DataError(f"{path} is not an IDX file of this kind: magic number {found:#010x}, expected {magic:#010x}")
    expected_size = len(header) + int(np.prod(dims))
    if len(data) != expected_size:
        raise DataError(
            f"{path} is truncated or corrupt: {len(data)} bytes, its header {tuple(dims)} needs {expected_size}"
        )
    return tuple(dims)


def read_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One split's checked (images N x 28 x 28, labels N) uint8 arrays; the paths name the uncompressed files."""
    images_path, labels_path = stored(images_path) or images_path, stored(labels_path) or labels_path
    images, labels = _contents(images_path), _contents(labels_path)
    count, height, width = _parse(images_path, images, IMAGE_MAGIC, ndim=3)
    if (height, width) != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"{images_path} holds {height}x{width} images, expected {IMAGE_SIZE}x{IMAGE_SIZE}")
    (label_count,) = _parse(labels_path, labels, LABEL_MAGIC, ndim=1)
    if label_count != count:
        raise DataError(f"{labels_path} has {label_count} labels but {images_path} has {count} images")
    label_array = np.frombuffer(labels, dtype=np.uint8, offset=8)
    if label_array.size and label_array.max() >= NUM_CLASSES:
        raise DataError(f"{labels_path} holds label {label_array.max()}, outside 0-{NUM_CLASSES - 1}")
    return np.frombuffer(images, dtype=np.uint8, offset=16).reshape(count, height, width), label_array


def load_split(raw_dir: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One split as tensors: uint8 images (N, 28, 28) and int64 labels (N,), as torchvision's datasets hold them."""
    images, labels = read_split(*raw_files(raw_dir)[split])
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def check_raw_files(raw_dir: Path, dataset: str = "MNIST") -> dict[str, int]:
    """Validate the four files of `dataset` in `raw_dir`; return the number of examples per split."""
    missing = missing_files(raw_dir)
    if missing:
        names = ", ".join(path.name for path in missing)
        hint = local_copy_hint(dataset)
        raise DataError(f"{dataset} not found: {raw_dir} lacks {names} (or .gz); set data.download=true, or {hint}")
    return {split: len(read_split(*paths)[1]) for split, paths in raw_files(raw_dir).items()}


def _write(path: Path, magic: int, array: np.ndarray) -> None:
    header = np.array([magic, *array.shape], dtype=">u4").tobytes()
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_split(raw_dir: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Write one split as IDX files (uint8 images N x 28 x 28, uint8 labels N), as MNIST ships them."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    images_path, labels_path = raw_files(raw_dir)[split]
    _write(images_path, IMAGE_MAGIC, images)
    _write(labels_path, LABEL_MAGIC, labels)
