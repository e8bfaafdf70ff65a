"""Associations that Isengard opens toward remote modalities (DICOM client, SCU)."""

import logging
import ssl
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from pydicom import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, build_context, evt
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, Verification

from ..config import Configuration
from ..errors import ErrorCode, IsengardError
from . import commands, reactor
from .modalities import Modality
from .tcp import TCP_NODELAY_HANDLER
from .tls import DicomTls, TlsError

log = logging.getLogger(__name__)
reactor.install()
commands.install()

SUCCESS = 0x0000
PENDING = (0xFF00, 0xFF01)
MAX_AET_LENGTH = 16


class NetworkError(IsengardError):
    """A DICOM exchange with a remote node failed; reported with Orthanc's error code."""

    code = ErrorCode.NETWORK_PROTOCOL

    def __init__(self, details: str):
        super().__init__(self.code, details)


class NoPresentationContext(NetworkError):
    """The modality accepted the association but none of the presentation contexts proposed."""


class FindUnavailable(NetworkError):
    code = ErrorCode.NO_CFIND_HANDLER


@dataclass(frozen=True)
class ScuSettings:
    """What the associations toward every modality share, unless the modality overrides it."""

    local_aet: str
    timeout: int  # seconds: connection, negotiation, and each DIMSE exchange
    maximum_pdu_length: int
    tls: DicomTls = DicomTls()  # toward the modalities with "UseDicomTls"

    @classmethod
    def from_config(cls, config: Configuration) -> "ScuSettings":
        return cls(config.dicom_aet, config.dicom_scu_timeout, config.maximum_pdu_length, DicomTls.from_config(config))


def _describe(modality: Modality) -> str:
    return f'AET "{modality.aet}" at {modality.host}:{modality.port}'


def associate(
    modality: Modality, settings: ScuSettings, contexts: Sequence[PresentationContext], timeout: int = 0,
    *, roles: Sequence[SCP_SCU_RoleSelectionNegotiation] = (), handlers: Sequence[tuple] = (),
) -> Association:
    """An established association; NetworkError saying why there is none.
    The timeout is `timeout`, else the modality's, else DicomScuTimeout. `roles` are the SCP/SCU
    role selections proposed (C-GET), `handlers` more pynetdicom event handlers (its C-STOREs)."""
    connected: list[bool] = []
    evt_handlers = [TCP_NODELAY_HANDLER, (evt.EVT_CONN_OPEN, lambda _event: connected.append(True)), *handlers]
    try:
        ae = AE((modality.local_aet or settings.local_aet)[:MAX_AET_LENGTH])  # longer AETs are cut, as in Orthanc
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = (
            timeout or modality.timeout or settings.timeout
        )
        assoc = ae.associate(
            modality.host, modality.port, list(contexts), ae_title=modality.aet[:MAX_AET_LENGTH],
            max_pdu=settings.maximum_pdu_length, evt_handlers=evt_handlers, tls_args=_tls_args(modality, settings),
            ext_neg=list(roles) or None,
        )
    except ValueError as exc:  # an AET that pynetdicom refuses (empty, forbidden characters)
        raise NetworkError(f"Cannot associate with {_describe(modality)}: {exc}") from None
    except OSError as exc:  # the host name does not resolve
        raise NetworkError(f"Cannot reach {_describe(modality)}: {exc.strerror or exc}") from None
    if assoc.is_established:
        return assoc
    if assoc.is_rejected:
        reply = assoc.acceptor.primitive
        raise NetworkError(f"{_describe(modality)} rejected the association ({reply.reason_str if reply else ''})")
    if not connected:  # with DICOM TLS, also when the handshake failed
        transport = "DICOM TLS" if modality.use_dicom_tls else "TCP"
        raise NetworkError(f"Cannot open a {transport} connection to {_describe(modality)}")
    reply = assoc.acceptor.primitive
    if reply is not None and reply.result == 0x00:  # pynetdicom aborts an association without contexts
        raise NoPresentationContext(f"{_describe(modality)} accepted none of the presentation contexts proposed")
    raise NetworkError(f"{_describe(modality)} aborted the association request, or did not answer it in time")


def _tls_args(modality: Modality, settings: ScuSettings) -> tuple[ssl.SSLContext, str] | None:
    """The files are read for each association: renewed certificates apply without a restart."""
    if not modality.use_dicom_tls:
        return None
    try:
        return settings.tls.client_context(), modality.host
    except TlsError as exc:  # a configuration fault, not the client's: Orthanc answers 500
        raise IsengardError(exc.code, f"DICOM TLS toward {_describe(modality)}: {exc}", http_status=500) from None


@contextmanager
def association(
    modality: Modality, settings: ScuSettings, contexts: Sequence[PresentationContext], timeout: int = 0,
    *, roles: Sequence[SCP_SCU_RoleSelectionNegotiation] = (), handlers: Sequence[tuple] = (),
) -> Iterator[Association]:
    assoc = associate(modality, settings, contexts, timeout, roles=roles, handlers=handlers)
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def echo(modality: Modality, settings: ScuSettings, timeout: int = 0, check_find: bool = False) -> None:
    """C-ECHO, then optionally a C-FIND that matches nothing, to check that the modality
    answers queries from this AET too."""
    contexts = [build_context(Verification)]
    if check_find:
        contexts.append(build_context(StudyRootQueryRetrieveInformationModelFind))
    with association(modality, settings, contexts, timeout) as assoc:
        _check_status("C-ECHO", modality, assoc.send_c_echo())
        if check_find:
            _find_nothing(assoc, modality)


def _check_status(operation: str, modality: Modality, response: Dataset, accepted: Sequence[int] = (SUCCESS,)) -> None:
    if "Status" not in response:  # pynetdicom's answer to an abort, a timeout or a broken connection
        raise NetworkError(f"{operation} to {_describe(modality)}: no answer (aborted or timed out)")
    if response.Status not in accepted:
        raise NetworkError(f"{operation} to {_describe(modality)}: failed with status 0x{response.Status:04X}")


def _find_nothing(assoc: Association, modality: Modality) -> None:
    if not any(cx.abstract_syntax == StudyRootQueryRetrieveInformationModelFind for cx in assoc.accepted_contexts):
        raise FindUnavailable(f"Remote AET is {modality.aet}")
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = generate_uid()  # a fresh UID: no study matches it
    for status, _identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
        _check_status("C-FIND", modality, status, (SUCCESS, *PENDING))
