"""Sending instances to remote nodes (C-STORE SCU): /modalities/{id}/store and /store-straight toward
DCMTK's storescp, a pynetdicom storage SCP and Orthanc 1.10.1, compared with Orthanc's answers.

The peers keep what they receive: the datasets must arrive as stored, byte for byte, in the file's
own transfer syntax whenever the peer accepts it.
"""

import io
import json
import os
import subprocess
import time
from pathlib import Path

import numpy
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import AllTransferSyntaxes
from pynetdicom import AE, evt
from pynetdicom.presentation import AllStoragePresentationContexts

from conftest import SAMPLES, free_port, running_isengard, sample, stop_process, wait_for_port
from isengard.config import Configuration
from isengard.dicom.levels import Level
from isengard.images.decode import decode_frame
from isengard.ingest import Origin
from isengard.network.modalities import Modality
from isengard.network.sending import (
    MAX_CONTEXTS,
    StoredInstance,
    Transfer,
    association_batches,
    dataset_start,
    send_to_modality,
    stored_instances,
)
from isengard.server import Isengard
from orthanc import running_orthanc
from test_dicom_network import TRANSFER_SYNTAX_FILES, ct_copies, dataset_part, read_dataset

NO_CONTEXT = "No valid presentation context was negotiated"
DEFLATED = "1.2.840.10008.1.2.1.99"
REFUSED_BY_STORESCP = {"1.2.840.10008.1.2.4.57"}  # JPEG lossless, non-hierarchical (process 14)


# -- peers ----------------------------------------------------------------------------------------


class Storescp:
    """DCMTK's storescp writing what it receives as it was received (+B)."""

    def __init__(self, folder: Path, *options: str, aet: str = "STORESCP"):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.aet = aet
        command = ["storescp", "+B", *options, "-aet", aet, "--output-directory", str(folder), str(self.port)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        env={**os.environ, "TCP_NODELAY": "1"})  # DCMTK reads it
        wait_for_port(self.port)

    def modality(self, **fields) -> dict:
        return {"AET": self.aet, "Host": "127.0.0.1", "Port": self.port, **fields}

    def received(self) -> dict[str, bytes]:
        """The files received, by SOP Instance UID (storescp names them MODALITY.UID)."""
        return {path.name.split(".", 1)[1]: path.read_bytes() for path in self.folder.iterdir() if "." in path.name}

    def clear(self) -> None:
        for path in self.folder.iterdir():
            path.unlink()

    def stop(self) -> None:
        stop_process(self.process)


class RecordingScp:
    """A pynetdicom storage SCP keeping the C-STORE requests it gets; it answers `statuses[n]` to
    the n-th (from 1; success by default), aborts the association on receiving those in `abort_at`,
    and takes `delay` seconds to answer each."""

    def __init__(self, aet: str = "RECORDER", statuses: dict[int, int] | None = None, abort_at: tuple[int, ...] = (),
                 delay: float = 0):
        self.aet = aet
        self.delay = delay
        self.port = free_port()
        self.statuses = statuses or {}
        self.abort_at = abort_at
        self.requests: list = []
        self.calling_aets: list[str] = []
        ae = AE(aet)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, AllTransferSyntaxes)
        handlers = [(evt.EVT_C_STORE, self._store), (evt.EVT_REQUESTED, self._requested)]
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)

    def modality(self, **fields) -> dict:
        return {"AET": self.aet, "Host": "127.0.0.1", "Port": self.port, **fields}

    def _requested(self, event) -> None:
        self.calling_aets.append(event.assoc.requestor.primitive.calling_ae_title)

    def _store(self, event):
        request = event.request
        self.requests.append({
            "sop_instance_uid": request.AffectedSOPInstanceUID, "transfer_syntax": event.context.transfer_syntax,
            "move_originator": (request.MoveOriginatorApplicationEntityTitle, request.MoveOriginatorMessageID),
            "message_id": request.MessageID, "priority": request.Priority, "dataset": request.DataSet.getvalue(),
        })
        if len(self.requests) in self.abort_at:
            event.assoc.abort()
        time.sleep(self.delay)
        return self.statuses.get(len(self.requests), 0x0000)

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module")
def storescp(tmp_path_factory):
    peer = Storescp(tmp_path_factory.mktemp("storescp"), "+xa")
    yield peer
    peer.stop()


