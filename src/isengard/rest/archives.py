"""ZIP archives of patients, studies, series (/{level}/{id}/archive) or any resources (/tools/create-archive),
made by "Archive" jobs: answered at once (streamed as made, or once whole) or left for /jobs/{id}/archive."""

from collections.abc import AsyncIterator, Callable

import anyio.to_thread
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ..dicom.levels import Level
from ..errors import ErrorCode, IsengardError
from ..jobs.archive import (
    ArchiveDestination,
    ArchiveEntry,
    ArchiveFile,
    ArchiveJob,
    ArchiveStream,
    MediaJob,
    IncompleteArchive,
    plan_archive,
    temporary_directory,
)
from ..server import Isengard
from .jobs import JobMode, download_headers, job_mode, job_submitted, parse_job_body
from .responses import server

ZIP = "application/zip"


async def level_archive(request: Request) -> Response:
    """/{level}/{id}/archive and /media."""
    level = Level.parse(request.url.path.split("/")[1])
    public_id = request.path_params["id"]
    if request.method == "GET":
        transcode = _transfer_syntax(request.query_params.get("transcode"))
        mode = JobMode(synchronous=True, priority=0)
    else:
        body = parse_job_body(await request.body())
        transcode = _transfer_syntax(body.get("Transcode") if isinstance(body, dict) else None)
        mode = job_mode(body)
    kind = MediaJob if request.url.path.endswith("/media") else ArchiveJob
    return await _archive(request, [public_id], mode, f"{public_id}.zip", level, transcode, kind)


async def create_archive(request: Request) -> Response:
    try:
        body = parse_job_body(await request.body())
    except IsengardError:
        body = None
    if isinstance(body, list):  # the identifiers alone, as Orthanc still accepts
        body = {"Resources": body}
    if not isinstance(body, dict):
        raise IsengardError(ErrorCode.BAD_FILE_FORMAT, "Expected a list of resources to archive in the body")
    if "Resources" not in body:
        raise IsengardError(ErrorCode.BAD_FILE_FORMAT, "Missing field Resources in the JSON body")
    resources = body["Resources"]
    if not isinstance(resources, list) or not all(isinstance(r, str) for r in resources):
        raise IsengardError(ErrorCode.BAD_FILE_FORMAT, "Expected a list of strings (Orthanc identifiers)")
    transcode = _transfer_syntax(body.get("Transcode"))
    kind = ArchiveJob if request.url.path.endswith("/create-archive") else MediaJob
    return await _archive(request, resources, job_mode(body), "Archive.zip", transcode=transcode, kind=kind)


def _transfer_syntax(value: object) -> str | None:
    """The transfer syntax the files of an archive are transcoded into (Transcode), if any."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not all(part.isdigit() for part in value.split(".")):
        raise IsengardError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"Transcode must be a transfer syntax UID, not {value!r}")
    return value


JobMaker = Callable[[ArchiveDestination], ArchiveJob]


async def _archive(
    request: Request, resources: list[str], mode: JobMode, filename: str, level: Level | None = None,
    transcode: str | None = None, kind: type[ArchiveJob] = ArchiveJob,
) -> Response:
    isengard = server(request)
    entries = await anyio.to_thread.run_sync(_plan, isengard, resources, level)

    def job(destination: ArchiveDestination) -> ArchiveJob:
        return kind(isengard, resources, destination, entries, transcode=transcode)

    if not mode.synchronous:
        return job_submitted(isengard.jobs.submit(job(ArchiveFile(temporary_directory(isengard), offered=True)),
                                                  mode.priority))
    if isengard.config.synchronous_zip_stream:
        return await _streamed(isengard, job, mode, filename)
    return await _whole(isengard, job, mode, filename)


def _plan(isengard: Isengard, resources: list[str], level: Level | None) -> list[ArchiveEntry]:
    with isengard.index.read() as index:
        if level is not None:
            index.get(resources[0], level)  # /studies/{id}/archive of a series is an unknown study (404)
        return plan_archive(index, resources)


async def _whole(isengard: Isengard, job: JobMaker, mode: JobMode, filename: str) -> Response:
    """SynchronousZipStream false: the job makes the whole file, then it is sent (with its length) and deleted."""
    destination = ArchiveFile(temporary_directory(isengard), offered=False)
    await anyio.to_thread.run_sync(isengard.jobs.run_synchronously, job(destination), mode.priority)
    path = destination.path
    assert path is not None
    return FileResponse(path, media_type=ZIP, headers=download_headers(filename),
                        background=BackgroundTask(path.unlink, missing_ok=True))


async def _streamed(isengard: Isengard, job: JobMaker, mode: JobMode, filename: str) -> Response:
    """The ZIP is sent as the job writes it; a job that fails before its first bytes answers its error."""
    stream = ArchiveStream()
    tracked = isengard.jobs.submit_tracked(job(stream), mode.priority)
    try:
        first = await anyio.to_thread.run_sync(stream.read)
    except IncompleteArchive:
        await anyio.to_thread.run_sync(tracked.wait)  # raises the job's error
        raise
    return ArchiveStreamResponse(stream, first, filename, cancel=lambda: isengard.jobs.cancel(tracked.id))


class ArchiveStreamResponse(StreamingResponse):
    """Sends what the job writes; if the client goes away, the job fails at its next write (canceled)."""

    def __init__(self, stream: ArchiveStream, first: bytes, filename: str, cancel: Callable[[], object]):
        super().__init__(self._chunks(stream, first), media_type=ZIP, headers=download_headers(filename))
        self._stream = stream
        self._cancel = cancel

    @staticmethod
    async def _chunks(stream: ArchiveStream, first: bytes) -> AsyncIterator[bytes]:
        chunk = first
        while chunk:  # IncompleteArchive aborts the connection: the client must not take a cut ZIP for whole
            yield chunk
            # Abandoned when the client goes away, which cancels the job, which ends the read.
            chunk = await anyio.to_thread.run_sync(stream.read, abandon_on_cancel=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:  # nothing left to do once the archive is whole; else the client has gone away
            self._cancel()
            self._stream.abandon()


def routes() -> list[Route]:
    levels = [f"/{level.route}/{{id}}/{kind}" for level in (Level.PATIENT, Level.STUDY, Level.SERIES)
              for kind in ("archive", "media")]
    return [
        *(Route(path, level_archive, methods=["GET", "POST"]) for path in levels),
        *(Route(f"/tools/{name}", create_archive, methods=["POST"])
          for name in ("create-archive", "create-media", "create-media-extended")),
    ]
