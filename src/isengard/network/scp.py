"""The DICOM server (SCP): one pynetdicom application entity on DicomPort, named DicomAet.

Each DIMSE service is a `Service` of the SERVICES table: the pynetdicom event it answers,
the abstract syntaxes it serves (with the operation each is, for access control) and its
handler. A new service is one more entry. For each association, the server checks who
calls (AccessControl) and chooses the presentation contexts it accepts (AcceptedSyntaxes);
each request is then checked against the caller's permissions, and a refused one aborts
the association, as Orthanc does.
"""

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from ..errors import IsengardError
from ..ingest import Origin
from . import commands, pdus, reactor, text_answers
from .access import AccessControl
from .commitment import N_ACTION_SYNTAXES, N_EVENT_REPORT_SYNTAXES, serve_commitment_report, serve_commitment_request
from .files import file_header
from .modalities import Request
from .presentation import AcceptedSyntaxes, configured_transfer_syntaxes
from .query import FIND_SYNTAXES, handle_find
from .store_receiver import StoreReceiver, StoreRequest
from .retrieve import GET_SYNTAXES, MOVE_SYNTAXES, serve_get, serve_move, with_requested_roles
from .tcp import TCP_NODELAY_HANDLER
from .tls import TLS_HANDSHAKE_HANDLER, DicomTls
from .worklists import WORKLIST_SYNTAXES, serve_worklist_find, worklists_enabled

if TYPE_CHECKING:
    from ..config import Configuration
    from ..server import Isengard

log = logging.getLogger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # Orthanc's answer to any instance it could not store

# Association rejections (PS3.8 9.3.4): permanent, by the service user, for this reason.
REJECTED_PERMANENT, SERVICE_USER = 0x01, 0x01
CALLING_AET_NOT_RECOGNIZED, CALLED_AET_NOT_RECOGNIZED = 0x03, 0x07
# Connections served at once, established or not: a bound on threads (two per connection), high
# enough that idle or probing connections never keep a modality out (DicomThreadsCount does that).
MAXIMUM_ASSOCIATIONS = 200

# pynetdicom would otherwise format a log record of every PDU and DIMSE message it handles.
_config.LOG_HANDLER_LEVEL = "none"
reactor.install()
commands.install()
pdus.install()
text_answers.install()


@dataclass(frozen=True)
class Peer:
    """The remote end of an association, as Origin metadata and log lines name it."""

    calling_aet: str
    called_aet: str
    ip: str

    @classmethod
    def of(cls, assoc: Association) -> "Peer":
        request = assoc.requestor.primitive
        return cls(request.calling_ae_title, request.called_ae_title, assoc.requestor.address)

    def __str__(self) -> str:
        return f'AET "{self.calling_aet}" on {self.ip}'


Handler = Callable[["DicomServer", evt.Event, Peer], Any]


@dataclass(frozen=True)
class Service:
    """A DIMSE service: the pynetdicom event it answers, its handler (which returns what pynetdicom
    expects of a handler of that event), and the operation each of its abstract syntaxes is, for
    access control. C-STORE's abstract syntaxes are the storage SOP classes (see AcceptedSyntaxes).
    Services of one event (C-FIND of queries and of worklists) are told apart by abstract syntax."""

    event: evt.InterventionEvent
    handle: Handler
    syntaxes: Mapping[str, Request] = field(default_factory=dict)
    enabled: Callable[["Configuration"], bool] = lambda _config: True  # else its syntaxes are refused

    def request(self, abstract_syntax: str) -> Request:
        return self.syntaxes.get(abstract_syntax, Request.STORE)


def _echo(_server: "DicomServer", _event: evt.Event, _peer: Peer) -> int:
    return SUCCESS


def _store(server: "DicomServer", event: evt.Event, peer: Peer) -> int:
    """A C-STORE that pynetdicom read (see StoreReceiver for the others)."""
    request = event.request
    received = StoreRequest(event.context.context_id, request.MessageID, request.AffectedSOPClassUID,
                            request.AffectedSOPInstanceUID, event.context.transfer_syntax)
    return store_received(server, peer, received, request.DataSet.getvalue())


def store_received(server: "DicomServer", peer: Peer, request: StoreRequest, data: bytes) -> int:
    """Store the data set as received, behind a file meta header, without decoding it."""
    header = file_header(request.sop_class_uid, request.sop_instance_uid, request.transfer_syntax_uid)
    origin = Origin(source="DicomProtocol", remote_ip=peer.ip, remote_aet=peer.calling_aet, called_aet=peer.called_aet)
    try:
        server.isengard.ingest.store(header + data, origin)
    except IsengardError as exc:
        log.error("C-STORE from %s: instance %s not stored: %s", peer, request.sop_instance_uid, exc)
        return OUT_OF_RESOURCES
    return SUCCESS


SERVICES: tuple[Service, ...] = (
    Service(evt.EVT_C_ECHO, _echo, {Verification: Request.ECHO}),
    Service(evt.EVT_C_STORE, _store),
    Service(evt.EVT_C_FIND, handle_find, FIND_SYNTAXES),
    Service(evt.EVT_C_MOVE, serve_move, MOVE_SYNTAXES),
    Service(evt.EVT_C_GET, serve_get, GET_SYNTAXES),
    Service(evt.EVT_C_FIND, serve_worklist_find, WORKLIST_SYNTAXES, worklists_enabled),
    Service(evt.EVT_N_ACTION, serve_commitment_request, N_ACTION_SYNTAXES),
    Service(evt.EVT_N_EVENT_REPORT, serve_commitment_report, N_EVENT_REPORT_SYNTAXES),
)


