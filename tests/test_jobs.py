"""The jobs engine through real servers: archive jobs submitted, listed and followed, paused, resumed,
canceled and resubmitted; priorities with one worker; the history size; jobs saved across restarts; and
the archive layout, job fields and error answers compared with Orthanc 1.10.1.

A worker is kept busy deterministically by a synchronous (streamed) archive of incompressible
instances that the client does not read: the job stalls once the socket buffers are full.
"""

import io
import json
import os
import re
import socket
import sqlite3
import subprocess
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import numpy
import pydicom
import pydicom.fileset
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from isengard.config import load_configuration
from isengard.server import Isengard

from conftest import ServerProcess, running_isengard, sample
from orthanc import running_orthanc

JOB_FIELDS = {
    "Content", "CreationTime", "EffectiveRuntime", "ErrorCode", "ErrorDescription", "ErrorDetails", "ID",
    "Priority", "Progress", "State", "Timestamp", "Type",
}
ARCHIVE_CONTENT = {
    "ArchiveSize", "ArchiveSizeMB", "Description", "InstancesCount", "UncompressedSize", "UncompressedSizeMB",
}
TIMESTAMP = re.compile(r"^\d{8}T\d{6}\.\d{6}$")
JOB_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
NOISE_INSTANCES = 12  # of 1 MiB each: three times what the socket buffers take before the job stalls


# -- data -----------------------------------------------------------------------------------------------


def encode(dataset: Dataset) -> bytes:
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


def noise_instances(count: int) -> Iterator[bytes]:
    """One series of 1 MiB images of random pixels, which no compression shrinks."""
    study, series = generate_uid(), generate_uid()
    for _ in range(count):
        ds = Dataset()
        ds.PatientID, ds.PatientName, ds.Modality = "NOISE", "Noise^Blocker", "OT"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, generate_uid()
        ds.SOPClassUID = SecondaryCaptureImageStorage
        ds.Rows = ds.Columns = 1024
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation = 7, 0
        ds.PixelData = os.urandom(1024 * 1024)
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        yield encode(ds)


def naming_instances() -> list[bytes]:
    """Instances whose folder names test Orthanc's rules: kept and dropped characters, empty tags,
    siblings of the same name, modalities of 0, 1 and 5 letters."""
    base = pydicom.dcmread(sample("DummyCT.dcm"))
    symbols = "a!b\"c#d$e%f&g'h(i)j*k+l,m-n.o/p:q;r<s=t>u?v@w[x]y^z_A`B{C|D}~  G"
    study, empty_study, other_empty_study = generate_uid(), generate_uid(), generate_uid()
    duplicated = generate_uid()
    layout = [  # patient ID, patient name, accession, study description, study, series, modality, description
        ("P1", "Doe^John", "ACC", symbols, study, duplicated, "CT", "dup"),
        ("P1", "Doe^John", "ACC", symbols, study, duplicated, "CT", "dup"),
        ("P1", "Doe^John", "ACC", symbols, study, generate_uid(), "CT", "dup"),
        ("P1", "Doe^John", "ACC", symbols, study, generate_uid(), "CT", "dup"),
        ("P1", "Doe^John", "ACC", symbols, study, generate_uid(), "", "no modality"),
        ("P1", "Doe^John", "ACC", symbols, study, generate_uid(), "X", "one letter"),
        ("P1", "Doe^John", "ACC", symbols, study, generate_uid(), "ABCDE", "   spaced   out  "),
        ("P1", "Doe^John", "ACC", symbols, study, generate_uid(), "CT", ""),
        ("P1", "Doe^John", "", "", empty_study, generate_uid(), "CT", "x"),
        ("P1", "Doe^John", "", "", other_empty_study, generate_uid(), "CT", "x"),
        ("", "", "", "", generate_uid(), generate_uid(), "CT", "x"),
    ]
    files = []
    for patient_id, name, accession, study_description, study_uid, series_uid, modality, description in layout:
        ds = base.copy()
        ds.PatientID, ds.PatientName, ds.AccessionNumber = patient_id, name, accession
        ds.StudyDescription, ds.StudyInstanceUID = study_description, study_uid
        ds.SeriesInstanceUID, ds.Modality, ds.SeriesDescription = series_uid, modality, description
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        files.append(encode(ds))
    return files


