"""Modality worklists: Isengard's worklist server against DCMTK's `findscu -W` (compared with
Orthanc 1.10.1 and its worklists plugin on the same folder), and /modalities/{id}/find-worklist
toward DCMTK's `wlmscpfs` (compared with Orthanc 1.10.1's answers to the same queries).

The worklists are the samples of dicom-samples/Worklists and a few written here, all copied to
a temporary folder.
"""

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from conftest import free_port, running_isengard, sample, stop_process, wait_for_port
from isengard.config import Configuration, ConfigurationError
from orthanc import running_orthanc

WORKLISTS_PLUGIN = Path("/usr/share/orthanc/plugins/libModalityWorklists.so")
SPS = "ScheduledProcedureStepSequence[0]"
FINDSCU = {"findscu": ["FINDSCU", "127.0.0.1", 1234], "nowl": {"AET": "NOWL", "Host": "127.0.0.1", "Port": 1235,
                                                                   "AllowFindWorklist": False}}


def write_worklist(folder: Path, name: str, accession: str, patient: str, patient_id: str,
                   steps: list[tuple[str, str, str, str]], charset: str | None = None) -> None:
    """A worklist file; each step is (modality, station AET, start date, start time)."""
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    ds.AccessionNumber = accession
    ds.PatientName = patient
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "M"
    ds.StudyInstanceUID = generate_uid()
    ds.RequestedProcedureDescription = "EXAM"
    ds.RequestedProcedureID = "RP" + accession
    items = []
    for modality, aet, date, start in steps:
        step = Dataset()
        step.Modality = modality
        step.ScheduledStationAETitle = aet
        step.ScheduledProcedureStepStartDate = date
        step.ScheduledProcedureStepStartTime = start
        step.ScheduledPerformingPhysicianName = "JOHNSON"
        step.ScheduledProcedureStepDescription = "STEP " + modality
        step.ScheduledProcedureStepID = "SPS" + accession
        items.append(step)
    ds.ScheduledProcedureStepSequence = Sequence(items)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.276.0.7230010.3.1.0.1"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(folder / name, enforce_file_format=True)


def fill_worklists(folder: Path) -> Path:
    """The two samples (accession numbers AN123457, 123456) and seven more (00000 to 00006); one is
    not a `.wl` file, one is named `.WL`, and a `.wl` file is not DICOM."""
    folder.mkdir(parents=True, exist_ok=True)
    for relative in ("Worklists/Working/orig.7814.other.station.dump.wl", "Worklists/Encodings/issue49-latin1.wl"):
        shutil.copy(sample(relative), folder)
    write_worklist(folder, "w0.wl", "00000", "VIVALDI^ANTONIO", "AV35674", [("US", "AS_AET", "19951015", "085607")])
    write_worklist(folder, "w1.wl", "00001", "Bach^Johann Sebastian", "BJS1", [("CT", "CT_AET", "20240105", "101500")])
    write_worklist(folder, "w2.wl", "00002", "MOZART^WOLFGANG", "WAM1",
                   [("MR", "MR_AET", "20240110", "140000"), ("CT", "CT_AET", "20240111", "090000")])
    write_worklist(folder, "w3.WL", "00003", "HAYDN^JOSEPH", "JH1", [("CT", "CT_AET", "20240201", "080000")])
    write_worklist(folder, "w4.txt", "00004", "IGNORED^FILE", "IGN", [("CT", "CT_AET", "20240201", "080000")])
    write_worklist(folder, "w5.wl", "00005", "Ménière^Éloïse", "ME1", [("CT", "FINDSCU", "20240301", "120000")],
                   charset="ISO_IR 100")
    write_worklist(folder, "w6.wl", "00006", "Müller^Hans", "MU1", [("CT", "FINDSCU", "20240302", "120000")],
                   charset="ISO_IR 192")
    (folder / "zz-garbage.wl").write_bytes(b"not a DICOM file\n")
    return folder


@dataclass
class FindResult:
    answers: list[Dataset]
    status: str  # of the final response, as findscu names it ("Success", "Cancel: ...", "Failed: ...")
    output: str


