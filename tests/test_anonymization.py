"""/instances/{id}/anonymize checked tag by tag against PS3.15 Table E.1-1 (DICOM 2023): every
attribute of the samples, nested ones included, removed, emptied, replaced or kept as its action
says; UIDs replaced consistently; the request's Keep, Remove and Replace."""

import io

import pydicom
import pytest

from conftest import SAMPLES
from isengard.dicom.basic_profile import ACTIONS, MASKED_ACTIONS

ANONYMIZED = ["HierarchicalAnonymization/2019-03-28/CR000000.dcm", "HierarchicalAnonymization/2019-03-28/PR000000.dcm",
              *(str(path.relative_to(SAMPLES)) for path in sorted((SAMPLES / "HierarchicalAnonymization").glob("*/*.dcm"))
                if "2019-03-28" not in str(path)),
              "PrivateTags.dcm", "SignedCT.dcm", "Issue16.dcm"]
ACTION_OF = {tag: action for action, tags in ACTIONS.items() for tag in tags}
SPECIAL = {"PatientID", "PatientName", "PatientIdentityRemoved", "DeidentificationMethod"}


def action(tag: int) -> str:
    return ACTION_OF.get(tag) or next((a for masked, mask, a in MASKED_ACTIONS if tag & mask == masked), "")


def anonymize(server, path: str, body: dict | None = None) -> tuple[pydicom.Dataset, pydicom.Dataset]:
    instance = server.client.post("/instances", content=(SAMPLES / path).read_bytes()).json()["ID"]
    answer = server.client.post(f"/instances/{instance}/anonymize", json=body or {})
    assert answer.status_code == 200, answer.text
    return pydicom.dcmread(SAMPLES / path, force=True), pydicom.dcmread(io.BytesIO(answer.content), force=True)


def check_profile(original: pydicom.Dataset, anonymized: pydicom.Dataset, uids: dict[str, str]) -> None:
    for element in original:
        tag, keyword = element.tag, element.keyword
        if keyword in SPECIAL or tag.group == 0x0002 or tag.element == 0:  # group lengths are retired, not written
            continue
        code = action(int(tag))
        if tag.is_private or code.startswith("X") or (code == "D" and element.VR == "SQ"):
            assert tag not in anonymized, keyword or tag
        elif code in ("Z", "D", "Z/D"):
            assert anonymized[tag].is_empty, keyword
        elif code == "U":
            new = anonymized[tag].value
            assert new != element.value or not element.value, keyword
            assert uids.setdefault(str(element.value), str(new)) == str(new), f"{keyword} mapped two ways"
        elif element.VR == "SQ":
            assert len(anonymized[tag].value) == len(element.value), keyword
            for before, after in zip(element.value, anonymized[tag].value):
                check_profile(before, after, uids)
        else:
            assert anonymized[tag].value == element.value, keyword


@pytest.mark.parametrize("path", ANONYMIZED)
def test_every_attribute_follows_the_basic_profile(isengard, path):
    original, anonymized = anonymize(isengard, path)
    check_profile(original, anonymized, {})
    assert anonymized.PatientIdentityRemoved == "YES"
    assert "PS 3.15-2023b Table E.1-1 Basic Profile" in anonymized.DeidentificationMethod
    assert anonymized.PatientID != original.get("PatientID") and str(anonymized.PatientName).startswith("Anonymized")
    assert anonymized.file_meta.MediaStorageSOPInstanceUID == anonymized.SOPInstanceUID


def test_keep_remove_replace_and_private_tags(isengard):
    body = {"Keep": ["StudyDate", "SeriesInstanceUID"], "Remove": ["Manufacturer"],
            "Replace": {"PatientName": "Research^Subject", "0010,1001": "Other"}, "KeepPrivateTags": True}
    original, anonymized = anonymize(isengard, "PrivateTags.dcm", body)
    assert anonymized.StudyDate == original.StudyDate
    assert anonymized.SeriesInstanceUID == original.SeriesInstanceUID
    assert anonymized.StudyInstanceUID != original.StudyInstanceUID
    assert "Manufacturer" not in anonymized
    assert (anonymized.PatientName, anonymized.OtherPatientNames) == ("Research^Subject", "Other")
    assert [element.tag for element in original if element.tag.is_private] == \
        [element.tag for element in anonymized if element.tag.is_private]


def test_patients_are_numbered(isengard):
    names = [str(anonymize(isengard, "SignedCT.dcm")[1].PatientName) for _ in range(2)]
    first, second = (int(name.removeprefix("Anonymized")) for name in names)
    assert second == first + 1


@pytest.mark.parametrize("body, status", [
    ({"DicomVersion": "2008"}, 501),  # Isengard knows the 2023 profile only
    ({"Keep": "PatientName"}, 400),
    ({"Replace": {"NoSuchTag": "x"}}, 400),
    ({"KeepPrivateTags": "yes"}, 400),
])
def test_bad_requests(isengard, body, status):
    instance = isengard.client.post("/instances", content=(SAMPLES / "SignedCT.dcm").read_bytes()).json()["ID"]
    assert isengard.client.post(f"/instances/{instance}/anonymize", json=body).status_code == status
