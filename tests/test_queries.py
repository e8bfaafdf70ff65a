"""Query/retrieve as a client (SCU): /modalities/{id}/query, /queries, the find routes, /move and /get.

The peers are real: Orthanc 1.10.1 as the remote Q/R SCP (C-FIND, C-MOVE into Isengard, C-GET), DCMTK's
dcmqrscp as another, and a pynetdicom SCP that records what it is asked. A second Orthanc 1.10.1, the
reference client, sends the same requests as Isengard: both must send the same DICOM requests to the
recorder and give the same REST answers. Both clients call themselves ISENGARD, so that their answers
compare without masking (only Isengard is ever the target of a retrieval).
"""

import io
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import httpx
import pydicom
import pytest
from pydicom import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from conftest import ServerProcess, free_port, running_isengard, sample, stop_process
from isengard.dicom.levels import Level
from isengard.errors import IsengardError
from isengard.network.modalities import Modality
from isengard.network.queries import Query, QueryRegistry, Retrieval, outgoing_query, retrieval_steps, retrieve
from isengard.network.scu import ScuSettings
from orthanc import OrthancProcess, running_orthanc

AET = "ISENGARD"  # of Isengard and of the reference client
REMOTE_SAMPLES = ["DummyCT.dcm", "PatientWith2studies", "TransferSyntaxes/1.2.840.10008.1.2.4.50.dcm",
                  "Encodings/Lena-greek.dcm", "Comunix"]
EXPLICIT_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
ULTRASOUND = "1.2.840.10008.5.1.4.1.1.6.1"
MR = "1.2.840.10008.5.1.4.1.1.4"
CT = "1.2.840.10008.5.1.4.1.1.2"


# -- peers -----------------------------------------------------------------------------------------------


