"""Writing result files so that a crash never leaves a half-written one in place."""

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout

log = logging.getLogger(__name__)


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
    run would take for the dataset. Only for a process that holds the folder's `folder_lock`: the cleanup
    cannot tell apart files that another process writes meanwhile.
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


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold `folder` for this process alone, across processes on this machine (a download into it, say).

    Sweep jobs and separate commands start at once on a machine without the data: one downloads while the
    others wait, then find the files. The lock file is in the temporary folder, not in `folder`, which a
    failed download leaves as it was; the operating system releases the lock of a process that dies. Processes
    with different temporary folders (`$TMPDIR`) do not see each other's lock.
    """
    key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
    lock = FileLock(Path(tempfile.gettempdir()) / f"mnist-cnn-{key}.lock")
    locked = True
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for another process writing into %s (lock %s)", folder, lock.lock_file)
        lock.acquire()
    except OSError as error:  # e.g. another user's lock file in a shared temporary folder: go on as before locks
        log.warning("writing into %s without a lock: %s", folder, error)
        locked = False
    try:
        yield
    finally:
        if locked:
            lock.release()
