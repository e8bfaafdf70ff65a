"""`/tools/find` (resources by DICOM tags, labels and metadata) and `/tools/lookup` (by DICOM identifier).

The body of `/tools/find` is Orthanc's: Level, Query, Expand, Limit, Since, CaseSensitive (false by
default, for every VR, as Orthanc 1.10.1 does), Short/Full, RequestedTags; and, from later versions
of Orthanc's manual, Labels/LabelsConstraint, MetadataQuery, OrderBy and ParentPatient/Study/Series.
"""

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..config import Configuration
from ..dicom.levels import Level
from ..dicom.tags import parse_tag
from ..errors import ErrorCode, IsengardError, bad_request
from ..index.find import Constraint, FindQuery, LabelsConstraint, OrderKey, find, lookup_identifier
from ..index.find import parse_constraint
from ..server import Isengard
from .metadata import metadata_names, valid_label
from .responses import json, parse_json_body, server
from .serialize import TagFormat, expand
from .threads import in_thread

ORDER_TYPES = {"DicomTag": False, "Metadata": True}
ORDER_DIRECTIONS = {"ASC": False, "DESC": True}
PARENT_FIELDS = {"ParentPatient": Level.PATIENT, "ParentStudy": Level.STUDY, "ParentSeries": Level.SERIES}


@dataclass
class FindRequest:
    query: FindQuery
    expand: bool = False
    tag_format: TagFormat = TagFormat()
    requested_tags: list[int] = field(default_factory=list)


def parse_find_request(body: bytes, config: Configuration) -> FindRequest:
    request = _json_object(body)
    if not isinstance(request.get("Level"), str):
        raise bad_request('Field "Level" is missing, or should be a string')
    if not isinstance(request.get("Query"), dict):
        raise bad_request('Field "Query" is missing, or should be a JSON object')
    try:
        level = Level.parse(request["Level"])
    except ValueError as exc:
        raise IsengardError(ErrorCode.PARAMETER_OUT_OF_RANGE, str(exc)) from None
    case_sensitive = _boolean(request, "CaseSensitive")
    query = FindQuery(
        level=level,
        constraints=_constraints(request["Query"], case_sensitive),
        metadata=_metadata_constraints(request, config, case_sensitive),
        labels=_labels(request),
        labels_constraint=_labels_constraint(request),
        parent=_parent(request),
        order_by=_order_by(request, config),
        since=_count(request, "Since"),
        limit=_count(request, "Limit"),
    )
    return FindRequest(
        query=query,
        expand=_boolean(request, "Expand"),
        tag_format=TagFormat(full=_boolean(request, "Full"), short=_boolean(request, "Short")),
        requested_tags=_tags(request.get("RequestedTags", []), "RequestedTags"),
    )


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        request = parse_json_body(body)
    except IsengardError:
        request = None
    if not isinstance(request, dict):
        raise bad_request("The body must contain a JSON object")
    return request


def _boolean(request: dict, name: str) -> bool:
    value = request.get(name, False)
    if not isinstance(value, (bool, int, float)):
        raise bad_request(f'Field "{name}" should be a Boolean')
    return bool(value)


def _count(request: dict, name: str) -> int:
    value = request.get(name, 0)
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad_request(f'Field "{name}" should be an integer')
    if value < 0:
        raise IsengardError(ErrorCode.PARAMETER_OUT_OF_RANGE, f'Field "{name}" should be a positive integer')
    return value


def _tag(name: str) -> int:
    try:
        return int(parse_tag(name))
    except ValueError:
        raise IsengardError(ErrorCode.UNKNOWN_DICOM_TAG, f"Unknown DICOM tag: {name}", http_status=400) from None


def _tags(names: Any, field_name: str) -> list[int]:
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise bad_request(f'Field "{field_name}" should be a list of DICOM tags')
    return [_tag(name) for name in names]


def _constraints(query: dict, case_sensitive: bool) -> list[Constraint]:
    constraints = []
    for name, value in query.items():
        if not isinstance(value, str):
            raise bad_request(f'Tag "{name}" should be associated with a string')
        if value:  # the empty value matches everything: not even its tag is checked, as in Orthanc
            constraint = parse_constraint(_tag(name), value, case_sensitive)
            if constraint is not None:
                constraints.append(constraint)
    return constraints


