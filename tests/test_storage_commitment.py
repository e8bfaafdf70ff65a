"""Storage commitment (Push Model), with a pynetdicom modality as the peer in both directions, and
between Isengard and Orthanc 1.10.1 both ways: the SCP's checks and its N-EVENT-REPORT on a new
association, the SCU's routes and reports, access control, and errors compared with Orthanc's.
"""

import json
import queue
import time
from dataclasses import dataclass

import pytest
from pydicom import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

from conftest import free_port, running_isengard, sample
from isengard.network.commitment import CommitmentReport, CommitmentReports
from orthanc import running_orthanc

COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
MR_STORAGE, CT_STORAGE = "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.2"
DUMMY_CT_UID = "1.2.840.113619.2.176.2025.1499492.7040.1171286242.109"  # an MR image, despite its name
MISSING = ("1.2.3", "4.5.6")
NO_SUCH_OBJECT_INSTANCE, CLASS_INSTANCE_CONFLICT = 274, 281


@dataclass
class Received:
    """A DIMSE request the peer received: who sent it, to whom, its type and its dataset."""

    calling_aet: str
    called_aet: str
    type_id: int
    dataset: Dataset


class PeerModality:
    """A modality made with pynetdicom: its SCP records the storage commitment requests and reports
    it receives; it sends requests and reports to Isengard as a modality does."""

    def __init__(self, aet: str = "PEER"):
        self.aet = aet
        self.port = free_port()
        self.requests: queue.Queue[Received] = queue.Queue()
        self.reports: queue.Queue[Received] = queue.Queue()
        ae = AE(aet)
        ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
        handlers = [(evt.EVT_N_ACTION, self._on_request), (evt.EVT_N_EVENT_REPORT, self._on_report)]
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)

    @staticmethod
    def _received(event: evt.Event, type_id: int, dataset: Dataset) -> Received:
        return Received(event.assoc.requestor.ae_title, event.assoc.acceptor.ae_title, type_id, dataset)

    def _on_request(self, event: evt.Event):
        self.requests.put(self._received(event, event.action_type, event.action_information))
        return 0x0000, None

    def _on_report(self, event: evt.Event):
        self.reports.put(self._received(event, event.event_type, event.event_information))
        return 0x0000, None

    def modality(self, **fields) -> dict:
        return {"AET": self.aet, "Host": "127.0.0.1", "Port": self.port, **fields}

    def _associate(self, port: int, called_aet: str, aet: str | None = None):
        ae = AE(aet or self.aet)
        ae.add_requested_context(StorageCommitmentPushModel)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        return ae.associate("127.0.0.1", port, ae_title=called_aet,
                            ext_neg=[build_role(StorageCommitmentPushModel, scu_role=True, scp_role=True)])

    def request(self, port: int, references: list[tuple[str, str]], called_aet: str = "ORTHANC",
                aet: str | None = None) -> tuple[str, Dataset]:
        """Send an N-ACTION; the transaction UID and the status of the answer (empty if aborted)."""
        request = Dataset()
        request.TransactionUID = generate_uid()
        request.ReferencedSOPSequence = [_item(*reference) for reference in references]
        assoc = self._associate(port, called_aet, aet)
        status, _reply = assoc.send_n_action(request, 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE)
        if assoc.is_established:
            assoc.release()
        return request.TransactionUID, status

    def report(self, port: int, transaction_uid: str, successes: list[tuple[str, str]],
               failures: list[tuple[str, str, int]], aet: str | None = None) -> Dataset:
        """Send an N-EVENT-REPORT; the status of the answer (empty if aborted)."""
        report = Dataset()
        report.TransactionUID = transaction_uid
        report.ReferencedSOPSequence = [_item(*success) for success in successes]
        if failures:
            report.FailedSOPSequence = [_item(c, i, reason) for c, i, reason in failures]
        assoc = self._associate(port, "ORTHANC", aet)
        status, _reply = assoc.send_n_event_report(report, 2 if failures else 1, StorageCommitmentPushModel,
                                                   COMMITMENT_INSTANCE)
        if assoc.is_established:
            assoc.release()
        return status

    def stop(self) -> None:
        self.server.shutdown()


def _item(sop_class_uid: str, sop_instance_uid: str, reason: int | None = None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class_uid
    item.ReferencedSOPInstanceUID = sop_instance_uid
    if reason is not None:
        item.FailureReason = reason
    return item


def _references(items) -> list[tuple[str, ...]]:
    return [(item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID, *([item.FailureReason] if "FailureReason" in item
                                                                            else [])) for item in items]


@pytest.fixture(scope="module")
def peer():
    modality = PeerModality()
    yield modality
    modality.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory, peer):
    modalities = {
        "peer": peer.modality(),
        "nocommit": {"AET": "NOCOMMIT", "Host": "127.0.0.1", "Port": 1, "AllowStorageCommitment": False},
        "closed": {"AET": "CLOSED", "Host": "127.0.0.1", "Port": free_port()},
    }
    with running_isengard(tmp_path_factory.mktemp("commitment"), DicomModalities=modalities) as running:
        running.upload(sample("DummyCT.dcm"))
        yield running


