"""P-DATA PDUs read and written by Isengard itself, around pynetdicom's DUL thread.

pynetdicom turns each PDU into objects and runs it through its state machine and its DIMSE
assembler, and sends each PDU by queueing it to the DUL thread, which encodes it. For the messages
that make up the bulk of a transfer (a C-STORE request and its response), that costs more than the
work they carry. So, once an association is established:
- the DUL thread hands each P-DATA PDU it reads to the association's `pdata_receiver`, if it has
  one, and gives pynetdicom only what the receiver returns (see StoreReceiver, InstanceSender);
- `send` writes PDUs on the association's socket from the calling thread, unless pynetdicom has
  PDUs queued to send before them. Every write on the socket, and every action of pynetdicom's
  state machine (which takes a queued PDU and sends it), holds the association's send lock: PDUs
  never interleave, nor overtake one another.
Other PDUs, and every PDU before the association is established, go through pynetdicom as before.
"""

import logging
import struct
import threading
from collections.abc import Iterable
from typing import Protocol

from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.fsm import StateMachine
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import AssociationSocket

log = logging.getLogger(__name__)

P_DATA_TF = 0x04
KNOWN_PDU_TYPES = range(0x01, 0x08)
PDU_HEADER = struct.Struct(">BxL")  # type, reserved, length of the rest
PDV_ITEM = struct.Struct(">LB")  # item length (context ID and value), context ID
ESTABLISHED = "Sta6"


class PDataReceiver(Protocol):
    def receive(self, pdu: bytes) -> bytes | None:
        """Read a P-DATA PDU, in the DUL thread; return a P-DATA PDU for pynetdicom to read, if any."""


def pdv_items(pdu: bytes) -> list[bytes] | None:
    """The PDV items of a P-DATA-TF PDU, each with its length and context ID; None if malformed."""
    items = []
    offset = PDU_HEADER.size
    while offset < len(pdu):
        if offset + PDV_ITEM.size + 1 > len(pdu):
            return None
        length = int.from_bytes(pdu[offset:offset + 4], "big")
        end = offset + 4 + length
        if length < 2 or end > len(pdu):
            return None
        items.append(pdu[offset:end])
        offset = end
    return items or None


def pdv_fields(item: bytes) -> tuple[int, int, bytes]:
    """An item's context ID, message control header and fragment."""
    return item[PDV_ITEM.size - 1], item[PDV_ITEM.size], item[PDV_ITEM.size + 1:]


def pdv_value(item: bytes) -> tuple[int, bytes]:
    """An item as pynetdicom lists them: context ID, then message control header and fragment."""
    return item[PDV_ITEM.size - 1], item[PDV_ITEM.size:]


def p_data_pdu(items: list[bytes]) -> bytes:
    """A P-DATA-TF PDU of encoded PDV items."""
    body = b"".join(items)
    return PDU_HEADER.pack(P_DATA_TF, len(body)) + body


def send(assoc: Association, pdus: Iterable[P_DATA]) -> None:
    """Write P-DATA PDUs on the association's socket, from this thread (nothing once it is closed)."""
    dul = assoc.dul
    with _send_lock(assoc):
        if dul.to_provider_queue.qsize():  # they go behind the PDUs pynetdicom has still to send
            for pdata in pdus:
                dul.send_pdu(pdata)
            return
        sock = dul.socket
        if sock is None:
            return
        encoded = [p_data_pdu([PDV_ITEM.pack(len(value) + 1, context_id) + value
                               for context_id, value in pdata.presentation_data_value_list]) for pdata in pdus]
        sock.send(b"".join(encoded))


# -- the send lock -------------------------------------------------------------------------------

_LOCK_CREATION = threading.Lock()


def _send_lock(assoc: Association) -> threading.RLock:
    lock = getattr(assoc, "_isengard_send_lock", None)
    if lock is None:
        with _LOCK_CREATION:
            lock = vars(assoc).setdefault("_isengard_send_lock", threading.RLock())
    return lock


_send_with_pynetdicom = AssociationSocket.send
_act_with_pynetdicom = StateMachine.do_action


def _send_locked(self: AssociationSocket, bytestream: bytes) -> None:
    with _send_lock(self.assoc):
        _send_with_pynetdicom(self, bytestream)


def _act_locked(self: StateMachine, event: str) -> None:
    with _send_lock(self.dul.assoc):
        _act_with_pynetdicom(self, event)


# -- reading -------------------------------------------------------------------------------------

_read_with_pynetdicom = DULServiceProvider._read_pdu_data


def _receive_exactly(sock, size: int) -> bytes | None:
    """`size` bytes from the socket; None if it closes first."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    received = 0
    while received < size:
        count = sock.recv_into(view[received:])
        if not count:
            return None
        received += count
    return bytes(buffer)


def _read_pdu(self: DULServiceProvider) -> None:
    """pynetdicom's reading of the next PDU, where P-DATA goes through the association's receiver."""
    receiver: PDataReceiver | None = getattr(self.assoc, "pdata_receiver", None)
    if receiver is None or self.state_machine.current_state != ESTABLISHED:
        _read_with_pynetdicom(self)
        return
    try:
        header = _receive_exactly(self.socket.socket, PDU_HEADER.size)
        pdu_type, length = PDU_HEADER.unpack(header) if header else (None, 0)
        body = _receive_exactly(self.socket.socket, length) if pdu_type in KNOWN_PDU_TYPES else b""
    except OSError:
        header = body = None
    if header is None or body is None:
        self.event_queue.put("Evt17")  # transport closed
        return
    if pdu_type not in KNOWN_PDU_TYPES:
        log.error("Unknown PDU type 0x%02X received", pdu_type)
        self.event_queue.put("Evt19")
        return
    pdu: bytes | None = header + body
    if pdu_type == P_DATA_TF:
        pdu = receiver.receive(pdu)
        if pdu is None:
            return
    try:
        decoded, event = self._decode_pdu(bytearray(pdu))
    except Exception:
        log.exception("Unable to decode a PDU")
        self.event_queue.put("Evt19")
        return
    self.event_queue.put(event)
    self._recv_pdu.put(decoded)


def install() -> None:
    """Make the associations of this process read and write PDUs this way."""
    DULServiceProvider._read_pdu_data = _read_pdu
    AssociationSocket.send = _send_locked
    StateMachine.do_action = _act_locked
