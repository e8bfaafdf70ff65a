"""Preview throughput: PNG renderings of two real sample files, requested by 1 and by N client threads
from one fresh server, as a viewer pages through a CT series or plays an ultrasound loop.

The samples are read from ../shared/dicom-samples, beside the repository (never copied into it):
a 512×512 CT slice, and the multi-frame ultrasound with most frames among the samples, which
Orthanc 1.10.1 renders.

A server that does not answer every preview with a PNG gives "n/a" and a note instead of stopping the run.
"""

import http.client
import itertools
import json
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pydicom

from .client import Client, run_together
from .network import failure_note
from .report import Results, progress
from .servers import Server, ServerFactory, running

DICOM_SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "dicom-samples"
SAMPLES = {  # by the name in the metrics
    "512×512 CT": DICOM_SAMPLES / "SignedCT.dcm",  # 16-bit signed, Explicit VR Little Endian
    "multi-frame US": DICOM_SAMPLES / "Issue164.dcm",  # 87 frames of 975×743 YBR_FULL_422, JPEG Baseline
}
PNG_SIGNATURE = b"\x89PNG"
WARM_UP_PREVIEWS = 3  # per client thread, untimed: Isengard's first preview may start a decoding worker
MEASURE_S = 5.0  # per figure: four figures keep a product's images measure under half a minute


@dataclass
class PreviewResult:
    previews: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.previews / self.seconds


class PreviewError(RuntimeError):
    pass


def measure_images(factory: ServerFactory, folder: Path, results: Results, threads: int) -> None:
    """On a server of its own, so that the decoding's memory shows in its own peak RSS row."""
    with running(factory, folder / "images") as server:
        for name, file in SAMPLES.items():
            measure_previews(server, name, file, threads, results)
        results.record("peak RSS, images", "MiB", "lower", server.product, server.peak_rss_mib())


def measure_previews(server: Server, name: str, file: Path, threads: int, results: Results) -> None:
    """Upload `file` (not measured), then its previews from 1 and from `threads` client threads."""
    try:
        paths = preview_paths(_upload(server, file), file)
        upload_failure = ""
    except (RuntimeError, OSError, http.client.HTTPException, ValueError) as error:
        paths, upload_failure = [], failure_note(server, f"uploading {file.name}", error)
    for count in sorted({1, threads}):
        metric = f"preview {name}, {'1 thread' if count == 1 else f'{count} threads'}"
        value, note = (None, upload_failure) if upload_failure else _measure(server, metric, paths, count)
        results.record(metric, "previews/s", "higher", server.product, value, note)


def _measure(server: Server, metric: str, paths: list[str], threads: int) -> tuple[float | None, str]:
    try:
        done = previews(server.port, paths, threads, MEASURE_S)
    except PreviewError as error:
        return None, failure_note(server, metric, error)
    progress(server.product, f"{metric}: {done.per_second:.1f} previews/s ({done.previews} in {done.seconds:.1f} s)")
    return done.per_second, ""


def _upload(server: Server, file: Path) -> str:
    """The instance's ID on the server."""
    client = Client(server.port)
    try:
        status, body = client.request("POST", "/instances", file.read_bytes(), "application/dicom")
    finally:
        client.close()
    answer = json.loads(body) if status == 200 else {}
    if answer.get("Status") != "Success":
        raise RuntimeError(f"HTTP {status} to POST /instances: {body[:200]!r}")
    return answer["ID"]


def preview_paths(instance: str, file: Path) -> list[str]:
    """The preview of a single-frame instance, or those of each frame: a viewer plays the loop frame by frame."""
    frames = int(pydicom.dcmread(file, stop_before_pixels=True).get("NumberOfFrames", 1))
    if frames == 1:
        return [f"/instances/{instance}/preview"]
    return [f"/instances/{instance}/frames/{frame}/preview" for frame in range(frames)]


def previews(port: int, paths: list[str], threads: int, seconds: float) -> PreviewResult:
    """Each thread requests `paths` in turn on its own keep-alive connection, starting at its own share
    of them (so that the threads ask for different frames), until `seconds` have passed. The time runs
    to the last answer, so that the requests under way at the deadline count."""
    orders = [paths[s:] + paths[:s] for s in (t * len(paths) // threads for t in range(threads))]
    clients = [Client(port) for _ in orders]
    answered: list[int] = []
    errors: list[str] = []
    elapsed = run_together([partial(_request_in_turn, client, order, seconds, answered, errors)
                            for client, order in zip(clients, orders)])
    for client in clients:
        client.close()
    if errors:
        raise PreviewError(errors[0])
    return PreviewResult(sum(answered), elapsed)


def _request_in_turn(client: Client, order: list[str], seconds: float, answered: list[int], errors: list[str],
                     start: threading.Barrier) -> None:
    """WARM_UP_PREVIEWS before the common start (a thread that fails them still joins it), then the timed ones."""
    requests = itertools.cycle(order)
    error = ""
    for path in itertools.islice(requests, WARM_UP_PREVIEWS):
        error = error or _preview_error(client, path)
    start.wait()
    count, deadline = 0, time.perf_counter() + seconds
    while not error and time.perf_counter() < deadline:
        error = _preview_error(client, next(requests))
        count += not error
    answered.append(count)
    if error:
        errors.append(error)


def _preview_error(client: Client, path: str) -> str:
    """What is wrong with the answer to GET `path`, or "" for a PNG with HTTP 200."""
    try:
        status, body = client.request("GET", path)
    except (OSError, http.client.HTTPException) as exc:
        return f"GET {path}: {exc!r}"
    if status != 200:
        return f"HTTP {status} to GET {path}"
    return "" if body.startswith(PNG_SIGNATURE) else f"GET {path} answered {body[:16]!r}, not a PNG"
