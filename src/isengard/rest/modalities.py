"""/modalities (the remote DICOM nodes, C-ECHO toward them) and the /tools routes of the DICOM server."""

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import ErrorCode, IsengardError
from ..network.modalities import Modality, bad_format, parse_modality, parse_timeout
from ..network.scu import ScuSettings, echo
from .responses import boolean_text, json, server, text
from .threads import in_thread

# What GET /modalities/{id} lists, as Orthanc 1.10.1 answers (whether or not Isengard serves them yet).
MODALITY_OPERATIONS = [
    "configuration", "echo", "find", "find-instance", "find-patient", "find-series", "find-study",
    "find-worklist", "move", "query", "storage-commitment", "store", "store-straight",
]


def requested_modality(request: Request) -> Modality:
    name = request.path_params["id"]
    modality = server(request).modalities.get(name)
    if modality is None:
        raise IsengardError(ErrorCode.INEXISTENT_ITEM, f"No modality with symbolic name: {name}")
    return modality


async def _json_body(request: Request) -> Any:
    """The body as JSON; Orthanc answers "Bad file format" to anything else."""
    try:
        return orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise bad_format("Cannot parse the JSON body") from None


async def json_object_body(request: Request, details: str) -> dict[str, Any]:
    """The body of a route toward a modality that takes a JSON object: anything else, JSON or not,
    is answered "Bad file format" with `details`, as Orthanc does."""
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise bad_format(details)
    return body


def list_modalities(request: Request) -> Response:
    modalities = server(request).modalities
    if "expand" in request.query_params:  # as Orthanc 1.10.1: present means expanded, whatever its value
        return json({name: modality.to_json() for name, modality in modalities.items()})
    return json(modalities.names())


def modality_operations(request: Request) -> Response:
    if server(request).modalities.get(request.path_params["id"]) is None:
        return Response(status_code=404)  # Orthanc answers this one without a body
    return json(MODALITY_OPERATIONS)


async def put_modality(request: Request) -> Response:
    modality = parse_modality(await _json_body(request))
    server(request).modalities.put(request.path_params["id"], modality)
    return Response(media_type="text/plain")


def delete_modality(request: Request) -> Response:
    name = request.path_params["id"]
    if not server(request).modalities.delete(name):
        raise IsengardError(ErrorCode.INEXISTENT_ITEM, f"Unknown DICOM modality with symbolic name: {name}")
    return Response(media_type="text/plain")


def modality_configuration(request: Request) -> Response:
    return json(requested_modality(request).to_json())


async def echo_modality(request: Request) -> Response:
    modality = requested_modality(request)
    body = await _json_body(request) if (await request.body()).strip() else {}
    return await _echo(request, modality, body if isinstance(body, dict) else {})


async def dicom_echo(request: Request) -> Response:
    """C-ECHO toward a modality described in the body rather than registered."""
    body = await _json_body(request)
    modality = parse_modality(body)
    return await _echo(request, modality, body if isinstance(body, dict) else {})


async def _echo(request: Request, modality: Modality, options: dict[str, Any]) -> Response:
    isengard = server(request)
    timeout = parse_timeout(options["Timeout"]) if "Timeout" in options else 0
    check_find = options.get("CheckFind")
    if not isinstance(check_find, bool):
        check_find = isengard.config.dicom_echo_checks_find
    await in_thread(echo, modality, ScuSettings.from_config(isengard.config), timeout, check_find)
    return json({})


# --- /tools routes of the DICOM server ------------------------------------------------------------


def get_accepted_transfer_syntaxes(request: Request) -> Response:
    return json(server(request).dicom_server.syntaxes.transfer_syntaxes)


async def put_accepted_transfer_syntaxes(request: Request) -> Response:
    """A JSON list of UIDs or one UID (JSON string or plain text), with wildcards `*` and `?`."""
    patterns = _transfer_syntax_patterns((await request.body()).decode("utf-8", "replace"))
    return json(server(request).dicom_server.syntaxes.set_transfer_syntaxes(patterns))


def _transfer_syntax_patterns(body: str) -> list[str]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        if body.lstrip()[:1].isdigit():  # Orthanc reads 1.2.840... as a JSON number, not a UID
            raise bad_format() from None
        return [body.strip()]
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise bad_format()


def get_unknown_sop_class_accepted(request: Request) -> Response:
    return text("1" if server(request).dicom_server.syntaxes.unknown_sop_class_accepted else "0")


async def put_unknown_sop_class_accepted(request: Request) -> Response:
    accepted = boolean_text(await request.body())
    if accepted is None:
        raise bad_format("Boolean value expected")
    server(request).dicom_server.syntaxes.unknown_sop_class_accepted = accepted
    return Response(media_type="text/plain")


def routes() -> list[Route]:
    return [
        Route("/modalities", list_modalities, methods=["GET"]),
        Route("/modalities/{id}", modality_operations, methods=["GET"]),
        Route("/modalities/{id}", put_modality, methods=["PUT"]),
        Route("/modalities/{id}", delete_modality, methods=["DELETE"]),
        Route("/modalities/{id}/configuration", modality_configuration, methods=["GET"]),
        Route("/modalities/{id}/echo", echo_modality, methods=["POST"]),
        Route("/tools/dicom-echo", dicom_echo, methods=["POST"]),
        Route("/tools/accepted-transfer-syntaxes", get_accepted_transfer_syntaxes, methods=["GET"]),
        Route("/tools/accepted-transfer-syntaxes", put_accepted_transfer_syntaxes, methods=["PUT"]),
        Route("/tools/unknown-sop-class-accepted", get_unknown_sop_class_accepted, methods=["GET"]),
        Route("/tools/unknown-sop-class-accepted", put_unknown_sop_class_accepted, methods=["PUT"]),
    ]
