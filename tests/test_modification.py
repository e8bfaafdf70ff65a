"""/instances/{id}/modify against Orthanc 1.10.1: the same requests give the same files, but for the
UIDs each server generates (the same ones are new on both), and the same refusals."""

import io

import numpy
import pydicom
import pytest

from conftest import SAMPLES
from orthanc import orthanc  # noqa: F401 (the module-scoped fixture)

SAMPLE = SAMPLES / "SignedCT.dcm"
UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
# What the servers write of themselves in a file they make (and Orthanc's file meta names a DCMTK
# private SOP class when the SOPClassUID is removed; Isengard's keeps the original one).
WRITER_TAGS = {"ImplementationClassUID", "ImplementationVersionName", "MediaStorageSOPInstanceUID",
               "FileMetaInformationGroupLength", "SourceApplicationEntityTitle", "MediaStorageSOPClassUID"}


@pytest.fixture(scope="module")
def instance(isengard, orthanc):  # noqa: F811
    ids = {server.client.post("/instances", content=SAMPLE.read_bytes()).json()["ID"] for server in (isengard, orthanc)}
    (instance_id,) = ids
    return instance_id


def modified(server, instance_id: str, body: dict) -> pydicom.Dataset:
    answer = server.client.post(f"/instances/{instance_id}/modify", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/dicom"
    return pydicom.dcmread(io.BytesIO(answer.content))


def elements(dataset: pydicom.Dataset) -> dict:
    """Retired group lengths aside, which Orthanc writes again and pydicom leaves out."""
    return {element.keyword or str(element.tag): element.value for element in dataset
            if element.keyword not in UIDS and element.keyword != "PixelData" and element.tag.element != 0}


@pytest.mark.parametrize("body", [
    {"Replace": {"PatientName": "Modified^Name", "InstitutionName": "Elsewhere"}},
    {"Remove": ["PatientName", "0008-0080"], "RemovePrivateTags": True},
    {"Replace": {"ReferencedStudySequence": [{"ReferencedSOPInstanceUID": "1.2.3"}]}},
    {"Replace": {"PatientID": "Other"}, "Force": True},
    {"Replace": {"StudyInstanceUID": "1.2.3"}, "Force": True},
    {"Replace": {"SeriesInstanceUID": "1.2.3"}, "Force": True},
    {"Replace": {"SOPInstanceUID": "1.2.3"}, "Force": True},
    {"Keep": ["SOPInstanceUID"], "Force": True, "Replace": {"PatientName": "Kept"}},
    {"Remove": ["SOPClassUID"]},
    {},
])
def test_modifications_are_those_of_orthanc(isengard, orthanc, instance, body):  # noqa: F811
    original = pydicom.dcmread(SAMPLE)
    ours, theirs = modified(isengard, instance, body), modified(orthanc, instance, body)
    assert elements(ours) == elements(theirs)
    assert {k: v for k, v in elements(ours.file_meta).items() if k not in WRITER_TAGS} == \
        {k: v for k, v in elements(theirs.file_meta).items() if k not in WRITER_TAGS}
    for uid in UIDS:  # kept, replaced or new on both servers alike
        if ours[uid].value == original[uid].value or ours[uid].value == body.get("Replace", {}).get(uid):
            assert ours[uid].value == theirs[uid].value, uid
        else:
            assert theirs[uid].value not in (original[uid].value, ours[uid].value), uid
    assert numpy.array_equal(ours.pixel_array, original.pixel_array)


def test_modify_and_transcode(isengard, instance):
    dataset = modified(isengard, instance, {"Replace": {"PatientName": "Compressed"}, "Transcode": "1.2.840.10008.1.2.4.80"})
    assert dataset.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.80" and dataset.PatientName == "Compressed"
    assert numpy.array_equal(dataset.pixel_array, pydicom.dcmread(SAMPLE).pixel_array)


@pytest.mark.parametrize("body", [
    {"Replace": {"PatientID": "Other"}},  # identifiers change only with Force
    {"Keep": ["SOPInstanceUID"]},
    {"Remove": ["StudyInstanceUID"], "Force": True},  # never removed
    {"Replace": {"PatientName": 5}},
    {"Replace": {"NoSuchTag": "1"}},  # Orthanc 1.10.1: 500
    {"Replace": ["PatientName"]},
    {"Transcode": "JPEG"},
])
def test_refusals_are_those_of_orthanc(isengard, orthanc, instance, body):  # noqa: F811
    ours = isengard.client.post(f"/instances/{instance}/modify", json=body)
    assert ours.status_code == 400, ours.text
    theirs = orthanc.client.post(f"/instances/{instance}/modify", json=body)
    assert theirs.status_code in (400, 500)


def test_unknown_instance(isengard):
    assert isengard.client.post("/instances/nonexistent/modify", json={}).status_code == 404
