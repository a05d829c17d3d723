"""Errors a user can fix, and how the command-line entry points report them."""

import errno
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


class UserError(Exception):
    """Bad input (config value, data file, checkpoint): reported as one line, without a traceback."""


class ConfigError(UserError, ValueError):
    """A config value that is out of range or inconsistent."""


class DataError(UserError):
    """MNIST files that are missing, truncated or corrupt."""


class CheckpointError(UserError):
    """A checkpoint path that does not exist or does not hold this project's model."""


class TrainingDivergedError(UserError):
    """A non-finite loss or weights: training stops before a broken model is saved."""


def is_number(value: object) -> bool:
    """An int or float config value; not a bool, which Python counts as an int."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_integer(value: object) -> bool:
    """An int config value; not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def first_line(error: BaseException) -> str:
    """The first line of an error's message (libraries append statements, paths and help), or its type's name."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def user_error_in(error: BaseException | None) -> UserError | None:
    """The `UserError` behind `error`, if any (Hydra's `instantiate` wraps the errors it meets)."""
    while error is not None and not isinstance(error, UserError):
        error = error.__cause__
    return error


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Turn a `UserError` into a one-line message on stderr and exit status 2.

    `SystemExit` is not an `Exception`, so Hydra's own handler does not wrap it in a traceback.
    """
    try:
        yield
    except Exception as error:
        user_error = user_error_in(error) or _disk_error_in(error)
        if user_error is None:
            raise
        log.error("%s: %s", type(user_error).__name__, user_error)
        print(f"error: {user_error}", file=sys.stderr)
        raise SystemExit(2) from None


DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR}


def _disk_error_in(error: BaseException | None) -> UserError | None:
    """A full, read-only or forbidden disk, as a one-line `UserError` naming the file."""
    while error is not None and not (isinstance(error, OSError) and error.errno in DISK_ERRORS):
        error = error.__cause__ or error.__context__
    if error is None:
        return None
    action = "no permission for" if error.errno in (errno.EACCES, errno.EPERM) else "cannot write"
    return UserError(f"{action} {error.filename or 'a result file'}: {error.strerror}")
