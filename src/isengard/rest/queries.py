"""Query/retrieve toward remote modalities (Isengard as SCU), with the routes, answers and errors of
Orthanc 1.10.1: /modalities/{id}/query and /queries (queries kept in memory, their answers, queries of
the children of an answer, retrieval), the deprecated /modalities/{id}/find*, and /modalities/{id}/move.

/modalities/{id}/get, and "RetrieveMethod": "C-GET" when retrieving answers, follow Orthanc 1.12.6
(C-GET, the instances coming back on the same association and going through the ingest pipeline).

Retrieving the answers of a query is a job ("DicomMoveScu", or "DicomGetScu" for a C-GET: see
jobs.dicom), run as the body asks: synchronously by default (the answer is the job's content), or
not ("Asynchronous", with its "Priority"); "Permissive" skips the commands that fail. As in Orthanc
1.10.1, /modalities/{id}/move runs synchronously, without a job, whatever the body asks;
/modalities/{id}/get runs so too, unless asked to be asynchronous (a "DicomGetScu" job then).

Deliberate differences from Orthanc 1.10.1, whose answers to these are internal errors (500): a JSON
body that is not an object where an object is expected, and values that are arrays or objects in the
body of the find routes, are answered "Bad file format" (400).
"""

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..dicom.levels import Level
from ..dicom.tags import PATIENT_ID, SERIES_INSTANCE_UID, STUDY_INSTANCE_UID, parse_tag
from ..errors import ErrorCode, IsengardError
from ..jobs import RetrieveJob
from ..jobs.dicom import ingest_receiver
from ..network.modalities import Modality, bad_format, parse_timeout
from ..network.queries import (
    ACCESSION_NUMBER,
    LEVEL_NAMES,
    QUERY_RETRIEVE_LEVEL,
    Query,
    RetrieveMethod,
    Retrieval,
    TagMap,
    child_query,
    control_connection,
    legacy_query,
    parse_level,
    retrieve,
    retrieved_resource,
    tags_json,
)
from ..network.scu import ScuSettings
from ..server import Isengard
from .jobs import JobMode, answer_job, job_mode
from .responses import json, server, text
from .threads import in_thread

NOT_AN_OBJECT = "Must provide a JSON object"
MOVE_FIELDS = "Must provide a JSON body containing fields Resources and Level"
QUERY_TAGS = "Associative array of DICOM tags to strings expected in field: Query"
QUERY_OPERATIONS = ["answers", "level", "modality", "query", "retrieve"]
# What GET /queries/{id}/answers/{index} lists at each level ("query-study": sic, Orthanc 1.10.1).
ANSWER_OPERATIONS = {
    Level.PATIENT: ["content", "retrieve", "query-study", "query-series", "query-instances"],
    Level.STUDY: ["content", "retrieve", "query-series", "query-instances"],
    Level.SERIES: ["content", "retrieve", "query-instances"],
    Level.INSTANCE: ["content", "retrieve"],
}
# The identifiers that a legacy find must give (more than 2 bytes each), at least one of each group.
LEGACY_REQUIREMENTS = {
    Level.PATIENT: (),
    Level.STUDY: ((ACCESSION_NUMBER, PATIENT_ID),),
    Level.SERIES: ((ACCESSION_NUMBER, PATIENT_ID), (STUDY_INSTANCE_UID,)),
    Level.INSTANCE: ((ACCESSION_NUMBER, PATIENT_ID), (STUDY_INSTANCE_UID,), (SERIES_INSTANCE_UID,)),
}


# --- Reading requests ---------------------------------------------------------------------------------------------


def requested_modality(isengard: Isengard, name: str) -> Modality:
    modality = isengard.modalities.get(name)
    if modality is None:
        raise IsengardError(ErrorCode.INEXISTENT_ITEM, f"No modality with symbolic name: {name}")
    return modality


def _settings(isengard: Isengard, local_aet: str) -> ScuSettings:
    return replace(ScuSettings.from_config(isengard.config), local_aet=local_aet)


def _object(body: bytes, details: str) -> dict[str, Any]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise bad_format(details) from None
    if not isinstance(value, dict):
        raise bad_format(details)
    return value


def _check_type(body: Mapping[str, Any], key: str, kind: type, described: str) -> None:
    if key in body and not isinstance(body[key], kind):
        raise bad_format(f"The field {key} must contain {described}")


def _string(body: Mapping[str, Any], key: str, default: str) -> str:
    value = body.get(key, default)
    if not isinstance(value, str):
        raise IsengardError(ErrorCode.BAD_PARAMETER_TYPE)
    return value


def _boolean(body: Mapping[str, Any], key: str) -> bool:
    if not isinstance(body[key], bool):
        raise bad_format(f"Boolean value expected in field: {key}")
    return body[key]


