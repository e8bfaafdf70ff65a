"""/tools/create-dicom: a new instance from JSON tags, with a PNG or JPEG picture or a PDF as its
content (a list of pictures makes a series), under a parent resource if one is named."""

import base64
import binascii
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..dicom.create import Picture, add_pdf, add_picture, file_bytes, new_instance
from ..dicom.levels import Level
from ..dicom.tags import MAIN_DICOM_TAGS, PATIENT_ID, SERIES_INSTANCE_UID, STUDY_INSTANCE_UID
from ..errors import ErrorCode, IsengardError, bad_request, unknown_resource
from ..ingest import Origin, StoreStatus
from ..server import Isengard
from .instances import request_origin, store_answer
from .responses import json, parse_json_body, server
from .threads import in_thread

PICTURE_TYPES = ("image/png", "image/jpeg")
SERIES_IDENTIFIERS = (PATIENT_ID, STUDY_INSTANCE_UID, SERIES_INSTANCE_UID)


async def create_dicom(request: Request) -> Response:
    body = parse_json_body(await request.body())
    if not isinstance(body, dict):
        raise bad_request("The body of /tools/create-dicom must be a JSON object")
    return json(await in_thread(_create, server(request), body, request_origin(request)))


def _create(isengard: Isengard, body: dict[str, Any], origin: Origin) -> dict[str, Any]:
    tags = body.get("Tags", {})
    if not isinstance(tags, dict):
        raise bad_request('"Tags" must be a JSON object')
    inherited = _inherited(isengard, body.get("Parent"))
    content = body.get("Content")
    if isinstance(content, list):  # one instance per picture, in one new series
        return _create_series(isengard, tags, inherited, content, bool(body.get("Force")), origin)
    dataset = new_instance(tags, isengard.config.default_encoding, inherited, bool(body.get("Force")))
    if content is not None:
        _add_content(isengard, dataset, content)
    return _store(isengard, file_bytes(dataset), origin)


def _create_series(isengard: Isengard, tags: dict[str, Any], inherited: dict, contents: list, force: bool,
                   origin: Origin) -> dict[str, Any]:
    if not contents:
        raise bad_request('"Content" lists no picture')
    shared: dict = {}  # the identifiers of the first instance, which the others share
    answer: dict[str, Any] = {}
    for number, content in enumerate(contents, 1):
        dataset = new_instance(tags, isengard.config.default_encoding, inherited, force)
        shared = shared or {tag: dataset[tag].value for tag in SERIES_IDENTIFIERS}
        for tag, value in shared.items():
            dataset[tag].value = value
        dataset.InstanceNumber = str(number)
        _add_content(isengard, dataset, content)
        answer = _store(isengard, file_bytes(dataset), origin)
    series = answer["ParentSeries"]
    return {"ID": series, "Path": f"/series/{series}", "Status": "Success"}


def _inherited(isengard: Isengard, parent: Any) -> dict:
    """The main tags of the parent resource and of its ancestors, which the new instance shares."""
    if parent is None:
        return {}
    if not isinstance(parent, str):
        raise bad_request('"Parent" must be the identifier of a patient, a study or a series')
    with isengard.index.read() as index:
        resource = index.lookup(parent)
        if resource is None or resource.level == Level.INSTANCE:
            raise unknown_resource(parent)
        inherited: dict = {}
        while resource is not None:
            tags = index.main_tags(resource.internal_id)
            inherited.update({tag: tags[tag] for tag in MAIN_DICOM_TAGS[resource.level] if tag in tags})
            resource = index.parent(resource)
    return inherited


def _add_content(isengard: Isengard, dataset: Any, content: Any) -> None:
    if not isinstance(content, str) or not content.startswith("data:") or ";base64," not in content:
        raise bad_request('"Content" must be a data URI ("data:image/png;base64,...")')
    media_type, encoded = content[len("data:"):].split(";base64,", 1)
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request('"Content" is not valid base64') from None
    if media_type in PICTURE_TYPES:
        description, pixels = isengard.images.picture(data)
        add_picture(dataset, Picture(**description, pixels=pixels))
    elif media_type == "application/pdf":
        add_pdf(dataset, data)
    else:
        raise IsengardError(ErrorCode.NOT_IMPLEMENTED, f"Cannot create an instance from {media_type}", 400)


def _store(isengard: Isengard, data: bytes, origin: Origin) -> dict[str, Any]:
    result = isengard.ingest.store(data, origin)
    if result.status == StoreStatus.FILTERED_OUT:
        raise IsengardError(ErrorCode.FORBIDDEN_ACCESS, "The new instance was refused by a filter")
    return store_answer(result)


def routes() -> list[Route]:
    return [Route("/tools/create-dicom", create_dicom, methods=["POST"])]