def wait_for_report(client, transaction_uid: str) -> dict:
    deadline = time.monotonic() + 10
    while True:
        report = client.get(f"/storage-commitment/{transaction_uid}").json()
        if report["Status"] != "Pending" or time.monotonic() > deadline:
            return report
        time.sleep(0.05)


# -- Isengard as the SCP ---------------------------------------------------------------------------------


@pytest.mark.parametrize("references, event_type, successes, failures", [
    ([(MR_STORAGE, DUMMY_CT_UID)], 1, [(MR_STORAGE, DUMMY_CT_UID)], []),
    ([(MR_STORAGE, DUMMY_CT_UID), (CT_STORAGE, DUMMY_CT_UID), MISSING], 2, [(MR_STORAGE, DUMMY_CT_UID)],
     [(CT_STORAGE, DUMMY_CT_UID, CLASS_INSTANCE_CONFLICT), (*MISSING, NO_SUCH_OBJECT_INSTANCE)]),
])
def test_scp_reports_on_a_new_association(server, peer, references, event_type, successes, failures):
    transaction_uid, status = peer.request(server.config["DicomPort"], references, called_aet="OTHERNAME")
    assert status.Status == 0x0000
    report = peer.reports.get(timeout=10)
    assert (report.calling_aet, report.called_aet) == ("OTHERNAME", "PEER")  # Isengard answers by the AET called
    assert report.type_id == event_type and report.dataset.TransactionUID == transaction_uid
    assert _references(report.dataset.ReferencedSOPSequence) == successes
    assert _references(report.dataset.get("FailedSOPSequence", [])) == failures
    assert ("FailedSOPSequence" in report.dataset) == bool(failures)


def test_scp_refuses_requests_and_reports_from_nodes_not_allowed(server, peer):
    port = server.config["DicomPort"]
    for aet in ("STRANGER", "NOCOMMIT"):  # unknown, or AllowStorageCommitment false: the association is aborted
        _uid, status = peer.request(port, [MISSING], aet=aet)
        assert "Status" not in status
        transaction_uid = generate_uid()
        assert "Status" not in peer.report(port, transaction_uid, [MISSING], [], aet=aet)
        assert server.client.get(f"/storage-commitment/{transaction_uid}").status_code == 404
    assert peer.reports.empty()


# -- Isengard as the SCU --------------------------------------------------------------------------------


def test_scu_request_pending_report_and_removal(server, peer):
    study = server.client.get("/studies").json()[0]
    body = {"Resources": [study], "DicomInstances": [{"SOPClassUID": CT_STORAGE, "SOPInstanceUID": "1.2.3.4"},
                                                     list(MISSING)]}
    answer = server.client.post("/modalities/peer/storage-commitment", json=body).json()
    transaction_uid = answer["ID"]
    assert answer == {"ID": transaction_uid, "Path": f"/storage-commitment/{transaction_uid}"}
    assert transaction_uid.startswith("2.25.")
    request = peer.requests.get(timeout=10)
    assert (request.calling_aet, request.called_aet, request.type_id) == ("ORTHANC", "PEER", 1)
    assert request.dataset.TransactionUID == transaction_uid
    assert _references(request.dataset.ReferencedSOPSequence) == [(MR_STORAGE, DUMMY_CT_UID), (CT_STORAGE, "1.2.3.4"),
                                                                  MISSING]
    assert server.client.get(f"/storage-commitment/{transaction_uid}").json() == {"RemoteAET": "PEER",
                                                                                  "Status": "Pending"}
    removal = server.client.post(f"/storage-commitment/{transaction_uid}/remove")
    assert removal.status_code == 400 and removal.json()["OrthancStatus"] == 6

    assert peer.report(server.config["DicomPort"], transaction_uid, [(MR_STORAGE, DUMMY_CT_UID)], []).Status == 0
    assert wait_for_report(server.client, transaction_uid) == {
        "Failures": [], "RemoteAET": "PEER", "Status": "Success",
        "Success": [{"SOPClassUID": MR_STORAGE, "SOPInstanceUID": DUMMY_CT_UID}],
    }
    assert server.client.post(f"/storage-commitment/{transaction_uid}/remove").json() == {}
    assert server.client.get("/instances").json() == []
    server.upload(sample("DummyCT.dcm"))