def _timeout(body: Mapping[str, Any]) -> int:
    return parse_timeout(body["Timeout"]) if "Timeout" in body else 0


def _query_tags(value: Any) -> TagMap:
    """The "Query" of a request: tags (names or "gggg,eeee") to strings."""
    if not isinstance(value, dict) or not all(isinstance(text, str) for text in value.values()):
        raise bad_format(QUERY_TAGS)
    try:
        return {int(parse_tag(key)): text for key, text in value.items()}
    except ValueError:
        raise bad_format(QUERY_TAGS) from None


def _tag(key: str) -> int:
    try:
        return int(parse_tag(key))
    except ValueError:
        raise IsengardError(ErrorCode.UNKNOWN_DICOM_TAG, f"Unknown DICOM tag: {key}", http_status=500) from None


def _legacy_text(value: Any) -> str:
    """A value of the find routes, as Orthanc reads it (JSON numbers and Booleans as their text)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise bad_format("The values of a query must be strings")


def _legacy_fields(body: bytes) -> TagMap | None:
    """The tags of the body of a find route; None when the body is no JSON object."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict):
        return None
    return {_tag(key): _legacy_text(item) for key, item in value.items()}


def _is_specific(level: Level, query: Mapping[int, str]) -> bool:
    """Whether a legacy find names its resources well enough: Orthanc answers nothing otherwise."""
    return all(any(len(query.get(tag, "").encode()) > 2 for tag in group) for group in LEGACY_REQUIREMENTS[level])


def _index(request: Request) -> int:
    text = request.path_params["index"]
    if not text.isdigit():
        raise IsengardError(ErrorCode.BAD_PARAMETER_TYPE, "Syntax error in some user-supplied data")
    return int(text)


def _format(request: Request, default: str) -> str:
    """The tag format asked by ?simplify or ?short (their presence: their values do not matter)."""
    if "simplify" in request.query_params:
        return "simplify"
    return "short" if "short" in request.query_params else default


def _body_format(body: Mapping[str, Any], default: str) -> str:
    """The tag format asked by "Simplify", "Full" or "Short" in a body."""
    for key, mode in (("Simplify", "simplify"), ("Full", "full"), ("Short", "short")):
        if key in body and _boolean(body, key):
            return mode
    return default


def _resource(item: Any, level: Level) -> TagMap:
    """A resource of /move or /get: its identifiers, as tags to strings."""
    if not isinstance(item, dict) or not all(isinstance(value, str) for value in item.values()):
        raise bad_format()
    resource = {_tag(key): value for key, value in item.items()}
    resource[QUERY_RETRIEVE_LEVEL] = LEVEL_NAMES[level]
    return resource


# --- The deprecated find routes ---------------------------------------------------------------------------------


def _find_route(level: Level) -> Callable[[Request], Awaitable[Response]]:
    async def find_level(request: Request) -> Response:
        """C-FIND of one level, answered at once (no query kept)."""
        fields = _legacy_fields(await request.body())
        query = None if fields is None else legacy_query(level, fields)
        if query is None or not _is_specific(level, query):
            return Response(status_code=400)  # Orthanc answers these without a body
        isengard = server(request)
        modality = requested_modality(isengard, request.path_params["id"])
        answers = await in_thread(_find, isengard, modality, level, query)
        return json([tags_json(answer, "simplify") for answer in answers])

    return find_level


def _find(isengard: Isengard, modality: Modality, level: Level, query: TagMap) -> list[TagMap]:
    config = isengard.config
    with control_connection(modality, _settings(isengard, config.dicom_aet), config.default_encoding) as connection:
        return connection.find(level, query)


async def find_hierarchy(request: Request) -> Response:
    """The patients that match, each with its matching studies, each with its matching series."""
    fields = _legacy_fields(await request.body())
    if fields is None:
        return Response(status_code=400)
    isengard = server(request)
    modality = requested_modality(isengard, request.path_params["id"])
    return json(await in_thread(_hierarchy, isengard, modality, fields))


def _hierarchy(isengard: Isengard, modality: Modality, fields: TagMap) -> list[dict]:
    config = isengard.config
    with control_connection(modality, _settings(isengard, config.dicom_aet), config.default_encoding) as connection:
        patients = []
        for patient in connection.find(Level.PATIENT, legacy_query(Level.PATIENT, fields)):
            studies = []
            study_query = legacy_query(Level.STUDY, fields, _copied(patient, PATIENT_ID))
            for study in connection.find(Level.STUDY, study_query):
                series_query = legacy_query(Level.SERIES, fields, _copied(study, PATIENT_ID, STUDY_INSTANCE_UID))
                series = connection.find(Level.SERIES, series_query)
                studies.append(_with_children(study, "Series", [tags_json(item, "simplify") for item in series]))
            patients.append(_with_children(patient, "Studies", studies))
        return patients