def _metadata_type(name: str, config: Configuration) -> int:
    try:
        return metadata_names(config).number(name)
    except IsengardError as exc:  # in a body, an unknown name is a bad parameter rather than a missing item
        raise IsengardError(ErrorCode.PARAMETER_OUT_OF_RANGE, exc.details) from None


def _metadata_constraints(request: dict, config: Configuration, case_sensitive: bool) -> list[Constraint]:
    query = request.get("MetadataQuery", {})
    if not isinstance(query, dict) or not all(isinstance(v, str) for v in query.values()):
        raise bad_request('Field "MetadataQuery" should be a JSON object of strings')
    # Metadata have no VR: their values are matched as text (exact, list or wildcards).
    parsed = [parse_constraint(_metadata_type(name, config), value, case_sensitive, vr="LO") for name, value in query.items()]
    return [c for c in parsed if c is not None]


def _labels(request: dict) -> list[str]:
    labels = request.get("Labels", [])
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise bad_request('Field "Labels" should be a list of strings')
    return [valid_label(label) for label in labels]


def _labels_constraint(request: dict) -> LabelsConstraint:
    try:
        return LabelsConstraint(request.get("LabelsConstraint", "All"))
    except ValueError:
        raise bad_request('Field "LabelsConstraint" must be "All", "Any", or "None"') from None


def _parent(request: dict) -> tuple[Level, str] | None:
    given = [(level, request[name]) for name, level in PARENT_FIELDS.items() if name in request]
    if len(given) > 1:
        raise bad_request("Only one of " + ", ".join(PARENT_FIELDS) + " may be given")
    if given and not isinstance(given[0][1], str):
        raise bad_request(f'Field "Parent{given[0][0].title}" should be a string')
    return given[0] if given else None


def _order_by(request: dict, config: Configuration) -> list[OrderKey]:
    keys = request.get("OrderBy", [])
    if not isinstance(keys, list):
        raise bad_request('Field "OrderBy" should be a list')
    order = []
    for key in keys:
        if (
            not isinstance(key, dict)
            or key.get("Type") not in ORDER_TYPES
            or not isinstance(key.get("Key"), str)
            or key.get("Direction", "ASC") not in ORDER_DIRECTIONS
        ):
            raise bad_request(
                'Each item of "OrderBy" should be {"Type": "DicomTag" or "Metadata", "Key": name, '
                '"Direction": "ASC" or "DESC"}'
            )
        is_metadata = ORDER_TYPES[key["Type"]]
        number = _metadata_type(key["Key"], config) if is_metadata else _tag(key["Key"])
        order.append(OrderKey(number, is_metadata, ORDER_DIRECTIONS[key.get("Direction", "ASC")]))
    return order


def run_find(isengard: Isengard, body: bytes) -> list:
    request = parse_find_request(body, isengard.config)
    config = isengard.config
    query = request.query
    cap = config.limit_find_instances if query.level == Level.INSTANCE else config.limit_find_results
    with isengard.index.read() as index:
        found = find(index, isengard.storage_for_find(answers=False), query, cap)
        if not request.expand:
            return [resource.public_id for resource in found]
        return expand(isengard, index, found, request.tag_format, request.requested_tags,
                      isengard.storage_for_find(answers=True))


async def post_find(request: Request) -> Response:
    body = await request.body()
    return json(await in_thread(run_find, server(request), body))


def run_lookup(isengard: Isengard, identifier: str) -> list[dict]:
    if not identifier:
        return []
    with isengard.index.read() as index:
        found = lookup_identifier(index, identifier)
    return [{"ID": r.public_id, "Path": f"/{r.level.route}/{r.public_id}", "Type": r.level.title} for r in found]


async def post_lookup(request: Request) -> Response:
    identifier = (await request.body()).decode("utf-8", errors="replace").strip()
    return json(await in_thread(run_lookup, server(request), identifier))


def routes() -> list[Route]:
    return [
        Route("/tools/find", post_find, methods=["POST"]),
        Route("/tools/lookup", post_lookup, methods=["POST"]),
    ]
