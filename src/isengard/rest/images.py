"""Images of instances: /instances/{id}/frames, and each frame as a preview, a rendering, its
stored values (image-uint8, -uint16, -int16) or its raw bytes; /instances/{id}/preview... is frame 0.
With returnUnsupportedImage, a frame that cannot be decoded redirects to a placeholder, as in Orthanc.
Series: their slices in order (/series/{id}/ordered-slices) and as one array (/series/{id}/numpy)."""

import gzip
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route, get_route_path

from ..dicom.levels import Level
from ..errors import ErrorCode, IsengardError, bad_request
from ..images.formats import negotiate
from ..images.png import unsupported_image
from ..images.slices import IMAGE_ORIENTATION, OrderedSlices, order_slices
from ..index import Resource
from ..server import Isengard
from ..storage import ContentType
from ..storage.area import FileInfo
from .responses import json, query_flag, query_int, server

IMAGE_KINDS = ("preview", "rendered", "image-uint8", "image-uint16", "image-int16")
UNSUPPORTED_IMAGE = "/app/images/unsupported.png"  # where Orthanc's placeholder is


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
    try:
        body = isengard.images.image(file, kind, _frame(request), media_type, quality, rendering)
    except IsengardError as error:
        if error.code is ErrorCode.UNSUPPORTED_MEDIA_TYPE and query_flag(request, "returnUnsupportedImage"):
            return _to_unsupported_image(request)
        raise
    return Response(body, media_type=media_type)


def _to_unsupported_image(request: Request) -> RedirectResponse:
    """Orthanc's redirection, relative to the route (so that it holds behind a proxy's prefix)."""
    parents = "../" * (get_route_path(request.scope).count("/") - 1)
    return RedirectResponse(parents + UNSUPPORTED_IMAGE.lstrip("/"), status_code=301)


def unsupported_image_placeholder(_request: Request) -> Response:
    return Response(unsupported_image(), media_type="image/png")


def raw_frame(request: Request) -> Response:
    isengard = server(request)
    media_type, data = isengard.images.raw_frame(isengard.dicom_file_info(request.path_params["id"]), _frame(request))
    if request.url.path.endswith(".gz"):
        return Response(gzip.compress(data, 6), media_type="application/gzip")
    return Response(data, media_type=media_type)


def numpy_array(request: Request) -> Response:
    isengard = server(request)
    file = isengard.dicom_file_info(request.path_params["id"])
    body = isengard.images.numpy(file, request.path_params.get("frame"), _rescale(request), query_flag(request, "compress"))
    return Response(body, media_type="application/octet-stream")


def ordered_slices(request: Request) -> Response:
    slices = _ordered_slices(server(request), request.path_params["id"])
    instances = [(resource.public_id, frames) for resource, frames in slices.instances]
    return json({
        "Type": "Volume" if slices.volume else "Sequence",
        "Slices": [f"/instances/{public_id}/frames/{frame}" for public_id, frames in instances for frame in range(frames)],
        "SlicesShort": [[public_id, 0, frames] for public_id, frames in instances],
        "Dicom": [f"/instances/{public_id}/file" for public_id, _ in instances],
    })


def series_numpy(request: Request) -> Response:
    isengard = server(request)
    slices = _ordered_slices(isengard, request.path_params["id"])
    files = _dicom_files(isengard, [resource for resource, _ in slices.instances])
    frames = [(file, count) for file, (_, count) in zip(files, slices.instances)]
    body = isengard.images.series_numpy(frames, _rescale(request), query_flag(request, "compress"))
    return Response(body, media_type="application/octet-stream")


def matlab(request: Request) -> Response:
    isengard = server(request)
    body = isengard.images.matlab(isengard.dicom_file_info(request.path_params["id"]), _frame(request))
    return Response(body, media_type="text/plain")


def _ordered_slices(isengard: Isengard, series_id: str) -> OrderedSlices[Resource]:
    with isengard.index.read() as index:
        series = index.get(series_id, Level.SERIES)
        instances = index.children(series)
        tags = index.main_tags_of([series.internal_id, *(instance.internal_id for instance in instances)])
    orientation = tags[series.internal_id].get(IMAGE_ORIENTATION)
    return order_slices(orientation, [(instance, tags[instance.internal_id]) for instance in instances])


def _dicom_files(isengard: Isengard, instances: list[Resource]) -> list[FileInfo]:
    with isengard.index.read() as index:
        attachments = index.attachments_of([instance.internal_id for instance in instances], ContentType.DICOM)
    missing = [instance.public_id for instance in instances if instance.internal_id not in attachments]
    if missing:
        raise IsengardError(ErrorCode.INEXISTENT_FILE, f"No DICOM file for instance {missing[0]}")
    return [attachments[instance.internal_id].info for instance in instances]


def _rescale(request: Request) -> bool:
    """/numpy rescales unless told not to."""
    return request.query_params.get("rescale", "true").lower() not in ("false", "0")


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
        Route("/series/{id}/ordered-slices", ordered_slices, methods=["GET"]),
        Route("/series/{id}/numpy", series_numpy, methods=["GET"]),
        Route(UNSUPPORTED_IMAGE, unsupported_image_placeholder, methods=["GET"]),
    ]
