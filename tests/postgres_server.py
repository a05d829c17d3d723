"""A throwaway PostgreSQL server for the tests: `initdb` into a temporary folder, `pg_ctl` on a loopback port.

Our own rather than pytest-postgresql's: its process fixture runs `pg_ctl` as the current user, and `pg_ctl`
refuses to run as root, which is how CI runs the tests. Here, as root, server commands run as `postgres`.
"""

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

INSTALL_HINT = (
    "install the server: apt-get install postgresql (or put its bin folder, from pg_config --bindir, on PATH)"
)
USER = "mnist"


def server_bin_dir() -> Path:
    """The folder holding `initdb`, `pg_ctl` and `postgres`; fails with how to install them."""
    candidates = []
    if shutil.which("pg_config"):
        candidates.append(
            Path(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout.strip())
        )
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    raise RuntimeError(f"no PostgreSQL server binaries (initdb, pg_ctl) found: {INSTALL_HINT}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server (trust authentication, loopback only); yield its base URL `postgresql+psycopg://...:port`."""
    bin_dir = server_bin_dir()
    as_root = os.geteuid() == 0
    run_as = ["runuser", "-u", "postgres", "--"] if as_root else []
    home = Path(tempfile.mkdtemp(prefix="mnist-cnn-pg-"))
    if as_root:
        shutil.chown(home, user="postgres")
    data, port = home / "data", free_port()

    def run(*command: str) -> None:
        subprocess.run([*run_as, *command], check=True, capture_output=True, text=True, timeout=120)

    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", USER, "--auth=trust", "--no-sync")
        options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(home / "server.log"), "-w", "start")
        try:
            yield f"postgresql+psycopg://{USER}@127.0.0.1:{port}"
        finally:
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(home, ignore_errors=True)


def create_database(server_url: str, name: str) -> str:
    """A new, empty database on the server; its URL."""
    import psycopg

    dsn = server_url.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return f"{server_url}/{name}"
