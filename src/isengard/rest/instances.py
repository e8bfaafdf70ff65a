"""Receiving instances (`POST /instances`) and reading their files back."""

import io
import zipfile

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..dicom.levels import Level
from ..errors import ErrorCode, IsengardError
from ..ingest import Origin, StoreResult
from ..server import Isengard
from .responses import json, server
from .threads import in_thread

ZIP_MAGIC = b"PK\x03\x04"


def store_answer(result: StoreResult) -> dict:
    ids = result.public_ids
    return {
        "ID": ids[Level.INSTANCE],
        "Path": f"/instances/{ids[Level.INSTANCE]}",
        "ParentPatient": ids[Level.PATIENT],
        "ParentStudy": ids[Level.STUDY],
        "ParentSeries": ids[Level.SERIES],
        "Status": result.status.value,
    }


def request_origin(request: Request) -> Origin:
    client = request.client
    return Origin(
        source="RestApi",
        remote_ip=client.host if client else "",
        http_username=request.scope.get("state", {}).get("username", ""),
    )


async def post_instances(request: Request) -> Response:
    isengard = server(request)
    origin = request_origin(request)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=100000, max_part_size=1 << 34)
        files = [await part.read() for _, part in form.multi_items() if hasattr(part, "read")]
        answers = [await in_thread(_store_any, isengard, data, origin) for data in files]
        flat = [a for answer in answers for a in (answer if isinstance(answer, list) else [answer])]
        return json(flat[0] if len(flat) == 1 else flat)
    body = await request.body()
    if body.startswith(ZIP_MAGIC):
        return json(await in_thread(_store_zip, isengard, body, origin))
    return json(store_answer(await isengard.ingest.store_async(body, origin)))


def _store_any(isengard: Isengard, data: bytes, origin: Origin) -> dict | list[dict]:
    if data.startswith(ZIP_MAGIC):
        return _store_zip(isengard, data, origin)
    return store_answer(isengard.ingest.store(data, origin))


def _store_zip(isengard: Isengard, data: bytes, origin: Origin) -> list[dict]:
    """Every DICOM file of a ZIP archive; other members are skipped, as Orthanc does."""
    answers = []
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise IsengardError(ErrorCode.BAD_FILE_FORMAT, f"Invalid ZIP archive: {exc}") from None
    with archive:
        for member in archive.infolist():
            if member.is_dir():
                continue
            try:
                answers.append(store_answer(isengard.ingest.store(archive.read(member), origin)))
            except IsengardError as exc:
                answers.append({"Path": member.filename, "Status": "Failure", "Details": str(exc)})
    return answers


def get_file(request: Request) -> Response:
    public_id = request.path_params["id"]
    data = server(request).read_dicom(public_id)
    return Response(
        data,
        media_type="application/dicom",
        headers={"Content-Disposition": f'filename="{public_id}.dcm"'},
    )


def routes() -> list[Route]:
    return [
        Route("/instances", post_instances, methods=["POST"]),
        Route("/instances/{id}/file", get_file, methods=["GET"]),
    ]
