"""DIMSE command sets encoded and read by hand, and messages cut into P-DATA PDUs.

pynetdicom encodes every command by building a pydicom Dataset and writing it, and turns every
received command into a primitive element by element through pydicom: each costs about 0.3-0.6 ms,
as much as a third of what storing or sending a small instance costs, or of what sending one C-FIND
answer costs. Those commands are a handful of fixed elements in implicit VR little endian, so:
- the C-STORE requests Isengard sends (`store_request`) and the plain C-STORE, C-FIND, C-GET and
  C-MOVE responses of every association (no error comment, no offending element) are written here,
  and sent from the calling thread (`pdus.send`);
- a C-STORE request's elements are read straight from its encoded command set, and a plain C-STORE
  response's status from its PDU (`store_response_status`).
Anything else goes through pynetdicom unchanged. The bytes are those pynetdicom writes (tests check
them against it); only the PDUs differ: a PDU carries as many fragments as its maximum length allows.
"""

import struct
from collections.abc import Callable, Mapping

from pynetdicom import evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_FIND, C_GET, C_MOVE, C_STORE
from pynetdicom.pdu_primitives import P_DATA

from . import pdus

# Command elements (PS3.7 E.1) by element number, group 0000.
GROUP_LENGTH, AFFECTED_SOP_CLASS, COMMAND_FIELD, MESSAGE_ID, RESPONDED_ID = 0x0000, 0x0002, 0x0100, 0x0110, 0x0120
PRIORITY, DATA_SET_TYPE, STATUS, AFFECTED_SOP_INSTANCE = 0x0700, 0x0800, 0x0900, 0x1000
SUB_OPERATIONS = (0x1020, 0x1021, 0x1022, 0x1023)  # remaining, completed, failed, warning
MOVE_ORIGINATOR_AET, MOVE_ORIGINATOR_ID = 0x1030, 0x1031

# The elements encoded and read here: the parameter of pynetdicom's primitives that holds each.
PARAMETERS = {
    AFFECTED_SOP_CLASS: "AffectedSOPClassUID",
    MESSAGE_ID: "MessageID",
    RESPONDED_ID: "MessageIDBeingRespondedTo",
    PRIORITY: "Priority",
    STATUS: "Status",
    AFFECTED_SOP_INSTANCE: "AffectedSOPInstanceUID",
    0x1020: "NumberOfRemainingSuboperations",
    0x1021: "NumberOfCompletedSuboperations",
    0x1022: "NumberOfFailedSuboperations",
    0x1023: "NumberOfWarningSuboperations",
    MOVE_ORIGINATOR_AET: "MoveOriginatorApplicationEntityTitle",
    MOVE_ORIGINATOR_ID: "MoveOriginatorMessageID",
}
UI_ELEMENTS = frozenset({AFFECTED_SOP_CLASS, AFFECTED_SOP_INSTANCE})
AE_ELEMENTS = frozenset({MOVE_ORIGINATOR_AET})  # the other elements of PARAMETERS are US
US_LENGTH = 2

STORE_REQUEST, STORE_RESPONSE = 0x0001, 0x8001
STORE_REQUEST_ELEMENTS = (AFFECTED_SOP_CLASS, MESSAGE_ID, PRIORITY, AFFECTED_SOP_INSTANCE, MOVE_ORIGINATOR_AET,
                          MOVE_ORIGINATOR_ID)
MEDIUM_PRIORITY = 0  # the priority of Orthanc's C-STOREs
RESPONSE_ELEMENTS = (AFFECTED_SOP_CLASS, RESPONDED_ID, STATUS)
# The responses encoded here: their command field and elements (besides the field and the data set type).
RESPONSES: dict[type, tuple[int, tuple[int, ...]]] = {
    C_STORE: (STORE_RESPONSE, (*RESPONSE_ELEMENTS, AFFECTED_SOP_INSTANCE)),
    C_FIND: (0x8020, RESPONSE_ELEMENTS),
    C_GET: (0x8010, (*RESPONSE_ELEMENTS, *SUB_OPERATIONS)),
    C_MOVE: (0x8021, (*RESPONSE_ELEMENTS, *SUB_OPERATIONS)),
}
DATA_SET_PRESENT, NO_DATA_SET = 0x0001, 0x0101  # as pynetdicom writes CommandDataSetType
NO_DATA_SET_VALUE = NO_DATA_SET.to_bytes(2, "little")  # as encoded (US)

