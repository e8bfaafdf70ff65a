"""C-MOVE and C-GET served by Isengard: DCMTK's movescu and getscu, and pynetdicom, as requesters;
DCMTK's storescp and pynetdicom storage SCPs as move destinations; Orthanc 1.10.1 both ways.

The datasets must arrive as stored, the pending and final statuses carry the counts of the
sub-operations, and the final status is success, 0xB000 when some sub-operations failed or got
warnings, 0xA702 when all failed (Orthanc's for C-GET; its C-MOVE ends at the first failure).
"""

import io
import time
from pathlib import Path

import pydicom
import pytest
from pydicom import Dataset
from pynetdicom import AE, build_context, build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from conftest import SAMPLES, free_port, running_isengard, sample, wait_for_port
from orthanc import running_orthanc
from test_dicom_network import TRANSFER_SYNTAX_FILES, ct_copies, dataset_part, dcmtk, read_dataset
from test_sending import (  # and the module's fixtures of the peers
    REFUSED_BY_STORESCP, RecordingScp, recorder, same_values, sent_as_stored, storescp,
)

try:  # DICOM TLS needs openssl and a DCMTK built with OpenSSL: test_dicom_tls skips itself without them
    from test_dicom_tls import pki, storescp as tls_storescp, tls_modality, tls_options, with_certificate
except pytest.skip.Exception:
    pki = None

STUDY_MOVE, PATIENT_MOVE = StudyRootQueryRetrieveInformationModelMove, PatientRootQueryRetrieveInformationModelMove
STUDY_GET, PATIENT_GET = StudyRootQueryRetrieveInformationModelGet, PatientRootQueryRetrieveInformationModelGet
SUCCESS, PENDING, WARNING, CANCEL = 0x0000, 0xFF00, 0xB000, 0xFE00
DESTINATION_UNKNOWN, ALL_FAILED = 0xA801, 0xA702


@pytest.fixture(scope="module")
def server(tmp_path_factory, storescp, recorder):
    modalities = {
        "storescp": storescp.modality(),
        "recorder": recorder.modality(),
        "mover": ["MOVER", "127.0.0.1", 1],
        "movescu": ["MOVESCU", "127.0.0.1", 1],
        "getscu": ["GETSCU", "127.0.0.1", 1],
        "stranger": {"AET": "STRANGER", "Host": "127.0.0.1", "Port": 1, "AllowMove": False, "AllowGet": False},
    }
    folder = tmp_path_factory.mktemp("retrieve")
    with running_isengard(folder, DicomAet="ISENGARD", DicomModalities=modalities, SyncStorageArea=False) as running:
        for path in TRANSFER_SYNTAX_FILES:
            running.upload(path)
        running.ct = [running.upload(path) for path in ct_copies(folder / "ct", 5)]
        yield running


# -- requesters -----------------------------------------------------------------------------------


def identifier(level: str | None, **keys: str) -> Dataset:
    dataset = Dataset()
    if level is not None:
        dataset.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(dataset, keyword, value)
    return dataset


