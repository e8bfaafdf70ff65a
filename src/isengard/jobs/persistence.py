"""Saving the jobs into the index (SaveJobs), as Orthanc does: one JSON document in a global property."""

import logging
from typing import Any

import orjson

from ..index import GlobalProperty, Index

log = logging.getLogger(__name__)

# The document: {"Type": "JobsRegistry", "Jobs": {id: {"CreationTime", "ErrorCode", "ErrorDetails",
# "Job" (the job's own serialization, with its "Type"), "LastChangeTime", "Priority", "Runtime" (ms),
# "State"}}}, the layout of Orthanc's.
REGISTRY_TYPE = "JobsRegistry"


class IndexJobsStore:
    def __init__(self, index: Index):
        self.index = index

    def load(self) -> dict[str, dict[str, Any]]:
        """The saved jobs by ID (none if nothing was saved or the document is not a registry)."""
        with self.index.read() as index:
            text = index.global_property(GlobalProperty.JOBS_REGISTRY)
        try:
            registry = orjson.loads(text) if text else {}
        except orjson.JSONDecodeError as exc:
            log.warning("The saved jobs cannot be read, they are lost: %s", exc)
            return {}
        if not isinstance(registry, dict) or registry.get("Type") != REGISTRY_TYPE:
            return {}
        return registry.get("Jobs") or {}

    def save(self, jobs: dict[str, dict[str, Any]]) -> None:
        document = orjson.dumps({"Type": REGISTRY_TYPE, "Jobs": jobs}).decode()
        with self.index.write() as index:
            index.set_global_property(GlobalProperty.JOBS_REGISTRY, document)
