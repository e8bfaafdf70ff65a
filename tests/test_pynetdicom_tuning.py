"""The changes Isengard makes to pynetdicom's associations (network/reactor.py, network/commands.py):
same bytes and primitives as pynetdicom's own code, no lost answers, and no polling.

pynetdicom's encoder is the oracle of every hand-encoded message: the fragments must be those its
`encode_msg` cuts, in PDUs that pack them greedily without exceeding the peer's maximum length.
"""

import time
from io import BytesIO

import pytest
from pydicom import Dataset, FileMetaDataset
from pydicom.uid import ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.dimse_messages import C_FIND_RSP, C_GET_RSP, C_MOVE_RSP, C_STORE_RQ, C_STORE_RSP, DIMSEMessage
from pynetdicom.dimse_primitives import C_FIND, C_GET, C_MOVE, C_STORE
from pynetdicom.dsutils import decode, encode
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelFind, Verification

from conftest import free_port
from isengard.network import commands, reactor

CT = "1.2.840.10008.5.1.4.1.1.2"
FIND = "1.2.840.10008.5.1.4.1.2.2.1"
MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
RESPONSE_MESSAGES = {C_STORE: C_STORE_RSP, C_FIND: C_FIND_RSP, C_GET: C_GET_RSP, C_MOVE: C_MOVE_RSP}
# Maximum PDU lengths: none, a command cut in pieces, the smallest DCMTK accepts, one whose fragments
# are exactly 4096 bytes, pynetdicom's and DCMTK's default, a large one.
PDU_LENGTHS = (0, 64, 4096, 4102, 16384, 65536)


@pytest.fixture(scope="module", autouse=True)
def installed():
    reactor.install()
    commands.install()


def _pdvs(pdus) -> list:
    return [pdv for pdu in pdus for pdv in pdu.presentation_data_value_list]


def _variable_length(pdu: P_DATA) -> int:
    """The length of the PDVs of a P-DATA-TF PDU, which the peer's maximum length bounds."""
    encoded = P_DATA_TF()
    encoded.from_primitive(pdu)
    return len(encoded.encode()) - 6  # PDU type, reserved byte, PDU length


def assert_sent_as_pynetdicom_sends(message: DIMSEMessage, command: bytes, data: bytes, maximum_pdu: int) -> None:
    """`command` and `data` are the message as pynetdicom encodes it, and `pdata_pdus` cuts them as
    it does, in as few PDUs as the maximum length allows."""
    assert command == encode(message.command_set, True, True)
    theirs = list(message.encode_msg(1, maximum_pdu))
    ours = commands.pdata_pdus(1, command, data, maximum_pdu)
    assert _pdvs(ours) == _pdvs(theirs)
    if not maximum_pdu:
        assert len(ours) == 1
        return
    lengths = [_variable_length(pdu) for pdu in ours]
    assert max(lengths) <= maximum_pdu
    for length, following in zip(lengths, ours[1:]):  # the next fragment did not fit
        assert length + 5 + len(following.presentation_data_value_list[0][1]) > maximum_pdu


