"""/jobs: list, follow and steer the jobs, download their outputs; and the answer of every route that
runs a job, synchronously or not (Orthanc's "Synchronous", "Asynchronous" and "Priority" body fields)."""

from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import orjson
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from ..errors import ErrorCode, IsengardError
from ..jobs import Job
from .responses import empty_json, json, query_flag, server


@dataclass(frozen=True)
class JobMode:
    synchronous: bool
    priority: int


def parse_job_body(body: bytes) -> Any:
    """The JSON body of a route that runs a job; Orthanc answers Bad file format (15) when it does not parse,
    an empty body included."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise IsengardError(ErrorCode.BAD_FILE_FORMAT) from None


def job_mode(body: Any) -> JobMode:
    """"Synchronous" (or else the opposite of "Asynchronous", synchronous by default) and "Priority" (0 by
    default) of a request."""
    if not isinstance(body, dict):
        return JobMode(synchronous=True, priority=0)
    synchronous = True
    if "Synchronous" in body:
        synchronous = _boolean(body, "Synchronous")
    elif "Asynchronous" in body:
        synchronous = not _boolean(body, "Asynchronous")
    priority = body.get("Priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise IsengardError(ErrorCode.BAD_FILE_FORMAT, "Integer value expected in field: Priority")
    return JobMode(synchronous, priority)


def _boolean(body: dict, field: str) -> bool:
    value = body[field]
    if not isinstance(value, bool):
        raise IsengardError(ErrorCode.BAD_FILE_FORMAT, f"Boolean value expected in field: {field}")
    return value


def job_submitted(job_id: str) -> Response:
    """The answer to an asynchronous request."""
    return json({"ID": job_id, "Path": f"/jobs/{job_id}"})


async def answer_job(request: Request, job: Job, mode: JobMode) -> Response:
    """Run a job as the request asks: wait and answer its content (or its error), or answer its ID at once."""
    engine = server(request).jobs
    if mode.synchronous:
        return json(await anyio.to_thread.run_sync(engine.run_synchronously, job, mode.priority))
    return job_submitted(engine.submit(job, mode.priority))


# -- /jobs --------------------------------------------------------------------------------------------


def list_jobs(request: Request) -> Response:
    engine = server(request).jobs
    return json(engine.describe_all() if query_flag(request, "expand") else engine.ids())


def get_job(request: Request) -> Response:
    described = server(request).jobs.describe(request.path_params["id"])
    return json(described) if described is not None else Response(status_code=404)  # as Orthanc: no body


def _transition(name: str):  # type: ignore[no-untyped-def]
    """POST /jobs/{id}/{name}: {} when done, an empty 400 when the job is unknown or not in a state for it."""

    def endpoint(request: Request) -> Response:
        done = getattr(server(request).jobs, name)(request.path_params["id"])
        return empty_json() if done else Response(status_code=400)

    return endpoint


def get_output(request: Request) -> Response:
    key = request.path_params["key"]
    output = server(request).jobs.output(request.path_params["id"], key)
    if output is None or not output.path.exists():
        raise IsengardError(ErrorCode.INEXISTENT_ITEM, f"Job has no such output: {key}")
    return FileResponse(output.path, media_type=output.media_type, headers=download_headers(output.filename))


def download_headers(filename: str) -> dict[str, str]:
    return {"Content-Disposition": f'filename="{filename}"'}  # as Orthanc, without "attachment"


def routes() -> list[Route]:
    return [
        Route("/jobs", list_jobs, methods=["GET"]),
        Route("/jobs/{id}", get_job, methods=["GET"]),
        *(Route(f"/jobs/{{id}}/{name}", _transition(name), methods=["POST"])
          for name in ("pause", "resume", "cancel", "resubmit")),
        Route("/jobs/{id}/{key}", get_output, methods=["GET"]),
    ]