class Recorder:
    """A pynetdicom Q/R SCP that records the identifiers it receives. Its C-FIND answers two canned
    matches (0xC000 if PatientID is FAIL), its C-MOVE knows no destination but SOMEWHERE (to which it
    moves nothing), its C-GET sends nothing."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[tuple[str, str, str, dict]] = []  # (operation, calling AET, SOP class, identifier)
        ae = AE("RECORDER")
        for model in (PatientRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelFind,
                      PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelMove,
                      PatientRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelGet,
                      Verification):
            ae.add_supported_context(model)
        handlers = [(evt.EVT_C_FIND, self._find), (evt.EVT_C_MOVE, self._move), (evt.EVT_C_GET, self._get)]
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)

    def take(self) -> list[tuple[str, str, str, dict]]:
        requests, self.requests = self.requests, []
        return requests

    def _record(self, operation: str, event: evt.Event) -> Dataset:
        identifier = event.identifier
        # Orthanc leaks file meta tags into the identifiers that name a SOP class or instance: ignored
        received = {tag: value for tag, value in identifier.to_json_dict().items() if not tag.startswith("0002")}
        self.requests.append((operation, event.assoc.requestor.ae_title, event.context.abstract_syntax, received))
        return identifier

    def _find(self, event: evt.Event):
        query = self._record("C-FIND", event)
        if query.get("PatientID") == "FAIL":
            yield 0xC000, None
            return
        for answer in _canned_answers(query.QueryRetrieveLevel):
            yield 0xFF00, answer

    def _move(self, event: evt.Event):
        self._record("C-MOVE", event)
        if event.move_destination.strip() != "SOMEWHERE":
            yield None, None  # 0xA801: unknown destination
            return
        yield "127.0.0.1", 1
        yield 0

    def _get(self, event: evt.Event):
        self._record("C-GET", event)
        yield 0


def _canned_answers(level: str) -> list[Dataset]:
    rich = Dataset()
    rich.SpecificCharacterSet = "ISO_IR 192"
    rich.QueryRetrieveLevel = level
    rich.PatientID, rich.PatientName, rich.StudyInstanceUID = "P1", "Doe^Jöhn Θ", "1.2.3"  # no theta in Latin1
    rich.ModalitiesInStudy = ["CT", "MR"]
    rich.Rows = 512
    rich.AccessionNumber = ""
    rich.add_new(0x00091010, "LO", "private")  # private tags, sequences and binary values are not kept
    rich.ReferencedStudySequence = [Dataset()]
    rich.add_new(0x7FE00010, "OB", b"\0\1")
    bare = Dataset()  # no level, no charset
    bare.PatientID, bare.StudyDescription = "P2", "Étude"
    return [rich, bare]


@dataclass
class Peers:
    remote: OrthancProcess  # Orthanc 1.10.1 with the samples, AET REMOTE
    reference: OrthancProcess  # Orthanc 1.10.1 as a client, AET ISENGARD
    isengard: ServerProcess
    recorder: Recorder
    remote_instances: dict[str, dict] = field(default_factory=dict)  # SOPInstanceUID -> the remote's instance


def client_modalities(remote: int, recorder: int, silent: int) -> dict:
    return {
        "remote": ["REMOTE", "127.0.0.1", remote],
        "wrong-aet": ["NOT-REMOTE", "127.0.0.1", remote],  # the remote checks the called AET
        "recorder": ["RECORDER", "127.0.0.1", recorder],
        "recorder-ge": ["RECORDER", "127.0.0.1", recorder, "GE"],
        "recorder-nowildcard": ["RECORDER", "127.0.0.1", recorder, "GenericNoUniversalWildcard"],
        "recorder-nodates": ["RECORDER", "127.0.0.1", recorder, "GenericNoWildcardInDates"],
        "recorder-local": {"AET": "RECORDER", "Host": "127.0.0.1", "Port": recorder, "LocalAet": "MODALITYAET"},
        "closed": ["CLOSED", "127.0.0.1", free_port()],
        "silent": ["SILENT", "127.0.0.1", silent],
    }


def sample_files(path: str) -> list:
    found = sample(path)
    return sorted(file for file in found.rglob("*") if file.is_file()) if found.is_dir() else [found]


@pytest.fixture(scope="module")
def peers(tmp_path_factory, silent_port) -> Iterator[Peers]:
    folder = tmp_path_factory.mktemp("queries")
    recorder = Recorder()
    remote_port, isengard_port = free_port(), free_port()
    modalities = client_modalities(remote_port, recorder.port, silent_port)
    try:
        with running_orthanc(
            folder / "remote", DicomServerEnabled=True, DicomPort=remote_port, DicomAet="REMOTE",
            DicomCheckCalledAet=True, DicomModalities={"isengard": [AET, "127.0.0.1", isengard_port]},
        ) as remote, running_orthanc(
            folder / "reference", DicomAet=AET, DicomModalities=modalities, DicomScuTimeout=5,
        ) as reference, running_isengard(
            folder / "isengard", DicomAet=AET, DicomPort=isengard_port, DicomModalities=modalities, DicomScuTimeout=5,
            SyncStorageArea=False,
        ) as isengard:
            found = Peers(remote, reference, isengard, recorder)
            for file in [file for path in REMOTE_SAMPLES for file in sample_files(path)]:
                remote.client.post("/instances", content=file.read_bytes()).raise_for_status()
            for instance in remote.client.get("/instances", params={"expand": ""}).json():
                found.remote_instances[instance["MainDicomTags"]["SOPInstanceUID"]] = instance
            yield found
    finally:
        recorder.server.shutdown()


# -- helpers -----------------------------------------------------------------------------------------------


def post(client: httpx.Client, path: str, body) -> httpx.Response:
    return client.post(path, content=body if isinstance(body, str) else json.dumps(body))


def comparable(response: httpx.Response):
    """Status and body, without what differs between two servers (query IDs, URIs, error details)."""
    try:
        body = response.json()
    except json.JSONDecodeError:  # text answers (/level...), and empty ones
        body = response.text
    if isinstance(body, dict):
        body = {key: value for key, value in body.items() if key not in ("ID", "Path", "Uri", "Details")}
    return response.status_code, body


def same_answers(peers: Peers, requests: list[tuple[str, str, object]]) -> None:
    """Each request, sent by both clients, gets the same answer and sends the same DICOM requests. A
    path may name "{query}": the query that the client's last POST .../query or .../query-* created."""
    query_ids: dict[str, str] = {}
    for method, path, body in requests:
        answers = []
        for name, client in (("reference", peers.reference.client), ("isengard", peers.isengard.client)):
            peers.recorder.take()
            response = client.request(method, path.replace("{query}", query_ids.get(name, "none")),
                                      content=body if isinstance(body, str) else json.dumps(body))
            if method == "POST" and response.status_code == 200 and (path.endswith("/query") or "/query-" in path):
                query_ids[name] = response.json()["ID"]
            answers.append((comparable(response), peers.recorder.take()))
        assert answers[0] == answers[1], (method, path, body)


