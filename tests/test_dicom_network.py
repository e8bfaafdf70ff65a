"""The DICOM server (SCP) against real peers: DCMTK's echoscu/storescu and pynetdicom SCUs.

C-ECHO and C-STORE in every transfer syntax (the dataset stored as received), Orthanc's status
codes, access control, accepted transfer syntaxes and SOP classes, aborted associations, and the
options of the server (timeouts, PDU length, concurrent associations).
"""

import io
import os
import socket
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config, build_context
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import create_file_meta, write_file_meta_info
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import CTImageStorage, Verification

from conftest import SAMPLES, ServerProcess, running_isengard, sample
from isengard.network.sending import dataset_start

TRANSFER_SYNTAX_FILES = sorted((SAMPLES / "TransferSyntaxes").glob("*.dcm"))
ENCODING_FILES = sorted(p for p in (SAMPLES / "Encodings").rglob("*") if p.is_file() and p.name != "DICOMDIR")
REJECTED = 0x01  # A-ASSOCIATE-RJ result: rejected permanent
OUT_OF_RESOURCES = 0xA700


# -- helpers ------------------------------------------------------------------------------------------


def dataset_part(data: bytes) -> bytes:
    """A DICOM file without its preamble and file meta group (the whole of a bare dataset)."""
    return data[dataset_start(data):]


def same_content(stored: bytes, original: Path) -> bool:
    """Equal datasets, but for group lengths and trailing padding, which DCMTK's storescu drops."""

    def content(ds: pydicom.Dataset) -> pydicom.Dataset:
        for tag in [tag for tag in ds.keys() if tag.element == 0 or tag == 0xFFFCFFFC]:
            del ds[tag]
        return ds

    return content(pydicom.dcmread(io.BytesIO(stored))) == content(pydicom.dcmread(original))


def read_dataset(path: Path) -> pydicom.Dataset:
    """A sample as pynetdicom sends it; a bare implicit-VR dataset gets the file meta it lacks."""
    ds = pydicom.dcmread(path, force=True)
    if "TransferSyntaxUID" not in ds.file_meta:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return ds


def associate(server: ServerProcess, contexts, calling: str = "PYSCU", called: str = "ORTHANC", **kwargs) -> Association:
    ae = AE(calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    return ae.associate("127.0.0.1", server.config["DicomPort"], list(contexts), ae_title=called, **kwargs)


def file_contexts(paths: list[Path]) -> list:
    """One presentation context per file, proposing the file's own transfer syntax only."""
    return [build_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID) for ds in map(read_dataset, paths)]


def instances_by_sop_uid(server: ServerProcess) -> dict[str, str]:
    answer = server.client.get("/instances", params={"expand": ""}).json()
    return {instance["MainDicomTags"]["SOPInstanceUID"]: instance["ID"] for instance in answer}


def metadata(server: ServerProcess, instance: str) -> dict[str, str]:
    return server.client.get(f"/instances/{instance}/metadata", params={"expand": ""}).json()


def dcmtk(*args: str, nodelay: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"TCP_NODELAY": "1"} if nodelay else {})}
    return subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)


def ct_copies(folder: Path, count: int) -> list[Path]:
    """`count` small CT instances of one series, written as files."""
    folder.mkdir(parents=True, exist_ok=True)
    ds = pydicom.dcmread(sample("DummyCT.dcm"))
    ds.SeriesInstanceUID = generate_uid()
    paths = []
    for number in range(count):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = number
        paths.append(folder / f"{number:04d}.dcm")
        ds.save_as(paths[-1])
    return paths


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> ServerProcess:
    with running_isengard(tmp_path_factory.mktemp("scp"), SyncStorageArea=False) as running:
        yield running


# -- C-ECHO and C-STORE ----------------------------------------------------------------------------


def test_echo_from_echoscu_and_pynetdicom(server):
    result = dcmtk("echoscu", "127.0.0.1", str(server.config["DicomPort"]))
    assert result.returncode == 0, result.stderr
    assoc = associate(server, [build_context(Verification)])
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    assoc.release()


