"""Storage commitment, Push Model (PS3.4 J), both ways, as Orthanc does it.

As the SCP, Isengard answers an N-ACTION "Request Storage Commitment" at once, then checks each
referenced instance (stored, with that SOP class) and reports the result in an N-EVENT-REPORT
sent on a new association to the requesting modality (the modality of DicomModalities with the
calling AET, which must have AllowNAction), Isengard calling itself by the called AET.

As the SCU, `request_commitment` sends the N-ACTION of a new transaction and records it as
pending; the N-EVENT-REPORT that a modality later sends to Isengard's SCP (which requires its
AllowEventReport) completes the transaction's report. Reports are kept in memory only, the least
recently used ones dropped beyond StorageCommitmentReportsSize. As in Orthanc, a report about a
transaction Isengard does not know is kept too, under the AET that sent it.
"""

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import build_context, build_role, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

from ..dicom.levels import Level
from ..dicom.tags import SOP_INSTANCE_UID
from ..errors import IsengardError
from ..index import MetadataType, Resource
from ..index.find import Constraint, FindQuery, Kind, find
from ..index.index import IndexTransaction
from ..storage import StorageArea
from .modalities import Modality, Request
from .scu import NetworkError, ScuSettings, association

if TYPE_CHECKING:
    from ..server import Isengard
    from .scp import DicomServer, Peer

log = logging.getLogger(__name__)

COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"  # the well-known SOP instance of the Push Model
REQUEST_STORAGE_COMMITMENT = 1  # the only action type
SUCCESSFUL, FAILURES_EXIST = 1, 2  # the event types of a report

SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110
NO_SUCH_EVENT_TYPE = 0x0113
NO_SUCH_ACTION = 0x0123

N_ACTION_SYNTAXES = {StorageCommitmentPushModel: Request.N_ACTION}
N_EVENT_REPORT_SYNTAXES = {StorageCommitmentPushModel: Request.N_EVENT_REPORT}

# Failure reasons (PS3.3 C.14.1.1), with the description Orthanc gives each.
NO_SUCH_OBJECT_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119
FAILURE_DESCRIPTIONS = {
    0x0110: "A general failure in processing the operation was encountered",
    0x0112: "One or more of the elements in the Referenced SOP Instance Sequence was not available",
    0x0119: "The SOP Class of an element in the Referenced SOP Instance Sequence did not correspond to the SOP "
            "class registered for this SOP Instance at the SCP",
    0x0122: "Storage Commitment has been requested for a SOP Instance with a SOP Class that is not supported by "
            "the SCP",
    0x0131: "The Transaction UID of the Storage Commitment Request is already in use",
    0x0213: "The SCP does not currently have enough resources to store the requested SOP Instance(s)",
}

# A referenced instance: (SOP Class UID, SOP Instance UID).
Reference = tuple[str, str]


@dataclass(frozen=True)
class Failure:
    sop_class_uid: str
    sop_instance_uid: str
    reason: int

    def to_json(self) -> dict[str, Any]:
        return {
            "Description": FAILURE_DESCRIPTIONS.get(self.reason, "Unknown failure reason"),
            "FailureReason": self.reason,
            "SOPClassUID": self.sop_class_uid,
            "SOPInstanceUID": self.sop_instance_uid,
        }


@dataclass(frozen=True)
class CommitmentReport:
    """A transaction as GET /storage-commitment/{id} shows it: pending until its N-EVENT-REPORT."""

    remote_aet: str
    complete: bool = False
    successes: tuple[Reference, ...] = ()
    failures: tuple[Failure, ...] = ()

    @property
    def status(self) -> str:
        return "Pending" if not self.complete else "Failure" if self.failures else "Success"

    def to_json(self) -> dict[str, Any]:
        answer: dict[str, Any] = {"RemoteAET": self.remote_aet, "Status": self.status}
        if self.complete:
            answer["Failures"] = [failure.to_json() for failure in self.failures]
            answer["Success"] = [{"SOPClassUID": c, "SOPInstanceUID": i} for c, i in self.successes]
        return dict(sorted(answer.items()))  # in Orthanc's order