@pytest.fixture(scope="module")
def uncompressed_only(tmp_path_factory):
    """A storescp that accepts implicit VR little endian only."""
    peer = Storescp(tmp_path_factory.mktemp("implicit"), "+xi", aet="IMPLICIT")
    yield peer
    peer.stop()


@pytest.fixture(scope="module")
def recorder():
    peer = RecordingScp()
    yield peer
    peer.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory, storescp, uncompressed_only, recorder):
    modalities = {
        "scp": storescp.modality(),
        "implicit": uncompressed_only.modality(),
        "recorder": recorder.modality(),
        "named": recorder.modality(LocalAet="NAMED"),
        "dead": ["DEAD", "127.0.0.1", free_port()],
    }
    with running_isengard(tmp_path_factory.mktemp("sending"), DicomAet="ISENGARD", DicomModalities=modalities,
                          SyncStorageArea=False, DicomScuTimeout=5) as running:
        for path in TRANSFER_SYNTAX_FILES:
            running.upload(path)
        yield running


def instance_ids(server) -> dict[str, str]:
    answer = server.client.get("/instances", params={"expand": ""}).json()
    return {instance["MainDicomTags"]["SOPInstanceUID"]: instance["ID"] for instance in answer}


def sop_instance_uid(path: Path) -> str:
    return read_dataset(path).SOPInstanceUID


# -- the instances arrive as stored -----------------------------------------------------------------


def sent_as_stored(received: bytes, stored: bytes) -> bool:
    """The dataset received is the one stored; a deflated one of odd length gets its pad byte."""
    sent = dataset_part(stored)
    if pydicom.dcmread(io.BytesIO(received), stop_before_pixels=True).file_meta.TransferSyntaxUID == DEFLATED and len(sent) % 2:
        sent += b"\0"
    return dataset_part(received) == sent


def test_every_transfer_syntax_arrives_as_stored(server, storescp):
    """One request, one association: each dataset in its own transfer syntax, byte for byte."""
    storescp.clear()
    ids = instance_ids(server)
    accepted = [path for path in TRANSFER_SYNTAX_FILES if path.stem not in REFUSED_BY_STORESCP]
    answer = server.client.post("/modalities/scp/store", json=[ids[sop_instance_uid(path)] for path in accepted])
    assert answer.status_code == 200, answer.text
    assert answer.json()["InstancesCount"] == len(accepted)
    received = storescp.received()
    for path in accepted:
        stored = server.client.get(f"/instances/{ids[sop_instance_uid(path)]}/file").content
        data = received[sop_instance_uid(path)]
        syntax = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta.TransferSyntaxUID
        assert syntax == path.stem, path.name  # each sample is named after its transfer syntax
        assert sent_as_stored(data, stored), path.name


def same_values(received: bytes, original: Path) -> bool:
    """The same elements with the same values, whatever their VRs (implicit VR makes PixelData OW)."""

    def values(ds: pydicom.Dataset) -> dict:
        return {element.tag: element.value for element in ds if element.tag.element != 0}

    return values(pydicom.dcmread(io.BytesIO(received))) == values(pydicom.dcmread(original, force=True))


def test_uncompressed_files_are_reencoded_for_a_peer_that_wants_another_syntax(server, uncompressed_only):
    uncompressed_only.clear()
    explicit = SAMPLES / "TransferSyntaxes" / "1.2.840.10008.1.2.1.dcm"
    big_endian = SAMPLES / "TransferSyntaxes" / "1.2.840.10008.1.2.2.dcm"
    ids = instance_ids(server)
    answer = server.client.post("/modalities/implicit/store", json=[ids[sop_instance_uid(p)] for p in (explicit, big_endian)])
    assert answer.status_code == 200, answer.text
    for path in (explicit, big_endian):
        data = uncompressed_only.received()[sop_instance_uid(path)]
        assert pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"
        assert same_values(data, path), path.name


