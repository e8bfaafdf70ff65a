"""The jobs of the DICOM client, as Orthanc 1.10.1 runs them: sending instances to a modality
("DicomModalityStore": /modalities/{id}/store, and the C-MOVE requests served with SynchronousCMove
false) and retrieving the answers of a query ("DicomMoveScu", or "DicomGetScu" for a C-GET, as
Orthanc 1.12: /queries/{id}/retrieve and /queries/{id}/answers/{index}/retrieve).

A store sends one instance per step over as few associations as it can (network.sending.Transfer),
then, with "StorageCommitment", asks the modality to commit to them in a last step. A retrieval
sends one C-MOVE (or C-GET) per step over one association (network.queries.retrieval_steps). A
paused job releases its association and opens a new one when it resumes; a job saved (SaveJobs)
keeps where it was, in a layout close to Orthanc's: the instances by public ID or the resources by
tags ("Commands"), how many are done ("Position"), and the modality ("Remote", as GET
/modalities/{id}/configuration shows it).

Differences from Orthanc 1.10.1: the StorageCommitmentTransactionUID of a store shows once the
request is sent (Orthanc draws it when the job is made), and the request is sent on an association
of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

from ..dicom.tags import parse_tag
from ..errors import ErrorCode, IsengardError
from ..network.commitment import Reference, request_commitment
from ..network.modalities import Modality, parse_modality
from ..network.queries import Receiver, RetrieveMethod, Retrieval, TagMap, retrieval_steps, tags_json
from ..network.scu import NoPresentationContext, ScuSettings
from ..network.sending import (
    MoveOriginator,
    StorageReader,
    StoredInstance,
    StoreOptions,
    Transfer,
    association_batches,
    stored_instances,
)
from .job import Job, StopReason

if TYPE_CHECKING:
    from ..server import Isengard

log = logging.getLogger(__name__)

REST_API = "REST API"  # the "Description" of the jobs that the REST API makes


def ingest_receiver(isengard: Isengard) -> Receiver:
    """The instances of a C-GET are stored as those of a C-STORE, in the transfer syntaxes the server accepts."""
    return Receiver(isengard.ingest.store, tuple(isengard.dicom_server.syntaxes.storage_preference()))


def still_stored(isengard: Isengard, public_ids: Sequence[str]) -> list[StoredInstance]:
    """The instances of `public_ids` that are still stored, in their order."""
    try:
        return stored_instances(isengard, public_ids)
    except IsengardError as exc:
        if exc.code is not ErrorCode.UNKNOWN_RESOURCE:
            raise
    found = []
    for public_id in public_ids:  # one of them is gone: which?
        try:
            found += stored_instances(isengard, [public_id])
        except IsengardError as exc:
            if exc.code is not ErrorCode.UNKNOWN_RESOURCE:
                raise
    return found


class StoreJob(Job):
    """C-STOREs of instances to a modality, one per step, then an optional storage commitment request."""

    type_name = "DicomModalityStore"

    def __init__(
        self,
        isengard: Isengard,
        modality: Modality,
        instance_ids: Sequence[str],
        options: StoreOptions,
        *,
        description: str = REST_API,
        parent_resources: Sequence[str] = (),
        storage_commitment: bool = False,
        position: int = 0,
        failed: Sequence[str] = (),
        sent: Sequence[Reference] = (),
    ):
        self._isengard = isengard
        self.modality = modality
        self.options = replace(options, local_aet=options.local_aet or isengard.config.dicom_aet)
        self.description = description
        self.parent_resources = sorted(set(parent_resources))
        self.storage_commitment = storage_commitment
        self._ids = list(instance_ids)  # in the order they are sent
        self._position = position  # how many of them are done (sent, or failed)
        self._failed = list(failed)  # the public IDs of those that could not be read (Orthanc's FailedInstances)
        self._sent = list(sent)  # those the modality took, for the storage commitment request
        self._transaction_uid = ""
        # The instances found missing are Orthanc's FailedInstances.
        self._read = StorageReader(isengard, on_missing=lambda instance: self._failed.append(instance.public_id))
        self._transfer: Transfer | None = None
        self._order: list[StoredInstance] = []  # what the transfer sends, in its order
        self._base = 0  # the position when the transfer started
        self._seen_failures = 0  # of the transfer's failed instances

    def start(self) -> None:
        """Send what is left, the instances deleted meanwhile counting as failed, as in Orthanc."""
        remaining = self._ids[self._position:]
        found = still_stored(self._isengard, remaining)
        found_ids = {instance.public_id for instance in found}
        missing = [public_id for public_id in remaining if public_id not in found_ids]
        for public_id in missing:
            log.warning("An instance was removed after the job was issued: %s", public_id)
        self._order = [instance for batch in association_batches(found) for instance in batch]
        self._ids = self._ids[:self._position] + missing + [instance.public_id for instance in self._order]
        self._failed += missing
        self._position = self._base = self._position + len(missing)
        self._seen_failures = 0
        self._transfer = Transfer(self._isengard, self.modality, self._order, self.options, self._read)

    def step(self) -> bool:
        assert self._transfer is not None
        if not self._transfer.done:
            self._transfer.send_next()
            self._advance(self._transfer)
        elif self.storage_commitment:
            self._request_commitment()
        return self._transfer.done and (not self.storage_commitment or bool(self._transaction_uid))

    def _advance(self, transfer: Transfer) -> None:
        """Count what the last step did, and keep the instances the modality took."""
        counts = transfer.counts
        done = counts.completed + counts.warning + counts.failed
        failures = set(counts.failed_instances[self._seen_failures:])
        self._seen_failures = len(counts.failed_instances)
        if self.storage_commitment:
            handled = self._order[self._position - self._base:done]
            self._sent += [(i.sop_class_uid, i.sop_instance_uid) for i in handled if i.sop_instance_uid not in failures]
        self._position = self._base + done

    def _request_commitment(self) -> None:
        try:
            self._transaction_uid = request_commitment(self._isengard, self.modality, self._sent, self.options.timeout)
        except NoPresentationContext:  # the modality is no storage commitment SCP: told as Orthanc tells it
            details = f'Unable to negotiate a presentation context with AET "{self.modality.aet}"'
            raise IsengardError(ErrorCode.NO_PRESENTATION_CONTEXT, details) from None

    @property
    def progress(self) -> float:
        total = len(self._ids) + self.storage_commitment
        return (self._position + bool(self._transaction_uid)) / total if total else 0.0

    def stop(self, reason: StopReason) -> None:
        transfer, self._transfer = self._transfer, None
        if transfer is not None:
            transfer.close()

    def reset(self) -> None:
        """Resubmitted: everything is sent again, as Orthanc does."""
        self._position = 0
        self._failed, self._sent, self._transaction_uid = [], [], ""

    def content(self) -> dict[str, Any]:
        content: dict[str, Any] = {
            "Description": self.description,
            "FailedInstancesCount": len(self._failed),
            "InstancesCount": len(self._ids),
            "LocalAet": self.modality.local_aet or self.options.local_aet,
            "RemoteAet": self.modality.aet,
        }
        originator = self.options.originator
        if originator is not None:
            content.update(MoveOriginatorAET=originator.aet, MoveOriginatorID=originator.message_id)
        if self.parent_resources:
            content["ParentResources"] = self.parent_resources
        if self._transaction_uid:
            content["StorageCommitmentTransactionUID"] = self._transaction_uid
        return dict(sorted(content.items()))

    def serialize(self) -> dict[str, Any]:
        originator = self.options.originator or MoveOriginator("", 0)
        data = {
            "Commands": list(self._ids),
            "Description": self.description,
            "FailedInstances": list(self._failed),
            "LocalAet": self.options.local_aet,
            "MoveOriginatorAet": originator.aet,
            "MoveOriginatorId": originator.message_id,
            "ParentResources": self.parent_resources,
            "Permissive": self.options.permissive,
            "Position": self._position,
            "Remote": self.modality.to_json(),
            "StorageCommitment": self.storage_commitment,
            "Timeout": self.options.timeout,
        }
        if self.storage_commitment:
            data["SentInstances"] = [list(reference) for reference in self._sent]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], isengard: Isengard) -> StoreJob:
        originator_id = int(data.get("MoveOriginatorId", 0))
        options = StoreOptions(
            local_aet=data.get("LocalAet", ""),
            timeout=int(data.get("Timeout", 0)),
            originator=MoveOriginator(data.get("MoveOriginatorAet", ""), originator_id) if originator_id else None,
            permissive=bool(data.get("Permissive", False)),
        )
        return cls(
            isengard, parse_modality(data["Remote"]), data["Commands"], options,
            description=data.get("Description", REST_API),
            parent_resources=data.get("ParentResources", []),
            storage_commitment=bool(data.get("StorageCommitment", False)),
            position=int(data.get("Position", 0)),
            failed=data.get("FailedInstances", []),
            sent=[tuple(reference) for reference in data.get("SentInstances", [])],
        )


class RetrieveJob(Job):
    """The C-MOVEs (C-GETs) of a retrieval, one per step. Permissive, a failed command is skipped, and the
    next ones go over a new association; a resource that lacks its keys then fails alone."""

    method: ClassVar[RetrieveMethod]

    def __init__(
        self,
        isengard: Isengard,
        retrieval: Retrieval,
        query_format: str = "short",
        *,
        permissive: bool = False,
        description: str = REST_API,
        position: int = 0,
    ):
        self._isengard = isengard
        self.retrieval = retrieval
        self.query_format = query_format  # of the tags of "Query" in the content
        self.permissive = permissive
        self.description = description
        self._position = position  # the commands done
        self._steps: Iterator[int] | None = None  # the commands of the current association...
        self._end = 0  # ...up to this position

    @staticmethod
    def of(isengard: Isengard, retrieval: Retrieval, query_format: str, permissive: bool = False) -> RetrieveJob:
        """The job of a retrieval's method."""
        return RETRIEVE_JOBS[retrieval.method](isengard, retrieval, query_format, permissive=permissive)

    def step(self) -> bool:
        resources = self.retrieval.resources
        if self._position < len(resources):
            if self._steps is None:
                self._steps = self._open()
            try:
                next(self._steps)
            except IsengardError as exc:
                self._steps = None  # ended by the error, its association released
                if not self.permissive:
                    raise
                log.warning("Ignoring an error in a permissive retrieval: %s", exc)
            self._position += 1
            if self._position == self._end:
                self._close()
        return self._position >= len(resources)

    def _open(self) -> Iterator[int]:
        """The commands from the current position, over one association: to the end, or, permissive,
        up to the next resource that lacks its keys (which retrieval_steps refuses before any command)."""
        resources = self.retrieval.resources
        self._end = len(resources)
        if self.permissive:
            self._end = next((i for i in range(self._position + 1, len(resources)) if not self._checks(i)), self._end)
        remaining = replace(self.retrieval, resources=resources[self._position:self._end])
        receiver = ingest_receiver(self._isengard) if self.method is RetrieveMethod.GET else None
        return retrieval_steps(remaining, receiver)

    def _checks(self, index: int) -> bool:
        try:
            replace(self.retrieval, resources=self.retrieval.resources[index:index + 1]).check()
        except IsengardError:
            return False
        return True

    def _close(self) -> None:
        steps, self._steps = self._steps, None
        if steps is not None:
            steps.close()  # releases the association

    @property
    def progress(self) -> float:
        total = len(self.retrieval.resources)
        return self._position / total if total else 0.0

    def stop(self, reason: StopReason) -> None:
        self._close()

    def reset(self) -> None:
        self._position = 0

    def content(self) -> dict[str, Any]:
        return {
            "Description": self.description,
            "LocalAet": self.retrieval.settings.local_aet,
            "Query": [tags_json(resource, self.query_format) for resource in self.retrieval.resources],
            "RemoteAet": self.retrieval.modality.aet,
        }

    def serialize(self) -> dict[str, Any]:
        retrieval = self.retrieval
        return {
            "Commands": [tags_json(resource, "short") for resource in retrieval.resources],
            "Description": self.description,
            "LocalAet": retrieval.settings.local_aet,
            "Permissive": self.permissive,
            "Position": self._position,
            "QueryFormat": self.query_format,
            "Remote": retrieval.modality.to_json(),
            "TargetAet": retrieval.target_aet,
            "Timeout": retrieval.timeout,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], isengard: Isengard) -> RetrieveJob:
        config = isengard.config
        retrieval = Retrieval(
            modality=parse_modality(data["Remote"]),
            settings=replace(ScuSettings.from_config(config), local_aet=data.get("LocalAet", config.dicom_aet)),
            resources=tuple(_tag_map(command) for command in data["Commands"]),
            method=cls.method,
            target_aet=data.get("TargetAet", config.dicom_aet),
            timeout=int(data.get("Timeout", 0)),
            encoding=config.default_encoding,
        )
        return cls(
            isengard, retrieval, data.get("QueryFormat", "short"), permissive=bool(data.get("Permissive", False)),
            description=data.get("Description", REST_API), position=int(data.get("Position", 0)),
        )


def _tag_map(values: dict[str, str]) -> TagMap:
    return {int(parse_tag(key)): value for key, value in values.items()}


class MoveScuJob(RetrieveJob):
    type_name = "DicomMoveScu"
    method = RetrieveMethod.MOVE


class GetScuJob(RetrieveJob):
    type_name = "DicomGetScu"  # Orthanc 1.12's name; Orthanc 1.10.1 has no C-GET
    method = RetrieveMethod.GET


RETRIEVE_JOBS: dict[RetrieveMethod, type[RetrieveJob]] = {job.method: job for job in (MoveScuJob, GetScuJob)}
