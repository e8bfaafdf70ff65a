"""/tools/create-dicom, against Orthanc 1.10.1: the same requests make instances with the same
tags (but for the generated identifiers and dates) and the same pixels; a picture list makes a
series; a parent resource lends its tags and refuses to have them changed."""

import base64
import io

import numpy
import pydicom
import pytest
from PIL import Image

from orthanc import orthanc  # noqa: F401 (the module-scoped fixture)

GENERATED = {"PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "InstanceCreationDate",
             "InstanceCreationTime", "StudyDate", "StudyTime", "SeriesDate", "SeriesTime", "AcquisitionDate",
             "AcquisitionTime", "ContentDate", "ContentTime"}
# Orthanc 1.10.1 leaves the SOP class of a picture or of bare tags out (its file meta then names a
# DCMTK private class); Isengard makes them Secondary Capture.
SOP_CLASS = "SOPClassUID"
# Orthanc 1.10.1 lists the pixel data (null) in the tags of the instances it creates, not in those of
# the instances it receives; Isengard never does.
PIXEL_DATA = "PixelData"
GREY = (numpy.arange(120) % 256).astype(numpy.uint8).reshape(10, 12)
PICTURES = {
    "grey": GREY,
    "rgb": numpy.stack([GREY, 255 - GREY, GREY // 2], -1),
    "grey16": (numpy.arange(120) * 500).astype(numpy.uint16).reshape(10, 12),
    "rgba": numpy.dstack([numpy.stack([GREY, 255 - GREY, GREY // 2], -1), GREY]),
}
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def data_uri(media_type: str, data: bytes) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def png(pixels: numpy.ndarray) -> str:
    output = io.BytesIO()
    Image.fromarray(pixels).save(output, "PNG")
    return data_uri("image/png", output.getvalue())


def tags(server, instance: str) -> dict:
    return {name: value for name, value in server.client.get(f"/instances/{instance}/simplified-tags").json().items()
            if name not in GENERATED | {SOP_CLASS, PIXEL_DATA}}


def create_on_both(isengard, orthanc, body):  # noqa: F811
    answers = [server.client.post("/tools/create-dicom", json=body) for server in (isengard, orthanc)]
    assert [answer.status_code for answer in answers] == [200, 200], answers[0].text
    return [answer.json() for answer in answers]


@pytest.mark.parametrize("body", [
    {"Tags": {"PatientName": "Test^Create", "Modality": "OT", "StudyDescription": "Créée"}},
    {"Tags": {"PatientName": "Sequence", "ReferencedStudySequence": [{"ReferencedSOPInstanceUID": "1.2.3"}]}},
    {"Tags": {"0010,0010": "By^Number"}},
])
def test_tags_are_those_of_orthanc(isengard, orthanc, body):  # noqa: F811
    ours, theirs = create_on_both(isengard, orthanc, body)
    assert set(ours) == set(theirs) == {"ID", "Path", "ParentPatient", "ParentStudy", "ParentSeries", "Status"}
    assert tags(isengard, ours["ID"]) == tags(orthanc, theirs["ID"])
    assert isengard.client.get(f"/instances/{ours['ID']}/simplified-tags").json()[SOP_CLASS] == "1.2.840.10008.5.1.4.1.1.7"


@pytest.mark.parametrize("name", PICTURES)
def test_pictures_become_the_pixels_orthanc_makes(isengard, orthanc, name):  # noqa: F811
    ours, theirs = create_on_both(isengard, orthanc, {"Tags": {"PatientName": "Picture"}, "Content": png(PICTURES[name])})
    assert tags(isengard, ours["ID"]) == tags(orthanc, theirs["ID"])
    arrays = [numpy.load(io.BytesIO(server.client.get(f"/instances/{answer['ID']}/numpy?rescale=0").content))
              for server, answer in ((isengard, ours), (orthanc, theirs))]
    assert arrays[0].dtype == arrays[1].dtype and numpy.array_equal(*arrays)


def test_a_jpeg_picture(isengard):
    output = io.BytesIO()
    Image.fromarray(PICTURES["rgb"]).save(output, "JPEG", quality=95)
    answer = isengard.client.post("/tools/create-dicom", json={"Content": data_uri("image/jpeg", output.getvalue())})
    dataset = pydicom.dcmread(io.BytesIO(isengard.client.get(f"/instances/{answer.json()['ID']}/file").content))
    assert (dataset.PhotometricInterpretation, dataset.Rows, dataset.Columns) == ("RGB", 10, 12)
    assert numpy.abs(dataset.pixel_array.astype(int) - PICTURES["rgb"]).mean() < 3


def test_a_pdf_under_a_parent_study(isengard, orthanc):  # noqa: F811
    parents = create_on_both(isengard, orthanc, {"Tags": {"PatientName": "Parent", "StudyDescription": "Reports"}})
    instances = [server.client.post("/tools/create-dicom", json={
        "Tags": {"SeriesDescription": "Report"}, "Parent": parent["ParentStudy"], "Content": data_uri("application/pdf", PDF),
    }).json() for server, parent in zip((isengard, orthanc), parents)]
    assert instances[0]["ParentStudy"] == parents[0]["ParentStudy"]
    assert tags(isengard, instances[0]["ID"]) == tags(orthanc, instances[1]["ID"])
    dataset = pydicom.dcmread(io.BytesIO(isengard.client.get(f"/instances/{instances[0]['ID']}/file").content))
    assert dataset.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.1"
    assert dataset.EncapsulatedDocument.rstrip(b"\0") == PDF.rstrip(b"\0")
    # The parent's tags are the parent's: a request may not change them.
    refused = isengard.client.post("/tools/create-dicom", json={"Tags": {"PatientName": "Other"},
                                                                 "Parent": parents[0]["ParentStudy"]})
    assert refused.status_code == 400 and "PatientName" in refused.json()["Details"]
    assert orthanc.client.post("/tools/create-dicom", json={"Tags": {"PatientName": "Other"},
                                                            "Parent": parents[1]["ParentStudy"]}).status_code == 400


def test_a_list_of_pictures_makes_a_series(isengard, orthanc):  # noqa: F811
    body = {"Tags": {"PatientName": "Frames"}, "Content": [png(PICTURES["grey"]), png(PICTURES["rgb"])]}
    ours, theirs = create_on_both(isengard, orthanc, body)
    assert set(ours) == set(theirs) == {"ID", "Path", "Status"}
    assert ours["Path"] == f"/series/{ours['ID']}"
    instances = isengard.client.get(f"/series/{ours['ID']}/instances").json()
    assert sorted(instance["MainDicomTags"]["InstanceNumber"] for instance in instances) == ["1", "2"]


@pytest.mark.parametrize("body, status", [
    ({"Tags": {"SOPInstanceUID": "1.2.3"}}, 400),  # only with "Force"
    ({"Tags": {"NoSuchTag": "1"}}, 400),  # Orthanc 1.10.1: 500
    ({"Content": "data:text/plain;base64,aGVsbG8="}, 400),
    ({"Content": "not a data URI"}, 400),
    ({"Parent": "nonexistent"}, 404),
    ([1, 2], 400),
])
def test_bad_requests(isengard, body, status):
    assert isengard.client.post("/tools/create-dicom", json=body).status_code == status


def test_forced_identifiers(isengard):
    answer = isengard.client.post("/tools/create-dicom", json={"Tags": {"SOPInstanceUID": "1.2.3.4.5"}, "Force": True})
    assert isengard.client.get(f"/instances/{answer.json()['ID']}/simplified-tags").json()["SOPInstanceUID"] == "1.2.3.4.5"
