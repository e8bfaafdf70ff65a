"""Metadata, attachments and labels of patients, studies, series and instances.

Metadata and attachments carry revisions as in Orthanc: GET answers an ETag
`"revision-md5"` (the MD5 of the metadata value, or of the uncompressed
attachment); PUT and DELETE check an `If-Match` header when one is given, and
require it when CheckRevisions is true and the item exists. The check and the
change happen in one index transaction, so concurrent writers cannot both win.

Attachment files follow the ingest rule: the new file is complete on disk before
the index names it, is removed if the transaction fails, and the file it
replaces is removed only once the index has committed.
"""

import hashlib
import inspect
import re
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..config import DEFAULT_MIME, USER_RANGE, Configuration
from ..dicom.levels import Level
from ..errors import ErrorCode, IsengardError
from ..events import Event
from ..index import ChangeType, IndexTransaction, Resource
from ..index.enums import METADATA_NAMES
from ..index.index import StoredAttachment, revision_conflict
from ..server import Isengard
from ..storage import ContentType, FileInfo
from ..storage.area import CompressionType, decompress_data
from .responses import empty_json, json, query_flag, server
from .threads import in_thread

ATTACHMENT_NAMES = {
    ContentType.DICOM: "dicom",
    ContentType.DICOM_AS_JSON: "dicom-as-json",
    ContentType.DICOM_UNTIL_PIXEL_DATA: "dicom-until-pixel-data",
}
BUILTIN_MIME = {ContentType.DICOM: "application/dicom", ContentType.DICOM_AS_JSON: "application/json"}
# What GET /{level}/{id}/attachments/{name} answers, in Orthanc's order.
ATTACHMENT_OPERATIONS = [
    "compress", "compressed-data", "compressed-md5", "compressed-size", "data", "info",
    "is-compressed", "md5", "size", "uncompress", "verify-md5", "uuid",
]
LABEL = re.compile(r"[A-Za-z0-9_-]{1,64}")
ETAG = re.compile(r"(\d+)-(.+)")


# -- names of metadata and attachment types -------------------------------------------------


@dataclass(frozen=True)
class TypeNames:
    """Metadata or attachment types: Orthanc's names, then the site's, then plain numbers."""

    kind: str  # "metadata" or "attachment", for messages
    builtin: Mapping[int, str]
    user: Mapping[str, int]

    def number(self, name: str) -> int:
        for names in ({n: t for t, n in self.builtin.items()}, self.user):
            if name in names:
                return int(names[name])
        if re.fullmatch(r"-?\d+", name):
            return int(name)
        raise IsengardError(ErrorCode.INEXISTENT_ITEM, f"Unknown {self.kind} name: {name}")

    def name(self, number: int) -> str:
        if number in self.builtin:
            return self.builtin[number]
        return next((name for name, n in self.user.items() if n == number), str(number))

    def writable(self, name: str) -> int:
        """The number of a type that REST clients may change: user types only, as in Orthanc."""
        number = self.number(name)
        if number not in USER_RANGE:
            raise IsengardError(
                ErrorCode.READ_ONLY,
                f"Only user-defined {self.kind} types (1024-65535) can be modified, not {name}",
            )
        return number


def metadata_names(config: Configuration) -> TypeNames:
    return TypeNames("metadata", METADATA_NAMES, config.user_metadata)


def attachment_names(config: Configuration) -> TypeNames:
    user = {name: number for name, (number, _) in config.user_content_type.items()}
    return TypeNames("attachment", ATTACHMENT_NAMES, user)


def attachment_mime(config: Configuration, content_type: int) -> str:
    for number, mime in config.user_content_type.values():
        if number == content_type:
            return mime
    return BUILTIN_MIME.get(content_type, DEFAULT_MIME)


