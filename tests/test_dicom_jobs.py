"""The DICOM client's jobs: /modalities/{id}/store, /queries/.../retrieve and the C-MOVEs served with
SynchronousCMove false run on the jobs engine, compared with Orthanc 1.10.1's jobs.

The peers are real: DCMTK's storescp, a pynetdicom storage SCP that answers slowly, a socket that never
answers, and Orthanc 1.10.1 (AET REFERENCE), which is both the reference of the jobs' contents and a
remote node (query/retrieve SCP, storage commitment SCP).
"""

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import httpx
import pytest
from pydicom import Dataset
from pynetdicom import AE, build_context
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove

from conftest import ServerProcess, free_port, running_isengard, sample
from isengard.config import Configuration
from isengard.errors import ErrorCode, IsengardError
from isengard.jobs import RetrieveJob, StopReason
from isengard.jobs.job import restore_job
from isengard.network.modalities import Modality
from isengard.network.queries import Retrieval
from isengard.network.scu import ScuSettings
from isengard.server import Isengard
from orthanc import OrthancProcess, running_orthanc
from test_dicom_network import ct_copies, read_dataset
from test_sending import RecordingScp, Storescp

# What differs between two runs of the same job.
VOLATILE = ("ID", "CreationTime", "CompletionTime", "Timestamp", "EffectiveRuntime")


@dataclass
class Peers:
    orthanc: OrthancProcess  # AET REFERENCE
    isengard: ServerProcess  # AET ISENGARD
    storescp: Storescp
    slow: RecordingScp  # 0.1 s per C-STORE
    instance: dict  # DummyCT.dcm, stored in both servers


def modalities(ports: dict[str, int], storescp: Storescp, slow: RecordingScp, silent: int) -> dict:
    return {
        "scp": storescp.modality(),
        "slow": slow.modality(),
        "silent": ["SILENT", "127.0.0.1", silent],
        "dead": ["DEAD", "127.0.0.1", free_port()],
        "mover": ["MOVER", "127.0.0.1", free_port()],
        "orthanc": ["REFERENCE", "127.0.0.1", ports["orthanc"]],
        "isengard": ["ISENGARD", "127.0.0.1", ports["isengard"]],
    }


@pytest.fixture(scope="module")
def peers(tmp_path_factory, silent_port) -> Iterator[Peers]:
    folder = tmp_path_factory.mktemp("dicom-jobs")
    storescp = Storescp(folder / "storescp", "+xa")
    slow = RecordingScp(aet="SLOW", delay=0.1)
    ports = {"orthanc": free_port(), "isengard": free_port()}
    known = modalities(ports, storescp, slow, silent_port)
    path = sample("DummyCT.dcm")
    try:
        with running_orthanc(
            folder / "orthanc", DicomServerEnabled=True, DicomPort=ports["orthanc"], DicomAet="REFERENCE",
            DicomModalities=known, SynchronousCMove=False, DicomAlwaysAllowFind=True, DicomAlwaysAllowMove=True,
            DicomAlwaysAllowGet=True,
        ) as orthanc, running_isengard(
            folder / "isengard", DicomPort=ports["isengard"], DicomAet="ISENGARD", DicomModalities=known,
            SynchronousCMove=False, SyncStorageArea=False,
        ) as isengard:
            instance = isengard.upload(path)
            orthanc.client.post("/instances", content=path.read_bytes()).raise_for_status()
            yield Peers(orthanc, isengard, storescp, slow, instance)
    finally:
        storescp.stop()
        slow.stop()


# -- helpers --------------------------------------------------------------------------------------------


def wait_job(client: httpx.Client, job_id: str, *states: str, timeout: float = 30) -> dict:
    states = states or ("Success", "Failure")
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/jobs/{job_id}").json()
        if job["State"] in states:
            return job
        assert time.monotonic() < deadline, f"job {job_id} never reached {states}: {job}"
        time.sleep(0.02)


def submit(client: httpx.Client, path: str, body) -> str:
    answer = client.post(path, json=body)
    assert answer.status_code == 200, answer.text
    job_id = answer.json()["ID"]
    assert answer.json() == {"ID": job_id, "Path": f"/jobs/{job_id}"}
    return job_id


def stable(job: dict) -> dict:
    return {key: value for key, value in job.items() if key not in VOLATILE}


