"""Isengard and Orthanc as fresh subprocesses with equivalent configurations."""

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .client import Client

ORTHANC = "/usr/sbin/Orthanc"
START_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or (ORTHANC if os.path.exists(ORTHANC) else None)


def configuration(name: str, folder: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Orthanc's defaults, spelled out where they matter to the figures, then `options`; both
    servers keep their index in the storage folder (no IndexDirectory)."""
    return {
        "Name": name,
        "StorageDirectory": str(folder / "storage"),
        "HttpPort": free_port(),
        "DicomPort": free_port(),
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": True,
        "AuthenticationEnabled": False,
        "StorageCompression": False,
        "SyncStorageArea": True,
        **options,
    }


class Server:
    """One server process on a fresh, empty storage folder."""

    def __init__(self, product: str, command: list[str], folder: Path, options: dict[str, Any]):
        self.product = product
        self.folder = folder
        self.config = configuration(f"bench-{product}", folder, options)
        config_path = folder / "config.json"
        config_path.write_text(json.dumps(self.config, indent=2))
        self.command = [*command, str(config_path)]
        self.port: int = self.config["HttpPort"]
        self.dicom_port: int = self.config["DicomPort"]
        self.aet: str = self.config["DicomAet"]
        self.process: subprocess.Popen | None = None

    def start(self) -> "Server":
        with open(self.folder / "server.log", "ab") as log:
            # DCMTK, under Orthanc's DICOM server, leaves Nagle's algorithm on unless TCP_NODELAY is set
            # (then ~20 C-STORE/s); Isengard always disables it.
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder,
                                            env={**os.environ, "TCP_NODELAY": "1"})
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.product} exited at start-up:\n{self.log_tail()}")
            if self._answers():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.product} did not answer within {START_TIMEOUT_S} s:\n{self.log_tail()}")

    def _answers(self) -> bool:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            connection.request("GET", "/system")
            return connection.getresponse().status == 200
        except OSError:
            return False
        finally:
            connection.close()

    def get_json(self, path: str) -> Any:
        client = Client(self.port)
        try:
            status, body = client.request("GET", path)
        finally:
            client.close()
        if status != 200:
            raise RuntimeError(f"{self.product}: GET {path} answered HTTP {status}")
        return json.loads(body)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def peak_rss_mib(self) -> float:
        """Peak resident memory (VmHWM) of the server and of any process it started."""
        return sum(_status_kib(pid, "VmHWM") for pid in [self.pid, *_descendants(self.pid)]) / 1024

    def rss_mib(self) -> float:
        return sum(_status_kib(pid, "VmRSS") for pid in [self.pid, *_descendants(self.pid)]) / 1024

    def log_tail(self, lines: int = 30) -> str:
        text = (self.folder / "server.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def isengard(folder: Path, options: dict[str, Any]) -> Server:
    return Server("Isengard", [sys.executable, "-m", "isengard.cli"], folder, options)


def orthanc(folder: Path, options: dict[str, Any]) -> Server:
    binary = orthanc_binary()
    assert binary is not None
    return Server("Orthanc", [binary], folder, options)


ServerFactory = Callable[[Path, dict[str, Any]], Server]


@contextmanager
def running(factory: ServerFactory, folder: Path, options: dict[str, Any] | None = None) -> Iterator[Server]:
    """A fresh server in the new `folder`, with `options` on top of the common configuration."""
    folder.mkdir(parents=True)
    server = factory(folder, options or {}).start()
    try:
        yield server
    finally:
        server.stop()


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except FileNotFoundError:  # the process ended meanwhile
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, pending = [], list(children.get(pid, []))
    while pending:
        child = pending.pop()
        found.append(child)
        pending.extend(children.get(child, []))
    return found