def new_query(client: httpx.Client, modality: str, body: dict) -> str:
    answer = post(client, f"/modalities/{modality}/query", body)
    assert answer.status_code == 200, answer.text
    return answer.json()["ID"]


def without_group_lengths(file: bytes) -> Dataset:
    """The dataset of a file (without its file meta), but the group lengths that DCMTK rewrites when sending."""
    dataset = pydicom.dcmread(io.BytesIO(file))
    for tag in [tag for tag in dataset.keys() if tag.element == 0]:
        del dataset[tag]
    return dataset


def instances_of(server: ServerProcess) -> dict[str, str]:
    """SOPInstanceUID -> Isengard's instance ID."""
    answer = server.client.get("/instances", params={"expand": ""}).json()
    return {instance["MainDicomTags"]["SOPInstanceUID"]: instance["ID"] for instance in answer}


def metadata_of(server: ServerProcess, instance: str) -> dict:
    return server.client.get(f"/instances/{instance}/metadata", params={"expand": ""}).json()


def delete_everything(server: ServerProcess) -> None:
    for patient in server.client.get("/patients").json():
        server.client.delete(f"/patients/{patient}").raise_for_status()


def remote_study(peers: Peers, **tags: str) -> dict:
    """The one study of the remote that has these tags."""
    (study,) = peers.remote.client.post("/tools/find", json={"Level": "Study", "Query": tags, "Expand": True}).json()
    return study


def remote_uids_of_study(peers: Peers, study_id: str) -> set[str]:
    instances = peers.remote.client.get(f"/studies/{study_id}/instances").json()
    return {instance["MainDicomTags"]["SOPInstanceUID"] for instance in instances}


# -- the queries sent, and the answers, compared with Orthanc's -------------------------------------------


def test_queries_sent_and_answers_match_orthanc(peers):
    stars = {"StudyDate": "*", "PatientName": "*", "SeriesTime": "*", "Modality": "C*"}
    bodies = [
        {"Level": "Study", "Query": {"PatientID": "abc", "InstitutionName": "x", "StudyDescription": "*Chest*"}},
        {"Level": "Study", "Query": {"PatientID": "abc", "InstitutionName": "x"}, "Normalize": False},
        {"Level": "Patient", "Query": {"PatientName": "D*", "NumberOfPatientRelatedStudies": ""}, "LocalAet": "OTHER"},
        {"Level": "Series", "Query": {"StudyDate": "20200101-", "Modality": "CT\\MR",
                                      "NumberOfStudyRelatedSeries": ""}},
        {"Level": "Instance", "Query": {"InstanceNumber": "1", "Rows": "512", "0020,0032": "1\\2",
                                        "PatientName": "é"}},
        {"Level": "image", "Query": {"ReferencedStudySequence": "", "00100020": "x"}, "Timeout": 3},
        {"Level": "Study", "Query": {"PatientID": "FAIL"}},  # 0xC000: 422
    ]
    requests: list = [("POST", "/modalities/recorder/query", body) for body in bodies]
    requests += [("POST", f"/modalities/{name}/query", {"Level": "Series", "Query": stars})
                 for name in ("recorder-ge", "recorder-nowildcard", "recorder-nodates", "recorder-local")]
    requests += [("POST", "/modalities/recorder/query", {"Level": "Study", "Query": {"PatientID": "P*"}})]
    requests += [("GET", "/queries/{query}" + path, "") for path in (
        "", "/answers", "/answers?expand", "/answers?expand&simplify", "/answers?expand=false&short", "/answers/0",
        "/answers/1/content", "/answers/0/content?simplify", "/answers/0/content?short", "/answers/2/content",
        "/answers/x", "/level", "/modality", "/query", "/query?simplify", "/query?short",
    )]
    requests += [("POST", "/queries/{query}/answers/0/retrieve", body)  # C-MOVEs toward destinations not known
                 for body in ("SOMEWHERE", {"TargetAet": "SOMEWHERE", "Simplify": True}, {"Full": True, "Timeout": 4},
                              {"TargetAet": "ELSEWHERE"}, {"TargetAet": 5}, {"Synchronous": "x"})]
    requests += [
        ("POST", "/queries/{query}/answers/1/retrieve", "SOMEWHERE"),  # answer 1 has no StudyInstanceUID
        ("POST", "/queries/{query}/answers/0/query-series", {"Query": {"Modality": "CT", "InstitutionName": "x"}}),
        ("GET", "/queries/{query}/query", ""),
        ("GET", "/queries/{query}/answers/0", ""),
        ("POST", "/queries/{query}/answers/0/query-studies", {}),
        ("POST", "/queries/{query}/answers/0/query-instances", {}),  # the series answers lack their UID
        ("DELETE", "/queries/{query}", ""),
        ("GET", "/queries/{query}", ""),
    ]
    same_answers(peers, requests)


