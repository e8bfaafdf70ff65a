"""Small /tools routes: UIDs, clocks, encoding, logging, metrics, conformance, reset and shutdown."""

import logging
from datetime import datetime, timezone

from pydicom.uid import generate_uid
from pydicom.uid import UID
from pynetdicom.presentation import AllStoragePresentationContexts
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..dicom.charsets import ENCODINGS
from ..dicom.levels import Level
from ..errors import ErrorCode, IsengardError
from .responses import boolean_text, empty_json, server, text
from .system import totals

VERBOSITY = {"default": logging.WARNING, "verbose": logging.INFO, "trace": logging.DEBUG}


def generate_uid_route(request: Request) -> Response:
    level = request.query_params.get("level")
    try:
        Level.parse(level or "")
    except ValueError:
        raise IsengardError(ErrorCode.PARAMETER_OUT_OF_RANGE, "Argument 'level' must be patient, study, series or instance") from None
    return text(generate_uid())


def now(_request: Request) -> Response:
    return text(datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S"))


def now_local(_request: Request) -> Response:
    return text(datetime.now().strftime("%Y%m%dT%H%M%S"))


def get_default_encoding(request: Request) -> Response:
    return text(server(request).ingest.default_encoding)


async def put_default_encoding(request: Request) -> Response:
    encoding = (await request.body()).decode("utf-8", "replace").strip()
    if encoding not in ENCODINGS:
        raise IsengardError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"Unknown encoding: {encoding}")
    server(request).ingest.default_encoding = encoding
    return text(encoding)


def get_log_level(_request: Request) -> Response:
    level = logging.getLogger().getEffectiveLevel()
    return text(next((name for name, value in VERBOSITY.items() if value <= level), "trace"))


async def put_log_level(request: Request) -> Response:
    name = (await request.body()).decode("utf-8", "replace").strip()
    if name not in VERBOSITY:
        raise IsengardError(ErrorCode.PARAMETER_OUT_OF_RANGE, f'Verbosity can be "default", "verbose" or "trace": {name}')
    logging.getLogger().setLevel(VERBOSITY[name])
    return text(name)


def get_metrics_enabled(request: Request) -> Response:
    return text("1" if server(request).metrics_enabled else "0")


async def put_metrics_enabled(request: Request) -> Response:
    enabled = boolean_text(await request.body())
    if enabled is None:
        raise IsengardError(ErrorCode.PARAMETER_OUT_OF_RANGE, "Metrics can be enabled with 1/true or disabled with 0/false")
    server(request).metrics_enabled = enabled
    return empty_json()


def metrics_prometheus(request: Request) -> Response:
    """The counters of Orthanc's Prometheus endpoint that Isengard keeps (others come with their issues)."""
    isengard = server(request)
    if not isengard.metrics_enabled:
        return text("")
    counts, disk, uncompressed = totals(isengard)
    stamp = int(datetime.now(timezone.utc).timestamp() * 1000)
    metrics = {
        "orthanc_count_instances": counts[Level.INSTANCE],
        "orthanc_count_patients": counts[Level.PATIENT],
        "orthanc_count_series": counts[Level.SERIES],
        "orthanc_count_studies": counts[Level.STUDY],
        "orthanc_disk_size_mb": disk / (1024 * 1024),
        "orthanc_uncompressed_size_mb": uncompressed / (1024 * 1024),
    }
    return text("".join(f"{name} {value} {stamp}\n" for name, value in metrics.items()), "text/plain; version=0.0.4")


def dicom_conformance(_request: Request) -> Response:
    lines = ["DICOM Conformance Statement of Isengard", "", "SOP classes accepted as a C-STORE SCP:", ""]
    storage = sorted(UID(context.abstract_syntax) for context in AllStoragePresentationContexts)
    lines += [f"  {uid.keyword:<60} | {uid}" for uid in storage]
    return text("\n".join(lines) + "\n")


def reset(request: Request) -> Response:
    server(request).lifecycle.restart()
    return empty_json()


def shutdown(request: Request) -> Response:
    server(request).lifecycle.shutdown()
    return empty_json()


def routes() -> list[Route]:
    return [
        Route("/tools/generate-uid", generate_uid_route, methods=["GET"]),
        Route("/tools/now", now, methods=["GET"]),
        Route("/tools/now-local", now_local, methods=["GET"]),
        Route("/tools/default-encoding", get_default_encoding, methods=["GET"]),
        Route("/tools/default-encoding", put_default_encoding, methods=["PUT"]),
        Route("/tools/log-level", get_log_level, methods=["GET"]),
        Route("/tools/log-level", put_log_level, methods=["PUT"]),
        Route("/tools/metrics", get_metrics_enabled, methods=["GET"]),
        Route("/tools/metrics", put_metrics_enabled, methods=["PUT"]),
        Route("/tools/metrics-prometheus", metrics_prometheus, methods=["GET"]),
        Route("/tools/dicom-conformance", dicom_conformance, methods=["GET"]),
        Route("/tools/reset", reset, methods=["POST"]),
        Route("/tools/shutdown", shutdown, methods=["POST"]),
    ]