# -- revisions --------------------------------------------------------------------------------


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@dataclass(frozen=True)
class ETag:
    revision: int
    md5: str

    @classmethod
    def of_metadata(cls, value: str, revision: int) -> "ETag":
        return cls(revision, md5(value.encode()))

    @classmethod
    def of_attachment(cls, stored: StoredAttachment) -> "ETag":
        return cls(stored.revision, stored.info.uncompressed_md5)

    @property
    def text(self) -> str:
        return f'"{self.revision}-{self.md5}"'

    @property
    def header(self) -> dict[str, str]:
        return {"ETag": self.text}


def request_etag(request: Request, header: str) -> ETag | None:
    value = request.headers.get(header)
    if value is None:
        return None
    match = ETAG.fullmatch(value.strip().strip('"'))
    if match is None:
        raise IsengardError(
            ErrorCode.PARAMETER_OUT_OF_RANGE,
            f'The "{header}" HTTP header must hold an ETag as "revision-md5", not: {value}',
        )
    return ETag(int(match[1]), match[2])


def if_match(request: Request, required: bool) -> ETag | None:
    given = request_etag(request, "If-Match")
    if given is None and required:
        raise revision_conflict('The "If-Match" HTTP header is required, as "CheckRevisions" is true')
    return given


def check_revision(given: ETag | None, current: ETag | None, check_revisions: bool) -> None:
    """Vet a change of an item whose current ETag is `current` (None: the item is new)."""
    if current is None:
        return
    if given is None:
        if check_revisions:
            raise revision_conflict('The "If-Match" HTTP header is required to modify an existing item')
        return
    if given != current:
        raise revision_conflict(f"The current ETag is {current.text}, not {given.text}")


def not_modified(request: Request, etag: ETag) -> Response | None:
    """The 304 answer when the client's If-None-Match names the current revision."""
    if request_etag(request, "If-None-Match") == etag:
        return Response(status_code=304, headers=etag.header)
    return None


# -- dispatch -------------------------------------------------------------------------------

Handler = Callable[[Request, Level], Response | Awaitable[Response]]
# Routes accept any method and `dispatch` answers the 405 itself, with Orthanc's Allow header.
HTTP_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def dispatch(level: Level, handlers: dict[str, Handler]) -> Callable[[Request], Awaitable[Response]]:
    """One endpoint for the methods of one path, so a 405 lists them all (Orthanc's Allow: GET,PUT,DELETE)."""
    allow = ",".join(handlers)

    async def endpoint(request: Request) -> Response:
        handler = handlers.get(request.method)
        if handler is None:
            raise HTTPException(405, headers={"Allow": allow})
        if inspect.iscoroutinefunction(handler):
            return await handler(request, level)
        return await in_thread(handler, request, level)

    return endpoint


def publish(isengard: Isengard, change: ChangeType, resource: Resource) -> None:
    isengard.events.publish(Event(change, resource.level, resource.public_id))


# -- metadata -------------------------------------------------------------------------------


def list_metadata(request: Request, level: Level) -> Response:
    isengard = server(request)
    with isengard.index.read() as index:
        resource = index.get(request.path_params["id"], level)
        values = index.metadata(resource.internal_id)
    name = str if query_flag(request, "numeric") else metadata_names(isengard.config).name
    keys = {t: name(t) for t in sorted(values)}
    if query_flag(request, "expand"):
        return json(dict(sorted((keys[t], values[t][0]) for t in keys)))
    return json(list(keys.values()))


def get_metadata(request: Request, level: Level) -> Response:
    isengard = server(request)
    name = request.path_params["name"]
    number = metadata_names(isengard.config).number(name)
    with isengard.index.read() as index:
        resource = index.get(request.path_params["id"], level)
        entry = index.metadata(resource.internal_id).get(number)
    if entry is None:
        raise IsengardError(ErrorCode.UNKNOWN_RESOURCE, f"No metadata {name} in {resource.public_id}")
    etag = ETag.of_metadata(*entry)
    return not_modified(request, etag) or Response(entry[0], media_type="text/plain", headers=etag.header)


