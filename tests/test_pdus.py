"""PDUs read and written around pynetdicom (network/pdus.py): C-STORE requests read straight from
their PDUs by the server (StoreReceiver), however a peer cuts them into fragments and PDUs, beside
the messages pynetdicom still serves on the same association; PDUs sent from the calling thread.

The PDUs are written by hand on the socket of a pynetdicom association whose reactor is paused, so
that the answers can be read off its DIMSE queue.
"""

import io
import struct
import time

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_context
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.sop_class import Verification

from conftest import ServerProcess, running_isengard, sample
from isengard.network import commands, pdus
from isengard.network.sending import dataset_start

COMMAND, LAST_COMMAND, DATA, LAST_DATA = 0x01, 0x03, 0x00, 0x02  # message control headers
ECHO_REQUEST = 0x0030
SOP_CLASS = pydicom.dcmread(sample("DummyCT.dcm")).SOPClassUID  # MR Image Storage, whatever the name says
OUT_OF_RESOURCES = 0xA700


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> ServerProcess:
    with running_isengard(tmp_path_factory.mktemp("receiver"), SyncStorageArea=False) as running:
        yield running


@pytest.fixture
def assoc(server) -> Association:
    ae = AE("PYSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    contexts = [build_context(Verification), build_context(SOP_CLASS, ExplicitVRLittleEndian)]
    assoc = ae.associate("127.0.0.1", server.config["DicomPort"], contexts, ae_title="ORTHANC")
    assert assoc.is_established
    assoc._reactor_checkpoint.clear()  # the answers stay on the DIMSE queue for the test to read
    while not assoc._is_paused:
        time.sleep(0.001)
    yield assoc
    assoc._reactor_checkpoint.set()
    if assoc.is_established:
        assoc.release()


def context_id(assoc: Association, abstract_syntax: str) -> int:
    return next(cx.context_id for cx in assoc.accepted_contexts if cx.abstract_syntax == abstract_syntax)


def new_instance() -> tuple[pydicom.Dataset, bytes]:
    """A CT instance, and its data set in explicit VR little endian."""
    ds = pydicom.dcmread(sample("DummyCT.dcm"))
    ds.SOPInstanceUID = generate_uid()
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, implicit_vr=False, little_endian=True)
    return ds, buffer.getvalue()[dataset_start(buffer.getvalue()):]


def store_command(ds: pydicom.Dataset, message_id: int) -> bytes:
    return commands.store_request(ds.SOPClassUID, ds.SOPInstanceUID, message_id)


def echo_command(message_id: int) -> bytes:
    return commands.command_set(ECHO_REQUEST, {commands.AFFECTED_SOP_CLASS: Verification,
                                               commands.MESSAGE_ID: message_id}, with_data_set=False)


def echo_pdu(cid: int, message_id: int) -> P_DATA:
    pdata = P_DATA()
    pdata.presentation_data_value_list = [[cid, bytes([LAST_COMMAND]) + echo_command(message_id)]]
    return pdata


def pdu(*fragments: tuple[int, int, bytes]) -> bytes:
    """A P-DATA-TF PDU of (context ID, message control header, bytes) fragments."""
    items = b"".join(struct.pack(">LBB", len(value) + 2, cid, header) + value for cid, header, value in fragments)
    return struct.pack(">BxL", 0x04, len(items)) + items


