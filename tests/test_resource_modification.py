"""/{patients,studies,series}/{id}/modify and /anonymize against Orthanc 1.10.1: the same answers,
new resources of the same shape as the original (which stays), and where they come from."""

import sqlite3

import pydicom
import pytest

from conftest import SAMPLES
from orthanc import orthanc  # noqa: F401 (the module-scoped fixture)
from test_differential_orthanc import NEWER_MAIN_TAGS
from test_jobs import wait_job

# A study of two series (Brainix, 8 instances each taken), the same on both servers.
FILES = sorted((SAMPLES / "Brainix" / "Epi").glob("*"))[:8] + sorted((SAMPLES / "Brainix" / "Flair").glob("*"))[:8]
ANSWER_FIELDS = {"Description", "FailedInstancesCount", "ID", "InstancesCount", "IsAnonymization", "Path", "PatientID",
                 "Type"}


@pytest.fixture(scope="module")
def study(isengard, orthanc):  # noqa: F811
    ids = set()
    for server in (isengard, orthanc):
        for path in FILES:
            ids.add(server.client.post("/instances", content=path.read_bytes()).json()["ParentStudy"])
    (study_id,) = ids
    return study_id


def shape(server, study_id: str) -> list[int]:
    return sorted(len(series["Instances"]) for series in server.client.get(f"/studies/{study_id}/series").json())


@pytest.mark.parametrize("action, body", [
    ("anonymize", {}),
    ("modify", {"Replace": {"StudyDescription": "Modified"}}),
    ("anonymize", {"Keep": ["StudyDescription"], "Replace": {"PatientName": "Research"}}),
])
def test_a_study_becomes_a_new_study_of_the_same_shape(isengard, orthanc, study, action, body):  # noqa: F811
    answers = [server.client.post(f"/studies/{study}/{action}", json=body) for server in (isengard, orthanc)]
    assert [answer.status_code for answer in answers] == [200, 200], answers[0].text
    ours, theirs = (answer.json() for answer in answers)
    assert set(ours) == set(theirs) == ANSWER_FIELDS
    assert {k: ours[k] for k in ("InstancesCount", "FailedInstancesCount", "IsAnonymization", "Type")} == \
        {k: theirs[k] for k in ("InstancesCount", "FailedInstancesCount", "IsAnonymization", "Type")} == \
        {"InstancesCount": 16, "FailedInstancesCount": 0, "IsAnonymization": action == "anonymize", "Type": "Study"}
    assert ours["Path"] == f"/studies/{ours['ID']}" and ours["ID"] != study
    assert shape(isengard, ours["ID"]) == shape(orthanc, theirs["ID"]) == shape(isengard, study) == [8, 8]
    origin = "AnonymizedFrom" if action == "anonymize" else "ModifiedFrom"
    assert isengard.client.get(f"/studies/{ours['ID']}/metadata/{origin}").text == study
    new_study = isengard.client.get(f"/studies/{ours['ID']}").json()
    their_study = orthanc.client.get(f"/studies/{theirs['ID']}").json()
    for tag in ("StudyDescription", "StudyDate", "AccessionNumber"):
        assert new_study["MainDicomTags"].get(tag) == their_study["MainDicomTags"].get(tag), tag
    assert (new_study["ParentPatient"] == isengard.client.get(f"/studies/{study}").json()["ParentPatient"]) == \
        (action == "modify")  # a modified study stays with its patient; an anonymized one gets a new patient


def test_a_series_is_modified_within_its_study(isengard, study):
    series = isengard.client.get(f"/studies/{study}/series").json()[0]["ID"]
    answer = isengard.client.post(f"/series/{series}/modify", json={"Replace": {"SeriesDescription": "Again"}}).json()
    new = isengard.client.get(f"/series/{answer['ID']}").json()
    assert new["ParentStudy"] == study and new["MainDicomTags"]["SeriesDescription"] == "Again"
    assert isengard.client.get(f"/series/{answer['ID']}/metadata/ModifiedFrom").text == series


