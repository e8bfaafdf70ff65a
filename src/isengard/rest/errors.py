"""Errors answered with Orthanc's JSON error body."""

import logging
from http import HTTPStatus

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..errors import ErrorCode, IsengardError
from .responses import JSONResponse

log = logging.getLogger(__name__)


def error_body(request: Request, code: ErrorCode, http_status: int, details: str = "") -> dict:
    body = {
        "HttpError": HTTPStatus(http_status).phrase,
        "HttpStatus": http_status,
        "Message": code.message,
        "Method": request.method,
        "OrthancError": code.message,
        "OrthancStatus": code.status,
        "Uri": request.url.path,
    }
    if details and details != code.message:
        body["Details"] = details
    return body


async def isengard_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, IsengardError)
    log.info("%s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(error_body(request, exc.code, exc.http_status, exc.details), status_code=exc.http_status)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:  # as Orthanc: no body, the allowed methods in a header
        return Response(status_code=405, headers=exc.headers)
    if exc.status_code == 404:
        return JSONResponse(error_body(request, ErrorCode.UNKNOWN_RESOURCE, 404), status_code=404)
    return JSONResponse(error_body(request, ErrorCode.BAD_REQUEST, exc.status_code, str(exc.detail)), exc.status_code)


async def internal_error(request: Request, exc: Exception) -> Response:
    log.exception("Internal error on %s %s", request.method, request.url.path)
    body = error_body(request, ErrorCode.INTERNAL_ERROR, 500, f"{type(exc).__name__}: {exc}")
    return JSONResponse(body, status_code=500)


HANDLERS = {IsengardError: isengard_error, HTTPException: http_error, Exception: internal_error}
