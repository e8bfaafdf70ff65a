"""A real Orthanc reference server on ephemeral ports, with a temporary storage folder.

Used by differential tests, which compare Isengard's answers with Orthanc's on the same input.
"""

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from conftest import free_port, orthanc_binary, stop_process


class OrthancProcess:
    """`Orthanc CONFIG.json` with its storage and index under `folder`, and no plugins."""

    def __init__(self, binary: str, folder: Path, options: dict):
        self.binary = binary
        self.folder = folder
        self.port = free_port()
        self.config = {
            "Name": "differential",
            "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "storage"),
            "HttpPort": self.port,
            "DicomPort": free_port(),
            "DicomServerEnabled": False,
            "RemoteAccessAllowed": True,
            "AuthenticationEnabled": False,
            "Plugins": [],
            **options,
        }
        self.config_path = folder / "orthanc.json"
        self.config_path.write_text(json.dumps(self.config))
        self.log_path = folder / "orthanc.log"
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def start(self) -> "OrthancProcess":
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([self.binary, str(self.config_path)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited at start-up:\n{self.log()}")
            try:
                httpx.get(self.url + "/system", timeout=1)
                return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError(f"Orthanc did not answer within 30 s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.process)
        self.client.close()


@contextmanager
def running_orthanc(folder: Path, **options) -> Iterator[OrthancProcess]:
    """Orthanc started with `options` (configuration keys); the test is skipped if it is not installed."""
    binary = orthanc_binary()
    if binary is None:
        pytest.skip("the Orthanc reference binary is not installed (apt-get install orthanc)")
    folder.mkdir(parents=True, exist_ok=True)
    server = OrthancProcess(binary, folder, options).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory) -> Iterator[OrthancProcess]:
    """An Orthanc shared by the tests of one module."""
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server