def associate(server, contexts: list, calling: str = "MOVER", **kwargs) -> Association:
    ae = AE(calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
    assoc = ae.associate("127.0.0.1", server.config["DicomPort"], contexts, ae_title="ISENGARD", **kwargs)
    assert assoc.is_established
    return assoc


def summary(status: Dataset, found: Dataset | None) -> tuple:
    """A response: its status, the counts (remaining, completed, failed, warning), the failed UIDs."""
    counts = tuple(status.get(f"Number{kind}Suboperations") for kind in ("OfRemaining", "OfCompleted", "OfFailed", "OfWarning"))
    failed = None
    if found is not None:  # pydicom reads a single UID as a string
        failed = found.get("FailedSOPInstanceUIDList", [])
        failed = [failed] if isinstance(failed, str) else list(failed)
    return status.Status, counts, failed


def move(server, query: Dataset, destination: str, model: str = STUDY_MOVE, calling: str = "MOVER") -> list[tuple]:
    assoc = associate(server, [build_context(model)], calling)
    responses = [summary(*response) for response in assoc.send_c_move(query, destination, model, msg_id=7)]
    assoc.release()
    return responses


def get(server, query: Dataset, paths: list[Path], answer=lambda event: SUCCESS, model: str = STUDY_GET,
        syntaxes: list[str] | None = None) -> tuple[list[tuple], dict[str, bytes]]:
    """A C-GET with storage contexts for the files' SOP classes, in their own transfer syntaxes (or
    `syntaxes`), one context each; the datasets received by SOP Instance UID."""
    received: dict[str, bytes] = {}

    def store(event):
        received[event.request.AffectedSOPInstanceUID] = event.request.DataSet.getvalue()
        return answer(event)

    pairs = {(ds.SOPClassUID, ts) for ds in map(read_dataset, paths)
             for ts in (syntaxes or [ds.file_meta.TransferSyntaxUID])}
    contexts = [build_context(model)] + [build_context(sop_class, syntax) for sop_class, syntax in sorted(pairs)]
    roles = [build_role(sop_class, scp_role=True) for sop_class in sorted({sop_class for sop_class, _ in pairs})]
    assoc = associate(server, contexts, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, store)])
    responses = [summary(*response) for response in assoc.send_c_get(query, model)]
    assoc.release()
    return responses, received


def studies(paths: list[Path]) -> str:
    return "\\".join(read_dataset(path).StudyInstanceUID for path in paths)


def final(responses: list[tuple]) -> tuple:
    """The final response, without its count of remaining sub-operations: pynetdicom leaves 0 there,
    Orthanc (and DICOM) leave it out."""
    status, counts, failed = responses[-1]
    return status, counts[1:], failed


# -- C-MOVE ----------------------------------------------------------------------------------------


def test_movescu_moves_a_study_to_storescp(server, storescp):
    storescp.clear()
    path = SAMPLES / "TransferSyntaxes" / "1.2.840.10008.1.2.1.dcm"
    result = dcmtk("movescu", "-S", "-aet", "MOVESCU", "-aec", "ISENGARD", "-aem", storescp.aet,
                   "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={read_dataset(path).StudyInstanceUID}",
                   "127.0.0.1", str(server.config["DicomPort"]))
    assert result.returncode == 0, result.stderr
    assert sent_as_stored(storescp.received()[read_dataset(path).SOPInstanceUID], path.read_bytes())


def test_every_transfer_syntax_is_moved_as_stored(server, storescp):
    storescp.clear()
    accepted = [path for path in TRANSFER_SYNTAX_FILES if path.stem not in REFUSED_BY_STORESCP]
    responses = move(server, identifier("STUDY", StudyInstanceUID=studies(accepted)), storescp.aet)
    total = len(accepted)
    assert responses[:-1] == [(PENDING, (total - n, n, 0, 0), None) for n in range(1, total + 1)]
    assert final(responses) == (SUCCESS, (total, 0, 0), None)
    received = storescp.received()
    for path in accepted:
        assert sent_as_stored(received[read_dataset(path).SOPInstanceUID], path.read_bytes()), path.name


def test_syntax_refused_by_the_destination_is_moved_decompressed(server, storescp):
    storescp.clear()
    refused = [path for path in TRANSFER_SYNTAX_FILES if path.stem in REFUSED_BY_STORESCP]
    responses = move(server, identifier("STUDY", StudyInstanceUID=studies(refused)), storescp.aet)
    assert final(responses) == (SUCCESS, (1, 0, 0), None)
    received = pydicom.dcmread(io.BytesIO(storescp.received()[read_dataset(refused[0]).SOPInstanceUID]), force=True)
    assert received.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"


