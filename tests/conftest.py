"""Fixtures: real Isengard servers on ephemeral ports, and the shared DICOM samples."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "dicom-samples"


def sample(relative: str) -> Path:
    path = SAMPLES / relative
    if not path.exists():
        pytest.skip(f"sample {relative} is not in {SAMPLES}")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(process: subprocess.Popen | None) -> None:
    """Terminate a server, killing it if it does not stop within 10 s."""
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class ServerProcess:
    """An Isengard server started as `isengard CONFIG.json` in its own folder."""

    def __init__(self, folder: Path, options: dict):
        self.folder = folder
        self.port = free_port()
        self.config = {
            "StorageDirectory": str(folder / "db"),
            "HttpPort": self.port,
            "DicomPort": free_port(),
            **options,
        }
        self.config_path = folder / "config.json"
        self.config_path.write_text(json.dumps(self.config))
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def start(self) -> "ServerProcess":
        log = open(self.folder / "isengard.log", "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "isengard.cli", str(self.config_path)], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Isengard exited at start-up:\n{self.log()}")
            try:
                httpx.get(self.url + "/system", timeout=1, auth=self._auth())
                return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError(f"Isengard did not answer within 30 s:\n{self.log()}")

    def _auth(self) -> tuple[str, str] | None:
        users = self.config.get("RegisteredUsers")
        return next(iter(users.items())) if users else None

    def log(self) -> str:
        return (self.folder / "isengard.log").read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.process)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def upload(self, path: Path) -> dict:
        response = self.client.post("/instances", content=path.read_bytes())
        response.raise_for_status()
        return response.json()


@contextmanager
def running_isengard(folder: Path, **options) -> Iterator[ServerProcess]:
    folder.mkdir(parents=True, exist_ok=True)
    server = ServerProcess(folder, options).start()
    try:
        yield server
    finally:
        server.stop()
        server.client.close()


@pytest.fixture(scope="module")
def isengard(tmp_path_factory) -> Iterator[ServerProcess]:
    """A server shared by the tests of one module."""
    with running_isengard(tmp_path_factory.mktemp("isengard")) as server:
        yield server


@pytest.fixture
def fresh_isengard(tmp_path) -> Iterator[ServerProcess]:
    """A server of its own, with an empty index, for one test."""
    with running_isengard(tmp_path / "isengard") as server:
        yield server


def orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or (os.path.exists("/usr/sbin/Orthanc") and "/usr/sbin/Orthanc") or None


def child_pids(pid: int) -> list[int]:
    """The processes that process `pid` started and has not reaped yet."""
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir() for child in (task / "children").read_text().split()]


def wait_for_port(port: int) -> None:
    """Wait until something (a DCMTK peer started in the background) listens on `port`."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    """A node that accepts TCP connections and never answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        yield silent.getsockname()[1]