def test_failures_are_reported_and_forbid_removal(server, peer):
    transaction_uid = generate_uid()  # a transaction Isengard never requested: kept as well, as in Orthanc
    failures = [(CT_STORAGE, "1.2.3.4", NO_SUCH_OBJECT_INSTANCE), (*MISSING, 0x0110), ("7.8", "9.10", 0x0999)]
    assert peer.report(server.config["DicomPort"], transaction_uid, [(MR_STORAGE, DUMMY_CT_UID)], failures).Status == 0
    report = server.client.get(f"/storage-commitment/{transaction_uid}").json()
    assert report == {
        "Failures": [
            {"Description": "One or more of the elements in the Referenced SOP Instance Sequence was not available",
             "FailureReason": 274, "SOPClassUID": CT_STORAGE, "SOPInstanceUID": "1.2.3.4"},
            {"Description": "A general failure in processing the operation was encountered",
             "FailureReason": 272, "SOPClassUID": MISSING[0], "SOPInstanceUID": MISSING[1]},
            {"Description": "Unknown failure reason", "FailureReason": 0x0999, "SOPClassUID": "7.8",
             "SOPInstanceUID": "9.10"},
        ],
        "RemoteAET": "PEER", "Status": "Failure",
        "Success": [{"SOPClassUID": MR_STORAGE, "SOPInstanceUID": DUMMY_CT_UID}],
    }
    removal = server.client.post(f"/storage-commitment/{transaction_uid}/remove")
    assert removal.status_code == 400 and removal.json()["OrthancStatus"] == 6
    assert len(server.client.get("/instances").json()) == 1


BAD_BODIES = [
    "", "[]", "{}", '{"Resources": "x"}', '{"Resources": [1]}', '{"Resources": ["nope"]}',
    '{"DicomInstances": [["a"]]}', '{"DicomInstances": [{"SOPClassUID": "a"}]}', '{"DicomInstances": [3]}',
    '{"DicomInstances": {}}', '{"DicomInstances": [["1.2", "3.4"]], "Timeout": "x"}',
    '{"DicomInstances": [["1.2", "3.4"]], "Timeout": -1}', '{"DicomInstances": [["1.2", "3.4"]], "Timeout": 1.5}',
    '{"DicomInstances": []}',  # to a closed port
]


def test_errors_are_orthancs(server, tmp_path):
    closed = {"closed": {"AET": "CLOSED", "Host": "127.0.0.1", "Port": free_port()}}
    with running_orthanc(tmp_path / "orthanc", DicomModalities=closed) as orthanc:
        requests = [("POST", "/modalities/closed/storage-commitment", body) for body in BAD_BODIES]
        requests += [("POST", "/modalities/nowhere/storage-commitment", '{"Resources": []}'),
                     ("GET", "/storage-commitment/1.2.3", None), ("POST", "/storage-commitment/1.2.3/remove", "")]
        for method, path, body in requests:
            expected = orthanc.client.request(method, path, content=body)
            found = server.client.request(method, path, content=body)
            with_details = body not in MISSPELT_BY_ORTHANC
            assert _error(found, with_details) == _error(expected, with_details), (path, body)


# Orthanc's details are "... 2 string fiels: "SOPClassUID" and "SOPInstanceUID", which Isengard spells right.
MISSPELT_BY_ORTHANC = {'{"DicomInstances": [{"SOPClassUID": "a"}]}'}


def _error(response, with_details: bool) -> tuple:
    """What the error answers share: the HTTP status, the Orthanc code, and the details of the
    checks of the request (not those of network errors, which Isengard words its own way)."""
    error = response.json()
    checked = with_details and error.get("OrthancStatus") in (7, 15)
    return response.status_code, error.get("OrthancStatus"), error.get("Details") if checked else None


def test_reports_keep_the_most_recently_used():
    reports = CommitmentReports(size=2)
    for uid in ("1", "2"):
        reports.put(uid, CommitmentReport("A"))
    assert reports.get("1") is not None  # now the most recent
    reports.put("3", CommitmentReport("A"))
    assert [uid for uid in ("1", "2", "3") if reports.get(uid)] == ["1", "3"]


# -- Isengard and Orthanc ---------------------------------------------------------------------------------


def test_isengard_and_orthanc_commit_both_ways(server, tmp_path):
    """The same request both ways gives the same report, but for the AET of its sender."""
    with running_orthanc(tmp_path / "orthanc", DicomServerEnabled=True, DicomAet="REFERENCE",
                         DicomModalities={"isengard": ["ORTHANC", "127.0.0.1", server.config["DicomPort"]]}) as orthanc:
        orthanc.client.post("/instances", content=sample("DummyCT.dcm").read_bytes()).raise_for_status()
        server.client.put("/modalities/orthanc", json={"AET": "REFERENCE", "Host": "127.0.0.1",
                                                       "Port": orthanc.config["DicomPort"]}).raise_for_status()
        body = json.dumps({"DicomInstances": [[MR_STORAGE, DUMMY_CT_UID], [CT_STORAGE, DUMMY_CT_UID], list(MISSING)]})
        by_isengard = server.client.post("/modalities/orthanc/storage-commitment", content=body).json()["ID"]
        by_orthanc = orthanc.client.post("/modalities/isengard/storage-commitment", content=body).json()["ID"]
        isengard_report = wait_for_report(server.client, by_isengard)
        orthanc_report = wait_for_report(orthanc.client, by_orthanc)
    assert (isengard_report.pop("RemoteAET"), orthanc_report.pop("RemoteAET")) == ("REFERENCE", "ORTHANC")
    assert isengard_report == orthanc_report
    assert isengard_report["Status"] == "Failure" and len(isengard_report["Failures"]) == 2
