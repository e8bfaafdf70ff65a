"""/instances/{id}/modify and /anonymize: the instance's file modified or anonymized (and
transcoded, if asked), answered without being stored."""

import io
from typing import Any

import pydicom
from pydicom.uid import generate_uid
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..dicom.anonymization import Anonymization, Replacements
from ..dicom.modification import Modification, body_replacements, body_tags
from ..dicom.levels import Level
from ..dicom.tags import IDENTIFIER_TAG, MAIN_DICOM_TAGS, PATIENT_ID, STUDY_INSTANCE_UID
from ..errors import ErrorCode, IsengardError, bad_request
from ..jobs.modification import MergeStudyJob, ResourceModificationJob, SplitStudyJob
from ..server import Isengard
from .jobs import answer_job, job_mode
from .responses import parse_json_body, server
from .threads import in_thread


async def modify_instance(request: Request) -> Response:
    modification = Modification.from_json(parse_json_body(await request.body()) or {})
    data = await in_thread(modified_file, server(request), request.path_params["id"], modification)
    return Response(data, media_type="application/dicom")


async def anonymize_instance(request: Request) -> Response:
    anonymization = Anonymization.from_json(parse_json_body(await request.body()) or {})
    data = await in_thread(anonymized_file, server(request), request.path_params["id"], anonymization)
    return Response(data, media_type="application/dicom")


def modified_file(isengard: Isengard, instance_id: str, modification: Modification) -> bytes:
    dataset = _dataset(isengard, instance_id)
    modification.apply(dataset)
    return _file(isengard, dataset, modification.transcode)


def anonymized_file(isengard: Isengard, instance_id: str, anonymization: Anonymization) -> bytes:
    dataset = _dataset(isengard, instance_id)
    anonymization.apply(dataset, Replacements(isengard.anonymized_patient_name))
    return _file(isengard, dataset, anonymization.transcode)


def _dataset(isengard: Isengard, instance_id: str) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(isengard.read_dicom(instance_id)), force=True)


def _file(isengard: Isengard, dataset: pydicom.Dataset, transcode: str | None) -> bytes:
    dataset.ensure_file_meta()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.get("SOPInstanceUID", "")
    output = io.BytesIO()
    try:
        dataset.save_as(output, enforce_file_format=True)
    except (ValueError, TypeError) as exc:  # a replaced value pydicom cannot write with its VR
        raise IsengardError(ErrorCode.BAD_PARAMETER_TYPE, f"Cannot write the modified instance: {exc}") from None
    data = output.getvalue()
    return isengard.images.transcode(data, transcode) if transcode else data


async def change_resource(request: Request) -> Response:
    """/{patients|studies|series}/{id}/modify and /anonymize: new resources stored, by a job."""
    level = Level.parse(request.url.path.split("/")[1])
    body = parse_json_body(await request.body()) or {}
    change = _change(request, body)
    if level == Level.PATIENT and isinstance(change, Modification) and PATIENT_ID not in change.replace:
        raise bad_request("Modifying a patient needs a new PatientID in Replace")
    await in_thread(_check_exist, server(request), [request.path_params["id"]], level)
    job = ResourceModificationJob(server(request), [request.path_params["id"]], level, change, _keep_source(body))
    return await answer_job(request, job, job_mode(body))


async def bulk_change(request: Request) -> Response:
    """/tools/bulk-modify and /tools/bulk-anonymize: the instances of several resources, changed as
    those of resources of "Level" (by default, that of the highest identifier replaced, else Instance)."""
    body = parse_json_body(await request.body())
    resources = body.get("Resources") if isinstance(body, dict) else None
    if not isinstance(resources, list) or not all(isinstance(public_id, str) for public_id in resources):
        raise bad_request('Expected "Resources": a list of Orthanc identifiers')
    change = _change(request, body)
    level = _bulk_level(body, change)
    await in_thread(_check_exist, server(request), resources, None)
    job = ResourceModificationJob(server(request), resources, level, change, _keep_source(body), bulk=True)
    return await answer_job(request, job, job_mode(body))


