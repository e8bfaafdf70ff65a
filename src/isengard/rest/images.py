"""Images of instances: /instances/{id}/frames, and each frame as a preview, a rendering, its
stored values (image-uint8, -uint16, -int16) or its raw bytes; /instances/{id}/preview... is frame 0."""

import gzip
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import ErrorCode, IsengardError, bad_request
from ..images.formats import negotiate
from .responses import json, query_flag, query_int, server

IMAGE_KINDS = ("preview", "rendered", "image-uint8", "image-uint16", "image-int16")


def frames(request: Request) -> Response:
    isengard = server(request)
    count = isengard.images.frame_count(isengard.dicom_file_info(request.path_params["id"]))
    return json(list(range(count)))


def image(request: Request, kind: str) -> Response:
    media_type = negotiate(request.headers.get("accept", ""))
    quality = query_int(request, "quality", 90)
    if not 1 <= quality <= 100:
        raise bad_request("The JPEG quality must be between 1 and 100")
    isengard = server(request)
    file = isengard.dicom_file_info(request.path_params["id"])
    rendering = _rendering(request) if kind == "rendered" else None
    body = isengard.images.image(file, kind, _frame(request), media_type, quality, rendering)
    return Response(body, media_type=media_type)


def raw_frame(request: Request) -> Response:
    isengard = server(request)
    media_type, data = isengard.images.raw_frame(isengard.dicom_file_info(request.path_params["id"]), _frame(request))
    if request.url.path.endswith(".gz"):
        return Response(gzip.compress(data, 6), media_type="application/gzip")
    return Response(data, media_type=media_type)


def numpy_array(request: Request) -> Response:
    isengard = server(request)
    file = isengard.dicom_file_info(request.path_params["id"])
    rescale = request.query_params.get("rescale", "true").lower() not in ("false", "0")
    body = isengard.images.numpy(file, request.path_params.get("frame"), rescale, query_flag(request, "compress"))
    return Response(body, media_type="application/octet-stream")


def matlab(request: Request) -> Response:
    isengard = server(request)
    body = isengard.images.matlab(isengard.dicom_file_info(request.path_params["id"]), _frame(request))
    return Response(body, media_type="text/plain")


def _frame(request: Request) -> int:
    return request.path_params.get("frame", 0)


def _rendering(request: Request) -> dict:
    """The options of /rendered, as the fields of images.render.Rendering."""
    return {
        "window_center": _query_float(request, "window-center"),
        "window_width": _query_float(request, "window-width"),
        "width": query_int(request, "width"),
        "height": query_int(request, "height"),
        "smooth": query_flag(request, "smooth"),
    }


def _query_float(request: Request, name: str) -> float | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        raise IsengardError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"Argument '{name}' must be a number") from None


def _image_of(kind: str) -> Callable[[Request], Response]:
    def endpoint(request: Request) -> Response:
        return image(request, kind)

    return endpoint


def routes() -> list[Route]:
    frame_prefixes = ("/instances/{id}", "/instances/{id}/frames/{frame:int}")  # the first: frame 0, or all
    images = [Route(f"{prefix}/{kind}", _image_of(kind), methods=["GET"]) for kind in IMAGE_KINDS for prefix in frame_prefixes]
    return [
        Route("/instances/{id}/frames", frames, methods=["GET"]),
        Route("/instances/{id}/frames/{frame:int}/raw", raw_frame, methods=["GET"]),
        Route("/instances/{id}/frames/{frame:int}/raw.gz", raw_frame, methods=["GET"]),
        *images,
        *(Route(f"{prefix}/numpy", numpy_array, methods=["GET"]) for prefix in frame_prefixes),
        *(Route(f"{prefix}/matlab", matlab, methods=["GET"]) for prefix in frame_prefixes),
    ]
