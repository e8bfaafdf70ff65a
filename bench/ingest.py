"""REST ingest throughput: raw DICOM bodies POSTed to /instances by N client threads."""

import http.client
import json
import threading
import time
from dataclasses import dataclass

from .client import Client


@dataclass
class IngestResult:
    threads: int
    instances: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.instances / self.seconds


class IngestError(RuntimeError):
    pass


def ingest(port: int, instances: list[tuple[int, bytes]], threads: int) -> IngestResult:
    """Upload every instance once; thread t sends the studies s with s % threads == t,
    as several modalities would, each on its own keep-alive connection."""
    shares = [[data for study, data in instances if study % threads == t] for t in range(threads)]
    clients = [Client(port) for _ in range(threads)]
    for client in clients:
        client.connection.connect()  # connection set-up is not part of the measure
    start = threading.Barrier(threads + 1)
    errors: list[str] = []
    workers = [
        threading.Thread(target=_upload_all, args=(client, share, start, errors), daemon=True)
        for client, share in zip(clients, shares)
    ]
    for worker in workers:
        worker.start()
    start.wait()
    began = time.perf_counter()
    for worker in workers:
        worker.join()
    seconds = time.perf_counter() - began
    for client in clients:
        client.close()
    if errors:
        raise IngestError(f"{len(errors)} uploads failed, e.g. {errors[0]}")
    return IngestResult(threads, len(instances), seconds)


def _upload_all(client: Client, share: list[bytes], start: threading.Barrier, errors: list[str]) -> None:
    start.wait()
    for data in share:
        try:
            status, body = client.request("POST", "/instances", data, "application/dicom")
            stored = status == 200 and json.loads(body).get("Status") == "Success"
        except (OSError, http.client.HTTPException, ValueError) as exc:
            errors.append(repr(exc))
            return
        if not stored:
            errors.append(f"HTTP {status}: {body[:300]!r}")
