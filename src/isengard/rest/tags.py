"""DICOM tags read from the stored files: /tags, /header, /content, shared-tags, module, instances-tags,
and the document of an Encapsulated PDF (/pdf)."""

import io

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..dicom.dicom_json import DEFAULT_MAX_LENGTH, dataset_to_json, meta_header_to_json
from ..dicom.levels import Level
from ..dicom.tags import OWN_MAIN_DICOM_TAGS, SPECIFIC_CHARACTER_SET, parse_tag
from ..errors import ErrorCode, IsengardError
from ..server import Isengard
from .responses import json, query_flag, server

TEXT_PADDING = b" \x00"
ENCAPSULATED_PDF_STORAGE = "1.2.840.10008.5.1.4.1.1.104.1"


def _mode(request: Request, default: str = "full") -> str:
    if query_flag(request, "simplify"):
        return "simplify"
    if query_flag(request, "short"):
        return "short"
    return default


def _max_length(request: Request) -> int:
    return 0 if "ignore-length" in request.query_params else DEFAULT_MAX_LENGTH


def read_dataset(isengard: Isengard, instance_id: str) -> Dataset:
    """The dataset of a stored instance, up to its pixel data (which no JSON answer shows)."""
    data = isengard.read_dicom_header(instance_id)
    try:
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    except Exception as exc:  # a file that was valid at ingest: the storage area is damaged
        raise IsengardError(ErrorCode.CORRUPTED_FILE, f"Cannot read the stored file of {instance_id}: {exc}") from None


def _json(isengard: Isengard, dataset: Dataset, mode: str, max_length: int = DEFAULT_MAX_LENGTH) -> dict:
    try:
        return dataset_to_json(dataset, mode, max_length, isengard.private_dictionary)
    except ValueError as exc:
        raise IsengardError(ErrorCode.BAD_FILE_FORMAT, str(exc)) from None


def instance_tags(request: Request) -> Response:
    isengard = server(request)
    dataset = read_dataset(isengard, request.path_params["id"])
    return json(_json(isengard, dataset, _mode(request), _max_length(request)))


def simplified_tags(request: Request) -> Response:
    isengard = server(request)
    dataset = read_dataset(isengard, request.path_params["id"])
    return json(_json(isengard, dataset, "simplify", _max_length(request)))


def header(request: Request) -> Response:
    dataset = read_dataset(server(request), request.path_params["id"])
    return json(meta_header_to_json(dataset.file_meta, _mode(request), _max_length(request)))


def content(request: Request) -> Response:
    """`/instances/{id}/content/{path}`: tags and item indexes alternate in the path down to a value."""
    dataset: Dataset | list = read_dataset(server(request), request.path_params["id"])
    steps = [s for s in request.path_params.get("path", "").split("/") if s]
    for step in steps:
        dataset = _step(dataset, step)
    if isinstance(dataset, Dataset):
        return json([f"{t.group:04x}-{t.element:04x}" for t in dataset.keys()])
    if isinstance(dataset, list):
        return json([str(i) for i in range(len(dataset))])
    return Response(dataset, media_type="application/octet-stream")


def pdf(request: Request) -> Response:
    dataset = read_dataset(server(request), request.path_params["id"])
    mime_type = str(dataset.get("MIMETypeOfEncapsulatedDocument", "")).strip()
    if dataset.get("SOPClassUID") != ENCAPSULATED_PDF_STORAGE or mime_type != "application/pdf" or "EncapsulatedDocument" not in dataset:
        raise IsengardError(ErrorCode.UNKNOWN_RESOURCE, "The instance is not an Encapsulated PDF")
    document = dataset.EncapsulatedDocument or b""
    # A PDF ends with %%EOF and a newline: another last byte is the padding to an even length (as Orthanc reads it).
    if document[-1:] not in (b"\r", b"\n"):
        document = document[:-1]
    return Response(document, media_type="application/pdf")


