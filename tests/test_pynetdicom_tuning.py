"""The changes Isengard makes to pynetdicom's associations (network/reactor.py, network/commands.py):
same bytes and primitives as pynetdicom's own code, no lost answers, and no polling."""

import time
from io import BytesIO

import pytest
from pydicom import Dataset, FileMetaDataset
from pydicom.uid import ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.dimse_messages import C_FIND_RSP, C_STORE_RQ, C_STORE_RSP, DIMSEMessage
from pynetdicom.dimse_primitives import C_FIND, C_STORE
from pynetdicom.dsutils import decode, encode
from pynetdicom.sop_class import CTImageStorage, Verification

from conftest import free_port
from isengard.network import commands, reactor

CT = "1.2.840.10008.5.1.4.1.1.2"
FIND = "1.2.840.10008.5.1.4.1.2.2.1"


@pytest.fixture(scope="module", autouse=True)
def installed():
    reactor.install()
    commands.install()


def _response(kind: type, status: int, sop_instance: str, identifier: bytes | None) -> C_STORE | C_FIND:
    primitive = kind()
    primitive.MessageIDBeingRespondedTo = 12
    primitive.AffectedSOPClassUID = CT if kind is C_STORE else FIND
    primitive.Status = status
    if kind is C_STORE:
        primitive.AffectedSOPInstanceUID = sop_instance
    elif identifier is not None:
        primitive.Identifier = BytesIO(identifier)
    return primitive


def _pdv_lists(pdatas) -> list:
    return [pdata.presentation_data_value_list for pdata in pdatas]


@pytest.mark.parametrize("status", [0x0000, 0xB000, 0xA700, 0xFF00])
@pytest.mark.parametrize("sop_instance", ["1.2.3.4", "1.2.3.45"])  # even and odd lengths
@pytest.mark.parametrize("kind", [C_STORE, C_FIND])
@pytest.mark.parametrize("identifier_length, maximum_pdu", [(None, 16384), (40, 16384), (40_000, 16384), (40_000, 0), (4096, 4102)])
def test_responses_are_sent_as_pynetdicom_sends_them(kind, status, sop_instance, identifier_length, maximum_pdu):
    identifier = bytes(range(256)) * (identifier_length // 256) + b"\x08" * (identifier_length % 256) if identifier_length else None
    primitive = _response(kind, status, sop_instance, identifier)
    message = (C_STORE_RSP if kind is C_STORE else C_FIND_RSP)()
    message.primitive_to_message(primitive)
    command, data = commands._encoded_response(primitive)
    ours = _pdv_lists(commands._fragments(1, command, data, maximum_pdu))
    assert ours == _pdv_lists(message.encode_msg(1, maximum_pdu))


def _request(move_originator: bool) -> C_STORE:
    primitive = C_STORE()
    primitive.MessageID = 7
    primitive.AffectedSOPClassUID = CT
    primitive.AffectedSOPInstanceUID = generate_uid()
    primitive.Priority = 2
    if move_originator:
        primitive.MoveOriginatorApplicationEntityTitle = "MOVER"
        primitive.MoveOriginatorMessageID = 99
    primitive.DataSet = BytesIO(b"\x08\x00")
    return primitive


def _received(primitive: C_STORE) -> C_STORE_RQ:
    sent = C_STORE_RQ()
    sent.primitive_to_message(primitive)
    encoded = encode(sent.command_set, True, True)
    assert commands._command_elements(encoded) is not None  # read by hand, not by pynetdicom
    message = C_STORE_RQ()  # as pynetdicom leaves a received message
    message.encoded_command_set = BytesIO(encoded)
    message.command_set = decode(BytesIO(encoded), True, True)
    message.data_set = primitive.DataSet
    message.context_id = 3
    return message


FIELDS = ("MessageID", "AffectedSOPClassUID", "AffectedSOPInstanceUID", "Priority",
          "MoveOriginatorApplicationEntityTitle", "MoveOriginatorMessageID", "DataSet", "_context_id")


@pytest.mark.parametrize("move_originator", [False, True])
def test_store_request_reads_as_pynetdicom_reads_it(move_originator):
    primitive = _request(move_originator)
    ours = _received(primitive).message_to_primitive()
    theirs = DIMSEMessage.message_to_primitive(_received(primitive))
    assert [getattr(ours, name) for name in FIELDS] == [getattr(theirs, name) for name in FIELDS]
    assert ours.MoveOriginatorApplicationEntityTitle == ("MOVER" if move_originator else None)


@pytest.fixture
def scp():
    ae = AE("SCP")
    ae.add_supported_context(Verification)
    ae.add_supported_context(CTImageStorage)
    port = free_port()
    received = []
    handlers = [(evt.EVT_C_STORE, lambda event: received.append(event.request.AffectedSOPInstanceUID) or 0)]
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    yield port, received
    server.shutdown()


def _associate(port: int):
    ae = AE("SCU")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
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