def test_levels_and_unique_keys(server, recorder):
    ct = [read_dataset(SAMPLES / "TransferSyntaxes" / f"{s}.dcm") for s in ("1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80")]
    queries = [
        (identifier("PATIENT", PatientID="8nm1"), PATIENT_MOVE, 3),  # as Orthanc: PatientID without case
        (identifier("STUDY", StudyInstanceUID=ct[0].StudyInstanceUID), STUDY_MOVE, 1),
        (identifier("SERIES", SeriesInstanceUID=ct[1].SeriesInstanceUID, StudyInstanceUID="ignored"), STUDY_MOVE, 2),
        (identifier("IMAGE", SOPInstanceUID=f"{ct[0].SOPInstanceUID}\\{ct[1].SOPInstanceUID}"), STUDY_MOVE, 2),
        (identifier(None, SOPInstanceUID=ct[1].SOPInstanceUID), STUDY_MOVE, 1),  # no level: the lowest key given
        (identifier(None, StudyInstanceUID=ct[0].StudyInstanceUID), STUDY_MOVE, 1),
        (identifier("STUDY", StudyInstanceUID="1.2.3.4"), STUDY_MOVE, 0),  # nothing: success (Orthanc: 0xC000)
    ]
    for query, model, count in queries:
        recorder.requests.clear()
        assert final(move(server, query, recorder.aet, model)) == (SUCCESS, (count, 0, 0), None), query
        assert len(recorder.requests) == count, query


def test_sub_operations_name_the_move_originator(server, recorder):
    recorder.requests.clear()
    path = SAMPLES / "TransferSyntaxes" / "1.2.840.10008.1.2.4.91.dcm"
    move(server, identifier("IMAGE", SOPInstanceUID=read_dataset(path).SOPInstanceUID), recorder.aet)
    assert recorder.calling_aets[-1] == "ISENGARD"
    request = recorder.requests[-1]
    assert (request["move_originator"], request["priority"]) == (("MOVER", 7), 0)
    assert request["dataset"] == dataset_part(path.read_bytes())


def test_bad_requests_fail(server, recorder):
    uid = read_dataset(SAMPLES / "TransferSyntaxes" / "1.2.840.10008.1.2.4.91.dcm").StudyInstanceUID
    assert final(move(server, identifier("STUDY", StudyInstanceUID=uid), "NOBODY"))[:2] == (DESTINATION_UNKNOWN, (None,) * 3)
    for query in (identifier("SERIES"), identifier("SERIES", SeriesInstanceUID="1.2.*"), identifier("WARD", PatientID="x"),
                  identifier(None, PatientName="NOBODY")):
        status, counts, _failed = final(move(server, query, recorder.aet))
        assert 0xC000 <= status <= 0xCFFF and counts in ((None,) * 3, (0, 0, 0)), query
    assert "No SeriesInstanceUID given at the SERIES level" in server.log()
    assert "Traceback" not in server.log()


def test_operations_not_allowed_abort_the_association(server, storescp):
    assoc = associate(server, [build_context(STUDY_MOVE), build_context(STUDY_GET)], "STRANGER")
    assert list(assoc.send_c_move(identifier("STUDY", StudyInstanceUID="1.2.3"), storescp.aet, STUDY_MOVE))[0][0] == Dataset()
    deadline = time.monotonic() + 5
    while not assoc.is_aborted and time.monotonic() < deadline:
        time.sleep(0.01)
    assert assoc.is_aborted
    result = dcmtk("getscu", "-S", "-aet", "STRANGER", "-aec", "ISENGARD", "-k", "QueryRetrieveLevel=STUDY",
                   "-k", "StudyInstanceUID=1.2.3", "127.0.0.1", str(server.config["DicomPort"]))
    assert "Peer aborted Association" in result.stderr, result.stderr
    assert 'Move request from AET "STRANGER" on 127.0.0.1 refused' in server.log()
    assert 'Get request from AET "STRANGER" on 127.0.0.1 refused' in server.log()


