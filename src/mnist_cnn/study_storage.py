"""Where an Optuna study lives, from one URL: a database (Optuna's RDB storage) or a journal file.

- `sqlite:///outputs/optuna.db`: the zero-setup default, for the workers of one machine.
- `postgresql+psycopg://user@host:port/db` (`postgresql://` means the same here), or any SQLAlchemy URL: a
  database server, for workers on several machines. Optuna's advice: SQLite for one process, a server for many.
- `journal:<path>`: Optuna's journal file storage, for several workers that share a filesystem but no
  database server. It has no heartbeats, so a killed worker's trial stays RUNNING there.
"""

import random
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalStorage

from mnist_cnn.errors import ConfigError, first_line

JOURNAL = "journal:"
ATTEMPTS = 5


def open_storage(url: str, heartbeat_seconds: int | None = None, create: bool = True) -> BaseStorage:
    """The storage at `url`; with `heartbeat_seconds` (RDB only), a trial without a heartbeat for twice that
    long counts as killed: it is failed, and queued again once (Optuna's `RetryHeartbeatStaleTrialCallback`).
    `create=False`: a SQLite or journal file that does not exist is an error (not a new, empty study file)."""
    if url.startswith((JOURNAL, "sqlite:///")):
        path = Path(url.removeprefix(JOURNAL).removeprefix("sqlite:///"))
        if not create and not path.is_file():
            raise ConfigError(f"Optuna storage {url}: {path} does not exist")
        path.parent.mkdir(parents=True, exist_ok=True)
        if url.startswith(JOURNAL):
            return JournalStorage(JournalFileBackend(str(path)))
    heartbeats = {}
    if heartbeat_seconds:
        heartbeats = {
            "heartbeat_interval": heartbeat_seconds,
            "grace_period": 2 * heartbeat_seconds,
            "heartbeat_stale_trial_callback": quietly(RetryHeartbeatStaleTrialCallback, max_retry=1),
        }
    if url.startswith("postgresql://"):  # SQLAlchemy's default driver for it is psycopg2; we install psycopg 3
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return quietly(RDBStorage, url, **heartbeats)
        # Workers started together on an empty database all create Optuna's tables; all but one fail to
        # (PostgreSQL: a duplicate key; SQLite: "table ... already exists" or "database is locked").
        except (
            sqlalchemy.exc.IntegrityError,
            sqlalchemy.exc.ProgrammingError,
            sqlalchemy.exc.OperationalError,
        ) as error:
            if attempt == ATTEMPTS or not _is_creation_race(error):
                if isinstance(error, sqlalchemy.exc.OperationalError):
                    raise ConfigError(f"Optuna storage {without_password(url)}: {_reason(error)}") from error
                raise
            time.sleep(random.uniform(0.1, 1.0))
        except (sqlalchemy.exc.ArgumentError, ImportError) as error:
            raise ConfigError(f"Optuna storage {without_password(url)}: {_reason(error)}") from error
    raise AssertionError("unreachable")


def _is_creation_race(error: Exception) -> bool:
    if not isinstance(error, sqlalchemy.exc.OperationalError):
        return True
    return any(words in str(error) for words in ("already exists", "database is locked"))


def without_password(url: str) -> str:
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:  # not a URL at all
        return url


def _reason(error: Exception) -> str:
    """The first line of the driver's own message (SQLAlchemy appends the statement and a help link)."""
    return first_line(getattr(error, "orig", None) or error)


def has_heartbeats(storage: BaseStorage) -> bool:
    return isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None


def quietly(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Call an Optuna API marked experimental (heartbeats) without its warning; Optuna is pinned."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return function(*args, **kwargs)