def test_legacy_find_routes_match_orthanc(peers):
    study = remote_study(peers, StudyInstanceUID="1.2.3")  # of patient TEST_1, who has two
    (series,) = peers.remote.client.get(f"/studies/{study['ID']}/series").json()
    series_uid = series["MainDicomTags"]["SeriesInstanceUID"]
    routes = [
        ("find-patient", {}),
        ("find-patient", {"PatientName": "*", "StudyDescription": "x"}),
        ("find-study", {"PatientID": "TEST_1", "StudyDescription": "*", "InstitutionName": "x",
                        "ModalitiesInStudy": ""}),
        ("find-study", {"PatientID": "ab"}),  # too short an identifier: 400 without a body
        ("find-series", {"PatientID": "TEST_1", "StudyInstanceUID": "1.2.3", "Modality": "C*"}),
        ("find-series", {"AccessionNumber": "abc", "PatientID": 12345, "StudyInstanceUID": True}),
        ("find-instance", {"PatientID": "TEST_1", "StudyInstanceUID": "1.2.3", "SeriesInstanceUID": series_uid}),
        ("find-instance", {"PatientID": "TEST_1", "StudyInstanceUID": "1.2.3", "SeriesInstanceUID": "12"}),
        ("find", {"PatientName": "*", "Modality": "CT"}),
        ("find-study", "not json"),
        ("find-study", {"NoSuchTag": "x"}),
    ]
    same_answers(peers, [("POST", f"/modalities/{modality}/{route}", body)
                         for modality in ("recorder", "remote") for route, body in routes])


def test_queries_of_orthanc_and_their_children_match(peers):
    requests = [
        ("POST", "/modalities/remote/query", {"Level": "Patient", "Query": {"PatientName": "*", "PatientSex": ""}}),
        ("GET", "/queries/{query}/answers?expand&simplify", ""),
        ("POST", "/queries/{query}/answers/1/query-studies",
         {"Query": {"StudyDescription": "", "ModalitiesInStudy": ""}}),
        ("GET", "/queries/{query}/answers?expand", ""),
        ("POST", "/queries/{query}/answers/0/query-series", {"Query": {"Modality": "", "SeriesNumber": ""}}),
        ("GET", "/queries/{query}/answers?expand&short", ""),
        ("POST", "/queries/{query}/answers/0/query-instances", {"Query": {"InstanceNumber": "", "SOPClassUID": ""}}),
        ("GET", "/queries/{query}/answers?expand&simplify", ""),
        ("POST", "/modalities/remote/query", {"Level": "Study", "Query": {"PatientName": "Test*"}}),
        ("GET", "/queries/{query}/answers?expand&simplify", ""),
    ]
    same_answers(peers, requests)
    greek = new_query(peers.isengard.client, "remote", {"Level": "Patient", "Query": {"PatientID": "greek",
                                                                                        "PatientName": ""}})
    answers = peers.isengard.client.get(f"/queries/{greek}/answers", params={"expand": "", "simplify": ""}).json()
    assert answers[0]["PatientName"] == "Test-"  # in DefaultEncoding (Latin1): the theta is lost