def test_destination_aborting_mid_transfer(server):
    aborting = RecordingScp(aet="ABORTING", abort_at=(3,))
    try:
        server.client.put("/modalities/aborting", json=aborting.modality()).raise_for_status()
        series = server.ct[0]["ParentSeries"]
        query = identifier("SERIES", SeriesInstanceUID=server.client.get(f"/series/{series}").json()["MainDicomTags"]["SeriesInstanceUID"])
        responses = move(server, query, "ABORTING")
        assert [counts for _status, counts, _failed in responses[:-1]] == [
            (4, 1, 0, 0), (3, 2, 0, 0), (2, 2, 1, 0), (1, 2, 2, 0), (0, 2, 3, 0)  # the aborted one, then those left
        ]
        status, counts, failed = final(responses)
        assert (status, counts, len(failed)) == (WARNING, (2, 3, 0), 3)
        assert failed[0] == aborting.requests[2]["sop_instance_uid"] and len(aborting.requests) == 3
    finally:
        server.client.delete("/modalities/aborting")
        aborting.stop()


def test_failure_and_warning_statuses_of_the_destination(server):
    answering = RecordingScp(aet="ANSWERING", statuses={1: 0xB007, 3: 0xA700})
    try:
        server.client.put("/modalities/answering", json=answering.modality()).raise_for_status()
        series = server.client.get(f"/series/{server.ct[0]['ParentSeries']}").json()["MainDicomTags"]["SeriesInstanceUID"]
        responses = move(server, identifier("SERIES", SeriesInstanceUID=series), "ANSWERING")
        assert [counts for _status, counts, _failed in responses[:-1]] == [
            (4, 0, 0, 1), (3, 1, 0, 1), (2, 1, 1, 1), (1, 2, 1, 1), (0, 3, 1, 1)
        ]
        assert final(responses) == (WARNING, (3, 1, 1), [answering.requests[2]["sop_instance_uid"]])
        assert len(answering.requests) == 5  # unlike Orthanc's, the C-MOVE goes on after a failure
    finally:
        server.client.delete("/modalities/answering")
        answering.stop()


def test_cancelled_move(server):
    slow = RecordingScp(aet="SLOW", delay=0.2)
    try:
        server.client.put("/modalities/slow", json=slow.modality()).raise_for_status()
        series = server.client.get(f"/series/{server.ct[0]['ParentSeries']}").json()["MainDicomTags"]["SeriesInstanceUID"]
        assoc = associate(server, [build_context(STUDY_MOVE)])
        responses = []
        for response in assoc.send_c_move(identifier("SERIES", SeriesInstanceUID=series), "SLOW", STUDY_MOVE, msg_id=7):
            responses.append(summary(*response))
            if len(responses) == 1:
                assoc.send_c_cancel(7, assoc.accepted_contexts[0].context_id)
        assoc.release()
        status, counts, _failed = responses[-1]
        assert status == CANCEL and counts[0] > 0 and counts[0] + counts[1] == 5, responses
        assert len(slow.requests) < 5
    finally:
        server.client.delete("/modalities/slow")
        slow.stop()


# -- C-GET -----------------------------------------------------------------------------------------


def test_getscu_gets_a_study(server, tmp_path):
    path = SAMPLES / "TransferSyntaxes" / "1.2.840.10008.1.2.1.dcm"
    ds = read_dataset(path)
    result = dcmtk("getscu", "-S", "+B", "-aet", "GETSCU", "-aec", "ISENGARD", "-od", str(tmp_path),
                   "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={ds.StudyInstanceUID}",
                   "127.0.0.1", str(server.config["DicomPort"]))
    assert result.returncode == 0, result.stderr
    received = [p for p in tmp_path.iterdir() if p.name.endswith(ds.SOPInstanceUID)]
    assert len(received) == 1 and sent_as_stored(received[0].read_bytes(), path.read_bytes())


