"""Checks and writes MNIST's IDX files before torchvision reads them.

torchvision's reader fails on a truncated or corrupt file with a bare `AssertionError` or a reshape
error; checking the header and size first turns that into a message naming the file and the fault.
"""

from pathlib import Path

import numpy as np

from mnist_cnn.errors import DataError
from mnist_cnn.images import IMAGE_SIZE, NUM_CLASSES

IMAGE_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
LABEL_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
SPLIT_PREFIXES = {"train": "train", "test": "t10k"}
LOCAL_COPY_HINT = "point paths.data_dir at a folder holding MNIST/raw/ with the four uncompressed IDX files"


def raw_files(raw_dir: Path) -> dict[str, tuple[Path, Path]]:
    """The (images, labels) file paths torchvision expects for each split."""
    return {
        split: (raw_dir / f"{prefix}-images-idx3-ubyte", raw_dir / f"{prefix}-labels-idx1-ubyte")
        for split, prefix in SPLIT_PREFIXES.items()
    }


def missing_files(raw_dir: Path) -> list[Path]:
    return [path for pair in raw_files(raw_dir).values() for path in pair if not path.is_file()]


def _read_header(path: Path, magic: int, ndim: int) -> tuple[int, ...]:
    with path.open("rb") as file:
        header = file.read(4 * (ndim + 1))
    if len(header) < 4 * (ndim + 1):
        raise DataError(f"{path} is truncated: {len(header)} bytes, shorter than an IDX header")
    found, *dims = np.frombuffer(header, dtype=">u4").tolist()
    if found != magic:
        raise DataError(f"{path} is not an IDX file of this kind: magic number {found:#010x}, expected {magic:#010x}")
    expected_size = len(header) + int(np.prod(dims))
    actual_size = path.stat().st_size
    if actual_size != expected_size:
        raise DataError(
            f"{path} is truncated or corrupt: {actual_size} bytes, its header {tuple(dims)} needs {expected_size}"
        )
    return tuple(dims)


def check_split(images_path: Path, labels_path: Path) -> int:
    """Validate one split's pair of IDX files; return its number of examples."""
    count, height, width = _read_header(images_path, IMAGE_MAGIC, ndim=3)
    if (height, width) != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"{images_path} holds {height}x{width} images, expected {IMAGE_SIZE}x{IMAGE_SIZE}")
    (label_count,) = _read_header(labels_path, LABEL_MAGIC, ndim=1)
    if label_count != count:
        raise DataError(f"{labels_path} has {label_count} labels but {images_path} has {count} images")
    labels = np.fromfile(labels_path, dtype=np.uint8, offset=8)
    if labels.size and labels.max() >= NUM_CLASSES:
        raise DataError(f"{labels_path} holds label {labels.max()}, outside 0-{NUM_CLASSES - 1}")
    return count


def check_mnist(raw_dir: Path) -> dict[str, int]:
    """Validate the four MNIST files in `raw_dir`; return the number of examples per split."""
    missing = missing_files(raw_dir)
    if missing:
        names = ", ".join(path.name for path in missing)
        raise DataError(f"MNIST not found: {raw_dir} lacks {names}; set data.download=true, or {LOCAL_COPY_HINT}")
    return {split: check_split(*paths) for split, paths in raw_files(raw_dir).items()}


def _write(path: Path, magic: int, array: np.ndarray) -> None:
    header = np.array([magic, *array.shape], dtype=">u4").tobytes()
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_split(raw_dir: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Write one split as IDX files (uint8 images N x 28 x 28, uint8 labels N), as MNIST ships them."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    images_path, labels_path = raw_files(raw_dir)[split]
    _write(images_path, IMAGE_MAGIC, images)
    _write(labels_path, LABEL_MAGIC, labels)
