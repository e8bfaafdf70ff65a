"""A minimal keep-alive HTTP client: http.client costs a fraction of httpx per request,
so the figures measure the server rather than the client."""

import http.client
import json
import threading
import time
from collections.abc import Callable


class Client:
    """One persistent connection to a server on the loopback interface."""

    def __init__(self, port: int, timeout_s: float = 120):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str = "") -> tuple[int, bytes]:
        headers = {"Content-Type": content_type} if content_type else {}
        try:
            return self._exchange(method, path, body, headers)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            # The server closed an idle keep-alive connection: open a new one, once.
            self.connection.close()
            return self._exchange(method, path, body, headers)

    def _exchange(self, method: str, path: str, body: bytes | None, headers: dict) -> tuple[int, bytes]:
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        return response.status, response.read()

    def post_json(self, path: str, payload: object) -> tuple[int, bytes]:
        return self.request("POST", path, json.dumps(payload).encode(), "application/json")

    def close(self) -> None:
        self.connection.close()


def run_together(jobs: list[Callable[[threading.Barrier], None]]) -> float:
    """Run each job on a thread of its own; a job calls `start.wait()` once ready (after any untimed
    warm-up). The seconds from that common start to the end of the last job."""
    start = threading.Barrier(len(jobs) + 1)
    workers = [threading.Thread(target=job, args=(start,), daemon=True) for job in jobs]
    for worker in workers:
        worker.start()
    start.wait()
    began = time.perf_counter()
    for worker in workers:
        worker.join()
    return time.perf_counter() - began