def pieces(data: bytes, count: int) -> list[bytes]:
    size = -(-len(data) // count)
    return [data[offset:offset + size] for offset in range(0, len(data), size)]


def answers(assoc: Association, count: int) -> list:
    """The next `count` DIMSE messages the server sends."""
    received = []
    for _ in range(count):
        _, message = assoc.dimse.get_msg(block=True)
        assert message is not None, "no answer"
        received.append(message)
    return received


def stored_file(server: ServerProcess, sop_instance_uid: str) -> bytes | None:
    found = server.client.post("/tools/lookup", content=sop_instance_uid).json()
    if not found:
        return None
    return server.client.get(f"/instances/{found[0]['ID']}/file").content


def test_a_store_cut_across_pdus_anyhow_is_stored_and_answered(server, assoc):
    ds, data = new_instance()
    cid = context_id(assoc, SOP_CLASS)
    command = store_command(ds, message_id=7)
    data_pieces = pieces(data, 3)
    socket = assoc.dul.socket.socket
    socket.sendall(pdu((cid, COMMAND, command[:10])))
    socket.sendall(pdu((cid, LAST_COMMAND, command[10:]), (cid, DATA, data_pieces[0])))
    socket.sendall(pdu((cid, DATA, data_pieces[1]), (cid, LAST_DATA, data_pieces[2])))
    [response] = answers(assoc, 1)
    assert (response.MessageIDBeingRespondedTo, response.Status) == (7, 0)
    assert (response.AffectedSOPClassUID, response.AffectedSOPInstanceUID) == (ds.SOPClassUID, ds.SOPInstanceUID)
    stored = stored_file(server, ds.SOPInstanceUID)
    assert stored is not None and stored.endswith(data)
    assert pydicom.dcmread(io.BytesIO(stored)).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


def test_echoes_and_stores_on_one_association_are_all_answered(server, assoc):
    """An echo goes to pynetdicom, a store to the receiver; in separate PDUs or in one."""
    first, first_data = new_instance()
    second, second_data = new_instance()
    echo, store = context_id(assoc, Verification), context_id(assoc, SOP_CLASS)
    socket = assoc.dul.socket.socket
    socket.sendall(pdu((echo, LAST_COMMAND, echo_command(1))))
    socket.sendall(pdu((store, LAST_COMMAND, store_command(first, 2)), (store, LAST_DATA, first_data)))
    assert [(r.MessageIDBeingRespondedTo, r.Status) for r in answers(assoc, 2)] == [(1, 0), (2, 0)]
    socket.sendall(pdu((echo, LAST_COMMAND, echo_command(3)),
                       (store, LAST_COMMAND, store_command(second, 4)), (store, LAST_DATA, second_data)))
    assert sorted((r.MessageIDBeingRespondedTo, r.Status) for r in answers(assoc, 2)) == [(3, 0), (4, 0)]
    assert stored_file(server, first.SOPInstanceUID) and stored_file(server, second.SOPInstanceUID)


def test_a_store_the_pipeline_refuses_gets_orthancs_status(server, assoc):
    ds, _ = new_instance()
    del ds.StudyInstanceUID
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, implicit_vr=False, little_endian=True)
    cid = context_id(assoc, SOP_CLASS)
    data = buffer.getvalue()[dataset_start(buffer.getvalue()):]
    assoc.dul.socket.socket.sendall(pdu((cid, LAST_COMMAND, store_command(ds, 5)), (cid, LAST_DATA, data)))
    [response] = answers(assoc, 1)
    assert (response.MessageIDBeingRespondedTo, response.Status) == (5, OUT_OF_RESOURCES)
    assert stored_file(server, ds.SOPInstanceUID) is None


def test_a_store_on_the_context_of_another_sop_class_is_left_to_pynetdicom(server, assoc):
    """pynetdicom chooses the service by the command's SOP class: Isengard's handler stores it all the same."""
    ds, data = new_instance()
    cid = context_id(assoc, Verification)
    assoc.dul.socket.socket.sendall(pdu((cid, LAST_COMMAND, store_command(ds, 6)), (cid, LAST_DATA, data)))
    [response] = answers(assoc, 1)
    assert response.MessageIDBeingRespondedTo == 6
    # Stored in the context's transfer syntax (implicit VR), which does not match the bytes: refused or not,
    # the server still serves the association.
    assoc.dul.socket.socket.sendall(pdu((cid, LAST_COMMAND, echo_command(8))))
    [echo] = answers(assoc, 1)
    assert (echo.MessageIDBeingRespondedTo, echo.Status) == (8, 0)


def test_a_data_set_before_any_command_aborts_the_association(server, assoc):
    """As pynetdicom alone does: the receiver leaves what it cannot follow to pynetdicom."""
    _, data = new_instance()
    cid = context_id(assoc, SOP_CLASS)
    assoc.dul.socket.socket.sendall(pdu((cid, LAST_DATA, data)))
    deadline = time.monotonic() + 10
    while not assoc.acse.is_aborted() and time.monotonic() < deadline:  # the paused reactor would notice
        time.sleep(0.05)
    assert assoc.acse.is_aborted()
    assert server.client.get("/system").status_code == 200


def test_a_malformed_pdu_in_the_middle_of_a_store_aborts_the_association_and_stores_nothing(server, assoc):
    ds, data = new_instance()
    cid = context_id(assoc, SOP_CLASS)
    socket = assoc.dul.socket.socket
    socket.sendall(pdu((cid, LAST_COMMAND, store_command(ds, 9)), (cid, DATA, data[:100])))
    socket.sendall(struct.pack(">BxL", 0x04, 8) + struct.pack(">LBB", 1000, cid, LAST_DATA) + data[100:102])
    deadline = time.monotonic() + 10
    while not assoc.acse.is_aborted() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert assoc.acse.is_aborted()
    assert stored_file(server, ds.SOPInstanceUID) is None


def test_pdus_sent_from_a_thread_go_behind_those_pynetdicom_has_queued(server, assoc):
    cid = context_id(assoc, Verification)
    queued, direct = echo_pdu(cid, 1), echo_pdu(cid, 2)
    with pdus._send_lock(assoc):  # the DUL thread cannot send the queued PDU yet
        assoc.dul.send_pdu(queued)
        pdus.send(assoc, [direct])
    assert [r.MessageIDBeingRespondedTo for r in answers(assoc, 2)] == [1, 2]


def test_pdus_sent_from_a_thread_when_none_is_queued_are_written_at_once(server, assoc):
    cid = context_id(assoc, Verification)
    pdus.send(assoc, [echo_pdu(cid, 3)])
    assert assoc.dul.to_provider_queue.qsize() == 0
    assert [(r.MessageIDBeingRespondedTo, r.Status) for r in answers(assoc, 1)] == [(3, 0)]
