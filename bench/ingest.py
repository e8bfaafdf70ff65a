"""REST ingest throughput: raw DICOM bodies POSTed to /instances by N client threads."""

import http.client
import json
import threading
from dataclasses import dataclass
from functools import partial

from .client import Client, run_together


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
    errors: list[str] = []
    seconds = run_together([partial(_upload_all, client, share, errors) for client, share in zip(clients, shares)])
    for client in clients:
        client.close()
    if errors:
        raise IngestError(f"{len(errors)} uploads failed, e.g. {errors[0]}")
    return IngestResult(threads, len(instances), seconds)


def _upload_all(client: Client, share: list[bytes], errors: list[str], start: threading.Barrier) -> None:
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
