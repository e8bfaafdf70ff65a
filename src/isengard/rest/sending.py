"""/modalities/{id}/store and /modalities/{id}/store-straight: sending instances to a modality (C-STORE SCU).

The body of /store is what Orthanc 1.10.1 reads: a resource ID as text, a JSON string or array of
IDs, or an object with "Resources" and options, each checked with Orthanc's error codes. Sending is
a "DicomModalityStore" job (jobs.dicom.StoreJob), run as the body asks: synchronously by default
(the answer is the job's content), or not ("Asynchronous", with its "Priority"). /store-straight
sends at once, without a job, as Orthanc does.
"""

import re
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..dicom.parse import parse_instance
from ..errors import ErrorCode, IsengardError
from ..jobs import StoreJob
from ..network.modalities import bad_format, parse_timeout
from ..network.sending import MoveOriginator, StoreOptions, StoredInstance, send_to_modality, stored_instances
from .jobs import JobMode, answer_job
from .modalities import requested_modality
from .responses import json, server
from .threads import in_thread

PUBLIC_ID = re.compile(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{8}){4}")  # what Orthanc takes for a resource ID (a SHA-1)
MESSAGE_IDS = range(0, 65536)


@dataclass(frozen=True)
class StoreRequest:
    resources: list[str]
    options: StoreOptions
    asynchronous: bool = False
    priority: int = 0
    storage_commitment: bool = False


def parse_store_request(body: bytes, own_aet: str) -> StoreRequest:
    """`own_aet` (DicomAet) is the default C-MOVE originator, as in Orthanc."""
    text = body.decode("utf-8", "replace").strip()
    if PUBLIC_ID.fullmatch(text):  # a bare ID, as Orthanc <= 0.5.1 took it
        return StoreRequest([text], StoreOptions())
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise bad_format("Must provide a JSON value") from None
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list):
        return StoreRequest(_resources(value), StoreOptions())
    if not isinstance(value, dict):
        raise bad_format("Must provide a JSON object, or a JSON array of strings")
    if "Resources" not in value:
        raise bad_format('Missing field in JSON: "Resources"')
    if not isinstance(value["Resources"], list):
        raise bad_format('JSON field "Resources" must contain an array')
    return _with_options(_resources(value["Resources"]), value, own_aet)


def _resources(values: list[Any]) -> list[str]:
    if not all(isinstance(value, str) for value in values):
        raise bad_format("Resources to be exported must be specified as a JSON array of strings")
    resources = [value.strip() for value in values]
    for resource in resources:
        if not PUBLIC_ID.fullmatch(resource):
            raise bad_format(f"This string is not a valid Orthanc identifier: {resource}")
    return resources


def _with_options(resources: list[str], body: dict[str, Any], own_aet: str) -> StoreRequest:
    for key in ("Synchronous", "Asynchronous", "Permissive"):
        _boolean(body, key)
    priority = body.get("Priority", 0)
    if not _is_integer(priority):
        raise bad_format("Integer value expected in field: Priority")
    local_aet = _typed(body, "LocalAet", str, "")
    originator_aet = _typed(body, "MoveOriginatorAet", str, "")
    originator_id = _typed(body, "MoveOriginatorID", int, 0)
    if originator_id not in MESSAGE_IDS:
        raise IsengardError(ErrorCode.PARAMETER_OUT_OF_RANGE)
    options = StoreOptions(
        local_aet=local_aet,
        timeout=parse_timeout(body["Timeout"]) if "Timeout" in body else 0,
        # As Orthanc: a C-MOVE originator is named by a message ID other than 0.
        originator=MoveOriginator(originator_aet or own_aet, originator_id) if originator_id else None,
        permissive=_boolean(body, "Permissive"),
    )
    # As Orthanc, "Synchronous" decides if present, else "Asynchronous"; synchronous by default.
    asynchronous = not body["Synchronous"] if "Synchronous" in body else _boolean(body, "Asynchronous")
    storage_commitment = _typed(body, "StorageCommitment", bool, False)
    return StoreRequest(resources, options, asynchronous, priority, storage_commitment)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _boolean(body: dict[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise bad_format(f"Boolean value expected in field: {key}")
    return value


def _typed(body: dict[str, Any], key: str, expected: type, default: Any) -> Any:
    """An option that Orthanc answers "Bad type for a parameter" (without details) when mistyped."""
    value = body.get(key, default)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise IsengardError(ErrorCode.BAD_PARAMETER_TYPE)
    return value


async def store(request: Request) -> Response:
    isengard = server(request)
    modality = requested_modality(request)
    parsed = parse_store_request(await request.body(), isengard.config.dicom_aet)
    instances = await in_thread(stored_instances, isengard, parsed.resources)
    job = StoreJob(
        isengard, modality, [instance.public_id for instance in instances], parsed.options,
        parent_resources=parsed.resources, storage_commitment=parsed.storage_commitment,
    )
    return await answer_job(request, job, JobMode(not parsed.asynchronous, parsed.priority))


async def store_straight(request: Request) -> Response:
    """Send the DICOM file of the body as it is, without storing it."""
    isengard = server(request)
    modality = requested_modality(request)
    data = await request.body()
    parsed = await in_thread(parse_instance, data, isengard.ingest.default_encoding)
    instance = StoredInstance(
        public_id="",
        sop_class_uid=parsed.sop_class_uid or "",
        sop_instance_uid=parsed.identifiers.sop_instance_uid,
        transfer_syntax_uid=parsed.transfer_syntax,
        file=None,
    )
    await in_thread(send_to_modality, isengard, modality, [instance], StoreOptions(), None, lambda _: data)
    return json({"SOPClassUID": instance.sop_class_uid, "SOPInstanceUID": instance.sop_instance_uid})


def routes() -> list[Route]:
    return [
        Route("/modalities/{id}/store", store, methods=["POST"]),
        Route("/modalities/{id}/store-straight", store_straight, methods=["POST"]),
    ]