def test_errors_match_orthanc(peers):
    one_study = [{"StudyInstanceUID": "1.2"}]
    requests = [
        ("POST", "/modalities/missing/query", {"Level": "Study"}),
        ("POST", "/modalities/missing/move", {"Level": "Study", "Resources": []}),
        ("POST", "/modalities/missing/find-patient", {}),
        ("POST", "/modalities/closed/query", {"Level": "Study"}),
        ("POST", "/modalities/wrong-aet/query", {"Level": "Study"}),  # association rejected
        ("POST", "/modalities/recorder/query", "not json"),
        ("POST", "/modalities/recorder/query", {"Query": {}}),
        ("POST", "/modalities/recorder/query", {"Level": "Bad"}),
        ("POST", "/modalities/recorder/query", {"Level": "Study", "Query": {"NoSuchTag": "x"}}),
        ("POST", "/modalities/recorder/query", {"Level": "Study", "Query": {"PatientID": 5}}),
        ("POST", "/modalities/recorder/query", {"Level": "Study", "Normalize": "yes"}),
        ("POST", "/modalities/recorder/query", {"Level": "Study", "Timeout": -1}),
        ("POST", "/modalities/recorder/move", {"Level": "Study", "Resources": one_study, "TargetAet": "ELSEWHERE"}),
        ("POST", "/modalities/recorder/move", {"Level": "Study", "Resources": one_study, "TargetAet": "SOMEWHERE",
                                               "LocalAet": "MOVER", "Timeout": 3}),
        ("POST", "/modalities/recorder/move", {"Level": "Series", "Resources": [{"SeriesInstanceUID": "1.2"}]}),
        ("POST", "/modalities/recorder/move", {"Level": "Study", "Resources": ["1.2"]}),
        ("POST", "/modalities/recorder/move", {"Level": "Study"}),
        ("POST", "/modalities/recorder/move", {"Level": "Study", "Resources": [], "TargetAet": 5}),
        ("GET", "/queries/missing", ""),
        ("GET", "/queries/missing/answers/0/content", ""),
        ("POST", "/queries/missing/retrieve", ""),
        ("DELETE", "/queries/missing", ""),
    ]
    same_answers(peers, requests)


def test_timeout_toward_a_node_that_never_answers(peers):
    start = time.monotonic()
    answer = post(peers.isengard.client, "/modalities/silent/query", {"Level": "Study", "Timeout": 1})
    assert answer.status_code == 500 and answer.json()["OrthancStatus"] == 9
    assert time.monotonic() - start < 3


# -- retrieval from Orthanc: C-MOVE into Isengard, C-GET -----------------------------------------------------


def test_retrieve_answers_by_c_move_into_isengard(peers):
    isengard = peers.isengard
    delete_everything(isengard)
    query = new_query(isengard.client, "remote", {"Level": "Study", "Query": {"PatientID": "TEST_1"}})
    assert isengard.client.get(f"/queries/{query}/answers").json() == ["0", "1"]
    moved = post(isengard.client, f"/queries/{query}/answers/0/retrieve", "")  # toward DicomAet: Isengard
    assert moved.status_code == 200, moved.text
    assert (moved.json()["RemoteAet"], moved.json()["LocalAet"]) == ("REMOTE", AET)
    study = remote_study(peers, StudyInstanceUID=moved.json()["Query"][0]["0020,000d"])
    assert set(instances_of(isengard)) == remote_uids_of_study(peers, study["ID"])

    everything = post(isengard.client, f"/queries/{query}/retrieve", {"TargetAet": AET, "Simplify": True})
    assert [item["QueryRetrieveLevel"] for item in everything.json()["Query"]] == ["STUDY", "STUDY"]
    received = instances_of(isengard)
    assert len(received) == 2
    metadata = metadata_of(isengard, next(iter(received.values())))
    assert (metadata["Origin"], metadata["RemoteAET"], metadata["CalledAET"]) == ("DicomProtocol", "REMOTE", AET)


def test_move_route_at_each_level(peers):
    isengard = peers.isengard
    study = remote_study(peers, PatientID="ozp00SjY2xG")  # DummyCT: one instance
    series = peers.remote.client.get(f"/studies/{study['ID']}/series").json()[0]
    instance = peers.remote.client.get(f"/series/{series['ID']}/instances").json()[0]
    study_uid = study["MainDicomTags"]["StudyInstanceUID"]
    series_uid = series["MainDicomTags"]["SeriesInstanceUID"]
    instance_uid = instance["MainDicomTags"]["SOPInstanceUID"]
    resources = {
        "Patient": {"PatientID": "ozp00SjY2xG"},
        "Study": {"StudyInstanceUID": study_uid},
        "Series": {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid},
        "Instance": {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid, "SOPInstanceUID": instance_uid},
    }
    for level, resource in resources.items():
        delete_everything(isengard)
        body = {"Level": level, "Resources": [resource], "Timeout": 10}
        answer = post(isengard.client, "/modalities/remote/move", body)
        assert (answer.status_code, answer.json()) == (200, {}), level
        assert list(instances_of(isengard)) == [instance_uid], level


