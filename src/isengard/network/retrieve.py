"""The C-MOVE and C-GET servers (SCP): the instances a request names, sent with `sending`.

A request names resources by the unique key of its QueryRetrieveLevel (PatientID,
StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID; several values separated by backslashes),
as Orthanc reads it: without a level, the lowest level whose key is given. A C-MOVE sends them to
the modality whose AET is the move destination, over a new association; a C-GET sends them back
over the requesting association, in the storage contexts for which the requester took the SCP role.

The handlers follow pynetdicom's protocol (a generator yielding the destination, the number of
sub-operations, then a pending status and a dataset per sub-operation), and pynetdicom's loop
answers the pending and final statuses with the counts. The dataset of each pending status is a
placeholder: the association's C-STOREs are routed to an `InstanceSender`, which sends the stored
file as is instead of the Dataset pynetdicom would encode.

The final status is success, or 0xB000 if sub-operations failed or got warnings, or 0xA702 if all
failed: as Orthanc's C-GET, and its C-MOVE but for one thing: Orthanc 1.10.1 ends a C-MOVE at its
first failed sub-operation (0xC000), where Isengard goes on, as DICOM expects (pynetdicom's loop
sends the final status once all sub-operations are done). Also unlike Orthanc, an unknown move
destination is answered 0xA801 (DICOM's "move destination unknown", not 0xC000), and a request
that matches nothing succeeds with no sub-operation (Orthanc: 0xC000). Warnings of the peers are
counted as warnings (Orthanc counts them as completed). A C-CANCEL ends the sub-operations
(0xFE00). With SynchronousCMove false, as in Orthanc, a C-MOVE queues a "DicomModalityStore" job
(priority 0, whatever the request's) and succeeds at once, the instances going later: without
sub-operations (Orthanc answers one completed).
"""

import functools
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from pydicom import Dataset
from pydicom.datadict import keyword_for_tag
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pynetdicom import build_context, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from ..dicom.levels import Level
from ..dicom.tags import IDENTIFIER_TAG, PATIENT_ID
from ..index.find import Constraint, FindQuery, Kind, find
from ..jobs.dicom import StoreJob
from .modalities import Modality, Request
from .scu import MAX_AET_LENGTH, ScuSettings, _tls_args
from .sending import (
    InstanceSender,
    MoveOriginator,
    Reader,
    StoredInstance,
    StoreOptions,
    SubOperations,
    proposed_contexts,
    storage_reader,
    stored_instances,
)
from .tcp import TCP_NODELAY_HANDLER

if TYPE_CHECKING:
    from ..server import Isengard
    from .scp import DicomServer, Peer

log = logging.getLogger(__name__)

PENDING, CANCEL = 0xFF00, 0xFE00
SUCCESS = 0x0000
WARNING = 0xB000  # what pynetdicom counts as a warning among the C-STORE statuses
LEVELS = {"PATIENT": Level.PATIENT, "STUDY": Level.STUDY, "SERIES": Level.SERIES, "IMAGE": Level.INSTANCE,
          "INSTANCE": Level.INSTANCE}


class RetrieveError(Exception):
    """A C-MOVE or C-GET request that cannot be served; pynetdicom answers it with a failure."""