def ran_alike(peers: Peers, path: str, body: dict, unlike: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """The same asynchronous request to both servers, both calling themselves CALLER: their finished jobs,
    which must match but for ErrorDetails (each server words its network errors) and the `unlike` keys
    (of the job or of its content)."""
    body = {"LocalAet": "CALLER", **body}
    jobs = [wait_job(server.client, submit(server.client, path, body)) for server in (peers.orthanc, peers.isengard)]
    reference, ours = (
        {key: value for key, value in stable(job).items() if key not in unlike}
        | {"Content": {key: value for key, value in job["Content"].items() if key not in unlike},
           "ErrorDetails": bool(job["ErrorDetails"])}
        for job in jobs
    )
    assert ours == reference, body
    return jobs[0], jobs[1]


def upload_copies(server: ServerProcess, folder, count: int) -> list[str]:
    return [server.upload(path)["ID"] for path in ct_copies(folder, count)]


def uids_of(server: ServerProcess, instances: list[str]) -> list[str]:
    return [server.client.get(f"/instances/{i}").json()["MainDicomTags"]["SOPInstanceUID"] for i in instances]


def c_move(port: int, called_aet: str, series: Dataset, destination: str) -> tuple[int, int]:
    """A C-MOVE of a series by MOVER: the final status and its count of completed sub-operations."""
    ae = AE("MOVER")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
    assoc = ae.associate("127.0.0.1", port, [build_context(StudyRootQueryRetrieveInformationModelMove)],
                         ae_title=called_aet)
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.StudyInstanceUID, query.SeriesInstanceUID = series.StudyInstanceUID, series.SeriesInstanceUID
    responses = list(assoc.send_c_move(query, destination, StudyRootQueryRetrieveInformationModelMove, msg_id=7))
    assoc.release()
    status = responses[-1][0]
    return status.Status, status.get("NumberOfCompletedSuboperations")


def new_jobs(client: httpx.Client, known: set[str], count: int = 1) -> list[str]:
    deadline = time.monotonic() + 10
    while len(found := set(client.get("/jobs").json()) - known) < count:
        assert time.monotonic() < deadline, "no new job"
        time.sleep(0.02)
    return sorted(found)


# -- C-STORE SCU: /modalities/{id}/store ------------------------------------------------------------------


def test_asynchronous_store_matches_orthancs_job(peers):
    instance = peers.instance
    peers.storescp.clear()
    body = {"Resources": [instance["ParentStudy"]], "Asynchronous": True, "Priority": 3, "LocalAet": "CALLER",
            "MoveOriginatorAet": "ASKER", "MoveOriginatorID": 5, "Timeout": 5}
    _reference, job = ran_alike(peers, "/modalities/scp/store", body)
    assert (job["Type"], job["State"], job["Priority"], job["Progress"]) == ("DicomModalityStore", "Success", 3, 100)
    assert job["Content"] == {
        "Description": "REST API", "FailedInstancesCount": 0, "InstancesCount": 1, "LocalAet": "CALLER",
        "MoveOriginatorAET": "ASKER", "MoveOriginatorID": 5, "ParentResources": [instance["ParentStudy"]],
        "RemoteAet": "STORESCP",
    }
    assert set(peers.storescp.received()) == {read_dataset(sample("DummyCT.dcm")).SOPInstanceUID}
    # The synchronous answer is the content of the job, which shows in /jobs too.
    known = set(peers.isengard.client.get("/jobs").json())
    answer = peers.isengard.client.post("/modalities/scp/store", json={**body, "Asynchronous": False})
    assert answer.json() == job["Content"]
    (synchronous,) = new_jobs(peers.isengard.client, known)
    assert stable(peers.isengard.client.get(f"/jobs/{synchronous}").json()) == stable(job)


def test_failing_store_jobs_match_orthancs(peers):
    resources = [peers.instance["ID"]]
    reference, failed = ran_alike(peers, "/modalities/dead/store", {"Resources": resources, "Asynchronous": True})
    assert (failed["State"], failed["ErrorCode"], failed["ErrorDescription"]) == (
        "Failure", 9, "Error in the network protocol")
    assert "DEAD" in failed["ErrorDetails"]
    # Permissive, the same job succeeds, the instance not counted as failed (it could be read).
    _reference, permissive = ran_alike(peers, "/modalities/dead/store",
                                       {"Resources": resources, "Asynchronous": True, "Permissive": True})
    assert (permissive["State"], permissive["Content"]["FailedInstancesCount"]) == ("Success", 0)
    # Storage commitment toward a node that is no storage commitment SCP: the instances go, the request fails
    # (Orthanc shows the transaction from the start, and no progress; Isengard, once the request goes).
    reference, failed = ran_alike(peers, "/modalities/scp/store",
                                  {"Resources": resources, "Asynchronous": True, "StorageCommitment": True},
                                  unlike=("StorageCommitmentTransactionUID", "Progress"))
    assert (failed["Progress"], "StorageCommitmentTransactionUID" in failed["Content"]) == (50, False)
    assert (failed["ErrorCode"], failed["ErrorDescription"], failed["ErrorDetails"]) == (
        2015, "DicomUserConnection: No acceptable presentation context for modality",
        'Unable to negotiate a presentation context with AET "STORESCP"')
    assert failed["ErrorDetails"] == reference["ErrorDetails"]


def test_storage_commitment_after_store(peers):
    """Isengard sends to Orthanc and asks it to commit: Orthanc's report comes back to Isengard's SCP."""
    instance = peers.instance
    answer = peers.isengard.client.post("/modalities/orthanc/store",
                                        json={"Resources": [instance["ID"]], "StorageCommitment": True})
    assert answer.status_code == 200, answer.text
    content = answer.json()
    transaction = content.pop("StorageCommitmentTransactionUID")
    assert transaction.startswith("2.25.")
    assert content == {"Description": "REST API", "FailedInstancesCount": 0, "InstancesCount": 1,
                       "LocalAet": "ISENGARD", "ParentResources": [instance["ID"]], "RemoteAet": "REFERENCE"}
    deadline = time.monotonic() + 10
    while (report := peers.isengard.client.get(f"/storage-commitment/{transaction}").json())["Status"] == "Pending":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    dataset = read_dataset(sample("DummyCT.dcm"))
    assert report == {"Failures": [], "RemoteAET": "REFERENCE", "Status": "Success",
                      "Success": [{"SOPClassUID": dataset.SOPClassUID, "SOPInstanceUID": dataset.SOPInstanceUID}]}


def test_store_job_progresses_pauses_resumes_and_cancels(peers, tmp_path):
    client, slow = peers.isengard.client, peers.slow
    instances = upload_copies(peers.isengard, tmp_path / "ct", 15)
    slow.requests.clear()
    job_id = submit(client, "/modalities/slow/store", {"Resources": instances, "Asynchronous": True})
    job = wait_job(client, job_id, "Running")
    while not 0 < (job := client.get(f"/jobs/{job_id}").json())["Progress"] < 100:
        assert job["State"] == "Running"
        time.sleep(0.02)
    assert client.post(f"/jobs/{job_id}/pause").json() == {}
    paused = wait_job(client, job_id, "Paused", timeout=2)  # after the C-STORE under way
    sent = len(slow.requests)
    time.sleep(0.3)
    assert len(slow.requests) == sent and 0 < sent < 15
    assert client.get(f"/jobs/{job_id}").json()["Progress"] == paused["Progress"] == int(100 * sent / 15)
    assert client.post(f"/jobs/{job_id}/resume").json() == {}
    assert wait_job(client, job_id)["State"] == "Success"
    # Each instance was sent once, the rest over a new association after the pause.
    assert [request["sop_instance_uid"] for request in slow.requests] == uids_of(peers.isengard, instances)
    assert len(slow.calling_aets) >= 2
    slow.requests.clear()
    job_id = submit(client, "/modalities/slow/store", {"Resources": instances, "Asynchronous": True})
    wait_job(client, job_id, "Running")
    time.sleep(0.3)
    assert client.post(f"/jobs/{job_id}/cancel").json() == {}
    canceled = wait_job(client, job_id, timeout=2)
    assert (canceled["State"], canceled["ErrorCode"], canceled["ErrorDescription"]) == (
        "Failure", 37, "This job was canceled")
    assert 0 < len(slow.requests) < 15


def test_canceling_a_store_toward_a_node_that_does_not_answer(peers):
    client = peers.isengard.client
    job_id = submit(client, "/modalities/silent/store",
                    {"Resources": [peers.instance["ID"]], "Asynchronous": True, "Timeout": 1})
    wait_job(client, job_id, "Running")
    began = time.monotonic()
    client.post(f"/jobs/{job_id}/cancel")
    canceled = wait_job(client, job_id, timeout=3)  # once the association attempt times out
    assert (canceled["ErrorCode"], time.monotonic() - began < 2) == (37, True)


# -- C-MOVE SCU: /queries/{id}/retrieve ---------------------------------------------------------------------


def query(client: httpx.Client) -> str:
    answer = client.post("/modalities/orthanc/query", json={"Level": "Study", "Query": {"PatientID": "*"},
                                                             "LocalAet": "CALLER"})
    assert answer.status_code == 200, answer.text
    return answer.json()["ID"]


def test_retrieve_jobs_match_orthancs(peers):
    """Orthanc queries itself as Isengard queries it; both move the study to Isengard (where it comes back
    for the next test)."""
    isengard, orthanc = peers.isengard, peers.orthanc
    isengard.client.delete(f"/instances/{peers.instance['ID']}").raise_for_status()
    ids = {server: query(server.client) for server in (orthanc, isengard)}
    jobs = []
    for body in ({"Asynchronous": True, "TargetAet": "ISENGARD", "Priority": 2, "Full": True},
                 {"Asynchronous": True, "TargetAet": "NOWHERE"},
                 {"Asynchronous": True, "TargetAet": "NOWHERE", "Permissive": True}):
        submitted = {server: submit(server.client, f"/queries/{ids[server]}/retrieve", body) for server in ids}
        reference, ours = (stable(wait_job(server.client, job_id)) for server, job_id in submitted.items())
        assert ours | {"ErrorDetails": ""} == reference | {"ErrorDetails": ""}, body
        jobs.append(ours)
    moved, failed, permissive = jobs
    assert (moved["Type"], moved["State"], moved["Priority"]) == ("DicomMoveScu", "Success", 2)
    assert moved["Content"]["Query"][0]["0008,0052"] == {"Name": "QueryRetrieveLevel", "Type": "String",
                                                         "Value": "STUDY"}
    assert (failed["State"], failed["ErrorCode"], permissive["State"]) == ("Failure", 9, "Success")
    # Orthanc serves C-MOVEs in jobs too (SynchronousCMove false): the instance comes a little later.
    deadline = time.monotonic() + 10
    while isengard.client.get(f"/instances/{peers.instance['ID']}").status_code != 200:
        assert time.monotonic() < deadline, "the instance never came"
        time.sleep(0.05)
    # The synchronous answer is the job's content.
    answer = isengard.client.post(f"/queries/{ids[isengard]}/answers/0/retrieve",
                                  json={"TargetAet": "ISENGARD", "Full": True})
    assert answer.json() == moved["Content"]


def test_c_get_retrieval_is_a_job(peers):
    isengard = peers.isengard
    isengard.client.delete(f"/instances/{peers.instance['ID']}").raise_for_status()
    job_id = submit(isengard.client, f"/queries/{query(isengard.client)}/retrieve",
                    {"Asynchronous": True, "RetrieveMethod": "C-GET", "Priority": 1})
    job = wait_job(isengard.client, job_id)
    assert (job["Type"], job["State"], job["Priority"], job["Content"]["RemoteAet"]) == (
        "DicomGetScu", "Success", 1, "REFERENCE")
    assert isengard.client.get(f"/instances/{peers.instance['ID']}").status_code == 200  # came back in the C-GET


def test_retrieve_job_steps_pauses_and_skips_failures_when_permissive(peers, tmp_path):
    """In process: one C-MOVE per step, a pause releasing the association, a restore from the saved job;
    permissive, the resources that lack their keys are skipped, the others moved (Orthanc makes a job of
    each C-MOVE it serves)."""
    isengard = Isengard(Configuration.from_raw({"StorageDirectory": str(tmp_path / "db"), "DicomAet": "ISENGARD"}))
    try:
        dataset = read_dataset(sample("DummyCT.dcm"))
        good = {0x00080052: "STUDY", 0x0020000D: dataset.StudyInstanceUID}
        bad = {0x00080052: "SERIES", 0x0020000D: dataset.StudyInstanceUID}  # no SeriesInstanceUID
        remote = Modality("REFERENCE", "127.0.0.1", peers.orthanc.config["DicomPort"])
        retrieval = Retrieval(remote, ScuSettings.from_config(isengard.config), (bad, good, bad, good),
                              target_aet="STORESCP")
        known = set(peers.orthanc.client.get("/jobs").json())
        job = RetrieveJob.of(isengard, retrieval, "short", permissive=True)
        job.start()
        assert [job.step(), job.step()] == [False, False] and job.progress == 0.5
        job.stop(StopReason.PAUSED)
        job = restore_job({**job.serialize(), "Type": "DicomMoveScu"}, isengard)
        assert (job.progress, job.permissive, job.retrieval) == (0.5, True, retrieval)
        job.start()
        assert [job.step(), job.step()] == [False, True]
        assert len(new_jobs(peers.orthanc.client, known, 2)) == 2
        strict = RetrieveJob.of(isengard, retrieval, "short")
        strict.start()
        with pytest.raises(IsengardError) as refused:  # nothing is sent
            strict.step()
        assert (refused.value.code, strict.progress) == (ErrorCode.BAD_REQUEST, 0)
        # A node that does not serve C-MOVE: Orthanc's code and details.
        storescp = Modality(peers.storescp.aet, "127.0.0.1", peers.storescp.port)
        unserved = RetrieveJob.of(isengard, replace(retrieval, modality=storescp, resources=(good,)), "short")
        unserved.start()
        with pytest.raises(IsengardError) as refused:
            unserved.step()
        assert (refused.value.code, refused.value.details) == (ErrorCode.NO_CMOVE_HANDLER, "Remote AET is STORESCP")
        unserved.stop(StopReason.FAILURE)
    finally:
        isengard.close()


# -- C-MOVE SCP with SynchronousCMove false ---------------------------------------------------------------


def test_c_move_with_synchronous_c_move_false_is_a_job(peers):
    dataset = read_dataset(sample("DummyCT.dcm"))
    jobs = []
    for server, aet in ((peers.orthanc, "REFERENCE"), (peers.isengard, "ISENGARD")):
        peers.storescp.clear()
        known = set(server.client.get("/jobs").json())
        status, completed = c_move(server.config["DicomPort"], aet, dataset, "STORESCP")
        # Queued: success at once (Orthanc counts the job as one sub-operation, Isengard counts none).
        assert (status, completed) == (0, 1 if server is peers.orthanc else 0)
        (job_id,) = new_jobs(server.client, known)
        job = wait_job(server.client, job_id)
        assert job["Content"].pop("LocalAet") == aet
        jobs.append(stable(job))
        assert list(peers.storescp.received()) == [dataset.SOPInstanceUID]
    assert jobs[1] == jobs[0]
    assert jobs[1]["Content"] == {"Description": "C-MOVE", "FailedInstancesCount": 0, "InstancesCount": 1,
                                  "MoveOriginatorAET": "MOVER", "MoveOriginatorID": 7, "RemoteAet": "STORESCP"}


# -- SaveJobs ---------------------------------------------------------------------------------------------


def test_dicom_jobs_survive_a_restart(tmp_path):
    """A store interrupted by the stop goes on where it was; a pending one runs; a paused one stays paused."""
    slow = RecordingScp(aet="SLOW", delay=0.1)
    storescp = Storescp(tmp_path / "storescp", "+xa")
    options = {"ConcurrentJobs": 1, "SyncStorageArea": False,
               "DicomModalities": {"slow": slow.modality(), "scp": storescp.modality()}}
    folder = tmp_path / "isengard"
    try:
        with running_isengard(folder, **options) as server:
            client = server.client
            instances = upload_copies(server, tmp_path / "ct", 12)
            uids = uids_of(server, instances)
            interrupted = submit(client, "/modalities/slow/store", {"Resources": instances, "Asynchronous": True})
            wait_job(client, interrupted, "Running")  # on the only worker: the next ones wait
            pending = submit(client, "/modalities/scp/store", {"Resources": instances[:2], "Asynchronous": True})
            paused = submit(client, "/modalities/scp/store", {"Resources": instances[2:4], "Asynchronous": True,
                                                             "MoveOriginatorID": 9, "Priority": 5})
            client.post(f"/jobs/{paused}/pause")
            while client.get(f"/jobs/{interrupted}").json()["Progress"] < 25:
                time.sleep(0.02)
            before = client.get(f"/jobs/{paused}").json()
        sent = len(slow.requests)
        assert 0 < sent < 12
        with sqlite3.connect(folder / "db" / "index.db") as index:
            (document,) = index.execute("SELECT value FROM global_properties WHERE property = 5").fetchone()
        saved = json.loads(document)["Jobs"][interrupted]["Job"]
        assert (saved["Type"], saved["Position"], saved["Commands"]) == ("DicomModalityStore", sent, instances)
        assert saved["Remote"]["AET"] == "SLOW"

        with running_isengard(folder, **options) as server:
            client = server.client
            assert stable(client.get(f"/jobs/{paused}").json()) == stable(before)
            assert wait_job(client, interrupted)["State"] == "Success"
            assert wait_job(client, pending)["State"] == "Success"
            assert [request["sop_instance_uid"] for request in slow.requests] == uids  # each once
            assert client.get(f"/jobs/{paused}").json()["State"] == "Paused"
            client.post(f"/jobs/{paused}/resume")
            assert wait_job(client, paused)["Content"]["MoveOriginatorID"] == 9
            assert set(storescp.received()) == set(uids[:4])
    finally:
        slow.stop()
        storescp.stop()