async def put_metadata(request: Request, level: Level) -> Response:
    number = metadata_names(server(request).config).writable(request.path_params["name"])
    given = if_match(request, required=False)
    try:
        value = (await request.body()).decode("utf-8")
    except UnicodeDecodeError:
        raise IsengardError(ErrorCode.BAD_REQUEST, "The value of a metadata must be UTF-8 text") from None
    etag = await in_thread(_store_metadata, request, level, number, value, given)
    return Response(media_type="text/plain", headers=etag.header)


def _store_metadata(request: Request, level: Level, number: int, value: str, given: ETag | None) -> ETag:
    isengard = server(request)
    with isengard.index.write() as index:
        resource = index.get(request.path_params["id"], level)
        entry = index.metadata(resource.internal_id).get(number)
        check_revision(given, ETag.of_metadata(*entry) if entry else None, isengard.config.check_revisions)
        index.set_metadata(resource.internal_id, {number: value})
        index.log_change(ChangeType.UPDATED_METADATA, level, resource.public_id)
        etag = ETag.of_metadata(*index.metadata(resource.internal_id)[number])
    publish(isengard, ChangeType.UPDATED_METADATA, resource)
    return etag


def delete_metadata(request: Request, level: Level) -> Response:
    isengard = server(request)
    name = request.path_params["name"]
    number = metadata_names(isengard.config).writable(name)
    given = if_match(request, required=isengard.config.check_revisions)
    with isengard.index.write() as index:
        resource = index.get(request.path_params["id"], level)
        entry = index.metadata(resource.internal_id).get(number)
        if entry is None:
            raise IsengardError(ErrorCode.UNKNOWN_RESOURCE, f"No metadata {name} in {resource.public_id}")
        check_revision(given, ETag.of_metadata(*entry), isengard.config.check_revisions)
        index.delete_metadata(resource.internal_id, number)
        index.log_change(ChangeType.UPDATED_METADATA, level, resource.public_id)
    publish(isengard, ChangeType.UPDATED_METADATA, resource)
    return Response(media_type="text/plain")


# -- attachments: reading -------------------------------------------------------------------


def list_attachments(request: Request, level: Level) -> Response:
    isengard = server(request)
    with isengard.index.read() as index:
        resource = index.get(request.path_params["id"], level)
        numbers = sorted(index.attachments(resource.internal_id))
    names = attachment_names(isengard.config)
    if query_flag(request, "full"):
        return json(dict(sorted((names.name(n), n) for n in numbers)))
    return json([names.name(n) for n in numbers])


def find_attachment(index: IndexTransaction, resource: Resource, number: int, name: str) -> StoredAttachment:
    stored = index.attachment(resource.internal_id, number)
    if stored is None:
        raise IsengardError(ErrorCode.UNKNOWN_RESOURCE, f"No attachment {name} in {resource.public_id}")
    return stored


def read_attachment(request: Request, level: Level) -> tuple[Resource, StoredAttachment]:
    isengard = server(request)
    name = request.path_params["name"]
    number = attachment_names(isengard.config).number(name)
    with isengard.index.read() as index:
        resource = index.get(request.path_params["id"], level)
        return resource, find_attachment(index, resource, number, name)


def attachment_data(isengard: Isengard, info: FileInfo) -> Response:
    suffix = ".dcm" if info.content_type == ContentType.DICOM else ""
    return Response(
        isengard.storage.read(info),
        media_type=attachment_mime(isengard.config, info.content_type),
        headers={"Content-Disposition": f'filename="{info.uuid}{suffix}"'},
    )


def attachment_info(info: FileInfo) -> dict:
    return {
        "CompressedMD5": info.compressed_md5,
        "CompressedSize": info.compressed_size,
        "ContentType": info.content_type,
        "UncompressedMD5": info.uncompressed_md5,
        "UncompressedSize": info.uncompressed_size,
        "Uuid": info.uuid,
    }


def plain(value: object) -> Response:
    return Response(str(value), media_type="text/plain")


AttachmentView = Callable[[Isengard, FileInfo], Response]