def test_asynchronous_modification_is_a_job(isengard, study):
    submitted = isengard.client.post(f"/studies/{study}/anonymize", json={"Asynchronous": True}).json()
    job = wait_job(isengard.client, submitted["ID"], "Success")
    assert job["Type"] == "ResourceModification"
    instances = len(isengard.client.get(f"/studies/{study}/instances").json())
    assert set(job["Content"]) == ANSWER_FIELDS, job["Content"]
    assert job["Content"]["InstancesCount"] == instances and job["Content"]["IsAnonymization"]


def test_refusals(isengard, study):
    patient = isengard.client.get(f"/studies/{study}").json()["ParentPatient"]
    assert isengard.client.post(f"/patients/{patient}/modify", json={"Replace": {"PatientName": "x"}}).status_code == 400
    assert isengard.client.post("/studies/nonexistent/anonymize", json={}).status_code == 404
    assert isengard.client.post(f"/series/{study}/modify", json={}).status_code == 404  # a study, not a series
    assert isengard.client.post(f"/studies/{study}/modify", json={"Replace": {"StudyInstanceUID": "1.2"}}).status_code == 400


def test_keep_source_false_replaces_the_original(isengard):
    paths = sorted((SAMPLES / "Knix" / "Loc").glob("*"))[:3]
    series = {isengard.client.post("/instances", content=path.read_bytes()).json()["ParentSeries"] for path in paths}
    (original,) = series
    answer = isengard.client.post(f"/series/{original}/anonymize", json={"KeepSource": False}).json()
    assert isengard.client.get(f"/series/{original}").status_code == 404
    assert len(isengard.client.get(f"/series/{answer['ID']}/instances").json()) == 3
    assert isengard.client.post(f"/series/{answer['ID']}/modify", json={"KeepSource": "no"}).status_code == 400


@pytest.mark.parametrize("action", ["modify", "anonymize"])
def test_bulk_changes_answer_every_resource_as_orthanc(isengard, orthanc, study, action):  # noqa: F811
    body = {"Replace": {"SeriesDescription": "Bulk"}} if action == "modify" else {}
    answers = []
    for server in (isengard, orthanc):
        series = [item["ID"] for item in server.client.get(f"/studies/{study}/series").json()][:2]
        answer = server.client.post(f"/tools/bulk-{action}", json={"Resources": series, **body})
        assert answer.status_code == 200, answer.text
        answers.append(answer.json())
    ours, theirs = answers
    assert set(ours) == set(theirs) == {"Description", "FailedInstancesCount", "InstancesCount", "IsAnonymization",
                                        "Resources"}
    assert (ours["InstancesCount"], ours["IsAnonymization"]) == (theirs["InstancesCount"], theirs["IsAnonymization"])
    kinds = [[resource["Type"] for resource in answer["Resources"]] for answer in answers]
    assert kinds[0] == kinds[1]  # instances first, then series, studies, patients
    for resource in ours["Resources"]:
        assert isengard.client.get(resource["Path"]).status_code == 200


def test_bulk_refusals(isengard):
    assert isengard.client.post("/tools/bulk-anonymize", json={"Resources": ["nonexistent"]}).status_code == 404
    assert isengard.client.post("/tools/bulk-modify", json={"Replace": {}}).status_code == 400
    assert isengard.client.post("/tools/bulk-modify", json={"Resources": [], "Level": "Galaxy"}).status_code == 400


@pytest.mark.parametrize("options", [{}, {"Level": "Series"}, {"Level": "Patient", "Metadata": False}, {"Short": True}])
def test_bulk_content_is_that_of_orthanc(isengard, orthanc, study, options):  # noqa: F811
    body = {"Resources": [study, "nonexistent"], **options}
    ours, theirs = (server.client.post("/tools/bulk-content", json=body) for server in (isengard, orthanc))
    assert ours.status_code == theirs.status_code == 200
    # What the other tests of the module changed on Isengard alone, and the newer manual's labels.
    volatile = {"LastUpdate", "IsStable", "Metadata", "Instances", "Series", "Studies", "Labels"}

    def comparable(answer) -> dict:
        found = {item["ID"]: {k: v for k, v in item.items() if k not in volatile} for item in answer.json()}
        for item in found.values():  # the main tags of the newer manual (see test_differential_orthanc.py)
            for tag in NEWER_MAIN_TAGS.get({"Series": "series", "Study": "studies"}.get(item["Type"], ""), ()):
                item["MainDicomTags"].pop(tag, None)
        return found

    mine, reference = comparable(ours), comparable(theirs)
    assert {public_id: mine.get(public_id) for public_id in reference} == reference
    assert all(("Metadata" in item) == (options.get("Metadata", True)) for item in ours.json())