async def split_study(request: Request) -> Response:
    """/studies/{id}/split: its "Series" and "Instances" moved to a new study, whose tags "Replace"
    and "Remove" change."""
    body = parse_json_body(await request.body())
    if not isinstance(body, dict):
        raise bad_request("The body of a split must be a JSON object")
    moved = [*_identifiers(body, "Series"), *_identifiers(body, "Instances")]
    if not moved:
        raise bad_request('Give the "Series" or "Instances" to split from the study')
    isengard, study = server(request), request.path_params["id"]
    await in_thread(_check_children, isengard, study, moved)
    change = Modification({**body_replacements(body), STUDY_INSTANCE_UID: generate_uid()}, body_tags(body, "Remove"))
    job = SplitStudyJob(isengard, moved, change, "", _keep_source(body, default=False))
    return await answer_job(request, job, job_mode(body))


async def merge_study(request: Request) -> Response:
    """/studies/{id}/merge: the "Resources" (studies, series, instances) moved into the study."""
    body = parse_json_body(await request.body())
    if not isinstance(body, dict):
        raise bad_request("The body of a merge must be a JSON object")
    isengard, study = server(request), request.path_params["id"]
    resources = _identifiers(body, "Resources")
    tags = await in_thread(_study_tags, isengard, study, resources)
    change = Modification({tag: value for tag, value in tags.items()})
    job = MergeStudyJob(isengard, resources, change, study, _keep_source(body, default=False))
    return await answer_job(request, job, job_mode(body))


def _identifiers(body: dict, field: str) -> list[str]:
    values = body.get(field, [])
    if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
        raise bad_request(f'"{field}" must be a list of Orthanc identifiers')
    return values


def _check_children(isengard: Isengard, study: str, moved: list[str]) -> None:
    with isengard.index.read() as index:
        parent = index.get(study, Level.STUDY)
        for public_id in moved:
            if index.ancestor(index.get(public_id), Level.STUDY).internal_id != parent.internal_id:
                raise bad_request(f"{public_id} is not in study {study}")


def _study_tags(isengard: Isengard, study: str, resources: list[str]) -> dict:
    """The patient and study tags of the study, which the merged instances take."""
    with isengard.index.read() as index:
        target = index.get(study, Level.STUDY)
        for public_id in resources:
            index.get(public_id)
        tags = index.main_tags(target.internal_id)
    return {tag: tags[tag] for tag in MAIN_DICOM_TAGS[Level.STUDY] if tag in tags}


def _change(request: Request, body: Any) -> Modification | Anonymization:
    return Anonymization.from_json(body) if request.url.path.endswith("anonymize") else Modification.from_json(body)


def _bulk_level(body: dict, change: Modification | Anonymization) -> Level:
    if "Level" in body:
        try:
            return Level.parse(str(body["Level"]))
        except ValueError as exc:
            raise bad_request(str(exc)) from None
    replaced = [level for level in Level if IDENTIFIER_TAG[level] in change.replace]
    return min(replaced, default=Level.INSTANCE)


def _keep_source(body: Any, default: bool = True) -> bool:
    keep_source = body.get("KeepSource", default) if isinstance(body, dict) else default
    if not isinstance(keep_source, bool):
        raise bad_request('"KeepSource" must be true or false')
    return keep_source


def _check_exist(isengard: Isengard, public_ids: list[str], level: Level | None) -> None:
    with isengard.index.read() as index:
        for public_id in public_ids:
            index.get(public_id, level)


def routes() -> list[Route]:
    resources = [f"/{level.route}/{{id}}/{action}" for level in (Level.PATIENT, Level.STUDY, Level.SERIES)
                 for action in ("modify", "anonymize")]
    return [
        Route("/instances/{id}/modify", modify_instance, methods=["POST"]),
        Route("/instances/{id}/anonymize", anonymize_instance, methods=["POST"]),
        *(Route(path, change_resource, methods=["POST"]) for path in resources),
        Route("/tools/bulk-modify", bulk_change, methods=["POST"]),
        Route("/tools/bulk-anonymize", bulk_change, methods=["POST"]),
        Route("/studies/{id}/split", split_study, methods=["POST"]),
        Route("/studies/{id}/merge", merge_study, methods=["POST"]),
    ]