ATTACHMENT_VIEWS: dict[str, AttachmentView] = {
    "data": attachment_data,
    "compressed-data": lambda isengard, info: Response(isengard.storage.read_stored(info), media_type=DEFAULT_MIME),
    "md5": lambda isengard, info: plain(info.uncompressed_md5),
    "compressed-md5": lambda isengard, info: plain(info.compressed_md5),
    "size": lambda isengard, info: plain(info.uncompressed_size),
    "compressed-size": lambda isengard, info: plain(info.compressed_size),
    "is-compressed": lambda isengard, info: plain(int(info.compression != CompressionType.NONE)),
    "info": lambda isengard, info: json(attachment_info(info)),
    "uuid": lambda isengard, info: plain(info.uuid),
}


def view_attachment(view: AttachmentView) -> Handler:
    def handler(request: Request, level: Level) -> Response:
        _, stored = read_attachment(request, level)
        etag = ETag.of_attachment(stored)
        cached = not_modified(request, etag)
        if cached is not None:
            return cached
        response = view(server(request), stored.info)
        response.headers.update(etag.header)
        return response

    return handler


def read_verified(isengard: Isengard, info: FileInfo, http_status: int | None = None) -> bytes:
    """The uncompressed content, once checked against both MD5 hashes of the index."""
    stored = isengard.storage.read_stored(info)
    data = _uncompressed(stored, info)
    if md5(stored) != info.compressed_md5 or data is None or md5(data) != info.uncompressed_md5:
        raise IsengardError(
            ErrorCode.CORRUPTED_FILE, f"Attachment {info.uuid} does not match its MD5 hashes", http_status
        )
    return data


def _uncompressed(stored: bytes, info: FileInfo) -> bytes | None:
    if info.compression == CompressionType.NONE:
        return stored
    try:
        return decompress_data(stored)
    except (IsengardError, zlib.error):
        return None


def verify_md5(request: Request, level: Level) -> Response:
    _, stored = read_attachment(request, level)
    read_verified(server(request), stored.info, http_status=400)  # Orthanc's status for a mismatch
    return empty_json()


# -- attachments: writing ---------------------------------------------------------------------


def commit_attachment(
    isengard: Isengard, level: Level, public_id: str, info: FileInfo, vet: Callable[[StoredAttachment | None], None]
) -> tuple[Resource, int]:
    """Record the stored file `info` in place of the attachment of its type, once `vet` accepted the
    current one; returns the resource and the new revision."""
    try:
        with isengard.index.write() as index:
            resource = index.get(public_id, level)
            vet(index.attachment(resource.internal_id, info.content_type))
            replaced = index.set_attachment(resource.internal_id, info)
            index.log_change(ChangeType.UPDATED_ATTACHMENT, level, public_id)
            revision = find_attachment(index, resource, info.content_type, str(info.content_type)).revision
    except BaseException:
        isengard.storage.remove(info.uuid)
        raise
    if replaced is not None:
        isengard.storage.remove(replaced)
    publish(isengard, ChangeType.UPDATED_ATTACHMENT, resource)
    return resource, revision


async def put_attachment(request: Request, level: Level) -> Response:
    isengard = server(request)
    number = attachment_names(isengard.config).writable(request.path_params["name"])
    given = if_match(request, required=False)
    body = await request.body()
    info = await in_thread(isengard.storage.create, body, number)

    def vet(current: StoredAttachment | None) -> None:
        check_revision(given, ETag.of_attachment(current) if current else None, isengard.config.check_revisions)

    _, revision = await in_thread(commit_attachment, isengard, level, request.path_params["id"], info, vet)
    response = empty_json()
    response.headers.update(ETag(revision, info.uncompressed_md5).header)
    return response