def upload_all(client: httpx.Client, files: list[bytes]) -> list[dict]:
    answers = []
    for data in files:
        response = client.post("/instances", content=data)
        response.raise_for_status()
        answers.append(response.json())
    return answers


@dataclass
class Studies:
    brainix: str  # 44 MR instances
    small: str  # one CT instance
    noise: str  # incompressible, to keep a worker busy
    brainix_files: list[bytes]
    naming_files: list[bytes]  # naming_instances()
    naming: list[dict]  # the answers to their upload


@pytest.fixture(scope="module")
def loaded(tmp_path_factory) -> Iterator[tuple[ServerProcess, Studies]]:
    """A server with one worker (ConcurrentJobs=1), so that a busy worker queues the other jobs."""
    folder = tmp_path_factory.mktemp("jobs")
    with running_isengard(folder, ConcurrentJobs=1, TemporaryDirectory=str(folder / "tmp")) as server:
        yield server, load(server.client)


def load(client: httpx.Client) -> Studies:
    brainix = [p.read_bytes() for p in sorted(sample("Brainix/Flair").rglob("*")) if p.is_file()]
    naming = naming_instances()
    return Studies(
        brainix=upload_all(client, brainix)[0]["ParentStudy"],
        small=upload_all(client, [sample("DummyCT.dcm").read_bytes()])[0]["ParentStudy"],
        noise=upload_all(client, list(noise_instances(NOISE_INSTANCES)))[0]["ParentStudy"],
        brainix_files=brainix,
        naming_files=naming,
        naming=upload_all(client, naming),
    )


# -- helpers --------------------------------------------------------------------------------------------


def submit_archive(client: httpx.Client, study: str, priority: int = 0) -> str:
    response = client.post(f"/studies/{study}/archive", json={"Asynchronous": True, "Priority": priority})
    assert response.status_code == 200
    answer = response.json()
    assert answer == {"ID": answer["ID"], "Path": f"/jobs/{answer['ID']}"}
    return answer["ID"]


def wait_job(client: httpx.Client, job_id: str, *states: str) -> dict:
    states = states or ("Success", "Failure")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["State"] in states:
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} never reached {states}: {job}")


def state(client: httpx.Client, job_id: str) -> str:
    return client.get(f"/jobs/{job_id}").json()["State"]


