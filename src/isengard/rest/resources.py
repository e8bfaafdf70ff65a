"""The hierarchy: listing, reading, navigating and deleting patients, studies, series and instances."""

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..dicom.levels import Level
from ..dicom.tags import parse_tag
from ..errors import ErrorCode, IsengardError, bad_request
from ..index import IndexTransaction, Resource
from ..storage import ContentType
from ..server import Isengard
from .responses import empty_json, json, parse_json_body, query_flag, query_int, server
from .metadata import metadata_names
from .serialize import TagFormat, expand
from .threads import in_thread


def _level(request: Request) -> Level:
    return Level.parse(request.url.path.split("/")[1])


def _get(request: Request) -> tuple[Level, str]:
    return _level(request), request.path_params["id"]


def requested_tags(request: Request) -> list[int]:
    """`?requestedTags=PatientName;0008,0060` (or `requested-tags`): tags added to expanded answers."""
    names = request.query_params.get("requestedTags") or request.query_params.get("requested-tags") or ""
    try:
        return [int(parse_tag(name)) for name in names.split(";") if name.strip()]
    except ValueError as exc:
        raise IsengardError(ErrorCode.UNKNOWN_DICOM_TAG, str(exc), http_status=400) from None


def _expand(request: Request, index: IndexTransaction, found: list[Resource]) -> list[dict]:
    fmt = TagFormat(full=query_flag(request, "full"), short=query_flag(request, "short"))
    isengard = server(request)
    return expand(isengard, index, found, fmt, requested_tags(request), isengard.storage)


def list_resources(request: Request) -> Response:
    level = _level(request)
    since = query_int(request, "since")
    limit = query_int(request, "limit")
    with server(request).index.read() as index:
        found = index.list_resources(level, since, limit)
        if query_flag(request, "expand"):
            return json(_expand(request, index, found))
    return json([r.public_id for r in found])


def get_resource(request: Request) -> Response:
    level, public_id = _get(request)
    with server(request).index.read() as index:
        return json(_expand(request, index, [index.get(public_id, level)])[0])


def delete_resource(request: Request) -> Response:
    level, public_id = _get(request)
    isengard = server(request)
    with isengard.index.read() as index:
        resource = index.get(public_id, level)
    deleted = isengard.delete(resource)
    remaining = deleted.remaining_ancestor
    answer = None
    if remaining is not None:
        answer = {"ID": remaining.public_id, "Path": f"/{remaining.level.route}/{remaining.public_id}", "Type": remaining.level.title}
    return json({"RemainingAncestor": answer})


async def bulk_delete(request: Request) -> Response:
    """/tools/bulk-delete: every resource of "Resources" (those already gone, or unknown, are skipped)."""
    body = parse_json_body(await request.body())
    resources = body.get("Resources") if isinstance(body, dict) else None
    if not isinstance(resources, list) or not all(isinstance(public_id, str) for public_id in resources):
        raise bad_request('Expected "Resources": a list of Orthanc identifiers')
    await in_thread(_delete_all, server(request), resources)
    return empty_json()


async def bulk_content(request: Request) -> Response:
    """/tools/bulk-content: the JSON of every known resource of "Resources" (or of their
    descendants or ancestors at "Level"), with their metadata unless "Metadata" is false."""
    body = parse_json_body(await request.body())
    resources = body.get("Resources") if isinstance(body, dict) else None
    if not isinstance(resources, list) or not all(isinstance(public_id, str) for public_id in resources):
        raise bad_request('Expected "Resources": a list of Orthanc identifiers')
    try:
        level = Level.parse(body["Level"]) if "Level" in body else None
    except (ValueError, AttributeError):
        raise bad_request(f'Unknown "Level": {body["Level"]}') from None
    fmt = TagFormat(full=bool(body.get("Full")), short=bool(body.get("Short")))
    return json(await in_thread(_contents, server(request), resources, level, fmt, body.get("Metadata", True) is not False))


def _contents(isengard: Isengard, public_ids: list[str], level: Level | None, fmt: TagFormat, metadata: bool) -> list[dict]:
    names = metadata_names(isengard.config)
    with isengard.index.read() as index:
        found = [resource for resource in map(index.lookup, public_ids) if resource is not None]
        if level is not None:
            found = [related for resource in found for related in _at_level(index, resource, level)]
        found = list({resource.internal_id: resource for resource in found}.values())
        answers = []
        for of_level in Level:  # the expansion takes resources of one level at a time
            same = [resource for resource in found if resource.level == of_level]
            for resource, answer in zip(same, expand(isengard, index, same, fmt)):
                if metadata:
                    values = index.metadata(resource.internal_id)
                    answer["Metadata"] = {names.name(t): values[t][0] for t in sorted(values)}
                answers.append(answer)
    return answers


