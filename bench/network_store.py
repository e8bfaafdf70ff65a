"""C-STORE ingest throughput: DCMTK's storescu sending the data set's files over N associations."""

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

STORESCU = "storescu"
DIMSE_TIMEOUT_S = 60


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


def store(port: int, aet: str, files: list[tuple[int, Path]], associations: int) -> StoreResult:
    """Send every (study index, file) once; association a carries the studies s with s % associations == a,
    as several modalities would. TCP_NODELAY=1 makes storescu disable Nagle's algorithm; a server silent
    for DIMSE_TIMEOUT_S fails the run."""
    shares = [[str(path) for study, path in files if study % associations == a] for a in range(associations)]
    began = time.perf_counter()
    senders = [
        subprocess.Popen(
            [STORESCU, "--dimse-timeout", str(DIMSE_TIMEOUT_S), "-aec", aet, "127.0.0.1", str(port), *share],
            env={**os.environ, "TCP_NODELAY": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        for share in shares
    ]
    errors = [sender.communicate()[1].decode(errors="replace") for sender in senders]  # drained: no pipe fills up
    failures = [error for sender, error in zip(senders, errors) if sender.returncode != 0]
    seconds = time.perf_counter() - began
    if failures:
        raise StoreError(f"{len(failures)} storescu runs failed: {failures[0][-500:]}")
    return StoreResult(associations, len(files), seconds)