class _WithoutTraceback(logging.Filter):
    """pynetdicom logs the exception of a handler with its traceback: a RetrieveError is a bad
    request, not a fault of the server, and its message says all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], RetrieveError):
            record.exc_info = None
        return True


logging.getLogger("pynetdicom.service_class").addFilter(_WithoutTraceback())


# -- the instances a request names ---------------------------------------------------------------


def requested_instances(isengard: "Isengard", identifier: Dataset) -> list[StoredInstance]:
    level = _level(identifier)
    tag = IDENTIFIER_TAG[level]
    keys = _keys(identifier, tag)
    if not keys:
        raise RetrieveError(f"No {keyword_for_tag(tag)} given at the {level.name} level")
    if any("*" in key or "?" in key for key in keys):
        raise RetrieveError(f"Wildcards are not allowed in the {keyword_for_tag(tag)} of a retrieve")
    constraint = Constraint(int(tag), Kind.LIST, keys, case_sensitive=tag != PATIENT_ID)
    with isengard.index.read() as index:
        resources = find(index, isengard.storage, FindQuery(level, [constraint]))
    return stored_instances(isengard, [resource.public_id for resource in resources])


def _level(identifier: Dataset) -> Level:
    """The QueryRetrieveLevel; without one, as Orthanc, the lowest level whose unique key is given."""
    name = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if name:
        if name not in LEVELS:
            raise RetrieveError(f"Unknown query/retrieve level: {name}")
        return LEVELS[name]
    for level in reversed(Level):
        if _keys(identifier, IDENTIFIER_TAG[level]):
            return level
    raise RetrieveError("The request has neither a QueryRetrieveLevel nor a unique key")


def _keys(identifier: Dataset, tag: BaseTag) -> tuple[str, ...]:
    """The values of a unique key, which pydicom has split at the backslashes."""
    value = identifier[tag].value if tag in identifier else None
    values = value if isinstance(value, MultiValue) else [value]
    return tuple(text for text in (str(v).strip() for v in values if v is not None) if text)


def _identifier(event: evt.Event) -> Dataset:
    try:
        return event.identifier
    except (InvalidDicomError, ValueError, AttributeError) as exc:
        raise RetrieveError(f"Cannot decode the identifier of the request: {exc}") from None


# -- routing pynetdicom's C-STOREs ---------------------------------------------------------------


class SubOperationRoute:
    """Sends the sub-operations of pynetdicom's C-MOVE and C-GET loops: bound to an association,
    it replaces that association's `send_c_store`, which the loops call with the placeholders."""

    def __init__(self, read: Reader, peer: str, total: int, originator: MoveOriginator | None):
        self.read = read
        self.peer = peer
        self.counts = SubOperations(total)
        self.originator = originator
        self._sender: InstanceSender | None = None

    def bind(self, assoc: Association) -> None:
        self._sender = None
        assoc.send_c_store = self._send_c_store_on(assoc)  # type: ignore[method-assign]

    def unbind(self, assoc: Association) -> None:
        vars(assoc).pop("send_c_store", None)
        if self._sender is not None:
            self._sender.close()

    def placeholder(self, instance: StoredInstance) -> "Placeholder":
        return Placeholder(instance)

    def _send_c_store_on(self, assoc: Association) -> Callable[..., "StoreStatus"]:
        def send_c_store(dataset: Placeholder, msg_id: int = 1, *_args: Any, **_kwargs: Any) -> StoreStatus:
            """Raises the failures: pynetdicom counts them and logs their message."""
            if self._sender is None:  # made once the contexts are negotiated
                self._sender = InstanceSender(assoc, self.read, self.peer, self.counts, self.originator)
            status = self._sender.send(dataset.stored_instance, msg_id)
            # pynetdicom knows fewer warning statuses than the standard: it gets one it knows.
            return StoreStatus(SUCCESS if status == SUCCESS else WARNING)

        return send_c_store


# What pynetdicom's loops get for each sub-operation: a pydicom Dataset, which they only test, and
# the status of its C-STORE, of which they read `Status`. Real pydicom datasets cost a fifth of the
# CPU of a C-MOVE's sub-operation (attribute access goes through the DICOM dictionary).


class Placeholder(Dataset):
    """The dataset of a pending status: the stored instance that the route sends in its stead."""

    def __init__(self, instance: StoredInstance):  # not Dataset.__init__: no element is ever set
        object.__setattr__(self, "stored_instance", instance)

    def __bool__(self) -> bool:
        return True  # pynetdicom sends only the datasets that are true

    @property
    def SOPInstanceUID(self) -> str:  # noqa: N802 - pynetdicom lists it when the sub-operation fails
        return self.stored_instance.sop_instance_uid


class StoreStatus(NamedTuple):
    Status: int


# -- C-MOVE --------------------------------------------------------------------------------------