def test_retrieve_by_c_get(peers):
    isengard = peers.isengard
    study = remote_study(peers, PatientID="00/03/29:115116")  # a JPEG baseline ultrasound image
    resource = {"StudyInstanceUID": study["MainDicomTags"]["StudyInstanceUID"]}
    (uid,) = remote_uids_of_study(peers, study["ID"])
    remote_file = peers.remote.client.get(f"/instances/{peers.remote_instances[uid]['ID']}/file").content
    # Offered one context per storage class (120 of them), Orthanc accepts them in Explicit Little Endian and
    # transcodes; offered one context per transfer syntax of the class named, it sends the file as it is.
    for named_classes, syntax in [({}, EXPLICIT_LITTLE_ENDIAN), ({"SOPClassesInStudy": ULTRASOUND}, JPEG_BASELINE)]:
        delete_everything(isengard)
        body = {"Level": "Study", "Resources": [{**resource, **named_classes}]}
        got = post(isengard.client, "/modalities/remote/get", body)
        assert (got.status_code, got.json()) == (200, {}), got.text
        assert list(instances_of(isengard)) == [uid]
        metadata = metadata_of(isengard, instances_of(isengard)[uid])
        assert (metadata["Origin"], metadata["RemoteAET"], metadata["CalledAET"]) == ("DicomProtocol", "REMOTE", AET)
        assert metadata["TransferSyntax"] == syntax
    stored_file = isengard.client.get(f"/instances/{instances_of(isengard)[uid]}/file").content
    assert without_group_lengths(stored_file) == without_group_lengths(remote_file)

    delete_everything(isengard)
    query = new_query(isengard.client, "remote", {"Level": "Series", "Query": {"PatientID": "TEST_1"}})
    got = post(isengard.client, f"/queries/{query}/retrieve", {"RetrieveMethod": "C-GET", "Full": True})
    assert got.status_code == 200, got.text
    assert got.json()["Query"][0]["0008,0052"] == {"Name": "QueryRetrieveLevel", "Type": "String", "Value": "SERIES"}
    assert len(instances_of(isengard)) == 2
    bad = post(isengard.client, f"/queries/{query}/retrieve", {"RetrieveMethod": "C-STORE"})
    assert (bad.status_code, bad.json()["OrthancStatus"]) == (400, 3)


def test_c_get_receives_only_the_sop_classes_named(peers):
    isengard = peers.isengard
    delete_everything(isengard)
    study = remote_study(peers, PatientID="ozp00SjY2xG")  # an MR image
    resource = {"StudyInstanceUID": study["MainDicomTags"]["StudyInstanceUID"]}
    ct_only = post(isengard.client, "/modalities/remote/get",
                   {"Level": "Study", "Resources": [{**resource, "SOPClassesInStudy": CT}]})
    assert ct_only.status_code == 500 and instances_of(isengard) == {}  # the remote's sub-operation failed
    mr = post(isengard.client, "/modalities/remote/get",
              {"Level": "Study", "Resources": [{**resource, "SOPClassesInStudy": f"{CT}\\{MR}"}]})
    assert mr.status_code == 200 and len(instances_of(isengard)) == 1