def _identifier(length: int | None) -> BytesIO | None:
    return None if length is None else BytesIO((bytes(range(256)) * (length // 256 + 1))[:length])


def _response(kind: type, status: int, identifier: BytesIO | None, counts: tuple | None) -> object:
    primitive = kind()
    primitive.MessageIDBeingRespondedTo = 12
    primitive.AffectedSOPClassUID = {C_STORE: CT, C_FIND: FIND}.get(kind, MOVE)
    primitive.Status = status
    if kind is C_STORE:
        primitive.AffectedSOPInstanceUID = "1.2.3.45"  # odd length
    else:
        primitive.Identifier = identifier
    if counts is not None:
        (primitive.NumberOfRemainingSuboperations, primitive.NumberOfCompletedSuboperations,
         primitive.NumberOfFailedSuboperations, primitive.NumberOfWarningSuboperations) = counts
    return primitive


def _pynetdicoms(primitive) -> DIMSEMessage:
    message = RESPONSE_MESSAGES[type(primitive)]()
    message.primitive_to_message(primitive)
    return message


@pytest.mark.parametrize("maximum_pdu", PDU_LENGTHS)
@pytest.mark.parametrize("identifier_length", [None, 0, 40, 40_000])  # 0: an empty identifier, still "present"
@pytest.mark.parametrize("status", [0x0000, 0xB000, 0xA700, 0xFF00])
@pytest.mark.parametrize("kind", [C_STORE, C_FIND])
def test_store_and_find_responses_are_sent_as_pynetdicom_sends_them(kind, status, identifier_length, maximum_pdu):
    primitive = _response(kind, status, _identifier(identifier_length), None)
    assert_sent_as_pynetdicom_sends(_pynetdicoms(primitive), *commands.response_message(primitive), maximum_pdu)


@pytest.mark.parametrize("maximum_pdu", PDU_LENGTHS)
@pytest.mark.parametrize("status, counts, identifier_length", [
    (0xFF00, (3, 1, 2, 65535), None),  # pending
    (0xFF00, (0, 0, 0, 0), None),
    (0x0000, (None, 4, 0, 0), None),  # final: no remaining count
    (0xB000, (None, 1, 2, 0), 300),  # with the failed SOP Instance UID list
    (0xA801, None, None),  # move destination unknown: no count at all
    (0xFE00, (2, 1, 0, 0), 0),
])
@pytest.mark.parametrize("kind", [C_MOVE, C_GET])
def test_move_and_get_responses_are_sent_as_pynetdicom_sends_them(kind, status, counts, identifier_length, maximum_pdu):
    primitive = _response(kind, status, _identifier(identifier_length), counts)
    assert_sent_as_pynetdicom_sends(_pynetdicoms(primitive), *commands.response_message(primitive), maximum_pdu)


@pytest.mark.parametrize("kind", [C_STORE, C_FIND, C_MOVE])
def test_responses_with_an_error_comment_or_requests_are_left_to_pynetdicom(kind):
    primitive = _response(kind, 0xC000, None, None)
    primitive.ErrorComment = "failed"
    assert commands.response_message(primitive) is None
    request = kind()
    request.MessageID, request.AffectedSOPClassUID = 3, CT
    assert commands.response_message(request) is None


def _request(move_originator: tuple[str, int] | None, sop_instance: str = "1.2.3.4") -> C_STORE:
    primitive = C_STORE()
    primitive.MessageID = 7
    primitive.AffectedSOPClassUID = CT
    primitive.AffectedSOPInstanceUID = sop_instance
    primitive.Priority = 0
    if move_originator is not None:
        primitive.MoveOriginatorApplicationEntityTitle, primitive.MoveOriginatorMessageID = move_originator
    primitive.DataSet = BytesIO(b"\x08\x00" * 10)
    return primitive


@pytest.mark.parametrize("maximum_pdu", PDU_LENGTHS)
@pytest.mark.parametrize("data_length", [2, 9000, 100_001])
@pytest.mark.parametrize("move_originator", [None, ("MOVER", 7), ("MOVESCU", 65535), ("A" * 16, 1)])
@pytest.mark.parametrize("sop_instance", ["1.2.3.4", "1.2.3.45"])  # even and odd lengths
def test_store_requests_are_sent_as_pynetdicom_sends_them(sop_instance, move_originator, data_length, maximum_pdu):
    primitive = _request(move_originator, sop_instance)
    primitive.DataSet = _identifier(data_length)
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    command = commands.store_request(CT, sop_instance, 7, move_originator)
    assert_sent_as_pynetdicom_sends(message, command, primitive.DataSet.getvalue(), maximum_pdu)


def test_a_small_message_takes_one_pdu():
    command = commands.store_request(CT, "1.2.3.4", 1)
    assert len(commands.pdata_pdus(1, command, b"\0" * 9000, 16384)) == 1  # pynetdicom sends two


@pytest.mark.parametrize("status", [0x0000, 0xB007, 0xA700])
def test_store_response_status_reads_pynetdicoms_responses(status):
    response = _response(C_STORE, status, None, None)
    [pdata] = _pynetdicoms(response).encode_msg(1, 16384)
    assert commands.store_response_status(pdata.presentation_data_value_list) == status
    [command, _data] = _pynetdicoms(_response(C_FIND, status, _identifier(10), None)).encode_msg(1, 16384)
    assert commands.store_response_status(command.presentation_data_value_list) is None  # not a C-STORE response


def _received(primitive: C_STORE, decoded: bool) -> C_STORE_RQ:
    """The message as pynetdicom leaves a received one; without its decoded command set, only a
    reader of the encoded one can make a primitive of it."""
    sent = C_STORE_RQ()
    sent.primitive_to_message(primitive)
    encoded = encode(sent.command_set, True, True)
    message = C_STORE_RQ()
    message.encoded_command_set = BytesIO(encoded)
    message.command_set = decode(BytesIO(encoded), True, True) if decoded else None
    message.data_set = primitive.DataSet
    message.context_id = 3
    return message


FIELDS = ("MessageID", "AffectedSOPClassUID", "AffectedSOPInstanceUID", "Priority",
          "MoveOriginatorApplicationEntityTitle", "MoveOriginatorMessageID", "DataSet", "_context_id")


@pytest.mark.parametrize("move_originator", [None, ("MOVER", 99)])
def test_store_request_reads_as_pynetdicom_reads_it(move_originator):
    primitive = _request(move_originator)
    ours = _received(primitive, decoded=False).message_to_primitive()
    theirs = DIMSEMessage.message_to_primitive(_received(primitive, decoded=True))
    assert [getattr(ours, name) for name in FIELDS] == [getattr(theirs, name) for name in FIELDS]
    assert ours.MoveOriginatorApplicationEntityTitle == theirs.MoveOriginatorApplicationEntityTitle


def test_store_requests_with_several_values_are_read_by_pynetdicom():
    message = _received(_request(None), decoded=True)
    message.encoded_command_set = BytesIO(message.encoded_command_set.getvalue().replace(b"1.2.3.4", b"1.2\\3.4"))
    message.command_set.AffectedSOPInstanceUID = ["1.2", "3.4"]
    assert message.message_to_primitive().AffectedSOPInstanceUID == "1.2"  # pynetdicom's reading: the first value


def _answer(size: int) -> Dataset:
    answer = Dataset()
    answer.QueryRetrieveLevel = "STUDY"
    if size:
        answer.TextValue = "x" * size  # UT: no limit of length
    return answer


ANSWERS = [_answer(size) for size in (0, 10, 5000, 20_000)]  # bigger than the PDUs of the requester


@pytest.fixture
def scp():
    ae = AE("SCP")
    ae.add_supported_context(Verification)
    ae.add_supported_context(CTImageStorage)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    port = free_port()
    received = []
    handlers = [(evt.EVT_C_STORE, lambda event: received.append(event.request.AffectedSOPInstanceUID) or 0),
                (evt.EVT_C_FIND, lambda event: ((0xFF00, answer) for answer in ANSWERS))]
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    yield port, received
    server.shutdown()


def _associate(port: int, maximum_pdu: int = 16382):
    ae = AE("SCU")
    ae.maximum_pdu_size = maximum_pdu
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port)
    assert assoc.is_established
    return assoc


def test_back_to_back_requests_all_get_their_answers(scp):
    """A request sent right after the previous answer must not have its own answer taken by the
    reactor (pynetdicom's checkpoint race, made likely by prompt wake-ups)."""
    port, received = scp
    for _round in range(3):
        assoc = _associate(port)
        statuses = [assoc.send_c_echo().Status for _ in range(300)]
        assert statuses == [0] * 300 and assoc.is_established
        assoc.release()
        assert assoc.is_released


def test_stores_on_one_association(scp):
    port, received = scp
    assoc = _associate(port)
    uids = []
    for _ in range(50):
        dataset = Dataset()
        dataset.SOPClassUID = CT
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta = FileMetaDataset()
        dataset.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        uids.append(dataset.SOPInstanceUID)
        assert assoc.send_c_store(dataset).Status == 0
    assoc.release()
    assert received == uids


@pytest.mark.parametrize("maximum_pdu", [0, 4096, 16382])
def test_find_answers_in_packed_pdus_arrive_whole(scp, maximum_pdu):
    port, _received = scp
    assoc = _associate(port, maximum_pdu)
    responses = list(assoc.send_c_find(_answer(0), StudyRootQueryRetrieveInformationModelFind))
    assoc.release()
    assert [status.Status for status, _answer in responses] == [0xFF00] * len(ANSWERS) + [0]
    assert [answer for _status, answer in responses[:-1]] == ANSWERS


def test_idle_association_does_not_poll(scp, monkeypatch):
    """pynetdicom alone wakes each reactor thread a thousand times a second."""
    port, _received = scp
    waits = {"dul": 0, "association": 0}
    wait_dul, wait_association = reactor._wait_for_dul_work, reactor._wait_for_association_work

    def counting(kind, wait):
        def counted(thread):
            waits[kind] += 1
            wait(thread)
        return counted

    monkeypatch.setattr(reactor, "_wait_for_dul_work", counting("dul", wait_dul))
    monkeypatch.setattr(reactor, "_wait_for_association_work", counting("association", wait_association))
    assoc = _associate(port)
    time.sleep(0.2)
    waits.update(dul=0, association=0)
    time.sleep(1.0)
    idle = dict(waits)
    assoc.release()
    # Two DUL threads and two reactor threads wait, each at most once per TIMER_RESOLUTION.
    most = 2 * 1.5 / reactor.TIMER_RESOLUTION
    assert 0 < idle["dul"] <= most and 0 < idle["association"] <= most, idle