def test_split_and_merge_a_study(fresh_isengard):
    client = fresh_isengard.client
    paths = sorted((SAMPLES / "Brainix" / "Epi").glob("*"))[:2] + sorted((SAMPLES / "Brainix" / "Flair").glob("*"))[:2]
    study = {client.post("/instances", content=path.read_bytes()).json()["ParentStudy"] for path in paths}.pop()
    series = {item["MainDicomTags"]["SeriesDescription"]: item["ID"] for item in client.get(f"/studies/{study}/series").json()}
    flair = next(public_id for description, public_id in series.items() if "FLAIR" in description.upper())
    split = client.post(f"/studies/{study}/split", json={"Series": [flair], "Replace": {"StudyDescription": "Split"}})
    assert split.status_code == 200, split.text
    answer = split.json()
    assert set(answer) == {"Description", "FailedInstancesCount", "InstancesCount", "TargetStudy", "TargetStudyUID"}
    new_study = client.get(f"/studies/{answer['TargetStudy']}").json()
    assert new_study["MainDicomTags"]["StudyDescription"] == "Split"
    assert new_study["MainDicomTags"]["StudyInstanceUID"] == answer["TargetStudyUID"]
    assert len(new_study["Series"]) == 1 and answer["InstancesCount"] == 2
    assert client.get(f"/series/{flair}").status_code == 404  # KeepSource is false by default
    assert len(client.get(f"/studies/{study}").json()["Series"]) == 1

    merge = client.post(f"/studies/{study}/merge", json={"Resources": [answer["TargetStudy"]]})
    assert merge.status_code == 200, merge.text
    assert set(merge.json()) == {"Description", "FailedInstancesCount", "InstancesCount", "TargetStudy"}
    assert merge.json()["TargetStudy"] == study
    assert len(client.get(f"/studies/{study}").json()["Series"]) == 2
    assert client.get(f"/studies/{answer['TargetStudy']}").status_code == 404
    merged = client.get(f"/studies/{study}/instances").json()
    assert {item["MainDicomTags"]["SOPInstanceUID"] for item in merged}.isdisjoint(
        {pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID for path in paths[2:]})

    assert client.post(f"/studies/{study}/split", json={}).status_code == 400
    assert client.post(f"/studies/{study}/split", json={"Series": ["nonexistent"]}).status_code == 404
    assert client.post(f"/studies/{study}/merge", json={"Resources": ["nonexistent"]}).status_code == 404


def test_reconstruct_reads_the_main_tags_again(fresh_isengard):
    client = fresh_isengard.client
    instance = client.post("/instances", content=(SAMPLES / "SignedCT.dcm").read_bytes()).json()
    database = fresh_isengard.folder / "db" / "index.db"  # altered behind the server's back, as a bug would
    with sqlite3.connect(database) as connection:
        connection.execute("DELETE FROM main_dicom_tags")
    assert client.get(f"/studies/{instance['ParentStudy']}").json()["MainDicomTags"] == {}
    assert client.post(f"/studies/{instance['ParentStudy']}/reconstruct").status_code == 200
    study = client.get(f"/studies/{instance['ParentStudy']}").json()
    assert study["MainDicomTags"]["StudyInstanceUID"] and study["PatientMainDicomTags"]["PatientID"]
    with sqlite3.connect(database) as connection:
        connection.execute("DELETE FROM main_dicom_tags")
    assert client.post("/tools/reconstruct").status_code == 200
    assert client.get(f"/instances/{instance['ID']}").json()["MainDicomTags"]["SOPInstanceUID"]
    assert client.post("/tools/invalidate-tags").status_code == 200
    assert client.post("/series/nonexistent/reconstruct").status_code == 404
