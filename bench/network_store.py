"""C-STORE ingest throughput: DCMTK's storescu sending the data set's files over N associations."""

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

STORESCU = "storescu"


@dataclass
class StoreResult:
    associations: int
    instances: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.instances / self.seconds


class StoreError(RuntimeError):
    pass


def storescu_available() -> bool:
    return shutil.which(STORESCU) is not None


def write_files(instances: list[tuple[int, bytes]], folder: Path) -> list[tuple[int, Path]]:
    """The instances as files, as storescu reads them (written once, reused by every run)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for number, (study, data) in enumerate(instances):
        path = folder / f"{number:06d}.dcm"
        if not path.exists():
            path.write_bytes(data)
        files.append((study, path))
    return files


def store(port: int, aet: str, files: list[tuple[int, Path]], associations: int) -> StoreResult:
    """Send every file once; association a carries the studies s with s % associations == a, as
    several modalities would. TCP_NODELAY=1 makes storescu disable Nagle's algorithm."""
    shares = [[str(path) for study, path in files if study % associations == a] for a in range(associations)]
    began = time.perf_counter()
    senders = [
        subprocess.Popen(
            [STORESCU, "-aec", aet, "127.0.0.1", str(port), *share],
            env={**os.environ, "TCP_NODELAY": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        for share in shares
    ]
    failures = [sender.stderr.read().decode(errors="replace") for sender in senders if sender.wait() != 0]
    seconds = time.perf_counter() - began
    if failures:
        raise StoreError(f"{len(failures)} storescu runs failed: {failures[0][-500:]}")
    return StoreResult(associations, len(files), seconds)