def _copied(answer: Mapping[int, str], *tags: int) -> TagMap:
    return {tag: answer[tag] for tag in tags if tag in answer}


def _with_children(answer: TagMap, key: str, children: list[dict]) -> dict:
    return dict(sorted({**tags_json(answer, "simplify"), key: children}.items()))  # Orthanc sorts every key


# --- Queries kept in memory ---------------------------------------------------------------------------------------


async def query_modality(request: Request) -> Response:
    body = _object(await request.body(), NOT_AN_OBJECT)
    if not isinstance(body.get("Level"), str):
        raise bad_format("The JSON body must contain field Level")
    _check_type(body, "Normalize", bool, "a Boolean")
    _check_type(body, "Query", dict, "a JSON object")
    _check_type(body, "LocalAet", str, "a string")
    isengard = server(request)
    name = request.path_params["id"]
    modality = requested_modality(isengard, name)
    level = parse_level(body["Level"])
    query = Query(
        name, modality, level, _query_tags(body.get("Query", {})), body.get("LocalAet", isengard.config.dicom_aet),
        normalize=body.get("Normalize", True), timeout=_timeout(body),
    )
    return await _run_and_keep(isengard, query)


async def _run_and_keep(isengard: Isengard, query: Query) -> Response:
    await in_thread(query.run, ScuSettings.from_config(isengard.config), isengard.config.default_encoding)
    query_id = isengard.queries.add(query)
    return json({"ID": query_id, "Path": f"/queries/{query_id}"})


def _query(request: Request) -> Query:
    return server(request).queries.get(request.path_params["id"])


def list_queries(request: Request) -> Response:
    return json(server(request).queries.ids())


def query_operations(request: Request) -> Response:
    _query(request)
    return json(QUERY_OPERATIONS)


def delete_query(request: Request) -> Response:
    server(request).queries.delete(request.path_params["id"])  # an unknown query too, as Orthanc
    return Response(media_type="text/plain")


def list_answers(request: Request) -> Response:
    query = _query(request)
    if "expand" in request.query_params:  # present means expanded, whatever its value
        mode = _format(request, "full")
        return json([tags_json(answer, mode) for answer in query.answers])
    return json([str(index) for index in range(len(query.answers))])


def answer_operations(request: Request) -> Response:
    index = _index(request)
    query = _query(request)
    query.answer(index)
    return json(ANSWER_OPERATIONS[query.level])


def answer_content(request: Request) -> Response:
    index = _index(request)
    return json(tags_json(_query(request).answer(index), _format(request, "full")))


def query_level(request: Request) -> Response:
    return text(_query(request).level.title)


def query_modality_name(request: Request) -> Response:
    return text(_query(request).modality_name)


def query_arguments(request: Request) -> Response:
    return json(tags_json(_query(request).query, _format(request, "full")))


def _children_route(level: Level) -> Callable[[Request], Awaitable[Response]]:
    async def query_children(request: Request) -> Response:
        """A new query, of the children of an answer at `level`: the answer's keys, and the body's "Query"."""
        parent = _query(request)
        answer = parent.answer(_index(request))
        if parent.level >= level:
            raise IsengardError(ErrorCode.UNKNOWN_RESOURCE)
        body = _object(await request.body(), NOT_AN_OBJECT)
        fields = _query_tags(body["Query"]) if "Query" in body else {}
        isengard = server(request)
        query = Query(
            parent.modality_name, requested_modality(isengard, parent.modality_name), level,
            child_query(parent.level, answer, fields), isengard.config.dicom_aet,
            normalize=parent.normalize, timeout=_timeout(body),
        )
        return await _run_and_keep(isengard, query)

    return query_children


# --- Retrieval ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrieveOptions:
    """The body of /queries/{id}/retrieve and /answers/{index}/retrieve: a target AET as text, or an object."""

    target_aet: str
    timeout: int | None  # None: the query's
    mode: str  # of the tags in the answer
    method: RetrieveMethod
    job: JobMode
    permissive: bool = False

    @classmethod
    def parse(cls, body: bytes, default_aet: str) -> "RetrieveOptions":
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            target_aet = body.decode("utf-8", "replace").strip() or default_aet
            return cls(target_aet, None, "short", RetrieveMethod.MOVE, job_mode(None))
        if not isinstance(value, dict):
            raise bad_format(NOT_AN_OBJECT)
        timeout = value.get("Timeout", -1)
        if not isinstance(timeout, int) or isinstance(timeout, bool):
            raise IsengardError(ErrorCode.BAD_PARAMETER_TYPE)
        method = _string(value, "RetrieveMethod", RetrieveMethod.MOVE.value)
        if method not in {m.value for m in RetrieveMethod}:
            raise IsengardError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"Unknown retrieve method: {method}")
        return cls(_string(value, "TargetAet", default_aet), timeout if timeout >= 0 else None,
                   _body_format(value, "short"), RetrieveMethod(method), job_mode(value),
                   "Permissive" in value and _boolean(value, "Permissive"))