@pytest.fixture
def send_files_as_they_are(monkeypatch):
    """pynetdicom sends the dataset bytes of a file given by path, instead of re-encoding it."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)


def as_part10(path: Path, folder: Path) -> Path:
    """The file itself, or a bare dataset with a file meta header put before its bytes."""
    data = path.read_bytes()
    if dataset_part(data) != data:
        return path
    ds = read_dataset(path)
    buffer = io.BytesIO()
    write_file_meta_info(buffer, FileMetaDataset(create_file_meta(
        sop_class_uid=ds.SOPClassUID, sop_instance_uid=ds.SOPInstanceUID, transfer_syntax=ImplicitVRLittleEndian,
    )))
    copy = folder / path.name
    copy.write_bytes(b"\0" * 128 + b"DICM" + buffer.getvalue() + data)
    return copy


def test_store_keeps_every_transfer_syntax_and_the_bytes_received(server, send_files_as_they_are, tmp_path):
    assoc = associate(server, file_contexts(TRANSFER_SYNTAX_FILES), called="SOMEONE")
    assert assoc.is_established and not assoc.rejected_contexts
    for path in TRANSFER_SYNTAX_FILES:
        assert assoc.send_c_store(as_part10(path, tmp_path)).Status == 0, path.name
    assoc.release()

    stored = instances_by_sop_uid(server)
    for path in TRANSFER_SYNTAX_FILES:
        ds = read_dataset(path)
        instance = stored[ds.SOPInstanceUID]
        expected_metadata = {
            "TransferSyntax": ds.file_meta.TransferSyntaxUID, "SopClassUid": ds.SOPClassUID,
            "Origin": "DicomProtocol", "RemoteAET": "PYSCU", "RemoteIP": "127.0.0.1", "CalledAET": "SOMEONE",
        }
        assert expected_metadata.items() <= metadata(server, instance).items(), path.name
        stored_file = server.client.get(f"/instances/{instance}/file").content
        assert dataset_part(stored_file) == dataset_part(path.read_bytes()), path.name


# storescu proposes a compressed transfer syntax when told which one; these keep the files' own.
STORESCU_PROPOSALS = {
    "1.2.840.10008.1.2.4.50": "-xy", "1.2.840.10008.1.2.4.51": "-xx", "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt", "1.2.840.10008.1.2.4.81": "-xu", "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw", "1.2.840.10008.1.2.5": "-xr", "1.2.840.10008.1.2.1": "-xe",
}


@pytest.mark.parametrize("transfer_syntax", sorted(STORESCU_PROPOSALS))
def test_storescu_sends_in_the_transfer_syntax_of_the_file(server, transfer_syntax):
    path = SAMPLES / "TransferSyntaxes" / f"{transfer_syntax}.dcm"
    uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
    server.client.delete(f"/instances/{instances_by_sop_uid(server)[uid]}") if uid in instances_by_sop_uid(server) else None
    result = dcmtk("storescu", "-R", STORESCU_PROPOSALS[transfer_syntax], "127.0.0.1", str(server.config["DicomPort"]), str(path))
    assert result.returncode == 0, result.stderr
    instance = instances_by_sop_uid(server)[uid]
    assert metadata(server, instance)["TransferSyntax"] == transfer_syntax
    assert metadata(server, instance)["RemoteAET"] == "STORESCU"
    assert same_content(server.client.get(f"/instances/{instance}/file").content, path)


# pydicom cannot encode one Shift-JIS name back when it compares the datasets.
@pytest.mark.filterwarnings("ignore:Failed to encode value with encodings")
def test_storescu_sends_the_character_set_samples(server):
    by_transfer_syntax: dict[str, list[str]] = {}
    for path in ENCODING_FILES:
        transfer_syntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        by_transfer_syntax.setdefault(transfer_syntax, []).append(str(path))
    for transfer_syntax, paths in by_transfer_syntax.items():
        proposal = STORESCU_PROPOSALS[transfer_syntax]
        result = dcmtk("storescu", "-R", proposal, "127.0.0.1", str(server.config["DicomPort"]), *paths)
        assert result.returncode == 0, result.stderr
    stored = instances_by_sop_uid(server)
    for path in ENCODING_FILES:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        instance = stored[ds.SOPInstanceUID]
        assert metadata(server, instance)["TransferSyntax"] == ds.file_meta.TransferSyntaxUID, path.name
        assert same_content(server.client.get(f"/instances/{instance}/file").content, path), path.name
    patient = server.client.get(f"/instances/{stored[pydicom.dcmread(SAMPLES / 'Encodings/Lena-greek.dcm').SOPInstanceUID]}/patient")
    assert patient.json()["MainDicomTags"]["PatientName"] == pydicom.dcmread(SAMPLES / "Encodings/Lena-greek.dcm").PatientName


def test_store_statuses_are_orthancs(server, tmp_path):
    ds = pydicom.dcmread(sample("DummyCT.dcm"))
    ds.SOPInstanceUID = generate_uid()
    broken = pydicom.dcmread(sample("DummyCT.dcm"))
    broken.SOPInstanceUID = generate_uid()
    del broken.StudyInstanceUID  # the pipeline refuses an instance without it
    assoc = associate(server, [build_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)])
    assert assoc.send_c_store(ds).Status == 0
    assert assoc.send_c_store(ds).Status == 0  # already stored: success, as Orthanc
    assert assoc.send_c_store(broken).Status == OUT_OF_RESOURCES
    assoc.release()
    stored = instances_by_sop_uid(server)
    assert ds.SOPInstanceUID in stored and broken.SOPInstanceUID not in stored


def _partial_store(assoc: Association, ds: pydicom.Dataset, pdus_to_send: int) -> int:
    """Send the first P-DATA PDUs of a C-STORE, without its last fragment; how many there were."""
    context = assoc.accepted_contexts[0]
    request = C_STORE()
    request.MessageID = 1
    request.AffectedSOPClassUID = ds.SOPClassUID
    request.AffectedSOPInstanceUID = ds.SOPInstanceUID
    request.Priority = 2
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, implicit_vr=False, little_endian=True)
    request.DataSet = io.BytesIO(dataset_part(buffer.getvalue()))
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    pdus = []
    for primitive in message.encode_msg(context.context_id, 1024):  # small PDUs: many fragments
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        pdus.append(pdu.encode())
    sock = assoc.dul.socket.socket
    for pdu in pdus[:pdus_to_send]:
        sock.sendall(pdu)
    return len(pdus)


@pytest.mark.parametrize("ending", ["abort", "close"])
def test_association_ended_mid_transfer_stores_nothing(server, ending):
    ds = pydicom.dcmread(sample("DummyCT.dcm"))
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    assoc = associate(server, [build_context(ds.SOPClassUID, ExplicitVRLittleEndian)])
    total = _partial_store(assoc, ds, pdus_to_send=0)
    assert total > 3  # a command, and a dataset in several fragments
    _partial_store(assoc, ds, pdus_to_send=total - 1)
    time.sleep(0.2)
    if ending == "abort":
        assoc.abort()
    else:
        assoc.dul.socket.socket.shutdown(socket.SHUT_RDWR)
        assoc.kill()
    time.sleep(0.5)
    assert ds.SOPInstanceUID not in instances_by_sop_uid(server)
    retry = associate(server, [build_context(ds.SOPClassUID, ExplicitVRLittleEndian)])  # the server still serves
    assert retry.send_c_store(ds).Status == 0
    retry.release()


# -- accepted transfer syntaxes and SOP classes ------------------------------------------------------


def test_transfer_syntax_removed_through_rest_is_refused_by_new_associations(server):
    jpeg = SAMPLES / "TransferSyntaxes" / "1.2.840.10008.1.2.4.50.dcm"
    accepted = server.client.put("/tools/accepted-transfer-syntaxes", json=["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"])
    assert accepted.json() == ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"]
    try:
        assoc = associate(server, file_contexts([jpeg]) + [build_context(CTImageStorage, ExplicitVRLittleEndian)])
        assert [cx.result for cx in assoc.rejected_contexts] == [0x04]  # transfer syntax not supported
        assert len(assoc.accepted_contexts) == 1
        assoc.release()
        result = dcmtk("storescu", "-R", "-xy", "127.0.0.1", str(server.config["DicomPort"]), str(jpeg))
        assert result.returncode != 0
    finally:
        server.client.put("/tools/accepted-transfer-syntaxes", json=["*"])
    assoc = associate(server, file_contexts([jpeg]))
    assert not assoc.rejected_contexts
    assoc.release()


def test_unknown_sop_class_needs_unknown_sop_class_accepted(server):
    path = sample("UnknownSopClassUid.dcm")
    assert server.client.get("/tools/unknown-sop-class-accepted").text == "0"
    assoc = associate(server, file_contexts([path]))
    assert [cx.result for cx in assoc.rejected_contexts] == [0x03]  # abstract syntax not supported
    assoc.release()
    assert server.client.put("/tools/unknown-sop-class-accepted", content="1").status_code == 200
    try:
        assert server.client.get("/tools/unknown-sop-class-accepted").text == "1"
        assoc = associate(server, file_contexts([path]))
        assert assoc.send_c_store(path).Status == 0
        assoc.release()
    finally:
        server.client.put("/tools/unknown-sop-class-accepted", content="0")
    assert pydicom.dcmread(path).SOPInstanceUID in instances_by_sop_uid(server)


def test_verification_uses_uncompressed_syntaxes_in_orthancs_preference(server):
    proposed = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.70"]
    assoc = associate(server, [build_context(Verification, proposed), build_context(CTImageStorage, proposed)])
    accepted = {cx.abstract_syntax: cx.transfer_syntax[0] for cx in assoc.accepted_contexts}
    assert accepted == {Verification: "1.2.840.10008.1.2.2", CTImageStorage: "1.2.840.10008.1.2"}
    assoc.release()


# -- access control ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(tmp_path_factory) -> ServerProcess:
    """A server that checks called AETs and hosts, and lets only known modalities in."""
    modalities = {
        "sender": ["SENDER", "127.0.0.1", 104],
        "nostore": {"AET": "NOSTORE", "Host": "127.0.0.1", "Port": 104, "AllowStore": False},
        "noecho": {"AET": "NOECHO", "Host": "127.0.0.1", "Port": 104, "AllowEcho": False},
        "far": ["FAR", "127.0.0.2", 104],
    }
    with running_isengard(
        tmp_path_factory.mktemp("guarded"), DicomAet="GUARDED", DicomCheckCalledAet=True, DicomAlwaysAllowEcho=False,
        DicomAlwaysAllowStore=False, DicomCheckModalityHost=True, DicomModalities=modalities,
    ) as running:
        yield running


def _store_one(server: ServerProcess, calling: str, called: str = "GUARDED", **kwargs) -> Association:
    ds = pydicom.dcmread(sample("DummyCT.dcm"))
    ds.SOPInstanceUID = generate_uid()
    assoc = associate(server, [build_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)], calling, called, **kwargs)
    if assoc.is_established:
        assoc.stored = assoc.send_c_store(ds)
        assoc.sop_instance_uid = ds.SOPInstanceUID
    return assoc


def _aborted(assoc: Association) -> bool:
    """Whether the association ends aborted (pynetdicom notes it shortly after the A-ABORT)."""
    deadline = time.monotonic() + 5
    while not assoc.is_aborted and time.monotonic() < deadline:
        time.sleep(0.01)
    return assoc.is_aborted


def _rejection(assoc: Association) -> tuple[int, int, int]:
    reply = assoc.acceptor.primitive
    return reply.result, reply.result_source, reply.diagnostic


def test_wrong_called_aet_is_rejected(guarded):
    assert _rejection(_store_one(guarded, "SENDER", "ELSEWHERE")) == (REJECTED, 1, 0x07)
    result = dcmtk("echoscu", "-aet", "SENDER", "-aec", "ELSEWHERE", "127.0.0.1", str(guarded.config["DicomPort"]))
    assert "Called AE Title Not Recognized" in result.stderr, result.stderr
    assoc = _store_one(guarded, "SENDER", "guarded")  # AETs compare without case
    assert assoc.stored.Status == 0
    assoc.release()
    assert 'called AET "ELSEWHERE"' in guarded.log()


def test_unknown_calling_aet_is_rejected_when_nothing_is_always_allowed(guarded):
    assert _rejection(_store_one(guarded, "STRANGER")) == (REJECTED, 1, 0x03)
    result = dcmtk("storescu", "-aet", "STRANGER", "-aec", "GUARDED", "127.0.0.1", str(guarded.config["DicomPort"]),
                   str(sample("DummyCT.dcm")))
    assert result.returncode != 0
    assert 'Association from AET "STRANGER" on 127.0.0.1 refused' in guarded.log()


def test_operations_a_modality_may_not_do_abort_the_association(guarded):
    assoc = _store_one(guarded, "NOSTORE")
    assert "Status" not in assoc.stored and _aborted(assoc)
    assert assoc.sop_instance_uid not in instances_by_sop_uid(guarded)
    assoc = associate(guarded, [build_context(Verification)], "NOECHO", "GUARDED")
    assert "Status" not in assoc.send_c_echo() and _aborted(assoc)
    result = dcmtk("echoscu", "-aet", "NOECHO", "-aec", "GUARDED", "127.0.0.1", str(guarded.config["DicomPort"]))
    assert "Peer aborted Association" in result.stderr  # echoscu exits with 0 all the same
    assert "Store request from AET \"NOSTORE\" on 127.0.0.1 refused" in guarded.log()
    assert "Echo request from AET \"NOECHO\" on 127.0.0.1 refused" in guarded.log()


def test_modality_host_is_checked(guarded):
    assert _rejection(_store_one(guarded, "FAR")) == (REJECTED, 1, 0x03)
    assoc = _store_one(guarded, "FAR", bind_address=("127.0.0.2", 0))
    assert assoc.stored.Status == 0
    assoc.release()
    assert metadata(guarded, instances_by_sop_uid(guarded)[assoc.sop_instance_uid])["RemoteIP"] == "127.0.0.2"
    assert "expected from 127.0.0.2, not from 127.0.0.1" in guarded.log()


def test_modality_added_through_rest_is_let_in(guarded):
    assert _rejection(_store_one(guarded, "NEWCOMER")) == (REJECTED, 1, 0x03)
    guarded.client.put("/modalities/newcomer", json=["NEWCOMER", "127.0.0.1", 104]).raise_for_status()
    assoc = _store_one(guarded, "NEWCOMER")
    assert assoc.stored.Status == 0
    assoc.release()
    guarded.client.delete("/modalities/newcomer").raise_for_status()
    assert _rejection(_store_one(guarded, "NEWCOMER")) == (REJECTED, 1, 0x03)


# -- options of the server -----------------------------------------------------------------------


def test_threads_count_scp_timeout_and_pdu_length(tmp_path):
    """As Orthanc: an association beyond DicomThreadsCount waits for one to end, it is not refused."""
    with running_isengard(tmp_path, DicomThreadsCount=1, DicomScpTimeout=2, MaximumPduLength=8192) as server:
        first = associate(server, [build_context(Verification)])
        assert first.is_established and first.acceptor.maximum_length == 8192
        start = time.monotonic()
        second = associate(server, [build_context(Verification)])  # served once the first, idle, is closed
        assert second.is_established
        deadline = time.monotonic() + 5
        while first.is_established and time.monotonic() < deadline:  # the client hears of the close
            time.sleep(0.05)
        assert not first.is_established
        assert time.monotonic() - start > 1
        assert second.send_c_echo().Status == 0
        second.release()


def test_connections_that_say_nothing_do_not_keep_modalities_out(server):
    """Probes (port scanners, load balancers' health checks) hold no association slot."""
    probes = [socket.create_connection(("127.0.0.1", server.config["DicomPort"])) for _ in range(12)]
    try:
        assoc = associate(server, [build_context(Verification)])
        assert assoc.is_established and assoc.send_c_echo().Status == 0
        assoc.release()
    finally:
        for probe in probes:
            probe.close()


def test_dicom_server_can_be_disabled(tmp_path):
    with running_isengard(tmp_path, DicomServerEnabled=False) as server:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.config["DicomPort"]), timeout=2)


def test_storescu_over_one_association_is_not_slowed_by_delayed_acks(server, tmp_path):
    """TCP_NODELAY on the server's sockets: with Nagle's algorithm, each instance would wait
    for a delayed ACK (~40 ms), capping a transfer at ~25 instances/s."""
    paths = ct_copies(tmp_path / "ct", 150)
    start = time.monotonic()
    result = dcmtk("storescu", "127.0.0.1", str(server.config["DicomPort"]), *map(str, paths))
    elapsed = time.monotonic() - start
    assert result.returncode == 0, result.stderr
    assert len(paths) / elapsed > 60, f"{len(paths) / elapsed:.0f} instances/s"
