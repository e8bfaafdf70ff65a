"""Responses and request helpers shared by the route modules."""

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ..errors import ErrorCode, IsengardError
from ..server import Isengard


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)


def json(content: Any, status_code: int = 200) -> JSONResponse:
    return JSONResponse(content, status_code=status_code)


def text(content: str, media_type: str = "text/plain") -> Response:
    return Response(content, media_type=media_type)


def empty_json() -> JSONResponse:
    """What Orthanc answers to a successful POST/PUT/DELETE that has nothing to say."""
    return JSONResponse({})


def server(request: Request) -> Isengard:
    return request.app.state.isengard


def parse_json_body(body: bytes) -> Any:
    try:
        return orjson.loads(body) if body.strip() else None
    except orjson.JSONDecodeError as exc:
        raise IsengardError(ErrorCode.BAD_JSON, f"The body is not valid JSON: {exc}") from None


BOOLEAN_TEXTS = {"0": False, "false": False, "1": True, "true": True}


def boolean_text(body: bytes) -> bool | None:
    """A body of 0/1/true/false (any case, blanks around), as Orthanc's boolean settings take it;
    None for anything else."""
    return BOOLEAN_TEXTS.get(body.decode("utf-8", "replace").strip().lower())


def query_int(request: Request, name: str, default: int = 0) -> int:
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise IsengardError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"Argument '{name}' must be an integer") from None
    if number < 0:
        raise IsengardError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"Argument '{name}' must be positive")
    return number


def query_flag(request: Request, name: str) -> bool:
    """Orthanc's boolean arguments: present (with no value or 'true') means true."""
    value = request.query_params.get(name)
    return value is not None and value.lower() not in ("false", "0")