def _step(node: Dataset | list | bytes, step: str):  # type: ignore[no-untyped-def]
    """One step down: a tag in a dataset, an item index in a sequence."""
    if isinstance(node, list) and step.isdigit() and int(step) < len(node):
        return node[int(step)]
    if isinstance(node, Dataset):
        try:
            tag = parse_tag(step.replace("-", ","))
        except ValueError:
            raise IsengardError(ErrorCode.UNKNOWN_RESOURCE, f"Not a DICOM tag: {step}") from None
        if tag in node:
            return _raw_value(node, tag)
    raise IsengardError(ErrorCode.UNKNOWN_RESOURCE, f"No {step} in this DICOM content")


def _raw_value(dataset: Dataset, tag) -> Dataset | list | bytes:  # type: ignore[no-untyped-def]
    raw = dataset.get_item(tag)
    if isinstance(raw, RawDataElement) and raw.VR != "SQ" and raw.value is not None and raw.length != 0xFFFFFFFF:
        return raw.value.rstrip(TEXT_PADDING) if raw.VR not in ("OB", "OW", "UN") else raw.value
    element = dataset[tag]
    if element.VR == "SQ":
        return list(element.value)
    value = element.value
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def _instances_of(isengard: Isengard, request: Request) -> list[str]:
    level = Level.parse(request.url.path.split("/")[1])
    with isengard.index.read() as index:
        resource = index.get(request.path_params["id"], level)
        return [r.public_id for r in index.descendants(resource, Level.INSTANCE)]


def instances_tags(request: Request) -> Response:
    isengard = server(request)
    instance_ids = _instances_of(isengard, request)
    mode = _mode(request)
    return json({i: _json(isengard, read_dataset(isengard, i), mode) for i in instance_ids})


def shared_tags(request: Request) -> Response:
    """The tags whose value is the same in every instance of the resource."""
    isengard = server(request)
    instance_ids = _instances_of(isengard, request)
    mode = _mode(request)
    shared: dict | None = None
    for instance_id in instance_ids:
        tags = _json(isengard, read_dataset(isengard, instance_id), mode)
        shared = tags if shared is None else {k: v for k, v in shared.items() if tags.get(k) == v}
    return json(shared or {})


def _module(level: Level):  # type: ignore[no-untyped-def]
    """`/{resource}/{id}/module` (its level's main tags) or `/module-patient`, read from one of its files."""
    module_tags = {int(t) for t in OWN_MAIN_DICOM_TAGS[level]}

    def endpoint(request: Request) -> Response:
        isengard = server(request)
        instance_ids = _instances_of(isengard, request)
        dataset = read_dataset(isengard, instance_ids[0])
        module = Dataset()
        module._read_charset = dataset._read_charset
        for tag in dataset.keys():
            if tag in module_tags:
                module.add(dataset.get_item(tag))  # type: ignore[arg-type]
        if SPECIFIC_CHARACTER_SET in dataset:  # needed to decode the module's text
            module.add(dataset.get_item(SPECIFIC_CHARACTER_SET))  # type: ignore[arg-type]
        answer = _json(isengard, module, _mode(request), _max_length(request))
        return json({k: v for k, v in answer.items() if k not in ("0008,0005", "SpecificCharacterSet")})

    return endpoint


def routes() -> list[Route]:
    found = [
        Route("/instances/{id}/tags", instance_tags, methods=["GET"]),
        Route("/instances/{id}/simplified-tags", simplified_tags, methods=["GET"]),
        Route("/instances/{id}/header", header, methods=["GET"]),
        Route("/instances/{id}/content", content, methods=["GET"]),
        Route("/instances/{id}/content/{path:path}", content, methods=["GET"]),
        Route("/instances/{id}/pdf", pdf, methods=["GET"]),
    ]
    for level in Level:
        base = f"/{level.route}/{{id}}"
        found += [
            Route(f"{base}/module", _module(level), methods=["GET"]),
            Route(f"{base}/instances-tags", instances_tags, methods=["GET"]) if level != Level.INSTANCE else None,
            Route(f"{base}/shared-tags", shared_tags, methods=["GET"]) if level != Level.INSTANCE else None,
        ]
    found.append(Route("/studies/{id}/module-patient", _module(Level.PATIENT), methods=["GET"]))
    return [route for route in found if route is not None]
