"""C-STORE requests read and answered straight from their PDUs, in the DUL thread that reads them.

Through pynetdicom, each instance received crosses two threads: the DUL thread reads its PDUs,
decodes them into objects, runs them through its state machine and assembles the DIMSE message;
the association thread then takes the message off a queue, turns it into a primitive, calls the
handler, and queues the response back to the DUL thread to encode and send. With one instance of
a few KB, that is more CPU than storing it, and two thread hand-overs per instance.

Here, on the server side, the DUL thread gives the P-DATA PDUs of established associations to
their StoreReceiver (see pdus.py). A message whose command set is a plain C-STORE request on a storage context is
assembled from its fragments, stored, and answered on the socket by the same thread. Any other
message (an echo, a find, a C-STORE pynetdicom must refuse...) is handed to pynetdicom as its
fragments came, and pynetdicom serves it as before.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass

from pynetdicom.association import Association
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

from . import commands
from .pdus import PDU_HEADER, p_data_pdu, pdv_fields, pdv_items, send
from .commands import (AFFECTED_SOP_CLASS, AFFECTED_SOP_INSTANCE, COMMAND_FIELD, DATA_SET_TYPE, MESSAGE_ID,
                       NO_DATA_SET_VALUE, RESPONDED_ID, STATUS, STORE_REQUEST, STORE_RESPONSE)

log = logging.getLogger(__name__)

COMMAND_BIT, LAST_FRAGMENT_BIT = 0x01, 0x02  # of a PDV's message control header
UNABLE_TO_PROCESS = 0xC211  # pynetdicom's answer when its handler raises


@dataclass(frozen=True)
class StoreRequest:
    context_id: int
    message_id: int
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str


Store = Callable[[StoreRequest, bytes], int]  # stores the data set, returns the response status


class StoreReceiver:
    """Reads the P-DATA PDUs of one association: serves its C-STORE requests with `store` (when
    `allowed()`), and returns the fragments of other messages, as a PDU, for pynetdicom."""

    def __init__(self, assoc: Association, store: Store, allowed: Callable[[], bool]):
        self._assoc = assoc
        self._store = store
        self._allowed = allowed
        self._bypassed = False  # after a message it could not follow, everything goes to pynetdicom
        self._items: list[bytes] = []  # PDV items of the command set being read
        self._command = bytearray()
        self._request: StoreRequest | None = None  # the C-STORE whose data set is being read
        self._data: list[bytes] = []
        self._passing = False  # passing a message's data set to pynetdicom, until its last fragment

    def receive(self, pdu: bytes) -> bytes | None:
        """Serve what this PDU completes; return the PDU of what pynetdicom must read, if any."""
        if self._bypassed:
            return pdu
        items = pdv_items(pdu)
        if items is None:  # malformed: pynetdicom says so
            return p_data_pdu(self._bypass(self._items) + [pdu[PDU_HEADER.size:]])
        passed: list[bytes] = []
        for item in items:
            passed += self._read(item)
        return p_data_pdu(passed) if passed else None

    def _read(self, item: bytes) -> list[bytes]:
        """The items to pass to pynetdicom after this one is read."""
        context_id, control, fragment = pdv_fields(item)
        is_command, is_last = bool(control & COMMAND_BIT), bool(control & LAST_FRAGMENT_BIT)
        if self._bypassed:
            return [item]
        if self._passing:
            if is_last and not is_command:
                self._passing = False
            return [item]
        if self._request is not None:
            if is_command or context_id != self._request.context_id:
                return self._bypass([item])
            self._data.append(fragment)
            if is_last:
                request, data = self._request, b"".join(self._data)
                self._request, self._data = None, []
                self._serve(request, data)
            return []
        if not is_command:
            return self._bypass([item])
        self._items.append(item)
        self._command += fragment
        if not is_last:
            return []
        return self._command_read(context_id)

    def _command_read(self, context_id: int) -> list[bytes]:
        elements = commands.command_elements(bytes(self._command))
        if elements is None:
            return self._bypass(self._items)
        items, self._items, self._command = self._items, [], bytearray()
        request = self._store_request(context_id, elements)
        if request is None:
            self._passing = elements.get(DATA_SET_TYPE) != NO_DATA_SET_VALUE
            return items
        self._request = request
        return []

    def _store_request(self, context_id: int, elements: dict[int, bytes]) -> StoreRequest | None:
        """The request, if it is a C-STORE this receiver serves."""
        if (commands.read(COMMAND_FIELD, elements.get(COMMAND_FIELD, b"")) != STORE_REQUEST
                or elements.get(DATA_SET_TYPE) == NO_DATA_SET_VALUE
                or not {AFFECTED_SOP_CLASS, AFFECTED_SOP_INSTANCE, MESSAGE_ID} <= elements.keys()):
            return None
        assoc = self._assoc
        context = assoc._accepted_cx.get(context_id)
        sop_class = commands.read(AFFECTED_SOP_CLASS, elements[AFFECTED_SOP_CLASS])
        if (context is None or context.abstract_syntax != sop_class or not context.transfer_syntax
                or sop_class in assoc.acceptor.accepted_common_extended or assoc._sent_release
                or uid_to_service_class(sop_class) is not StorageServiceClass or not self._allowed()):
            return None
        return StoreRequest(context_id, int(commands.read(MESSAGE_ID, elements[MESSAGE_ID])), str(sop_class),
                            str(commands.read(AFFECTED_SOP_INSTANCE, elements[AFFECTED_SOP_INSTANCE])),
                            str(context.transfer_syntax[0]))

    def _bypass(self, items: list[bytes]) -> list[bytes]:
        """A message out of order: pynetdicom reads the rest of the association (and refuses it)."""
        log.warning("DIMSE message out of order from %s", self._assoc.requestor.address)
        self._bypassed = True
        self._items, self._command, self._request, self._data = [], bytearray(), None, []
        return items

    def _serve(self, request: StoreRequest, data: bytes) -> None:
        try:
            status = self._store(request, data)
        except Exception:  # as pynetdicom does with an exception in a handler
            log.exception("C-STORE of %s failed", request.sop_instance_uid)
            status = UNABLE_TO_PROCESS
        values = {AFFECTED_SOP_CLASS: request.sop_class_uid, RESPONDED_ID: request.message_id, STATUS: status,
                  AFFECTED_SOP_INSTANCE: request.sop_instance_uid}
        response = commands.command_set(STORE_RESPONSE, values, with_data_set=False)
        pdus = commands.pdata_pdus(request.context_id, response, b"", self._assoc.requestor.maximum_length)
        send(self._assoc, pdus)