# -- DCMTK's dcmqrscp as the remote ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dcmqrscp(tmp_path_factory, peers) -> Iterator[int]:
    if shutil.which("dcmqrscp") is None:
        pytest.skip("dcmqrscp (DCMTK) is not installed")
    folder = tmp_path_factory.mktemp("dcmqrscp")
    (folder / "storage").mkdir()
    port = free_port()
    (folder / "dcmqrscp.cfg").write_text(f"""
NetworkTCPPort = {port}
MaxPDUSize = 16384
MaxAssociations = 16
HostTable BEGIN
isengard = ({AET}, 127.0.0.1, {peers.isengard.config["DicomPort"]})
HostTable END
VendorTable BEGIN
VendorTable END
AETable BEGIN
QRSCP {folder / "storage"} RW (200, 1024mb) ANY
AETable END
""")
    process = subprocess.Popen(["dcmqrscp", "-c", str(folder / "dcmqrscp.cfg")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Uncompressed: dcmqrscp cannot transcode the JPEG files for the C-STOREs of a C-MOVE.
        files = []
        for path in sample_files("PatientWith2studies"):
            files.append(str(folder / path.name))
            subprocess.run(["dcmdjpeg", str(path), files[-1]], check=True, timeout=30)
        stored = subprocess.run(["storescu", "-aec", "QRSCP", "127.0.0.1", str(port), *files],
                                capture_output=True, text=True, timeout=30)
        assert stored.returncode == 0, stored.stderr
        peers.isengard.client.put("/modalities/dcmqrscp", json=["QRSCP", "127.0.0.1", port]).raise_for_status()
        yield port
    finally:
        stop_process(process)


def test_query_and_retrieve_from_dcmqrscp(peers, dcmqrscp):
    isengard = peers.isengard
    patients = new_query(isengard.client, "dcmqrscp", {"Level": "Patient", "Query": {"PatientID": "TEST_1"}})
    answers = isengard.client.get(f"/queries/{patients}/answers?expand&simplify").json()
    assert [answer["PatientID"] for answer in answers] == ["TEST_1"]
    studies = post(isengard.client, f"/queries/{patients}/answers/0/query-studies", {}).json()
    assert len(isengard.client.get(f"/queries/{studies['ID']}/answers").json()) == 2

    delete_everything(isengard)  # patient level: Patient Root, which dcmqrscp requires at this level
    moved = post(isengard.client, f"/queries/{patients}/retrieve", "")
    assert moved.status_code == 200, moved.text
    assert len(instances_of(isengard)) == 2
    delete_everything(isengard)
    body = {"Level": "Patient", "Resources": [{"PatientID": "TEST_1"}]}
    got = post(isengard.client, "/modalities/dcmqrscp/get", body)
    assert got.status_code == 200, got.text
    assert len(instances_of(isengard)) == 2


# -- retrieval as the steps of a job -------------------------------------------------------------------------


def test_retrieval_reports_progress_and_stops_between_steps(peers):
    recorder = peers.recorder
    resources = tuple({0x00080052: "STUDY", 0x0020000D: uid} for uid in ("1.2.1", "1.2.2", "1.2.3"))
    retrieval = Retrieval(Modality("RECORDER", "127.0.0.1", recorder.port), ScuSettings(AET, 5, 16384), resources,
                          target_aet="SOMEWHERE")
    recorder.take()
    progress: list[tuple[int, int]] = []
    retrieve(retrieval, progress=lambda done, total: progress.append((done, total)))
    assert progress == [(1, 3), (2, 3), (3, 3)]
    assert [(operation, request["0020000D"]["Value"]) for operation, _, _, request in recorder.take()] == [
        ("C-MOVE", ["1.2.1"]), ("C-MOVE", ["1.2.2"]), ("C-MOVE", ["1.2.3"])]

    steps = retrieval_steps(retrieval)
    assert next(steps) == 1
    steps.close()  # a job paused or canceled after its first step: the association is released
    assert len(recorder.take()) == 1
    with pytest.raises(IsengardError):  # a resource without the keys of its level: nothing is sent
        retrieve(replace(retrieval, resources=(*resources, {0x00080052: "SERIES", 0x0020000D: "1.2"})))
    assert recorder.take() == []


# -- rules -----------------------------------------------------------------------------------------------------


def test_query_registry_keeps_the_most_recently_used():
    registry = QueryRegistry(2)
    query = Query("remote", Modality("REMOTE", "127.0.0.1", 104), Level.STUDY, {}, AET)
    first, second = registry.add(query), registry.add(query)
    registry.get(first)  # used: the second is now the least recently used
    third = registry.add(query)
    assert registry.ids() == sorted([first, third])
    with pytest.raises(IsengardError):
        registry.get(second)
    registry.delete(first)
    registry.delete(first)  # twice: no error, as Orthanc
    assert registry.ids() == [third]


def test_normalized_queries_keep_the_tags_of_their_level():
    query = {0x00100010: "D*", 0x00080080: "x", 0x00080061: "CT", 0x00200013: "1", 0x00080020: "*"}
    assert outgoing_query(Level.PATIENT, query, "Generic") == {0x00100010: "D*", 0x00100020: "", 0x00080052: "PATIENT"}
    study = outgoing_query(Level.STUDY, query, "GenericNoWildcardInDates")
    assert study == {0x00100010: "D*", 0x00080061: "CT", 0x00080020: "", 0x00100020: "", 0x00080050: "",
                     0x0020000D: "", 0x00080052: "STUDY"}
    assert outgoing_query(Level.STUDY, query, "Generic", normalize=False)[0x00080080] == "x"