# Message control headers (PS3.8 E.2) of a fragment that is not the last one, and of the last one.
COMMAND_HEADERS, DATA_HEADERS = (b"\x01", b"\x03"), (b"\x00", b"\x02")
PDV_ITEM_HEADER = 5  # item length (4 bytes) and context ID, before the message control header
PDV_HEADER_LENGTH = PDV_ITEM_HEADER + 1

CommandValue = str | int | None  # None: the element is left out, as pynetdicom leaves out unset parameters


# -- encoding ------------------------------------------------------------------------------------


# Elements in implicit VR little endian: tag (group 0000), value length, value.
_HEADER = struct.Struct("<HHI").pack
_US_ELEMENT = struct.Struct("<HHIH").pack
_GROUP_LENGTH_ELEMENT = struct.Struct("<HHII").pack  # UL


def _us_element(number: int, value: int) -> bytes:
    return _US_ELEMENT(0, number, US_LENGTH, value)


def _text_element(padding: bytes) -> Callable[[int, str], bytes]:
    """Elements of text padded to an even length, as pydicom pads them; a character out of ASCII,
    which pynetdicom refuses, becomes "?"."""

    def element(number: int, value: str) -> bytes:
        text = value.encode("ascii", "replace")
        if len(text) % 2:
            text += padding
        return _HEADER(0, number, len(text)) + text

    return element


# How each element is encoded, US for those not listed.
ENCODERS = {**{number: _text_element(b"\0") for number in UI_ELEMENTS},
            **{number: _text_element(b" ") for number in AE_ELEMENTS}}


def command_set(command_field: int, values: Mapping[int, CommandValue], with_data_set: bool) -> bytes:
    """An encoded command set: the group length, then the elements given a value, in tag order."""
    data_set_type = DATA_SET_PRESENT if with_data_set else NO_DATA_SET
    elements = {**values, COMMAND_FIELD: command_field, DATA_SET_TYPE: data_set_type}
    body = b"".join([ENCODERS.get(number, _us_element)(number, value) for number, value in sorted(elements.items())
                     if value is not None])
    return _GROUP_LENGTH_ELEMENT(0, GROUP_LENGTH, 4, len(body)) + body


def store_request(
    sop_class_uid: str, sop_instance_uid: str, message_id: int, move_originator: tuple[str, int] | None = None
) -> bytes:
    """The command set of a C-STORE request with a data set; `move_originator`: the AET and message ID
    of the C-MOVE it serves."""
    originator_aet, originator_id = move_originator or (None, None)
    values = {AFFECTED_SOP_CLASS: sop_class_uid, MESSAGE_ID: message_id, PRIORITY: MEDIUM_PRIORITY,
              AFFECTED_SOP_INSTANCE: sop_instance_uid, MOVE_ORIGINATOR_AET: originator_aet,
              MOVE_ORIGINATOR_ID: originator_id}
    return command_set(STORE_REQUEST, values, with_data_set=True)


def response_message(primitive: object) -> tuple[bytes, bytes] | None:
    """The command set and data set (an identifier, or nothing) of a response encoded here; None for
    the messages pynetdicom encodes."""
    known = RESPONSES.get(type(primitive))
    if (known is None or primitive.MessageIDBeingRespondedTo is None  # type: ignore[attr-defined]
            or primitive.ErrorComment is not None  # type: ignore[attr-defined]
            or primitive.OffendingElement is not None):  # type: ignore[attr-defined]
        return None
    command_field, numbers = known
    values = {number: getattr(primitive, PARAMETERS[number]) for number in numbers}
    # pynetdicom marks a data set present whenever an identifier is set, even an empty one.
    identifier = None if type(primitive) is C_STORE else primitive.Identifier  # type: ignore[attr-defined]
    data = identifier.getvalue() if identifier is not None else b""
    return command_set(command_field, values, with_data_set=identifier is not None), data


# -- fragmenting ---------------------------------------------------------------------------------