@pytest.mark.parametrize("modality, received_syntax, syntax", [
    ("scp", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.57"),  # storescp takes every other syntax of the samples
    ("implicit", "1.2.840.10008.1.2", "1.2.840.10008.1.2.4.50"),  # this one takes implicit VR little endian only
])
def test_compressed_files_go_decompressed_to_a_peer_that_refuses_their_syntax(
        server, storescp, uncompressed_only, modality, received_syntax, syntax):
    peer = storescp if modality == "scp" else uncompressed_only
    peer.clear()
    path = SAMPLES / "TransferSyntaxes" / f"{syntax}.dcm"
    answer = server.client.post(f"/modalities/{modality}/store", content=instance_ids(server)[sop_instance_uid(path)])
    assert answer.status_code == 200, answer.text
    received = pydicom.dcmread(io.BytesIO(peer.received()[sop_instance_uid(path)]), force=True)
    assert received.file_meta.TransferSyntaxUID == received_syntax
    assert numpy.array_equal(received.pixel_array, decode_frame(pydicom.dcmread(path), 0))  # as Isengard decodes it
    assert received.SOPInstanceUID == sop_instance_uid(path)


def test_a_file_that_cannot_be_decompressed_fails_with_the_reason(server, uncompressed_only):
    dataset = pydicom.dcmread(SAMPLES / "TransferSyntaxes" / "1.2.840.10008.1.2.4.70.dcm")
    dataset.SOPInstanceUID = "1.2.3.4.5.6.7.8.9"
    dataset.PixelData = encapsulate([b"\xff\xd8" + bytes(range(256)) * 4])  # not a JPEG stream
    output = io.BytesIO()
    dataset.save_as(output, enforce_file_format=True)
    instance = server.client.post("/instances", content=output.getvalue()).json()["ID"]
    answer = server.client.post("/modalities/implicit/store", content=instance)
    assert answer.status_code == 500
    assert "Cannot encode instance" in answer.json()["Details"] and "1.2.840.10008.1.2" in answer.json()["Details"]


def test_store_straight_sends_the_body_as_it_is(server, storescp):
    storescp.clear()
    path = sample("DummyCT.dcm")
    answer = server.client.post("/modalities/scp/store-straight", content=path.read_bytes())
    ds = read_dataset(path)
    assert answer.json() == {"SOPClassUID": ds.SOPClassUID, "SOPInstanceUID": ds.SOPInstanceUID}
    assert dataset_part(storescp.received()[ds.SOPInstanceUID]) == dataset_part(path.read_bytes())
    refused = server.client.post("/modalities/scp/store-straight", content=b"not DICOM")
    assert refused.status_code == 400
    assert refused.json()["Details"] == "Cannot parse an invalid DICOM file (size: 9 bytes)"


# -- the C-STORE requests ----------------------------------------------------------------------------


def test_requests_carry_the_move_originator_and_the_local_aet(server, recorder):
    instance = instance_ids(server)[sop_instance_uid(SAMPLES / "TransferSyntaxes" / "1.2.840.10008.1.2.4.70.dcm")]
    answer = server.client.post("/modalities/recorder/store", json={
        "Resources": [instance], "MoveOriginatorAet": "ASKER", "MoveOriginatorID": 12, "LocalAet": "CALLER",
    })
    assert answer.status_code == 200, answer.text
    assert answer.json()["LocalAet"] == "CALLER"
    assert (answer.json()["MoveOriginatorAET"], answer.json()["MoveOriginatorID"]) == ("ASKER", 12)
    assert recorder.calling_aets[-1] == "CALLER"
    request = recorder.requests[-1]
    assert (request["move_originator"], request["priority"], request["message_id"]) == (("ASKER", 12), 0, 1)
    # Without an originator AET, Orthanc names itself; the modality's own LocalAet wins.
    answer = server.client.post("/modalities/named/store", json={"Resources": [instance], "MoveOriginatorID": 3,
                                                                  "LocalAet": "IGNORED"})
    assert (answer.json()["LocalAet"], answer.json()["MoveOriginatorAET"]) == ("NAMED", "ISENGARD")
    assert recorder.calling_aets[-1] == "NAMED"
    assert recorder.requests[-1]["move_originator"] == ("ISENGARD", 3)


def test_failure_status_of_the_peer_fails_the_request_unless_permissive(server):
    failing = RecordingScp(aet="FAILING", statuses={1: 0xA700, 3: 0xB000})
    try:
        server.client.put("/modalities/failing", json=failing.modality()).raise_for_status()
        ids = [instance_ids(server)[sop_instance_uid(SAMPLES / "TransferSyntaxes" / f"{s}.dcm")]
               for s in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70")]
        answer = server.client.post("/modalities/failing/store", json=ids)
        assert answer.status_code == 500
        assert answer.json()["Details"] == 'C-STORE SCU to AET "FAILING" has failed with DIMSE status 0xA700'
        assert len(failing.requests) == 1  # the first failure stops the transfer
        permissive = server.client.post("/modalities/failing/store", json={"Resources": ids, "Permissive": True})
        assert permissive.status_code == 200, permissive.text
        assert (permissive.json()["InstancesCount"], permissive.json()["FailedInstancesCount"]) == (2, 0)  # as Orthanc
        assert len(failing.requests) == 3  # the warning (0xB000) of the third counts as a success
    finally:
        server.client.delete("/modalities/failing")
        failing.stop()


def test_peer_aborting_mid_transfer(server, tmp_path):
    aborting = RecordingScp(aet="ABORTING", abort_at=(2, 5))
    try:
        server.client.put("/modalities/aborting", json=aborting.modality()).raise_for_status()
        paths = ct_copies(tmp_path / "ct", 4)
        ids = [server.upload(path)["ID"] for path in paths]
        answer = server.client.post("/modalities/aborting/store", json=ids)
        assert answer.status_code == 500
        assert "did not answer the C-STORE" in answer.json()["Details"]
        assert len(aborting.requests) == 2
        # In permissive mode, the instances after the one aborted go over a new association.
        answer = server.client.post("/modalities/aborting/store", json={"Resources": ids, "Permissive": True})
        assert answer.status_code == 200, answer.text
        assert [r["sop_instance_uid"] for r in aborting.requests[2:]] == [sop_instance_uid(p) for p in paths]
        assert len(aborting.calling_aets) == 3
    finally:
        server.client.delete("/modalities/aborting")
        aborting.stop()


# -- the REST API, compared with Orthanc 1.10.1 ---------------------------------------------------------


def store_requests(instance: str, series: str) -> list:
    """Bodies of /modalities/{id}/store, each sent to both servers."""
    return [
        instance, f"  {instance}\n", json.dumps(instance), [instance, instance, series], [],
        {"Resources": [f" {instance} "], "LocalAet": "LOCAL", "MoveOriginatorAet": "ASKER", "MoveOriginatorID": 7,
         "Timeout": 5, "Synchronous": True, "Permissive": False, "Priority": 3, "StorageCommitment": False},
        {"Resources": [instance], "MoveOriginatorAet": "ASKER"}, {"Resources": [instance], "MoveOriginatorID": 0},
        {"Resources": [instance], "Asynchronous": False},
        # refused
        "not json {", 5, "null", {}, {"Resources": instance}, [1], ["nonexistent"], [instance.upper()],
        ["11111111-11111111-11111111-11111111-11111111"], {"Resources": [instance], "LocalAet": 5},
        {"Resources": [instance], "MoveOriginatorID": "7"}, {"Resources": [instance], "MoveOriginatorID": 65536},
        {"Resources": [instance], "MoveOriginatorID": -1}, {"Resources": [instance], "MoveOriginatorAet": 1},
        {"Resources": [instance], "Timeout": -1}, {"Resources": [instance], "Timeout": 1.5},
        {"Resources": [instance], "Synchronous": "yes"}, {"Resources": [instance], "Asynchronous": 1},
        {"Resources": [instance], "Permissive": "no"}, {"Resources": [instance], "Priority": "high"},
        {"Resources": [instance], "StorageCommitment": "x"},
    ]


def _answer(response) -> tuple:
    body = response.json()
    return response.status_code, {key: value for key, value in body.items() if key not in ("Uri",)}


def test_store_answers_as_orthanc(tmp_path, storescp):
    path = SAMPLES / "TransferSyntaxes" / "1.2.840.10008.1.2.1.dcm"
    modalities = {"scp": storescp.modality(), "dead": ["DEAD", "127.0.0.1", free_port()]}
    with running_orthanc(tmp_path / "orthanc", DicomModalities=modalities) as orthanc, \
            running_isengard(tmp_path / "isengard", DicomModalities=modalities) as isengard:
        uploaded = isengard.upload(path)
        assert orthanc.client.post("/instances", content=path.read_bytes()).json()["ID"] == uploaded["ID"]
        for body in store_requests(uploaded["ID"], uploaded["ParentSeries"]):
            content = body if isinstance(body, str) else json.dumps(body)
            answers = [_answer(s.client.post("/modalities/scp/store", content=content)) for s in (orthanc, isengard)]
            assert answers[1] == answers[0], content
        for uri in ("/modalities/nowhere/store", "/modalities/nowhere/store-straight"):
            answers = [_answer(s.client.post(uri, content=uploaded["ID"])) for s in (orthanc, isengard)]
            assert answers[1] == answers[0], uri
        answers = [s.client.post("/modalities/dead/store", content=uploaded["ID"]) for s in (orthanc, isengard)]
        assert [a.status_code for a in answers] == [500, 500]
        assert [a.json()["OrthancStatus"] for a in answers] == [9, 9]


def test_unreachable_modality(server):
    answer = server.client.post("/modalities/dead/store", content=next(iter(instance_ids(server).values())))
    assert answer.status_code == 500
    assert answer.json()["OrthancStatus"] == 9
    assert "Cannot open a TCP connection" in answer.json()["Details"]


# -- toward Orthanc 1.10.1 ---------------------------------------------------------------------------


def test_every_transfer_syntax_arrives_intact_in_orthanc(tmp_path):
    """Orthanc rewrites the files it receives (group lengths, deflated datasets): the values must be
    those stored, received in the file's own transfer syntax."""
    orthanc_port = free_port()
    with running_orthanc(tmp_path / "orthanc", DicomServerEnabled=True, DicomPort=orthanc_port, DicomAet="REFERENCE") as orthanc, \
            running_isengard(tmp_path / "isengard",
                             DicomModalities={"orthanc": ["REFERENCE", "127.0.0.1", orthanc_port]}) as isengard:
        ids = [isengard.upload(path)["ID"] for path in TRANSFER_SYNTAX_FILES]
        answer = isengard.client.post("/modalities/orthanc/store", json={"Resources": ids})
        assert answer.status_code == 200, answer.text
        for path, instance in zip(TRANSFER_SYNTAX_FILES, ids):
            received = orthanc.client.get(f"/instances/{instance}/file")
            assert received.status_code == 200, path.name
            assert same_values(received.content, path), path.name
            assert orthanc.client.get(f"/instances/{instance}/metadata/TransferSyntax").text == path.stem


# -- the sending core, in process --------------------------------------------------------------------


def test_a_transfer_goes_one_instance_at_a_time(tmp_path, storescp):
    """What a job will do: one instance per step, the counts growing, over one association."""
    isengard = Isengard(Configuration.from_raw({"StorageDirectory": str(tmp_path / "db"), "DicomAet": "ISENGARD"}))
    try:
        paths = ct_copies(tmp_path / "ct", 3)
        ids = [isengard.ingest.store(path.read_bytes(), Origin()).public_ids[Level.SERIES] for path in paths]
        instances = stored_instances(isengard, ids[:1])  # the series: the three instances
        assert [i.sop_instance_uid for i in instances] == [sop_instance_uid(path) for path in paths]
        modality = Modality(storescp.aet, "127.0.0.1", storescp.port)
        seen: list[tuple[int, int]] = []
        counts = send_to_modality(isengard, modality, instances, progress=lambda c: seen.append((c.completed, c.failed)))
        assert seen == [(1, 0), (2, 0), (3, 0)] and counts.total == 3
        transfer = Transfer(isengard, modality, instances)
        steps = 0
        while not transfer.done:
            transfer.send_next()
            steps += 1
        assert steps == 3 and transfer.counts.completed == 3
        transfer.close()
    finally:
        isengard.close()


# -- associations ----------------------------------------------------------------------------------------


def test_instances_needing_many_contexts_go_over_several_associations():
    def instance(number: int, syntax: str) -> StoredInstance:
        return StoredInstance(str(number), f"1.2.3.{number // 2}", f"9.{number}", syntax, None)

    # 150 SOP classes, each in three contexts: its own syntax, and the two it may be decompressed to.
    instances = [instance(n, "1.2.840.10008.1.2.4.50") for n in range(300)]
    batches = association_batches(instances)
    assert [len(batch) for batch in batches] == [84, 84, 84, 48]
    assert sum(batches, []) == instances
    uncompressed = [instance(n, "1.2.840.10008.1.2") for n in range(10)]  # two contexts per SOP class
    assert association_batches(uncompressed) == [uncompressed]
    assert MAX_CONTEXTS == 127


def test_dataset_start_walks_the_meta_group():
    for path in TRANSFER_SYNTAX_FILES:
        data = path.read_bytes()
        assert data[dataset_start(data):] == dataset_part(data), path.name
