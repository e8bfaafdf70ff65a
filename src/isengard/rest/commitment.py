"""Storage commitment SCU: POST /modalities/{id}/storage-commitment, GET /storage-commitment/{id},
POST /storage-commitment/{id}/remove (Orthanc 1.10.1's routes, fields and errors)."""

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..dicom.levels import Level
from ..dicom.tags import SOP_INSTANCE_UID
from ..errors import ErrorCode, IsengardError
from ..index import MetadataType
from ..network.commitment import CommitmentReport, Reference, instances_with_uid, request_commitment
from ..network.modalities import bad_format, parse_timeout
from ..server import Isengard
from .modalities import requested_modality, json_object_body
from .responses import empty_json, json, server
from .threads import in_thread

RESOURCES, DICOM_INSTANCES = "Resources", "DicomInstances"


def _styled(value: Any) -> str:
    """A JSON value as Orthanc quotes it in its error details."""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n"


def _stored_instances(isengard: Isengard, resources: Any) -> list[Reference]:
    """The SOP class and instance UIDs of the instances of the resources (of any level)."""
    if not isinstance(resources, list):
        raise bad_format(f'The "{RESOURCES}" field must provide an array of Orthanc resources')
    for public_id in resources:
        if not isinstance(public_id, str):
            raise bad_format(f'The "{RESOURCES}" field must provide an array of strings, found: {_styled(public_id)}')
    with isengard.index.read() as index:
        instances = [i for public_id in resources for i in index.descendants(index.get(public_id), Level.INSTANCE)]
        ids = [instance.internal_id for instance in instances]
        classes = index.metadata_values(ids, MetadataType.SOP_CLASS_UID)
        tags = index.main_tags_of(ids)
    references = []
    for internal_id in ids:
        sop_instance_uid = tags.get(internal_id, {}).get(int(SOP_INSTANCE_UID))
        if internal_id not in classes or sop_instance_uid is None:
            raise IsengardError(ErrorCode.INTERNAL_ERROR, "Cannot read the SOP Class/Instance UID of an instance")
        references.append((classes[internal_id], sop_instance_uid))
    return references


def _dicom_instance(entry: Any) -> Reference:
    """An instance given as ["class UID", "instance UID"] or {"SOPClassUID": ..., "SOPInstanceUID": ...}."""
    if isinstance(entry, list):
        if len(entry) != 2 or not all(isinstance(uid, str) for uid in entry):
            raise bad_format("An instance entry must provide an array with 2 strings: SOP Class UID and SOP Instance "
                             "UID")
        return entry[0], entry[1]
    if isinstance(entry, dict):
        uids = entry.get("SOPClassUID"), entry.get("SOPInstanceUID")
        if not all(isinstance(uid, str) for uid in uids):
            raise bad_format('An instance entry must provide an object with 2 string fields: "SOPClassUID" and '
                             '"SOPInstanceUID"')
        return uids  # type: ignore[return-value]
    raise bad_format(f"JSON array or object is expected to specify one instance to be queried, found: {_styled(entry)}")


def _dicom_instances(entries: Any) -> list[Reference]:
    if not isinstance(entries, list):
        raise bad_format(f'The "{DICOM_INSTANCES}" field must provide an array of DICOM instances')
    return [_dicom_instance(entry) for entry in entries]


def _requested_instances(isengard: Isengard, body: Mapping[str, Any]) -> list[Reference]:
    if RESOURCES not in body and DICOM_INSTANCES not in body:
        raise bad_format(f'Empty storage commitment request, one of these fields is mandatory: "{RESOURCES}" or '
                         f'"{DICOM_INSTANCES}"')
    references = _stored_instances(isengard, body[RESOURCES]) if RESOURCES in body else []
    return references + (_dicom_instances(body[DICOM_INSTANCES]) if DICOM_INSTANCES in body else [])


async def post_storage_commitment(request: Request) -> Response:
    modality = requested_modality(request)
    body = await json_object_body(request, "Must provide a JSON object with a list of resources")
    isengard = server(request)
    instances = await in_thread(_requested_instances, isengard, body)
    timeout = parse_timeout(body["Timeout"]) if "Timeout" in body else 0
    transaction_uid = await in_thread(request_commitment, isengard, modality, instances, timeout)
    return json({"ID": transaction_uid, "Path": f"/storage-commitment/{transaction_uid}"})


def _report(request: Request) -> tuple[str, CommitmentReport]:
    transaction_uid = request.path_params["id"]
    report = server(request).commitment_reports.get(transaction_uid)
    if report is None:
        raise IsengardError(ErrorCode.INEXISTENT_ITEM, f"No storage commitment transaction with UID: {transaction_uid}")
    return transaction_uid, report


def get_storage_commitment(request: Request) -> Response:
    return json(_report(request)[1].to_json())


def _remove_committed(isengard: Isengard, report: CommitmentReport) -> None:
    for _sop_class_uid, sop_instance_uid in report.successes:
        with isengard.index.read() as index:
            instances = instances_with_uid(index, isengard.storage, sop_instance_uid)
        for instance in instances:
            isengard.delete(instance)


async def remove_after_commitment(request: Request) -> Response:
    """Delete the instances that the modality committed to store: only after a full success."""
    transaction_uid, report = _report(request)
    if report.status != "Success":
        raise IsengardError(
            ErrorCode.BAD_SEQUENCE_OF_CALLS,
            f"Cannot remove DICOM instances with a pending or failed storage commitment transaction: {transaction_uid}",
        )
    await in_thread(_remove_committed, server(request), report)
    return empty_json()


def routes() -> list[Route]:
    return [
        Route("/modalities/{id}/storage-commitment", post_storage_commitment, methods=["POST"]),
        Route("/storage-commitment/{id}", get_storage_commitment, methods=["GET"]),
        Route("/storage-commitment/{id}/remove", remove_after_commitment, methods=["POST"]),
    ]
