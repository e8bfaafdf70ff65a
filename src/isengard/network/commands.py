"""C-STORE and C-FIND command sets encoded and decoded by hand.

pynetdicom encodes every command by building a pydicom Dataset and writing it, and turns every
received command into a primitive element by element through pydicom: each costs about 0.3-0.6 ms,
as much as a third of what storing a small instance costs, or of what sending one C-FIND answer
costs. Those commands are a handful of fixed elements in implicit VR little endian, so:
- a plain C-STORE or C-FIND response (no error comment, no offending element) is written directly;
- a C-STORE request's elements are read straight from its encoded command set.
Anything else goes through pynetdicom unchanged.
"""

import struct
from collections.abc import Callable, Iterator

from pynetdicom import evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_FIND, C_STORE
from pynetdicom.pdu_primitives import P_DATA

# The command field of the response to each primitive.
RESPONSE_FIELDS: dict[type, int] = {C_STORE: 0x8001, C_FIND: 0x8020}
DATA_SET_PRESENT, NO_DATA_SET = 0x0001, 0x0101  # as pynetdicom writes CommandDataSetType
# Message control headers (PS3.8 E.2): command or data set fragment, last or not.
LAST_COMMAND_FRAGMENT, DATA_FRAGMENT, LAST_DATA_FRAGMENT = b"\x03", b"\x00", b"\x02"
PDV_HEADER_LENGTH = 6  # item length, context ID, message control header


def _element(element: int, value: bytes) -> bytes:
    """A command element of group 0000: tag, length, value, in implicit VR little endian."""
    return struct.pack("<HHI", 0, element, len(value)) + value


def _uid(value: str) -> bytes:
    data = value.encode("ascii")
    return data + b"\0" if len(data) % 2 else data


def _us(value: int) -> bytes:
    return struct.pack("<H", value)


def response_command(
    command_field: int, message_id: int, sop_class: str, status: int, with_data_set: bool,
    sop_instance: str | None = None,
) -> bytes:
    """The encoded command set of a response, elements in tag order."""
    body = b"".join((
        _element(0x0002, _uid(sop_class)),
        _element(0x0100, _us(command_field)),
        _element(0x0120, _us(message_id)),
        _element(0x0800, _us(DATA_SET_PRESENT if with_data_set else NO_DATA_SET)),
        _element(0x0900, _us(status)),
        _element(0x1000, _uid(sop_instance)) if sop_instance is not None else b"",
    ))
    return _element(0x0000, struct.pack("<I", len(body))) + body


def _is_plain_response(primitive: object) -> bool:
    return (
        type(primitive) in RESPONSE_FIELDS
        and primitive.MessageIDBeingRespondedTo is not None
        and primitive.ErrorComment is None
        and primitive.OffendingElement is None
        and primitive.AffectedSOPClassUID is not None
        and (type(primitive) is not C_STORE or primitive.AffectedSOPInstanceUID is not None)
    )


def _encoded_response(primitive: C_STORE | C_FIND) -> tuple[bytes, bytes]:
    """The command set and the data set (a C-FIND answer's identifier) of a response."""
    data = primitive.Identifier.getvalue() if type(primitive) is C_FIND and primitive.Identifier else b""
    command = response_command(
        RESPONSE_FIELDS[type(primitive)], primitive.MessageIDBeingRespondedTo, primitive.AffectedSOPClassUID,
        primitive.Status, bool(data), primitive.AffectedSOPInstanceUID if type(primitive) is C_STORE else None,
    )
    return command, data


def _fragments(context_id: int, command: bytes, data: bytes, maximum_pdu: int) -> Iterator[P_DATA]:
    """The message as pynetdicom fragments it: the command in one P-DATA, then the data set in
    P-DATAs of at most `maximum_pdu` bytes (0: no limit)."""
    messages = [LAST_COMMAND_FRAGMENT + command]
    size = maximum_pdu - PDV_HEADER_LENGTH if maximum_pdu else len(data)
    pieces = [data[offset:offset + size] for offset in range(0, len(data), size)] if data else []
    messages += [DATA_FRAGMENT + piece for piece in pieces[:-1]]
    messages += [LAST_DATA_FRAGMENT + piece for piece in pieces[-1:]]
    for message in messages:
        pdata = P_DATA()
        pdata.presentation_data_value_list.append((context_id, message))
        yield pdata


_send_with_pynetdicom = DIMSEServiceProvider.send_msg


def _send_msg(self: DIMSEServiceProvider, primitive, context_id: int) -> None:
    if not _is_plain_response(primitive) or self.assoc.get_handlers(evt.EVT_DIMSE_SENT):
        _send_with_pynetdicom(self, primitive, context_id)
        return
    command, data = _encoded_response(primitive)
    if self.maximum_pdu_size and len(command) > self.maximum_pdu_size - PDV_HEADER_LENGTH:
        _send_with_pynetdicom(self, primitive, context_id)  # a command in several fragments
        return
    for pdata in _fragments(context_id, command, data, self.maximum_pdu_size):
        self.dul.send_pdu(pdata)


def _read_uid(value: bytes) -> str:
    return value.rstrip(b"\0 ").decode("ascii")


def _read_us(value: bytes) -> int:
    return int.from_bytes(value, "little")


def _read_ae(value: bytes) -> str:
    return value.decode("ascii").strip()


# The elements of a C-STORE request: the primitive's attribute each sets, and how to read it.
STORE_REQUEST_ELEMENTS: dict[int, tuple[str, Callable[[bytes], object]]] = {
    0x0002: ("AffectedSOPClassUID", _read_uid),
    0x0110: ("MessageID", _read_us),
    0x0700: ("Priority", _read_us),
    0x1000: ("AffectedSOPInstanceUID", _read_uid),
    0x1030: ("MoveOriginatorApplicationEntityTitle", _read_ae),
    0x1031: ("MoveOriginatorMessageID", _read_us),
}
US_LENGTH = 2


def _command_elements(command: bytes) -> dict[int, bytes] | None:
    """The elements of an encoded command set by element number; None if it is not only
    well-formed group 0000 elements, or if a value the fast path reads has several values."""
    elements = {}
    offset = 0
    while offset < len(command):
        if offset + 8 > len(command):
            return None
        group, element, length = struct.unpack_from("<HHI", command, offset)
        value = command[offset + 8:offset + 8 + length]
        if group != 0 or len(value) != length:
            return None
        known = STORE_REQUEST_ELEMENTS.get(element)
        if known is not None and (b"\\" in value or (known[1] is _read_us and length != US_LENGTH)):
            return None
        elements[element] = value
        offset += 8 + length
    return elements


_read_with_pynetdicom = C_STORE_RQ.message_to_primitive


def _store_request(self: C_STORE_RQ) -> C_STORE:
    elements = _command_elements(self.encoded_command_set.getvalue())
    if elements is None:
        return _read_with_pynetdicom(self)
    primitive = C_STORE()
    for element, (attribute, read) in STORE_REQUEST_ELEMENTS.items():
        if element in elements:
            setattr(primitive, attribute, read(elements[element]))
    primitive.DataSet = self.data_set
    primitive._context_id = self.context_id
    primitive._dataset_path = self._data_set_path
    primitive._dataset_file = self._data_set_file
    return primitive


def install() -> None:
    """Make every association of this process read C-STORE requests and send plain C-STORE and
    C-FIND responses this way."""
    DIMSEServiceProvider.send_msg = _send_msg
    C_STORE_RQ.message_to_primitive = _store_request