def pdata_pdus(context_id: int, command: bytes, data: bytes, maximum_length: int) -> list[P_DATA]:
    """A message as P-DATA PDUs of at most the peer's maximum length (0: no limit). The fragments are
    pynetdicom's (the command, then the data set, each in pieces that fill a PDU), but where pynetdicom
    sends a PDU per fragment, a PDU here takes the following fragments while they fit: a small message
    goes in one PDU (one wake-up of the DUL thread) instead of two."""
    size = maximum_length - PDV_HEADER_LENGTH if maximum_length else 0
    fragments = _fragments(command, COMMAND_HEADERS, size) + (_fragments(data, DATA_HEADERS, size) if data else [])
    pdus: list[P_DATA] = []
    room = 0
    for fragment in fragments:
        item_length = PDV_ITEM_HEADER + len(fragment)
        if not pdus or (maximum_length and item_length > room):
            pdus.append(P_DATA())
            room = maximum_length
        pdus[-1].presentation_data_value_list.append((context_id, fragment))
        room -= item_length
    return pdus


def _fragments(stream: bytes, headers: tuple[bytes, bytes], size: int) -> list[bytes]:
    """The stream in pieces of `size` bytes (0: whole), each behind its message control header."""
    if not size or len(stream) <= size:
        return [headers[1] + stream]
    last = (len(stream) - 1) // size * size
    return [headers[0] + stream[offset:offset + size] for offset in range(0, last, size)] + [headers[1] + stream[last:]]


_send_with_pynetdicom = DIMSEServiceProvider.send_msg


def _send_msg(self: DIMSEServiceProvider, primitive, context_id: int) -> None:
    message = None if self.assoc.get_handlers(evt.EVT_DIMSE_SENT) else response_message(primitive)
    if message is None:
        _send_with_pynetdicom(self, primitive, context_id)
        return
    pdus.send(self.assoc, pdata_pdus(context_id, *message, self.maximum_pdu_size))


# -- reading -------------------------------------------------------------------------------------


def command_elements(command: bytes) -> dict[int, bytes] | None:
    """The elements of an encoded command set by element number; None if it is not only well-formed
    group 0000 elements, or if a value read here is text with several values or out of ASCII, or US of
    the wrong length: pynetdicom reads those."""
    elements = {}
    offset = 0
    while offset < len(command):
        if offset + 8 > len(command):
            return None
        group, number, length = struct.unpack_from("<HHI", command, offset)
        value = command[offset + 8:offset + 8 + length]
        if group != 0 or len(value) != length or not _readable(number, value):
            return None
        elements[number] = value
        offset += 8 + length
    return elements


def _readable(number: int, value: bytes) -> bool:
    if number in UI_ELEMENTS or number in AE_ELEMENTS:
        return value.isascii() and b"\\" not in value
    return number not in PARAMETERS or len(value) == US_LENGTH


def read(number: int, value: bytes) -> str | int:
    if number in UI_ELEMENTS:
        return value.rstrip(b"\0 ").decode("ascii")
    if number in AE_ELEMENTS:
        return value.decode("ascii").strip()
    return int.from_bytes(value, "little")


def store_response_status(values: list[tuple[int, bytes]]) -> int | None:
    """The status of a C-STORE response without data set that came whole in one PDV (as pynetdicom
    lists them: context ID, message control header and fragment); else None."""
    if len(values) != 1 or values[0][1][:1] != COMMAND_HEADERS[1]:
        return None
    elements = command_elements(values[0][1][1:])
    if (elements is None or elements.get(COMMAND_FIELD) != STORE_RESPONSE.to_bytes(US_LENGTH, "little")
            or elements.get(DATA_SET_TYPE) != NO_DATA_SET_VALUE or STATUS not in elements):
        return None
    return int(read(STATUS, elements[STATUS]))


_read_with_pynetdicom = C_STORE_RQ.message_to_primitive


def _store_request_primitive(self: C_STORE_RQ) -> C_STORE:
    elements = command_elements(self.encoded_command_set.getvalue())
    if elements is None:
        return _read_with_pynetdicom(self)
    primitive = C_STORE()
    for number in STORE_REQUEST_ELEMENTS:
        if number in elements:
            setattr(primitive, PARAMETERS[number], read(number, elements[number]))
    primitive.DataSet = self.data_set
    primitive._context_id = self.context_id
    primitive._dataset_path = self._data_set_path
    primitive._dataset_file = self._data_set_file
    return primitive


def install() -> None:
    """Make every association of this process read C-STORE requests and send plain responses this way."""
    DIMSEServiceProvider.send_msg = _send_msg
    C_STORE_RQ.message_to_primitive = _store_request_primitive
