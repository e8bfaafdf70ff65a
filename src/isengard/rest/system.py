"""Server-wide routes: /system, /statistics, /changes, /exports."""

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import ORTHANC_API_VERSION, ORTHANC_VERSION, __version__
from ..dicom.levels import Level
from ..server import Isengard
from .responses import empty_json, json, query_int, server

DATABASE_VERSION = 6  # the Orthanc database schema version whose content the index holds


def system(request: Request) -> Response:
    isengard = server(request)
    config = isengard.config
    return json(
        {
            "ApiVersion": ORTHANC_API_VERSION,
            "Version": ORTHANC_VERSION,
            "IsengardVersion": __version__,
            "Name": config.name,
            "DicomAet": config.dicom_aet,
            "DicomPort": config.dicom_port,
            "HttpPort": config.http_port,
            "CheckRevisions": config.check_revisions,
            "DatabaseVersion": DATABASE_VERSION,
            "DatabaseBackendPlugin": None,
            "StorageAreaPlugin": None,
            "PluginsEnabled": False,
            "IsHttpServerSecure": False,
            "HasLabels": True,
            "StorageCompression": config.storage_compression,
            "OverwriteInstances": config.overwrite_instances,
            "MainDicomTags": {},
        }
    )


def totals(isengard: Isengard) -> tuple[dict[Level, int], int, int]:
    """Resources per level, and the disk and uncompressed sizes of all attachments."""
    with isengard.index.read() as index:
        return {level: index.count(level) for level in Level}, *index.sizes()


def statistics(request: Request) -> Response:
    counts, disk, uncompressed = totals(server(request))
    return json(
        {
            "CountPatients": counts[Level.PATIENT],
            "CountStudies": counts[Level.STUDY],
            "CountSeries": counts[Level.SERIES],
            "CountInstances": counts[Level.INSTANCE],
            "TotalDiskSize": str(disk),
            "TotalDiskSizeMB": disk // (1024 * 1024),
            "TotalUncompressedSize": str(uncompressed),
            "TotalUncompressedSizeMB": uncompressed // (1024 * 1024),
        }
    )


def _log_page(request: Request) -> tuple[int, int, bool]:
    since = query_int(request, "since")
    limit = query_int(request, "limit", 100) or 100
    return since, limit, "last" in request.query_params


def changes(request: Request) -> Response:
    since, limit, last = _log_page(request)
    with server(request).index.read() as index:
        if last:
            found, done = ([c] if (c := index.last_change()) else []), True
        else:
            found, done = index.changes(since, limit)
        last_seq = found[-1].seq if found else index.last_change_seq()
    return json(
        {
            "Changes": [
                {
                    "ChangeType": c.change_type,
                    "Date": c.date,
                    "ID": c.public_id,
                    "Path": f"/{c.level.route}/{c.public_id}",
                    "ResourceType": c.level.title,
                    "Seq": c.seq,
                }
                for c in found
            ],
            "Done": done,
            "Last": last_seq,
        }
    )


def clear_changes(request: Request) -> Response:
    with server(request).index.write() as index:
        index.clear_changes()
    return empty_json()


def exports(request: Request) -> Response:
    since, limit, _ = _log_page(request)
    with server(request).index.read() as index:
        found, done = index.exports(since, limit)
        last_seq = found[-1]["seq"] if found else index.last_export_seq()
    return json(
        {
            "Exports": [
                {
                    "Date": e["date"],
                    "ID": e["public_id"],
                    "Path": f"/{Level(e['resource_type']).route}/{e['public_id']}",
                    "PatientID": e["patient_id"],
                    "RemoteModality": e["remote_modality"],
                    "ResourceType": Level(e["resource_type"]).title,
                    "Seq": e["seq"],
                    "StudyInstanceUID": e["study_instance_uid"],
                    "SeriesInstanceUID": e["series_instance_uid"],
                    "SOPInstanceUID": e["sop_instance_uid"],
                }
                for e in found
            ],
            "Done": done,
            "Last": last_seq,
        }
    )


def clear_exports(request: Request) -> Response:
    with server(request).index.write() as index:
        index.clear_exports()
    return empty_json()


def routes() -> list[Route]:
    return [
        Route("/system", system, methods=["GET"]),
        Route("/statistics", statistics, methods=["GET"]),
        Route("/changes", changes, methods=["GET"]),
        Route("/changes", clear_changes, methods=["DELETE"]),
        Route("/exports", exports, methods=["GET"]),
        Route("/exports", clear_exports, methods=["DELETE"]),
    ]