def test_every_transfer_syntax_is_got_as_stored(server):
    responses, received = get(server, identifier("STUDY", StudyInstanceUID=studies(TRANSFER_SYNTAX_FILES)), TRANSFER_SYNTAX_FILES)
    total = len(TRANSFER_SYNTAX_FILES)
    assert responses[:-1] == [(PENDING, (total - n, n, 0, 0), None) for n in range(1, total + 1)]
    assert final(responses) == (SUCCESS, (total, 0, 0), None)
    for path in TRANSFER_SYNTAX_FILES:
        sent = dataset_part(path.read_bytes())
        padded = sent + b"\0" if len(sent) % 2 else sent
        assert received[read_dataset(path).SOPInstanceUID] == padded, path.name


def test_get_of_uncompressed_files_in_the_syntax_the_requester_accepts(server):
    paths = [SAMPLES / "TransferSyntaxes" / f"{s}.dcm" for s in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")]
    responses, received = get(server, identifier("STUDY", StudyInstanceUID=studies(paths)), paths,
                              syntaxes=["1.2.840.10008.1.2"])
    assert final(responses) == (SUCCESS, (2, 0, 0), None)
    for path in paths:
        original = pydicom.dcmread(path)
        dataset = pydicom.dcmread(pydicom.filebase.DicomBytesIO(received[original.SOPInstanceUID]), force=True)
        assert dataset.PixelData == original.PixelData and dataset.PatientName == original.PatientName, path.name


def test_get_goes_on_after_a_failure(server):
    paths = [SAMPLES / "TransferSyntaxes" / f"{s}.dcm" for s in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70",
                                                                   "1.2.840.10008.1.2.4.91")]
    query = identifier("STUDY", StudyInstanceUID=studies(paths))
    answers = iter([SUCCESS, 0xA700, WARNING])
    responses, _received = get(server, query, paths, answer=lambda event: next(answers))
    status, counts, failed = final(responses)
    assert (status, counts) == (WARNING, (1, 1, 1)) and len(failed) == 1
    responses, _received = get(server, query, paths, answer=lambda event: 0xA700)
    assert final(responses)[:2] == (ALL_FAILED, (0, 3, 0))
    # A C-GET SCU that takes explicit VR little endian only gets the files decompressed.
    responses, received = get(server, query, paths, syntaxes=["1.2.840.10008.1.2.1"])
    assert final(responses) == (SUCCESS, (3, 0, 0), None)
    for data in received.values():  # the data sets as the context's syntax carried them: native pixels
        assert not pydicom.dcmread(io.BytesIO(data), force=True)["PixelData"].is_undefined_length


def test_get_at_the_patient_level(server):
    paths = [SAMPLES / "TransferSyntaxes" / f"{s}.dcm" for s in ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90",
                                                                   "1.2.840.10008.1.2.5")]
    responses, received = get(server, identifier("PATIENT", PatientID="8NM1"), paths, model=PATIENT_GET)
    assert final(responses) == (SUCCESS, (3, 0, 0), None)
    assert set(received) == {read_dataset(path).SOPInstanceUID for path in paths}


# -- with Orthanc 1.10.1 -------------------------------------------------------------------------------


