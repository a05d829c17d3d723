"""Writing result files so that a crash never leaves a half-written one in place."""

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import torch


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write to; move it onto `path` only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process: concurrent writers never share one
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as error:  # name the file the user asked for, not our temporary one
        raise OSError(error.errno, error.strerror, str(path)) from error
    finally:
        tmp.unlink(missing_ok=True)


def save_torch(obj: Any, path: Path) -> None:
    """`torch.save` to `path` atomically and durably.

    Through a Python file object, so that a full disk raises `OSError` (ENOSPC) rather than torch's errno-less
    `RuntimeError`; synced before the rename, so that a power cut cannot leave a renamed but empty file.
    """
    with atomic_path(path) as tmp, tmp.open("wb") as file:  # atomic_path names `path` in any OSError
        torch.save(obj, file)
        file.flush()
        os.fsync(file.fileno())


def write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


@contextmanager
def removed_if_failed(folder: Path) -> Iterator[None]:
    """If the block raises, remove what it created under `folder`, and the folders it made, then re-raise.

    For downloads that write in place (torchvision's): a failed one must not leave a partial file that a later
    run would take for the dataset. Two processes downloading into one folder at once are not told apart.
    """
    made = [parent for parent in (folder, *folder.parents) if not parent.exists()]
    existing = set(folder.rglob("*")) if folder.exists() else set()
    try:
        yield
    except BaseException:
        with suppress(OSError):  # the original error is the one to report
            for path in sorted(set(folder.rglob("*")) - existing, reverse=True):  # a folder's files before it
                if path.is_dir():
                    path.rmdir()
                else:
                    path.unlink()
            for parent in made:  # the deepest first; the block may have made none of them
                if parent.is_dir() and not any(parent.iterdir()):
                    parent.rmdir()
        raise