def findscu(port: int, folder: Path, *keys: str, aet: str = "FINDSCU") -> FindResult:
    """`findscu -W` with the given `-k` keys; the answers are extracted to files of `folder`."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    args = ["findscu", "-v", "-W", "-aet", aet, "-aec", "ORTHANC", "-X", "-od", str(folder), "127.0.0.1", str(port)]
    for key in keys:
        args += ["-k", key]
    run = subprocess.run(args, capture_output=True, timeout=60)
    output = (run.stdout + run.stderr).decode("latin-1")
    final = [line for line in output.splitlines() if "Received Final Find Response" in line]
    status = final[0].split("(", 1)[1].rstrip(")") if final else ""
    answers = [pydicom.dcmread(path) for path in sorted(folder.glob("rsp*.dcm"))]
    for answer in answers:
        answer.file_meta = FileMetaDataset()  # findscu writes one of its own
    return FindResult(answers, status, output)


def accessions(result: FindResult) -> list[str]:
    return [str(answer.get("AccessionNumber", "")) for answer in result.answers]


@pytest.fixture(scope="module")
def worklists(tmp_path_factory) -> Path:
    return fill_worklists(tmp_path_factory.mktemp("worklists") / "database")


@pytest.fixture(scope="module")
def server(tmp_path_factory, worklists):
    folder = tmp_path_factory.mktemp("isengard")
    with running_isengard(folder, Worklists={"Enable": True, "Database": str(worklists)},
                          DicomModalities=FINDSCU) as running:
        yield running


@pytest.fixture
def answers_folder(tmp_path) -> Path:
    return tmp_path / "answers"


# -- the worklist server ------------------------------------------------------------------------------------


def test_answers_hold_the_requested_keys_of_the_matching_items(server, answers_folder):
    result = findscu(server.config["DicomPort"], answers_folder, f"{SPS}.Modality=CT", "PatientName",
                     "AccessionNumber", f"{SPS}.ScheduledStationAETitle", "PatientWeight")
    assert result.status == "Success"
    assert sorted(accessions(result)) == ["00001", "00002", "00003", "00005", "00006", "123456"]
    for answer in result.answers:
        assert set(answer.keys()) <= {0x00080005, 0x00080050, 0x00100010, 0x00400100}  # PatientWeight: absent
        assert answer.SpecificCharacterSet == "ISO_IR 100"
        (step,) = answer.ScheduledProcedureStepSequence  # MOZART's MR step does not match
        assert step.Modality == "CT" and set(step.keys()) <= {0x00080060, 0x00400001}
    mozart = next(answer for answer in result.answers if answer.AccessionNumber == "00002")
    assert mozart.ScheduledProcedureStepSequence[0].ScheduledStationAETitle == "CT_AET"


@pytest.mark.parametrize("keys, expected", [
    (["PatientName=bach*"], ["00001"]),  # names match without case
    (["PatientName=BACH^JOHANN SEBASTIAN"], ["00001"]),
    (["PatientID=bjs1"], []),  # other VRs with their case
    (["PatientID=BJS1"], ["00001"]),
    (["AccessionNumber=00001\\00003"], ["00001", "00003"]),
    (["PatientName=M?ller^Hans"], ["00006"]),  # one character, not one byte of its UTF-8
    ([f"{SPS}.ScheduledProcedureStepStartDate=20240101-20240131"], ["00001", "00002"]),
    ([f"{SPS}.Modality=CT", f"{SPS}.ScheduledProcedureStepStartDate=20240111-"], ["00002", "00003", "00005", "00006"]),
    ([f"{SPS}.ScheduledProcedureStepStartDate=-19951015"], ["00000"]),
    (["PregnancyStatus=4"], ["AN123457"]),  # a binary (US) value
    ([f"{SPS}.ScheduledStationAETitle=FINDSCU"], ["00005", "00006"]),
    ([f"{SPS}.ScheduledPerformingPhysicianName=johnson", "PatientName=*ller*"], ["00006"]),
    (["ReferencedStudySequence[0].ReferencedSOPClassUID=1.2"], ["00000", "00001", "00002", "00003", "00005", "00006",
                                                                  "123456"]),  # worklists without it match
])
def test_matching(server, answers_folder, keys, expected):
    result = findscu(server.config["DicomPort"], answers_folder, "AccessionNumber", *keys)
    assert result.status == "Success"
    assert sorted(accessions(result)) == expected


def test_an_empty_sequence_requests_whole_items(server, answers_folder):
    result = findscu(server.config["DicomPort"], answers_folder, "AccessionNumber=00002", "ScheduledProcedureStepSequence")
    (answer,) = result.answers
    assert [step.Modality for step in answer.ScheduledProcedureStepSequence] == ["MR", "CT"]
    assert answer.ScheduledProcedureStepSequence[1].ScheduledProcedureStepDescription == "STEP CT"


def test_answers_are_written_in_the_default_encoding(server, answers_folder):
    result = findscu(server.config["DicomPort"], answers_folder, "PatientName", "PatientID=MU1\\ME1\\201102956",
                     "RequestedProcedureDescription")
    names = {str(answer.PatientID): (answer.SpecificCharacterSet, str(answer.PatientName)) for answer in result.answers}
    assert names == {
        "MU1": ("ISO_IR 100", "Müller^Hans"),  # stored in UTF-8
        "ME1": ("ISO_IR 100", "Ménière^Éloïse"),
        "201102956": ("ISO_IR 100", "VANILLÉ^LAURA^^^Mme"),  # the Latin-1 sample
    }
    assert next(a for a in result.answers if a.PatientID == "201102956").RequestedProcedureDescription == "ÉCHOGRAPHIE"


def test_the_sop_instance_uid_is_left_out(server, answers_folder):
    result = findscu(server.config["DicomPort"], answers_folder, "PatientID=201102956", "SOPInstanceUID", "StudyInstanceUID")
    (answer,) = result.answers
    assert "SOPInstanceUID" not in answer and answer.StudyInstanceUID.startswith("1.2.826.0.1.3680043.9.6676")


def test_the_folder_is_read_at_each_query(server, worklists, answers_folder):
    write_worklist(worklists, "late.wl", "LATE", "LATE^COMER", "LATE1", [("OT", "X", "20240101", "000000")])
    try:
        assert accessions(findscu(server.config["DicomPort"], answers_folder, "AccessionNumber=LATE")) == ["LATE"]
    finally:
        (worklists / "late.wl").unlink()
    assert findscu(server.config["DicomPort"], answers_folder, "AccessionNumber=LATE").answers == []


@pytest.mark.parametrize("keys", [
    [f"{SPS}.Modality=CT", "ScheduledProcedureStepSequence[1].Modality=MR"],  # two items in a sequence
    ["PatientBirthDate=1970*"],  # no wildcards for dates
])
def test_unprocessable_queries(server, answers_folder, keys):
    result = findscu(server.config["DicomPort"], answers_folder, "AccessionNumber", *keys)
    assert result.status == "Failed: UnableToProcess" and result.answers == []


def test_a_missing_folder_fails_the_queries(server, worklists, answers_folder):
    worklists.rename(worklists.with_name("away"))
    try:
        result = findscu(server.config["DicomPort"], answers_folder, "AccessionNumber")
    finally:
        worklists.with_name("away").rename(worklists)
    assert result.status == "Failed: UnableToProcess"


@pytest.mark.parametrize("aet", ["STRANGER", "NOWL"])
def test_refused_callers_see_the_association_aborted(server, answers_folder, aet):
    result = findscu(server.config["DicomPort"], answers_folder, "AccessionNumber", aet=aet)
    assert result.answers == [] and result.status == ""
    assert "Peer Aborted Association" in result.output or "Association Aborted" in result.output


def test_limit_answers_and_filter_issuer_aet(tmp_path, worklists):
    """FilterIssuerAet matches the caller's AET only (whatever the query asks), and LimitAnswers
    cuts the answers, ending with status 0xFE00."""
    options = {"Enable": True, "Database": str(worklists), "FilterIssuerAet": True, "LimitAnswers": 1}
    with running_isengard(tmp_path / "isengard", Worklists=options, DicomModalities=FINDSCU) as limited:
        result = findscu(limited.config["DicomPort"], tmp_path / "a", "AccessionNumber",
                         f"{SPS}.ScheduledStationAETitle=CT_AET")
    (answer,) = result.answers  # of 00005 and 00006, the worklists of FINDSCU
    assert answer.AccessionNumber in ("00005", "00006")
    assert result.status == "Cancel: MatchingTerminatedDueToCancelRequest"
    # Items are extracted per the query as sent, whose AET matches none of theirs, as in Orthanc.
    assert len(answer.ScheduledProcedureStepSequence) == 0


def test_worklists_option_is_checked():
    assert not Configuration.from_raw({}).worklists.enabled
    settings = Configuration.from_raw({"Worklists": {"Enable": True, "Database": "wl", "LimitAnswers": 3}}).worklists
    assert (settings.enabled, str(settings.database), settings.filter_issuer_aet, settings.limit_answers) == (
        True, "wl", False, 3)
    for bad in ({"Enable": True}, {"Enable": "yes"}, {"LimitAnswers": -1}, {"Database": 1}):
        with pytest.raises(ConfigurationError, match="Worklists"):
            Configuration.from_raw({"Worklists": bad})


DIFFERENTIAL_QUERIES = [
    [f"{SPS}.Modality=CT", "PatientName", "AccessionNumber", f"{SPS}.ScheduledStationAETitle", "PatientWeight"],
    ["PatientName=bach*", "PatientID"],
    ["PatientID=bjs1", "PatientName"],
    [f"{SPS}.ScheduledProcedureStepStartDate=20240101-20240131", "PatientName", f"{SPS}.Modality"],
    [f"{SPS}.Modality=CT", f"{SPS}.ScheduledProcedureStepStartDate=20240111-", "AccessionNumber"],
    ["AccessionNumber=00001\\00003", "PatientName"],
    ["ScheduledProcedureStepSequence", "AccessionNumber"],
    ["PatientBirthDate=1970*", "AccessionNumber"],
    ["PregnancyStatus", "AccessionNumber", "RequestedProcedureDescription", "AdmissionID", "ReferencedStudySequence"],
    [f"{SPS}.ScheduledPerformingPhysicianName=johnson", "PatientName=*ller*"],
    ["SpecificCharacterSet=ISO_IR 192", "PatientName=m*", "PatientID", "SOPInstanceUID"],
    [f"{SPS}.ScheduledProcedureStepStartDate=-20240110", "StudyInstanceUID", "RequestedProcedureDescription"],
    ["AccessionNumber=AN*", f"{SPS}"],
    [f"{SPS}.Modality=CT", "ScheduledProcedureStepSequence[1].Modality=MR", "AccessionNumber"],
]


def test_answers_are_those_of_orthancs_worklists_plugin(server, worklists, tmp_path):
    if not WORKLISTS_PLUGIN.exists():
        pytest.skip("Orthanc's worklists plugin is not installed")
    options = {"DicomServerEnabled": True, "Plugins": [str(WORKLISTS_PLUGIN)], "DicomModalities": FINDSCU,
               "Worklists": {"Enable": True, "Database": str(worklists)}}
    with running_orthanc(tmp_path / "orthanc", **options) as orthanc:
        for keys in DIFFERENTIAL_QUERIES:
            expected = findscu(orthanc.config["DicomPort"], tmp_path / "orthanc-answers", *keys)
            found = findscu(server.config["DicomPort"], tmp_path / "isengard-answers", *keys)
            assert (found.status, found.answers) == (expected.status, expected.answers), keys


# -- /modalities/{id}/find-worklist -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wlmscpfs(tmp_path_factory, worklists):
    """DCMTK's worklist server, serving the worklists to the called AET "WLMSCP"."""
    root = tmp_path_factory.mktemp("wlmscpfs")
    (root / "WLMSCP").mkdir()
    for path in worklists.glob("*.wl"):
        shutil.copy(path, root / "WLMSCP")
    (root / "WLMSCP" / "lockfile").touch()
    port = free_port()
    process = subprocess.Popen(["wlmscpfs", "-dfp", str(root), str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    yield {"AET": "WLMSCP", "Host": "127.0.0.1", "Port": port}
    stop_process(process)


SCU_BODIES = [
    {"PatientName": "", "AccessionNumber": "0000*", "ScheduledProcedureStepSequence": [{"Modality": "CT",
                                                                                          "ScheduledStationAETitle": ""}]},
    {"Query": {"PatientName": "", "AccessionNumber": "00001"}},
    {"Query": {"PatientName": "", "AccessionNumber": "00001", "ScheduledProcedureStepSequence": [{"Modality": "CT"}]},
     "Short": True},
    {"Query": {"PatientName": "", "AccessionNumber": "00001", "ScheduledProcedureStepSequence": [{"Modality": "CT"}]},
     "Full": True},
    {"Query": {"AccessionNumber": "00001"}, "Short": True, "Full": True},
    {"0010,0010": "", "AccessionNumber": "00001"},
    {"Query": {"PatientName": "", "AccessionNumber": "00001"}, "Timeout": 3, "Short": False},
    {"Query": {"PregnancyStatus": "", "PatientWeight": "", "PatientBirthDate": "", "ReferencedStudySequence": [],
               "StudyInstanceUID": "", "SpecificCharacterSet": ""}},
    {"Query": {"PatientName": "", "SpecificCharacterSet": "ISO_IR 192"}},
    {"Query": {"ScheduledProcedureStepSequence": "", "AccessionNumber": ""}},
    # errors
    {"Query": []},
    {"Query": {"Foo": "1"}},
    {"Query": {"PatientName": 1}},
    {"Query": {"PatientName": ["x"]}},
    {"Query": {"ScheduledProcedureStepSequence": "x"}},
    {"Query": {"ScheduledProcedureStepSequence": ["x"]}},
    {"Query": {"PregnancyStatus": "x"}},
    {"Query": {"AccessionNumber": "00001"}, "Short": "yes"},
    {"Query": {"AccessionNumber": ""}, "Timeout": -1},
]


def comparable(response) -> tuple[int, object]:
    body = response.json()
    if isinstance(body, dict):
        body = {key: value for key, value in body.items() if key not in ("Method", "Uri", "HttpError")}
        if body.get("OrthancStatus") == 27:
            body.pop("Details", None)  # Isengard names the unknown tag
    return response.status_code, body


def test_find_worklist_answers_as_orthanc_does(server, wlmscpfs, tmp_path):
    server.client.put("/modalities/wlm", json=wlmscpfs).raise_for_status()
    with running_orthanc(tmp_path / "orthanc", DicomModalities={"wlm": wlmscpfs}) as orthanc:
        for body in SCU_BODIES + ["not json", ""]:
            content = body if isinstance(body, str) else json.dumps(body)
            expected = orthanc.client.post("/modalities/wlm/find-worklist", content=content)
            found = server.client.post("/modalities/wlm/find-worklist", content=content)
            assert comparable(found) == comparable(expected), body


def test_find_worklist_answers(server, wlmscpfs):
    server.client.put("/modalities/wlm", json=wlmscpfs).raise_for_status()
    body = {"Query": {"PatientName": "", "AccessionNumber": "00001",
                      "ScheduledProcedureStepSequence": [{"Modality": "", "ScheduledStationAETitle": ""}]}}
    answer = server.client.post("/modalities/wlm/find-worklist", json=body)
    assert answer.json() == [{"AccessionNumber": "00001", "PatientName": "Bach^Johann Sebastian",
                              "ScheduledProcedureStepSequence": [{"Modality": "CT", "ScheduledStationAETitle": "CT_AET"}]}]


def test_find_worklist_failures(server):
    missing = server.client.post("/modalities/nowhere/find-worklist", json={})
    assert missing.status_code == 404 and missing.json()["OrthancStatus"] == 7
    server.client.put("/modalities/closed", json={"AET": "CLOSED", "Host": "127.0.0.1", "Port": free_port()})
    closed = server.client.post("/modalities/closed/find-worklist", json={})
    assert closed.status_code == 500 and closed.json()["OrthancStatus"] == 9
    # Isengard toward itself as "NOWL", which may not query worklists: the association is aborted.
    server.client.put("/modalities/refusing", json={"AET": "ORTHANC", "Host": "127.0.0.1",
                                                    "Port": server.config["DicomPort"], "LocalAet": "NOWL"})
    refused = server.client.post("/modalities/refusing/find-worklist", json={"Query": {"AccessionNumber": ""}})
    assert refused.status_code == 500 and refused.json()["OrthancStatus"] == 9


def test_find_worklist_toward_isengard_and_a_server_without_worklists(server, tmp_path):
    """Without the Worklists option, Isengard refuses the worklist model, as Orthanc without its plugin."""
    server.client.put("/modalities/self", json={"AET": "ORTHANC", "Host": "127.0.0.1",
                                                "Port": server.config["DicomPort"], "LocalAet": "FINDSCU"})
    answer = server.client.post("/modalities/self/find-worklist",
                                json={"Query": {"AccessionNumber": "", "PatientID": "MU1", "PatientName": ""}})
    assert answer.json() == [{"AccessionNumber": "00006", "PatientID": "MU1", "PatientName": "Müller^Hans",
                              "SpecificCharacterSet": "ISO_IR 100"}]
    with running_isengard(tmp_path / "plain", DicomModalities=FINDSCU) as plain:
        refused = findscu(plain.config["DicomPort"], tmp_path / "answers", "AccessionNumber")
        assert "No Acceptable Presentation Contexts" in refused.output
        server.client.put("/modalities/plain", json={"AET": "ORTHANC", "Host": "127.0.0.1",
                                                     "Port": plain.config["DicomPort"], "LocalAet": "FINDSCU"})
        unsupported = server.client.post("/modalities/plain/find-worklist", json={"Query": {}})
        assert unsupported.status_code == 500 and unsupported.json()["OrthancStatus"] == 2016