class CommitmentReports:
    """The reports by transaction UID, the least recently used dropped beyond `size`."""

    def __init__(self, size: int):
        self.size = size
        self._reports: OrderedDict[str, CommitmentReport] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, transaction_uid: str, report: CommitmentReport) -> None:
        with self._lock:
            self._reports[transaction_uid] = report
            self._reports.move_to_end(transaction_uid)
            while len(self._reports) > self.size:
                self._reports.popitem(last=False)

    def get(self, transaction_uid: str) -> CommitmentReport | None:
        with self._lock:
            report = self._reports.get(transaction_uid)
            if report is not None:
                self._reports.move_to_end(transaction_uid)
            return report


# -- the datasets of the requests and reports ----------------------------------------------------------


def _item(sop_class_uid: str, sop_instance_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class_uid
    item.ReferencedSOPInstanceUID = sop_instance_uid
    return item


def _references_sequence(references: Iterable[Reference]) -> DicomSequence:
    return DicomSequence([_item(*reference) for reference in references])


def _failures_sequence(failures: Iterable[Failure]) -> DicomSequence:
    items = []
    for failure in failures:
        item = _item(failure.sop_class_uid, failure.sop_instance_uid)
        item.FailureReason = failure.reason
        items.append(item)
    return DicomSequence(items)


def _reference(item: Dataset) -> Reference:
    return str(item.get("ReferencedSOPClassUID", "")), str(item.get("ReferencedSOPInstanceUID", ""))


def _references(items: Iterable[Dataset]) -> list[Reference]:
    return [_reference(item) for item in items]


def _failures(items: Iterable[Dataset]) -> list[Failure]:
    return [Failure(*_reference(item), int(item.get("FailureReason", PROCESSING_FAILURE))) for item in items]


def _contexts() -> list:
    return [build_context(StorageCommitmentPushModel, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]


# -- the SCU ------------------------------------------------------------------------------------------------


def request_commitment(
    isengard: "Isengard", modality: Modality, instances: Sequence[Reference], timeout: int = 0
) -> str:
    """Ask `modality` to commit to having stored `instances`; the transaction UID, whose report is
    pending until the modality sends it. NetworkError if the modality refuses the request."""
    transaction_uid = generate_uid(prefix=None)  # 2.25.<UUID>, as Orthanc's
    if not instances:
        log.warning("Issuing an empty storage commitment request: %s", transaction_uid)
    # Pending before the request is sent: the report may come back before the N-ACTION answer does.
    isengard.commitment_reports.put(transaction_uid, CommitmentReport(modality.aet))
    request = Dataset()
    request.TransactionUID = transaction_uid
    request.ReferencedSOPSequence = _references_sequence(instances)
    settings = ScuSettings.from_config(isengard.config)
    with association(modality, settings, _contexts(), timeout) as assoc:
        status, _reply = assoc.send_n_action(request, REQUEST_STORAGE_COMMITMENT, StorageCommitmentPushModel,
                                             COMMITMENT_INSTANCE)
    if status.get("Status") != SUCCESS:
        raise NetworkError(f"Storage commitment - The request cannot be handled by remote AET: {modality.aet}")
    return transaction_uid


# -- the SCP: N-ACTION ------------------------------------------------------------------------------------


def serve_commitment_request(server: "DicomServer", event: evt.Event, peer: "Peer") -> tuple[int, Dataset | None]:
    """Accept the request, then check and report on a thread of its own, as Orthanc does in a job."""
    if event.action_type != REQUEST_STORAGE_COMMITMENT:
        return NO_SUCH_ACTION, None
    try:
        request = event.action_information
        transaction_uid = str(request.TransactionUID)
        references = _references(request.get("ReferencedSOPSequence", []))
    except (AttributeError, ValueError, TypeError) as exc:
        log.error("Storage commitment request from %s: bad dataset: %s", peer, exc)
        return PROCESSING_FAILURE, None
    modalities = server.isengard.modalities.with_aet(peer.calling_aet)
    if not modalities:  # removed since the association started
        log.error("Storage commitment request from %s: not a known modality", peer)
        return PROCESSING_FAILURE, None
    log.info("Storage commitment request from %s: transaction %s, %d instances", peer, transaction_uid,
             len(references))
    reporter = replace(modalities[0], local_aet=peer.called_aet)  # Isengard answers by the AET it was called
    threading.Thread(
        target=_commit, args=(server.isengard, reporter, transaction_uid, references),
        name=f"storage-commitment-{transaction_uid}", daemon=True,
    ).start()
    return SUCCESS, None


def _commit(isengard: "Isengard", modality: Modality, transaction_uid: str, references: list[Reference]) -> None:
    successes, failures = check_stored(isengard, references)
    try:
        _send_report(isengard, modality, transaction_uid, successes, failures)
    except (IsengardError, ValueError) as exc:  # ValueError: pynetdicom found no context with the SCP role
        log.error("Storage commitment report of transaction %s to %s not sent: %s", transaction_uid, modality.aet,
                  exc)


def instances_with_uid(index: IndexTransaction, storage: StorageArea, sop_instance_uid: str) -> list[Resource]:
    query = FindQuery(Level.INSTANCE, [Constraint(int(SOP_INSTANCE_UID), Kind.EQUAL, (sop_instance_uid,), True)])
    return find(index, storage, query)


def check_stored(isengard: "Isengard", references: Sequence[Reference]) -> tuple[list[Reference], list[Failure]]:
    """Which instances are stored, with the SOP class given; the failures, with their reason."""
    successes, failures = [], []
    with isengard.index.read() as index:
        for sop_class_uid, sop_instance_uid in references:
            found = instances_with_uid(index, isengard.storage, sop_instance_uid)
            stored_class = None
            if len(found) == 1:  # as Orthanc: not a UID stored in two studies
                stored_class = index.metadata_value(found[0].internal_id, MetadataType.SOP_CLASS_UID)
            if stored_class == sop_class_uid:
                successes.append((sop_class_uid, sop_instance_uid))
            else:
                reason = NO_SUCH_OBJECT_INSTANCE if stored_class is None else CLASS_INSTANCE_CONFLICT
                failures.append(Failure(sop_class_uid, sop_instance_uid, reason))
    return successes, failures


def _send_report(
    isengard: "Isengard", modality: Modality, transaction_uid: str, successes: list[Reference], failures: list[Failure]
) -> None:
    report = Dataset()
    report.TransactionUID = transaction_uid
    report.ReferencedSOPSequence = _references_sequence(successes)
    if failures:
        report.FailedSOPSequence = _failures_sequence(failures)
    roles = [build_role(StorageCommitmentPushModel, scp_role=True)]  # the report goes from the SCP to the SCU
    settings = ScuSettings.from_config(isengard.config)
    with association(modality, settings, _contexts(), roles=roles) as assoc:
        event_type = FAILURES_EXIST if failures else SUCCESSFUL
        status, _reply = assoc.send_n_event_report(report, event_type, StorageCommitmentPushModel,
                                                   COMMITMENT_INSTANCE)
    if status.get("Status") != SUCCESS:
        raise NetworkError(f"{modality.aet} refused the storage commitment report (status: {status.get('Status')})")
    log.info("Storage commitment report of transaction %s sent to %s: %d successes, %d failures",
             transaction_uid, modality.aet, len(successes), len(failures))


# -- the SCP: N-EVENT-REPORT ------------------------------------------------------------------------------


def serve_commitment_report(server: "DicomServer", event: evt.Event, peer: "Peer") -> tuple[int, Dataset | None]:
    """Record the report of a transaction, replacing its pending report."""
    if event.event_type not in (SUCCESSFUL, FAILURES_EXIST):
        return NO_SUCH_EVENT_TYPE, None
    try:
        information = event.event_information
        transaction_uid = str(information.TransactionUID)
        report = CommitmentReport(
            peer.calling_aet,
            complete=True,
            successes=tuple(_references(information.get("ReferencedSOPSequence", []))),
            failures=tuple(_failures(information.get("FailedSOPSequence", []))),
        )
    except (AttributeError, ValueError, TypeError) as exc:
        log.error("Storage commitment report from %s: bad dataset: %s", peer, exc)
        return PROCESSING_FAILURE, None
    server.isengard.commitment_reports.put(transaction_uid, report)
    log.info("Storage commitment report from %s: transaction %s is %s", peer, transaction_uid, report.status)
    return SUCCESS, None