def _retrieve_route(one_answer: bool) -> Callable[[Request], Awaitable[Response]]:
    async def retrieve_answers(request: Request) -> Response:
        """C-MOVE (or C-GET) the answers of a query, or one of them, in a job."""
        index = _index(request) if one_answer else None
        isengard = server(request)
        options = RetrieveOptions.parse(await request.body(), isengard.config.dicom_aet)
        query = _query(request)
        answers = [query.answer(index)] if index is not None else query.answers
        retrieval = Retrieval(
            query.modality, _settings(isengard, query.local_aet), tuple(retrieved_resource(a) for a in answers),
            options.method, options.target_aet, query.timeout if options.timeout is None else options.timeout,
            isengard.config.default_encoding,
        )
        job = RetrieveJob.of(isengard, retrieval, options.mode, options.permissive)
        return await answer_job(request, job, options.job)

    return retrieve_answers


def _modality_retrieve_route(method: RetrieveMethod) -> Callable[[Request], Awaitable[Response]]:
    async def retrieve_resources(request: Request) -> Response:
        """C-MOVE (or C-GET) resources given by their identifiers at a level."""
        body = _object(await request.body(), MOVE_FIELDS)
        if not isinstance(body.get("Resources"), list) or not isinstance(body.get("Level"), str):
            raise bad_format(MOVE_FIELDS)
        level = parse_level(body["Level"])
        isengard = server(request)
        local_aet = _string(body, "LocalAet", isengard.config.dicom_aet)
        target_aet = _string(body, "TargetAet", isengard.config.dicom_aet)
        modality = requested_modality(isengard, request.path_params["id"])
        timeout = _timeout(body)
        resources = tuple(_resource(item, level) for item in body["Resources"])
        retrieval = Retrieval(modality, _settings(isengard, local_aet), resources, method, target_aet, timeout,
                              isengard.config.default_encoding)
        if method is RetrieveMethod.GET:  # a job if asked asynchronous; a C-MOVE never is, as in Orthanc 1.10.1
            mode = job_mode(body)
            if not mode.synchronous:
                return await answer_job(request, RetrieveJob.of(isengard, retrieval, "short"), mode)
        receiver = ingest_receiver(isengard) if method is RetrieveMethod.GET else None
        await in_thread(retrieve, retrieval, receiver)
        return json({})

    return retrieve_resources


def routes() -> list[Route]:
    return [
        Route("/modalities/{id}/find-patient", _find_route(Level.PATIENT), methods=["POST"]),
        Route("/modalities/{id}/find-study", _find_route(Level.STUDY), methods=["POST"]),
        Route("/modalities/{id}/find-series", _find_route(Level.SERIES), methods=["POST"]),
        Route("/modalities/{id}/find-instance", _find_route(Level.INSTANCE), methods=["POST"]),
        Route("/modalities/{id}/find", find_hierarchy, methods=["POST"]),
        Route("/modalities/{id}/query", query_modality, methods=["POST"]),
        Route("/modalities/{id}/move", _modality_retrieve_route(RetrieveMethod.MOVE), methods=["POST"]),
        Route("/modalities/{id}/get", _modality_retrieve_route(RetrieveMethod.GET), methods=["POST"]),
        Route("/queries", list_queries, methods=["GET"]),
        Route("/queries/{id}", query_operations, methods=["GET"]),
        Route("/queries/{id}", delete_query, methods=["DELETE"]),
        Route("/queries/{id}/answers", list_answers, methods=["GET"]),
        Route("/queries/{id}/answers/{index}", answer_operations, methods=["GET"]),
        Route("/queries/{id}/answers/{index}/content", answer_content, methods=["GET"]),
        Route("/queries/{id}/answers/{index}/query-studies", _children_route(Level.STUDY), methods=["POST"]),
        Route("/queries/{id}/answers/{index}/query-series", _children_route(Level.SERIES), methods=["POST"]),
        Route("/queries/{id}/answers/{index}/query-instances", _children_route(Level.INSTANCE), methods=["POST"]),
        Route("/queries/{id}/answers/{index}/retrieve", _retrieve_route(one_answer=True), methods=["POST"]),
        Route("/queries/{id}/retrieve", _retrieve_route(one_answer=False), methods=["POST"]),
        Route("/queries/{id}/level", query_level, methods=["GET"]),
        Route("/queries/{id}/modality", query_modality_name, methods=["GET"]),
        Route("/queries/{id}/query", query_arguments, methods=["GET"]),
    ]