def _services_by_event() -> dict[evt.InterventionEvent, list[Service]]:
    grouped: dict[evt.InterventionEvent, list[Service]] = {}
    for service in SERVICES:
        grouped.setdefault(service.event, []).append(service)
    return grouped


class DicomServer:
    """The SCP. Its settings that the REST API changes (`syntaxes`) apply to new associations."""

    def __init__(self, isengard: "Isengard"):
        config = isengard.config
        self.isengard = isengard
        self.enabled = config.dicom_server_enabled
        self.syntaxes = AcceptedSyntaxes(configured_transfer_syntaxes(config.raw), config.unknown_sop_class_accepted)
        self.access = AccessControl.from_config(config, isengard.modalities)
        self.served_syntaxes = tuple(
            syntax for service in SERVICES if service.enabled(config) for syntax in service.syntaxes
        )
        # As Orthanc's DicomThreadsCount: associations beyond it wait for one to end (not refused).
        self._slots = threading.BoundedSemaphore(config.dicom_threads_count)
        self._server: ThreadedAssociationServer | None = None

    def start(self) -> None:
        """Raises ConfigurationError, naming the option and the file, if a DicomTls* file is missing or bad."""
        config = self.isengard.config
        tls = DicomTls.from_config(config)
        if tls.configured:
            tls.client_context()  # as Orthanc, check the files at start-up, even for the client only
        if not self.enabled or self._server is not None:
            return
        ssl_context = tls.server_context(config.dicom_scp_timeout or None) if config.dicom_tls_enabled else None
        ae = AE(config.dicom_aet)
        ae.maximum_pdu_size = config.maximum_pdu_length
        ae.maximum_associations = MAXIMUM_ASSOCIATIONS
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = config.dicom_scp_timeout
        ae.add_supported_context(Verification)  # a placeholder: each association gets its own contexts
        handlers: list = [
            TCP_NODELAY_HANDLER, (evt.EVT_REQUESTED, self._negotiate), (evt.EVT_CONN_CLOSE, self._release_slot)
        ]
        handlers += [(event, self._serve, [services]) for event, services in _services_by_event().items()]
        if ssl_context:
            handlers.append(TLS_HANDSHAKE_HANDLER)
        self._server = ae.start_server(
            ("0.0.0.0", config.dicom_port), block=False, evt_handlers=handlers, ssl_context=ssl_context
        )
        # pynetdicom's server loop runs a full gc.collect() every 60 turns (30 s when idle): 60-80 ms
        # holding the GIL over a loaded server's objects, for no garbage Python's own GC would miss.
        self._server.service_actions = lambda: None  # type: ignore[method-assign]
        log.warning(
            "DICOM server listening on port %d with AET %s%s",
            config.dicom_port, config.dicom_aet, " (DICOM TLS)" if ssl_context else "",
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.ae.shutdown()
            self._server = None

    def _negotiate(self, event: evt.Event) -> None:
        """Refuse the association, or choose the presentation contexts it may use."""
        assoc = event.assoc
        peer = Peer.of(assoc)
        refusal = self.access.refuse_association(peer.calling_aet, peer.called_aet, peer.ip)
        if refusal is not None:
            log.warning("Association from %s refused: %s", peer, refusal.reason)
            reason = CALLED_AET_NOT_RECOGNIZED if refusal.bad_called_aet else CALLING_AET_NOT_RECOGNIZED
            assoc.acse.send_reject(REJECTED_PERMANENT, SERVICE_USER, reason)
            assoc.kill()  # waits until the rejection is sent, as pynetdicom's own rejections do
            return
        self._slots.acquire()  # until an association ends, if DicomThreadsCount are under way
        assoc.holds_slot = True
        assoc.dul._idle_timer.restart()  # the time spent waiting is not the peer's idleness
        requested = [context.abstract_syntax for context in assoc.requestor.get_contexts("pcdl")]
        contexts = self.syntaxes.contexts_for(requested, self.served_syntaxes)
        assoc.acceptor.supported_contexts = with_requested_roles(contexts, assoc.requestor.role_selection)
        assoc.pdata_receiver = StoreReceiver(
            assoc,
            lambda request, data: store_received(self, peer, request, data),
            lambda: self.access.refuse_request(peer.calling_aet, peer.ip, Request.STORE) is None,
        )

    def _release_slot(self, event: evt.Event) -> None:
        if getattr(event.assoc, "holds_slot", False):
            event.assoc.holds_slot = False
            self._slots.release()

    def _serve(self, event: evt.Event, services: list[Service]) -> Any:
        abstract_syntax = event.context.abstract_syntax
        service = next((s for s in services if abstract_syntax in s.syntaxes), services[0])
        peer = Peer.of(event.assoc)
        request = service.request(abstract_syntax)
        refusal = self.access.refuse_request(peer.calling_aet, peer.ip, request)
        if refusal is None:
            return service.handle(self, event, peer)
        log.warning("%s request from %s refused: %s; aborting the association", request.value, peer, refusal.reason)
        event.assoc.abort()
        return OUT_OF_RESOURCES  # never sent: the association is aborted