def serve_move(server: "DicomServer", event: evt.Event, peer: "Peer") -> Iterator[Any]:
    isengard = server.isengard
    request = event.request
    instances = requested_instances(isengard, _identifier(event))
    destination = _destination(server, request.MoveDestination)
    if destination is None:
        log.error("C-MOVE from %s: unknown move destination %s", peer, request.MoveDestination)
        yield None, None  # pynetdicom answers "move destination unknown" (0xA801)
        return
    originator = MoveOriginator(peer.calling_aet, request.MessageID)
    if not isengard.config.synchronous_c_move:
        job_id = isengard.jobs.submit(StoreJob(isengard, destination, [i.public_id for i in instances],
                                               StoreOptions(originator=originator), description="C-MOVE"))
        log.info("C-MOVE from %s: %d instances to %s, in job %s", peer, len(instances), destination.aet, job_id)
        yield destination.host, destination.port
        yield 0  # pynetdicom answers success
        return
    log.info("C-MOVE from %s: %d instances to %s", peer, len(instances), destination.aet)
    route = SubOperationRoute(storage_reader(isengard), destination.aet, len(instances), originator)
    yield destination.host, destination.port, _association_arguments(server, destination, instances, route)
    yield len(instances)
    yield from _sub_operations(event, route, instances)


def _sub_operations(event: evt.Event, route: SubOperationRoute, instances: list[StoredInstance]) -> Iterator[Any]:
    """A pending status per instance; a C-CANCEL of the requester ends them (pynetdicom answers it
    with the counts so far)."""
    for instance in instances:
        if event.is_cancelled:
            yield CANCEL, None
            return
        yield PENDING, route.placeholder(instance)


def _destination(server: "DicomServer", aet: str) -> Modality | None:
    known = server.isengard.modalities.with_aet(aet.strip())
    return known[0] if known else None


def _association_arguments(
    server: "DicomServer", destination: Modality, instances: list[StoredInstance], route: SubOperationRoute
) -> dict[str, Any]:
    """How pynetdicom associates with the destination: its AET, the contexts to propose, TCP_NODELAY,
    DICOM TLS if the modality uses it, and the route of the C-STOREs. A single association: the
    instances whose contexts are beyond the MAX_CONTEXTS proposed fail."""
    config = server.isengard.config
    timeout = destination.timeout or config.dicom_scu_timeout

    def bind(event: evt.Event) -> None:
        event.assoc.acse_timeout = event.assoc.dimse_timeout = event.assoc.network_timeout = timeout
        route.bind(event.assoc)

    return {
        "ae_title": destination.aet[:MAX_AET_LENGTH],
        "contexts": proposed_contexts(instances),
        "max_pdu": config.maximum_pdu_length,
        "tls_args": _tls_args(destination, ScuSettings.from_config(config)),
        "evt_handlers": [TCP_NODELAY_HANDLER, (evt.EVT_CONN_OPEN, bind)],
    }


# -- C-GET ---------------------------------------------------------------------------------------


def serve_get(server: "DicomServer", event: evt.Event, peer: "Peer") -> Iterator[Any]:
    isengard = server.isengard
    instances = requested_instances(isengard, _identifier(event))
    log.info("C-GET from %s: %d instances", peer, len(instances))
    route = SubOperationRoute(storage_reader(isengard), peer.calling_aet, len(instances), None)
    route.bind(event.assoc)
    try:
        yield len(instances)
        yield from _sub_operations(event, route, instances)
    finally:
        route.unbind(event.assoc)


# -- negotiation ---------------------------------------------------------------------------------

MOVE_SYNTAXES = {syntax: Request.MOVE for syntax in (PatientRootQueryRetrieveInformationModelMove,
                                                     StudyRootQueryRetrieveInformationModelMove)}
GET_SYNTAXES = {syntax: Request.GET for syntax in (PatientRootQueryRetrieveInformationModelGet,
                                                   StudyRootQueryRetrieveInformationModelGet)}


@functools.lru_cache(maxsize=4096)
def _context_with_roles(abstract_syntax: str, transfer_syntaxes: tuple[str, ...]) -> PresentationContext:
    context = build_context(abstract_syntax, list(transfer_syntaxes))
    context.scu_role = context.scp_role = True  # accept whichever roles the requester proposes
    return context


def with_requested_roles(contexts: list[PresentationContext], requested_roles: Mapping[str, Any]) -> list[PresentationContext]:
    """The contexts an association supports, able to take the roles its requester proposed: a C-GET
    requester takes the SCP role of the storage SOP classes it wants to receive. Those contexts are
    made once and shared, as those of AcceptedSyntaxes: negotiation only reads them."""
    return [
        _context_with_roles(cx.abstract_syntax, tuple(cx.transfer_syntax)) if cx.abstract_syntax in requested_roles else cx
        for cx in contexts
    ]
