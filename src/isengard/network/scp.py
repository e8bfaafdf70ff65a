"""The DICOM server (SCP): one pynetdicom application entity on DicomPort, named DicomAet.

Each DIMSE service is a `Service` of the SERVICES table: the pynetdicom event it answers,
the abstract syntaxes it serves (with the operation each is, for access control) and its
handler. A new service is one more entry. For each association, the server checks who
calls (AccessControl) and chooses the presentation contexts it accepts (AcceptedSyntaxes);
each request is then checked against the caller's permissions, and a refused one aborts
the association, as Orthanc does.
"""

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from ..errors import IsengardError
from ..ingest import Origin
from . import commands, reactor
from .access import AccessControl
from .files import file_header
from .modalities import Request
from .presentation import AcceptedSyntaxes, configured_transfer_syntaxes
from .tcp import TCP_NODELAY_HANDLER

if TYPE_CHECKING:
    from ..server import Isengard

log = logging.getLogger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # Orthanc's answer to any instance it could not store

# Association rejections (PS3.8 9.3.4): permanent, by the service user, for this reason.
REJECTED_PERMANENT, SERVICE_USER = 0x01, 0x01
CALLING_AET_NOT_RECOGNIZED, CALLED_AET_NOT_RECOGNIZED = 0x03, 0x07

# pynetdicom would otherwise format a log record of every PDU and DIMSE message it handles.
_config.LOG_HANDLER_LEVEL = "none"
reactor.install()
commands.install()


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
    access control. C-STORE's abstract syntaxes are the storage SOP classes (see AcceptedSyntaxes)."""

    event: evt.InterventionEvent
    handle: Handler
    syntaxes: Mapping[str, Request] = field(default_factory=dict)

    def request(self, abstract_syntax: str) -> Request:
        return self.syntaxes.get(abstract_syntax, Request.STORE)


def _echo(_server: "DicomServer", _event: evt.Event, _peer: Peer) -> int:
    return SUCCESS


def _store(server: "DicomServer", event: evt.Event, peer: Peer) -> int:
    """Store the dataset as received, behind a file meta header, without decoding it."""
    request = event.request
    header = file_header(request.AffectedSOPClassUID, request.AffectedSOPInstanceUID, event.context.transfer_syntax)
    origin = Origin(source="DicomProtocol", remote_ip=peer.ip, remote_aet=peer.calling_aet, called_aet=peer.called_aet)
    try:
        server.isengard.ingest.store(header + request.DataSet.getvalue(), origin)
    except IsengardError as exc:
        log.error("C-STORE from %s: instance %s not stored: %s", peer, request.AffectedSOPInstanceUID, exc)
        return OUT_OF_RESOURCES
    return SUCCESS


SERVICES: tuple[Service, ...] = (
    Service(evt.EVT_C_ECHO, _echo, {Verification: Request.ECHO}),
    Service(evt.EVT_C_STORE, _store),
)
SERVED_SYNTAXES = tuple(syntax for service in SERVICES for syntax in service.syntaxes)


class DicomServer:
    """The SCP. Its settings that the REST API changes (`syntaxes`) apply to new associations."""

    def __init__(self, isengard: "Isengard"):
        config = isengard.config
        self.isengard = isengard
        self.enabled = config.dicom_server_enabled
        self.syntaxes = AcceptedSyntaxes(configured_transfer_syntaxes(config.raw), config.unknown_sop_class_accepted)
        self.access = AccessControl.from_config(config, isengard.modalities)
        self._server: ThreadedAssociationServer | None = None

    def start(self) -> None:
        if not self.enabled or self._server is not None:
            return
        config = self.isengard.config
        ae = AE(config.dicom_aet)
        ae.maximum_pdu_size = config.maximum_pdu_length
        ae.maximum_associations = config.dicom_threads_count
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = config.dicom_scp_timeout
        ae.add_supported_context(Verification)  # a placeholder: each association gets its own contexts
        handlers: list = [TCP_NODELAY_HANDLER, (evt.EVT_REQUESTED, self._negotiate)]
        handlers += [(service.event, self._serve, [service]) for service in SERVICES]
        self._server = ae.start_server(("0.0.0.0", config.dicom_port), block=False, evt_handlers=handlers)
        log.warning("DICOM server listening on port %d with AET %s", config.dicom_port, config.dicom_aet)

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
        requested = [context.abstract_syntax for context in assoc.requestor.get_contexts("pcdl")]
        assoc.acceptor.supported_contexts = self.syntaxes.contexts_for(requested, SERVED_SYNTAXES)

    def _serve(self, event: evt.Event, service: Service) -> Any:
        peer = Peer.of(event.assoc)
        request = service.request(event.context.abstract_syntax)
        refusal = self.access.refuse_request(peer.calling_aet, peer.ip, request)
        if refusal is None:
            return service.handle(self, event, peer)
        log.warning("%s request from %s refused: %s; aborting the association", request.value, peer, refusal.reason)
        event.assoc.abort()
        return OUT_OF_RESOURCES  # never sent: the association is aborted
