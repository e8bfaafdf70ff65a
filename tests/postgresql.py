"""A throw-away PostgreSQL cluster for the tests (Debian's postgresql package)."""

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import free_port

USER = "isengard"


def postgresql_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _as_postgres(command: list[str]) -> list[str]:
    """initdb refuses to run as root: run the cluster as the postgres user when we are root."""
    if os.geteuid() == 0 and shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--"] + command
    return command


@contextmanager
def running_postgresql() -> Iterator[str]:
    """Start a cluster and yield the SQLAlchemy URL of an empty database."""
    binaries = postgresql_bin()
    assert binaries is not None
    # Directly in /tmp: the postgres user cannot enter pytest's private temporary folders.
    folder = Path(tempfile.mkdtemp(prefix="isengard-postgresql-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    data, port = folder / "data", free_port()
    subprocess.run(_as_postgres([str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", USER]), check=True, capture_output=True)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        _as_postgres([str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"]),
        check=True,
        capture_output=True,
    )
    try:
        deadline = time.monotonic() + 30
        while subprocess.run([str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", USER, USER], capture_output=True).returncode:
            assert time.monotonic() < deadline, (folder / "log").read_text()
            time.sleep(0.2)
        yield f"postgresql+psycopg://{USER}@127.0.0.1:{port}/{USER}"
    finally:
        subprocess.run(_as_postgres([str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]), capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