@contextmanager
def busy_worker(server: ServerProcess, study: str) -> Iterator[str]:
    """A synchronous archive of `study` that the client does not read: its job runs until the end of the
    block, where the client goes away (which cancels the job). Yields the job's ID."""
    known = set(server.client.get("/jobs").json())
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    client.connect(("127.0.0.1", server.port))
    client.sendall(f"GET /studies/{study}/archive HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    try:
        deadline = time.monotonic() + 10
        while not (new := set(server.client.get("/jobs").json()) - known):
            assert time.monotonic() < deadline, "the synchronous archive made no job"
            time.sleep(0.02)
        job_id = new.pop()
        before, progress = -1, wait_job(server.client, job_id, "Running")["Progress"]
        while progress == 0 or progress != before:  # until it stalls, waiting for the client
            time.sleep(0.5)
            before, progress = progress, server.client.get(f"/jobs/{job_id}").json()["Progress"]
        yield job_id
    finally:
        client.close()


def unzip(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        return {name: archive.read(name) for name in archive.namelist()}


# -- tests ----------------------------------------------------------------------------------------------


def test_asynchronous_archive_job_is_listed_followed_and_downloaded(loaded):
    server, studies = loaded
    client = server.client
    job_id = submit_archive(client, studies.brainix, priority=3)
    assert JOB_ID.match(job_id)
    assert job_id in client.get("/jobs").json()
    progress = []
    while (job := client.get(f"/jobs/{job_id}").json())["State"] not in ("Success", "Failure"):
        progress.append(job["Progress"])
        time.sleep(0.01)
    assert progress == sorted(progress) and all(0 <= p < 100 for p in progress)

    assert set(job) == JOB_FIELDS | {"CompletionTime"}
    assert (job["ID"], job["Type"], job["State"]) == (job_id, "Archive", "Success")
    assert (job["Priority"], job["Progress"]) == (3, 100)
    assert (job["ErrorCode"], job["ErrorDescription"], job["ErrorDetails"]) == (0, "Success", "")
    assert all(TIMESTAMP.match(job[key]) for key in ("CreationTime", "CompletionTime", "Timestamp"))
    assert job["CreationTime"] <= job["CompletionTime"] <= job["Timestamp"]
    assert isinstance(job["EffectiveRuntime"], float) and job["EffectiveRuntime"] > 0
    content = job["Content"]
    assert set(content) == ARCHIVE_CONTENT
    assert (content["Description"], content["InstancesCount"]) == ("REST API", 22)
    assert isinstance(content["ArchiveSize"], str) and isinstance(content["UncompressedSize"], str)
    assert content["UncompressedSizeMB"] == int(content["UncompressedSize"]) // 2**20

    expanded = {j["ID"]: j for j in client.get("/jobs", params={"expand": ""}).json()}
    assert expanded[job_id] | {"Timestamp": ""} == job | {"Timestamp": ""}
    assert list(expanded) == sorted(expanded) == client.get("/jobs").json()

    response = client.get(f"/jobs/{job_id}/archive")
    assert response.status_code == 200
    assert (response.headers["content-type"], response.headers["content-disposition"]) == (
        "application/zip", 'filename="archive.zip"')
    assert len(response.content) == int(content["ArchiveSize"])
    files = unzip(response.content)
    assert len(files) == 22 and sum(map(len, files.values())) == int(content["UncompressedSize"])
    assert min(files) == "5Yp0E BRAINIX/0 IRM crbrale neurocrne/MR sT2WFLAIR/MR000000.dcm"


def test_synchronous_archives_are_streamed_and_are_jobs_too(loaded):
    server, studies = loaded
    client = server.client
    job_id = submit_archive(client, studies.brainix)
    wait_job(client, job_id)
    asynchronous = client.get(f"/jobs/{job_id}/archive")
    before = set(client.get("/jobs").json())
    for response in (client.get(f"/studies/{studies.brainix}/archive"),
                     client.post(f"/studies/{studies.brainix}/archive", json={"Synchronous": True})):
        assert response.status_code == 200
        assert response.headers["content-disposition"] == f'filename="{studies.brainix}.zip"'
        assert "content-length" not in response.headers  # sent while it is made
        assert unzip(response.content) == unzip(asynchronous.content)
    jobs = [wait_job(client, synchronous) for synchronous in set(client.get("/jobs").json()) - before]
    assert [(j["Type"], j["State"]) for j in jobs] == [("Archive", "Success")] * 2
    assert all(j["Content"]["ArchiveSize"] != "0" for j in jobs)

    instance = studies.naming[0]  # of a series of two
    both = client.post("/tools/create-archive", json={"Resources": [instance["ID"], instance["ParentSeries"]]})
    assert both.headers["content-disposition"] == 'filename="Archive.zip"'
    assert len(unzip(both.content)) == 2  # the instance is archived once


def test_archive_requests_refused(loaded):
    server, studies = loaded
    client = server.client
    assert client.get(f"/series/{studies.small}/archive").json()["OrthancStatus"] == 17  # a study, not a series
    assert client.post("/studies/nope/archive", json={"Asynchronous": True}).status_code == 404
    refused = client.post(f"/studies/{studies.small}/archive", json={"Transcode": "JPEG please"})
    assert (refused.status_code, refused.json()["OrthancStatus"]) == (400, 3)


def test_archives_transcode_their_files(fresh_isengard):
    client = fresh_isengard.client
    path = sample("TransferSyntaxes/1.2.840.10008.1.2.1.dcm")
    study = client.post("/instances", content=path.read_bytes()).json()["ParentStudy"]
    original = pydicom.dcmread(path)
    j2k_lossless = "1.2.840.10008.1.2.4.90"
    synchronous = client.get(f"/studies/{study}/archive", params={"transcode": j2k_lossless})
    submitted = client.post("/tools/create-archive", json={"Resources": [study], "Transcode": j2k_lossless,
                                                           "Asynchronous": True}).json()
    wait_job(client, submitted["ID"], "Success")
    asynchronous = client.get(f"/jobs/{submitted['ID']}/archive")
    for archive in (synchronous, asynchronous):
        (data,) = unzip(archive.content).values()
        transcoded = pydicom.dcmread(io.BytesIO(data))
        assert transcoded.file_meta.TransferSyntaxUID == j2k_lossless
        assert transcoded.SOPInstanceUID == original.SOPInstanceUID
        assert numpy.array_equal(transcoded.pixel_array, original.pixel_array)


def test_priorities_and_transitions_while_the_only_worker_is_busy(loaded):
    server, studies = loaded
    client = server.client
    with busy_worker(server, studies.noise) as busy:
        blocked = client.get(f"/jobs/{busy}").json()
        assert 0 < blocked["Progress"] < 100 and blocked["Content"]["InstancesCount"] == NOISE_INSTANCES
        low, high, middle, canceled = (submit_archive(client, studies.small, p) for p in (0, 5, 2, -1))
        assert {state(client, j) for j in (low, high, middle, canceled)} == {"Pending"}
        assert client.get(f"/jobs/{high}").json()["Priority"] == 5
        for action, status in (("resume", 400), ("resubmit", 400), ("pause", 200), ("pause", 200)):
            assert client.post(f"/jobs/{middle}/{action}").status_code == status
        assert state(client, middle) == "Paused"
        assert client.post(f"/jobs/{middle}/resume").json() == {}
        assert state(client, middle) == "Pending"
        assert client.get(f"/jobs/{middle}/archive").status_code == 404  # no output before the end

        assert client.post(f"/jobs/{canceled}/pause").json() == {}
        assert client.post(f"/jobs/{canceled}/cancel").json() == {}
        failed = client.get(f"/jobs/{canceled}").json()
        assert (failed["State"], failed["ErrorCode"], failed["ErrorDescription"]) == (
            "Failure", 37, "This job was canceled")
        assert TIMESTAMP.match(failed["CompletionTime"])
        for action, status in (("cancel", 200), ("pause", 200), ("resume", 400)):
            assert client.post(f"/jobs/{canceled}/{action}").status_code == status
        assert state(client, canceled) == "Failure"
        refused = client.post(f"/jobs/{canceled}/resubmit")
        assert refused.status_code == 500
        assert refused.json()["Details"] == "Cannot resubmit the creation of an archive"

        assert client.post(f"/jobs/{busy}/pause").json() == {}
        assert state(client, busy) == "Running"  # paused after its current step, which waits for the client
        assert client.post(f"/jobs/{busy}/resume").status_code == 400  # not paused yet

    assert wait_job(client, busy)["ErrorCode"] == 37  # canceled when its client went away
    finished = [wait_job(client, job_id) for job_id in (low, high, middle)]
    assert [job["State"] for job in finished] == ["Success"] * 3
    by_completion = sorted(finished, key=lambda job: job["CompletionTime"])
    assert [job["ID"] for job in by_completion] == [high, middle, low]
    for action, status in (("cancel", 200), ("pause", 200), ("resume", 400), ("resubmit", 400)):
        assert client.post(f"/jobs/{low}/{action}").status_code == status
    assert state(client, low) == "Success"


def test_history_keeps_the_last_finished_jobs_and_whole_file_archives(tmp_path):
    temporary = tmp_path / "tmp"
    options = {"JobsHistorySize": 2, "SynchronousZipStream": False, "TemporaryDirectory": str(temporary)}
    with running_isengard(tmp_path / "history", **options) as server:
        client = server.client
        study = upload_all(client, [sample("DummyCT.dcm").read_bytes()])[0]["ParentStudy"]
        first = submit_archive(client, study)
        wait_job(client, first)
        assert client.get(f"/jobs/{first}/archive").status_code == 200
        assert len(list(temporary.iterdir())) == 1
        for _ in range(2):
            whole = client.get(f"/studies/{study}/archive")
            assert whole.headers["content-length"] == str(len(whole.content))
            assert len(unzip(whole.content)) == 1
        kept = client.get("/jobs").json()
        assert len(kept) == 2 and first not in kept
        assert client.get(f"/jobs/{first}").status_code == 404
        assert client.get(f"/jobs/{first}/archive").status_code == 404
        # The forgotten job's archive is deleted, and so are the whole-file archives once sent.
        deadline = time.monotonic() + 5
        while list(temporary.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not list(temporary.iterdir())


def test_saved_jobs_come_back_after_a_restart(tmp_path):
    folder = tmp_path / "saved"
    options = {"ConcurrentJobs": 1, "TemporaryDirectory": str(tmp_path / "tmp")}
    with running_isengard(folder, **options) as server:
        client = server.client
        small = upload_all(client, [sample("DummyCT.dcm").read_bytes()])[0]["ParentStudy"]
        noise = upload_all(client, list(noise_instances(NOISE_INSTANCES)))[0]["ParentStudy"]
        done = submit_archive(client, small, priority=4)
        before = wait_job(client, done)
        with busy_worker(server, noise):
            pending, paused, canceled = (submit_archive(client, small, p) for p in (1, 2, 3))
            client.post(f"/jobs/{paused}/pause")
            client.post(f"/jobs/{canceled}/cancel")
            time.sleep(0.5)  # the jobs are saved within 0.1 s of a change
            server.kill()  # no chance to save at the stop: what was saved must do

    # In process: a restored pending job waits until the server says that its DICOM server
    # listens (start_restored, which the second start below goes through).
    isengard = Isengard(load_configuration(folder / "config.json"))
    try:
        time.sleep(0.5)
        assert isengard.jobs.describe(pending)["State"] == "Pending"
    finally:
        isengard.close()

    with running_isengard(folder, **options) as server:
        client = server.client
        # All but the synchronous archive, which is not saved.
        assert set(client.get("/jobs").json()) == {done, pending, paused, canceled}
        after = client.get(f"/jobs/{done}").json()
        assert after | {"Timestamp": ""} == before | {"Timestamp": ""}
        assert client.get(f"/jobs/{done}/archive").status_code == 404  # archives are temporary files
        assert client.get(f"/jobs/{canceled}").json()["ErrorCode"] == 37
        assert state(client, paused) == "Paused"
        assert wait_job(client, pending)["State"] == "Success"  # ran again
        assert len(unzip(client.get(f"/jobs/{pending}/archive").content)) == 1
        assert client.post(f"/jobs/{paused}/resume").json() == {}
        assert wait_job(client, paused)["State"] == "Success"
        states = {job_id: state(client, job_id) for job_id in (done, pending, paused, canceled)}
    # The last states are saved in the index, in the layout of Orthanc's registry (global property 5)...
    with sqlite3.connect(folder / "db" / "index.db") as index:
        (document,) = index.execute("SELECT value FROM global_properties WHERE property = 5").fetchone()
    registry = json.loads(document)
    assert registry["Type"] == "JobsRegistry"
    assert {job_id: job["State"] for job_id, job in registry["Jobs"].items()} == states
    assert {job["Job"]["Type"] for job in registry["Jobs"].values()} == {"Archive"}
    # ...and with SaveJobs false, nothing comes back.
    with running_isengard(folder, SaveJobs=False, TemporaryDirectory=str(tmp_path / "tmp")) as server:
        assert server.client.get("/jobs").json() == []


# -- compared with Orthanc 1.10.1 ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def orthanc(loaded, tmp_path_factory):
    """Orthanc with one worker, the same files, and a modality that accepts connections but never answers
    (a C-STORE toward it keeps Orthanc's worker busy for its 2 s timeout)."""
    _, studies = loaded
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(8)
        modalities = {"hole": {"AET": "HOLE", "Host": "127.0.0.1", "Port": hole.getsockname()[1], "Timeout": 2}}
        folder = tmp_path_factory.mktemp("orthanc-jobs")
        with running_orthanc(folder, ConcurrentJobs=1, DicomModalities=modalities) as server:
            upload_all(server.client, studies.brainix_files + studies.naming_files)
            yield server


def names_and_files(response: httpx.Response) -> dict[str, bytes]:
    assert response.status_code == 200, response.text
    return unzip(response.content)


def test_archive_layout_matches_orthanc(loaded, orthanc):
    server, studies = loaded
    patients = sorted({answer["ParentPatient"] for answer in studies.naming})
    for path in [f"/patients/{p}/archive" for p in patients] + [f"/studies/{studies.brainix}/archive"]:
        mine, theirs = server.client.get(path), orthanc.client.get(path)
        assert names_and_files(mine) == names_and_files(theirs), path
        assert mine.headers["content-disposition"] == theirs.headers["content-disposition"]
    mixed = [studies.naming[-1]["ID"], studies.brainix, *patients]
    for body in ({"Resources": mixed}, mixed):  # Orthanc also takes the identifiers alone
        assert names_and_files(server.client.post("/tools/create-archive", json=body)) == names_and_files(
            orthanc.client.post("/tools/create-archive", json=body))

    jobs = [submit_archive(s.client, studies.brainix) for s in (server, orthanc)]
    mine, theirs = (wait_job(s.client, job_id) for s, job_id in zip((server, orthanc), jobs))
    assert {k: type(v) for k, v in mine.items()} == {k: type(v) for k, v in theirs.items()}
    assert {k: type(v) for k, v in mine["Content"].items()} == {k: type(v) for k, v in theirs["Content"].items()}
    ignored = ("ID", "CreationTime", "CompletionTime", "Timestamp", "EffectiveRuntime", "Content")
    assert {k: v for k, v in mine.items() if k not in ignored} == {k: v for k, v in theirs.items() if k not in ignored}
    size_fields = ("ArchiveSize", "ArchiveSizeMB")  # the ZIP comments differ
    assert {k: v for k, v in mine["Content"].items() if k not in size_fields} == {
        k: v for k, v in theirs["Content"].items() if k not in size_fields}
    downloads = [s.client.get(f"/jobs/{job_id}/archive") for s, job_id in zip((server, orthanc), jobs)]
    assert names_and_files(downloads[0]) == names_and_files(downloads[1])
    assert downloads[0].headers["content-disposition"] == downloads[1].headers["content-disposition"]


def answer(client: httpx.Client, method: str, path: str, job_id: str = "", **kwargs) -> tuple[int, object]:
    """Status and body (None when empty), the job's ID replaced by "{id}"."""
    response = client.request(method, path.replace("{id}", job_id), **kwargs)
    text = response.text.replace(job_id, "{id}") if job_id else response.text
    return response.status_code, httpx.Response(200, text=text).json() if text else None


def test_job_errors_match_orthanc(loaded, orthanc):
    server, studies = loaded
    study = studies.brainix
    requests = [("GET", "/jobs/nope"), ("GET", "/jobs/nope/archive"), ("DELETE", "/jobs/nope")]  # no DELETE in 1.10.1
    requests += [("POST", f"/jobs/nope/{action}") for action in ("pause", "resume", "cancel", "resubmit")]
    for method, path in requests:
        assert answer(server.client, method, path) == answer(orthanc.client, method, path), path

    bodies = [{"Asynchronous": "x"}, {"Synchronous": 1}, {"Priority": "x"}, {"Priority": 1.5}]
    for body in bodies:
        path = f"/studies/{study}/archive"
        assert answer(server.client, "POST", path, json=body) == answer(orthanc.client, "POST", path, json=body), body
    for content in (b"", b"not json"):
        path = f"/studies/{study}/archive"
        mine, theirs = (answer(s.client, "POST", path, content=content) for s in (server, orthanc))
        assert mine == theirs, content
    for content in (b"", b"not json", b"[1]", b'{"Resources": "x"}', b'{"Asynchronous": true}'):
        mine = answer(server.client, "POST", "/tools/create-archive", content=content)
        assert mine == answer(orthanc.client, "POST", "/tools/create-archive", content=content), content
    for method, path, body in (("GET", "/studies/nope/archive", None), ("POST", "/studies/nope/archive", {}),
                               ("POST", "/tools/create-archive", ["nope"])):
        mine, theirs = (s.client.request(method, path, json=body) for s in (server, orthanc))
        assert (mine.status_code, mine.json()["OrthancStatus"]) == (theirs.status_code, theirs.json()["OrthancStatus"])

    successes = [(s.client, submit_archive(s.client, study)) for s in (server, orthanc)]
    for client, job_id in successes:
        wait_job(client, job_id)
    for method, path in [("POST", f"/jobs/{{id}}/{action}") for action in ("cancel", "pause", "resume", "resubmit")] + [
            ("GET", "/jobs/{id}/nope")]:
        mine, theirs = (answer(client, method, path, job_id) for client, job_id in successes)
        assert mine == theirs, path

    store = orthanc.client.post("/modalities/hole/store", json={"Resources": [study], "Asynchronous": True})
    with busy_worker(server, studies.noise):
        waiting = [(s.client, submit_archive(s.client, studies.naming[-1]["ParentStudy"])) for s in (server, orthanc)]
        assert state(*waiting[1]) == "Pending", "Orthanc's worker is busy with the C-STORE"
        for path in ("/jobs/{id}/cancel", "/jobs/{id}/resubmit"):
            mine, theirs = (answer(client, "POST", path, job_id) for client, job_id in waiting)
            assert mine == theirs, path
    wait_job(orthanc.client, store.json()["ID"])


def test_media_have_a_dicomdir_that_dcmtk_reads(fresh_isengard, tmp_path):
    client = fresh_isengard.client
    paths = sorted((sample("Brainix") / "Epi").glob("*"))[:3] + [sample("TransferSyntaxes/1.2.840.10008.1.2.4.70.dcm")]
    uploaded = [client.post("/instances", content=path.read_bytes()).json() for path in paths]
    study = uploaded[0]["ParentStudy"]
    synchronous = client.get(f"/studies/{study}/media")
    submitted = client.post("/tools/create-media", json={"Resources": [study, uploaded[-1]["ID"]], "Asynchronous": True,
                                                         "Transcode": "1.2.840.10008.1.2.1"}).json()
    assert wait_job(client, submitted["ID"], "Success")["Type"] == "Media"
    asynchronous = client.get(f"/jobs/{submitted['ID']}/archive")
    for archive, count in ((synchronous, 3), (asynchronous, 4)):
        folder = tmp_path / str(count)
        with zipfile.ZipFile(io.BytesIO(archive.content)) as media:
            assert media.namelist()[-1] == "DICOMDIR"
            media.extractall(folder)
        dump = subprocess.run(["dcmdump", "-Un", str(folder / "DICOMDIR")], capture_output=True, encoding="latin-1",
                              check=True)
        assert dump.stdout.count("(0004,1430) CS [IMAGE]") == count
        file_set = pydicom.fileset.FileSet(pydicom.dcmread(folder / "DICOMDIR"))
        instances = [instance.load() for instance in file_set]
        assert sorted(dataset.SOPInstanceUID for dataset in instances) == sorted(
            pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID for path in paths[:count])
    assert {dataset.file_meta.TransferSyntaxUID for dataset in instances} == {"1.2.840.10008.1.2.1"}


def test_modification_jobs_come_back_after_a_restart(tmp_path):
    folder = tmp_path / "saved"
    options = {"ConcurrentJobs": 1, "TemporaryDirectory": str(tmp_path / "tmp")}
    paths = sorted((sample("Brainix") / "Epi").glob("*"))[:4]
    with running_isengard(folder, **options) as server:
        client = server.client
        study = upload_all(client, [path.read_bytes() for path in paths])[0]["ParentStudy"]
        noise = upload_all(client, list(noise_instances(NOISE_INSTANCES)))[0]["ParentStudy"]
        with busy_worker(server, noise):
            pending = client.post(f"/studies/{study}/anonymize", json={"Asynchronous": True, "Keep": ["SeriesNumber"]}).json()["ID"]
            time.sleep(0.5)  # saved within 0.1 s of a change
            server.kill()
    with running_isengard(folder, **options) as server:
        client = server.client
        job = wait_job(client, pending, "Success")
        assert (job["Type"], job["Content"]["InstancesCount"], job["Content"]["IsAnonymization"]) == (
            "ResourceModification", 4, True)
        new_study = job["Content"]["ID"]
        assert len(client.get(f"/studies/{new_study}/instances").json()) == 4  # one study, as planned
        assert client.get(f"/studies/{new_study}/metadata/AnonymizedFrom").text == study