def delete_attachment(request: Request, level: Level) -> Response:
    isengard = server(request)
    name = request.path_params["name"]
    number = attachment_names(isengard.config).writable(name)
    given = if_match(request, required=isengard.config.check_revisions)
    with isengard.index.write() as index:
        resource = index.get(request.path_params["id"], level)
        current = find_attachment(index, resource, number, name)
        check_revision(given, ETag.of_attachment(current), isengard.config.check_revisions)
        index.delete_attachment(resource.internal_id, number)
        index.log_change(ChangeType.UPDATED_ATTACHMENT, level, resource.public_id)
    isengard.storage.remove(current.info.uuid)
    publish(isengard, ChangeType.UPDATED_ATTACHMENT, resource)
    return Response(media_type="text/plain")


def recompress(compress: bool) -> Handler:
    """POST .../compress or .../uncompress: rewrite the file under a new UUID; a no-op if already so."""

    def handler(request: Request, level: Level) -> Response:
        isengard = server(request)
        resource, stored = read_attachment(request, level)
        old = stored.info
        if (old.compression != CompressionType.NONE) == compress:
            return empty_json()
        data = read_verified(isengard, old)  # a damaged file must not get fresh, matching hashes
        info = isengard.storage.create(data, old.content_type, compress=compress)

        def vet(current: StoredAttachment | None) -> None:
            if current is None or current.info.uuid != old.uuid:
                raise revision_conflict("The attachment was changed by another request meanwhile")

        commit_attachment(isengard, level, resource.public_id, info, vet)
        return empty_json()

    return handler


# -- labels ---------------------------------------------------------------------------------


def valid_label(label: str) -> str:
    if not LABEL.fullmatch(label):
        raise IsengardError(
            ErrorCode.PARAMETER_OUT_OF_RANGE,
            f'A label has 1 to 64 characters among letters, digits, "_" and "-", unlike: {label}',
        )
    return label


def list_labels(request: Request, level: Level) -> Response:
    with server(request).index.read() as index:
        resource = index.get(request.path_params["id"], level)
        return json(index.labels(resource.internal_id))


def get_label(request: Request, level: Level) -> Response:
    label = request.path_params["label"]
    with server(request).index.read() as index:
        resource = index.get(request.path_params["id"], level)
        present = label in index.labels(resource.internal_id)
    if not present:
        raise IsengardError(ErrorCode.INEXISTENT_ITEM, f"No label {label} on {resource.public_id}")
    return Response(media_type="text/plain")


def modify_label(add: bool) -> Handler:
    def handler(request: Request, level: Level) -> Response:
        label = valid_label(request.path_params["label"])
        with server(request).index.write() as index:
            resource = index.get(request.path_params["id"], level)
            if add:
                index.add_label(resource.internal_id, label)
            else:
                index.remove_label(resource.internal_id, label)
        return Response(media_type="text/plain")

    return handler


def all_labels(request: Request) -> Response:
    with server(request).index.read() as index:
        return json(index.all_labels())


# -- routes ---------------------------------------------------------------------------------

PATHS: dict[str, dict[str, Handler]] = {
    "/metadata": {"GET": list_metadata},
    "/metadata/{name}": {"GET": get_metadata, "PUT": put_metadata, "DELETE": delete_metadata},
    "/attachments": {"GET": list_attachments},
    "/attachments/{name}": {
        "GET": view_attachment(lambda isengard, info: json(ATTACHMENT_OPERATIONS)),
        "PUT": put_attachment,
        "DELETE": delete_attachment,
    },
    **{f"/attachments/{{name}}/{view}": {"GET": view_attachment(render)} for view, render in ATTACHMENT_VIEWS.items()},
    "/attachments/{name}/verify-md5": {"POST": verify_md5},
    "/attachments/{name}/compress": {"POST": recompress(True)},
    "/attachments/{name}/uncompress": {"POST": recompress(False)},
    "/labels": {"GET": list_labels},
    "/labels/{label}": {"GET": get_label, "PUT": modify_label(True), "DELETE": modify_label(False)},
}


def routes() -> list[Route]:
    found = [Route("/tools/labels", all_labels, methods=["GET"])]
    for level in Level:
        found += [
            Route(f"/{level.route}/{{id}}{path}", dispatch(level, handlers), methods=HTTP_METHODS)
            for path, handlers in PATHS.items()
        ]
    return found