def test_orthanc_and_isengard_move_to_each_other(tmp_path):
    """Orthanc's /modalities/{id}/move asks Isengard to move a study to Orthanc; movescu asks Orthanc
    to move it back to a fresh Isengard."""
    isengard_port, orthanc_port = free_port(), free_port()
    path = sample("DummyCT.dcm")
    ds = read_dataset(path)
    with running_orthanc(
        tmp_path / "orthanc", DicomServerEnabled=True, DicomPort=orthanc_port, DicomAet="REFERENCE",
        DicomModalities={"isengard": ["ISENGARD", "127.0.0.1", isengard_port], "movescu": ["MOVESCU", "127.0.0.1", 1]},
    ) as orthanc, running_isengard(
        tmp_path / "isengard", DicomPort=isengard_port, DicomAet="ISENGARD",
        DicomModalities={"orthanc": ["REFERENCE", "127.0.0.1", orthanc_port]},
    ) as isengard:
        wait_for_port(orthanc_port)  # Orthanc answers HTTP before its DICOM server listens
        uploaded = isengard.upload(path)
        answer = orthanc.client.post("/modalities/isengard/move", json={
            "Level": "Study", "Resources": [{"StudyInstanceUID": ds.StudyInstanceUID}], "TargetAet": "REFERENCE",
        })
        assert answer.status_code == 200, answer.text
        stored = orthanc.client.get(f"/instances/{uploaded['ID']}/file")
        assert stored.status_code == 200 and same_values(stored.content, path)
        isengard.client.delete(f"/instances/{uploaded['ID']}").raise_for_status()
        result = dcmtk("movescu", "-S", "-aet", "MOVESCU", "-aec", "REFERENCE", "-aem", "ISENGARD",
                       "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={ds.StudyInstanceUID}",
                       "127.0.0.1", str(orthanc_port))
        assert result.returncode == 0, result.stderr
        metadata = isengard.client.get(f"/instances/{uploaded['ID']}/metadata", params={"expand": ""}).json()
        assert (metadata["RemoteAET"], metadata["Origin"]) == ("REFERENCE", "DicomProtocol")


def test_move_statuses_match_orthancs(tmp_path, recorder):
    """The same C-MOVEs asked of Orthanc and of Isengard get the same final status and counts."""
    paths = [SAMPLES / "TransferSyntaxes" / f"{s}.dcm" for s in ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90",
                                                                   "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.70")]
    modalities = {"recorder": recorder.modality(), "mover": ["MOVER", "127.0.0.1", 1]}
    queries = [identifier("PATIENT", PatientID="8NM1"), identifier("STUDY", StudyInstanceUID=studies(paths[2:])),
               identifier("IMAGE", SOPInstanceUID=read_dataset(paths[0]).SOPInstanceUID)]
    with running_orthanc(tmp_path / "orthanc", DicomServerEnabled=True, DicomPort=free_port(), DicomAet="ISENGARD",
                         DicomModalities=modalities) as orthanc, \
            running_isengard(tmp_path / "isengard", DicomAet="ISENGARD", DicomModalities=modalities) as isengard:
        for path in paths:
            orthanc.client.post("/instances", content=path.read_bytes()).raise_for_status()
            isengard.upload(path)
        wait_for_port(orthanc.config["DicomPort"])
        for query in queries:
            model = PATIENT_MOVE if query.QueryRetrieveLevel == "PATIENT" else STUDY_MOVE
            orthanc_final = final(move(orthanc, query, recorder.aet, model))
            assert final(move(isengard, query, recorder.aet, model)) == orthanc_final, query



@pytest.mark.skipif(pki is None, reason="needs openssl and DCMTK built with OpenSSL")
def test_move_and_store_toward_a_modality_using_dicom_tls(pki, tmp_path):
    path = SAMPLES / "TransferSyntaxes" / "1.2.840.10008.1.2.1.dcm"
    ds = read_dataset(path)
    modalities = {"tls": tls_modality("TLSSCP", 0), "mover": ["MOVER", "127.0.0.1", 1]}
    with tls_storescp(tmp_path / "storescp", with_certificate(pki, "dcmtk")) as (port, log):
        modalities["tls"]["Port"] = port
        with running_isengard(tmp_path / "isengard", **tls_options(pki), DicomAet="ISENGARD",
                              DicomModalities=modalities) as isengard:
            uploaded = isengard.upload(path)
            assert final(move(isengard, identifier("STUDY", StudyInstanceUID=ds.StudyInstanceUID), "TLSSCP")) == \
                (SUCCESS, (1, 0, 0), None)
            assert isengard.client.post("/modalities/tls/store", content=uploaded["ID"]).status_code == 200
        assert log.read_text().count("Received Store Request") == 2