def _at_level(index: IndexTransaction, resource: Resource, level: Level) -> list[Resource]:
    if level >= resource.level:
        return index.descendants(resource, level)
    return [index.ancestor(resource, level)]


def reconstruct(request: Request) -> Response:
    level, public_id = _get(request)
    isengard = server(request)
    with isengard.index.read() as index:
        resource = index.get(public_id, level)
    isengard.reconstruct(resource)
    return empty_json()


def reconstruct_all(request: Request) -> Response:
    """/tools/reconstruct: every patient."""
    isengard = server(request)
    with isengard.index.read() as index:
        patients = index.list_resources(Level.PATIENT)
    for patient in patients:
        isengard.reconstruct(patient)
    return empty_json()


def invalidate_tags(_request: Request) -> Response:
    """/tools/invalidate-tags: Isengard keeps no DICOM-as-JSON copy of the files, which it reads again
    for every /tags: there is nothing to invalidate."""
    return empty_json()


def _delete_all(isengard: Isengard, public_ids: list[str]) -> None:
    for public_id in public_ids:
        with isengard.index.read() as index:
            resource = index.lookup(public_id)
        if resource is not None:
            isengard.delete(resource)


def _navigate(target: Level):  # type: ignore[no-untyped-def]
    """`/{level}/{id}/{target}`: the ancestor (an object) or the descendants (a list) at `target`."""

    def endpoint(request: Request) -> Response:
        level, public_id = _get(request)
        with server(request).index.read() as index:
            resource = index.get(public_id, level)
            if target < level:
                return json(_expand(request, index, [index.ancestor(resource, target)])[0])
            descendants = index.descendants(resource, target)
            if request.query_params.get("expand", "true").lower() == "false":
                return json([r.public_id for r in descendants])
            return json(_expand(request, index, descendants))

    return endpoint


def statistics(request: Request) -> Response:
    level, public_id = _get(request)
    with server(request).index.read() as index:
        resource = index.get(public_id, level)
        counts = {}
        instances: list[Resource] = [resource]
        for child_level in Level:
            if child_level > level:
                found = index.descendants(resource, child_level)
                counts[child_level] = len(found)
                instances = found
        ids = [r.internal_id for r in instances]
        disk, uncompressed = index.sizes(ids)
        dicom_disk, dicom_uncompressed = index.sizes(ids, ContentType.DICOM)
    answer = {
        "DiskSize": str(disk),
        "DiskSizeMB": disk // (1024 * 1024),
        "UncompressedSize": str(uncompressed),
        "UncompressedSizeMB": uncompressed // (1024 * 1024),
        "DicomDiskSize": str(dicom_disk),
        "DicomDiskSizeMB": dicom_disk // (1024 * 1024),
        "DicomUncompressedSize": str(dicom_uncompressed),
        "DicomUncompressedSizeMB": dicom_uncompressed // (1024 * 1024),
    }
    names = {Level.STUDY: "CountStudies", Level.SERIES: "CountSeries", Level.INSTANCE: "CountInstances"}
    answer.update({names[lvl]: n for lvl, n in counts.items()})
    return json(answer)


def routes() -> list[Route]:
    found = []
    for level in Level:
        base = f"/{level.route}"
        found += [
            Route(base, list_resources, methods=["GET"]),
            Route(base + "/{id}", get_resource, methods=["GET"]),
            Route(base + "/{id}", delete_resource, methods=["DELETE"]),
            Route(base + "/{id}/statistics", statistics, methods=["GET"]),
            Route(base + "/{id}/reconstruct", reconstruct, methods=["POST"]),
        ]
        for target in Level:
            if target == level or (target > level and level == Level.INSTANCE):
                continue
            name = "patient" if target == Level.PATIENT else target.route if target > level else target.title.lower()
            found.append(Route(f"{base}/{{id}}/{name}", _navigate(target), methods=["GET"]))
    return [*found, Route("/tools/bulk-delete", bulk_delete, methods=["POST"]),
            Route("/tools/bulk-content", bulk_content, methods=["POST"]),
            Route("/tools/reconstruct", reconstruct_all, methods=["POST"]),
            Route("/tools/invalidate-tags", invalidate_tags, methods=["POST"])]
