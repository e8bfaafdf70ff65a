"""Differential tests: the sample corpus loaded into Isengard and into Orthanc 1.10.1 must give the
same identifiers and the same JSON answers, field by field, but for the deliberate differences below.

One Orthanc and one Isengard serve the whole module; every sample is uploaded once to each, and the
comparisons are parametrized per sample or per level over what both servers then hold.
"""

import io
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid

from conftest import SAMPLES, ServerProcess
from orthanc import OrthancProcess, orthanc  # noqa: F401 (the module-scoped fixture)

# Crashes Orthanc 1.10.1: Isengard's refusal of it is tested in test_ingest.py.
CRASHES_ORTHANC = "2026-05-06-Deeply-Nested-Sequence.dcm"
CORPUS = sorted(
    str(path.relative_to(SAMPLES)) for path in SAMPLES.rglob("*") if path.is_file() and path.name != CRASHES_ORTHANC
)
LEVELS = ["patients", "studies", "series", "instances"]
ANSWER_KEY = {"patients": "ParentPatient", "studies": "ParentStudy", "series": "ParentSeries", "instances": "ID"}

# -- deliberate differences ------------------------------------------------------------------------

TIME_DEPENDENT_FIELDS = {"IsStable", "LastUpdate", "ReceptionDate"}
RANDOM_FIELDS = {"FileUuid"}
# Fields of the newer manual that Orthanc 1.10.1 does not have.
NEWER_FIELDS = {"Labels"}
# Main DICOM tags that Orthanc 1.12.5 added to 1.10.1's lists (Isengard follows the newer manual).
NEWER_MAIN_TAGS = {
    "studies": {"TimezoneOffsetFromUTC"},
    "series": {"TimezoneOffsetFromUTC", "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime"},
}
# Values that Isengard decodes per the standard where Orthanc 1.10.1 garbles them: under ISO 2022
# code extensions with a JIS X 0201 default, Orthanc drops the escape sequences of JIS X 0208 and
# shows its bytes as ASCII ('ﾔﾏﾀﾞ^ﾀﾛｳ=;3ED^B@O:=...' for 'ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=...').
DECODED_BETTER = {("Encodings/DavidClunie/SCSH32", "PatientName")}
# Statistics of the newer manual: the sizes of the DICOM files alone.
NEWER_STATISTICS = {"DicomDiskSize", "DicomDiskSizeMB", "DicomUncompressedSize", "DicomUncompressedSizeMB"}
# Metadata of the newer manual (faq/features.rst): the main DICOM tags a resource was indexed with.
NEWER_METADATA = {"MainDicomTagsSignature"}
# Orthanc 1.10.1 also gives series the RemoteAET of their first instance; the manual says that it
# is only recorded for instances, which may come from different modalities.
INSTANCE_ONLY_METADATA = {"RemoteAET"}
# Error details are free text, written differently (Orthanc even omits some).
FREE_TEXT_ERROR_FIELDS = {"Details"}


@dataclass(frozen=True)
class Answer:
    status: int
    body: object

    @classmethod
    def of(cls, response: httpx.Response) -> "Answer":
        return cls(response.status_code, response.json() if response.content else None)


@dataclass(frozen=True)
class Servers:
    orthanc: OrthancProcess
    isengard: ServerProcess

    def both(self, method: str, url: str, **kwargs) -> tuple[Answer, Answer]:
        """The same request to both servers, at the same time."""
        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(s.client.request, method, url, **kwargs) for s in (self.orthanc, self.isengard)]
            return Answer.of(futures[0].result()), Answer.of(futures[1].result())

    def upload(self, data: bytes) -> tuple[Answer, Answer]:
        return self.both("POST", "/instances", content=data)


@pytest.fixture(scope="module")
def servers(orthanc, isengard) -> Servers:  # noqa: F811
    return Servers(orthanc, isengard)


@pytest.fixture(scope="module")
def uploads(servers) -> dict[str, tuple[Answer, Answer]]:
    """Every sample of the corpus, uploaded once to each server (each in its own thread)."""

    def upload_all(server) -> list[Answer]:
        return [Answer.of(server.client.post("/instances", content=(SAMPLES / name).read_bytes())) for name in CORPUS]

    with ThreadPoolExecutor(2) as pool:
        orthanc_answers, isengard_answers = pool.map(upload_all, (servers.orthanc, servers.isengard))
    return dict(zip(CORPUS, zip(orthanc_answers, isengard_answers)))


@pytest.fixture(scope="module")
def listings(servers, uploads) -> dict[str, tuple[dict[str, dict], dict[str, dict]]]:
    """level -> (Orthanc's, Isengard's) expanded resources by ID."""
    found = {}
    for level in LEVELS:
        orthanc_answer, isengard_answer = servers.both("GET", f"/{level}?expand")
        found[level] = ({r["ID"]: r for r in orthanc_answer.body}, {r["ID"]: r for r in isengard_answer.body})
    return found


def stored_ids(uploads, name: str) -> dict[str, str]:
    """level -> ID of the resources a sample went into (empty if refused)."""
    answer, _ = uploads[name]
    if answer.status != 200:
        return {}
    return {level: answer.body[key] for level, key in ANSWER_KEY.items()}


# -- comparison ------------------------------------------------------------------------------------


def resource_differences(orthanc: dict, isengard: dict, level: str, sample: str = "") -> list[str]:
    """Every field Orthanc shows must be in Isengard with the same value (lists compared as sets)."""
    found = []
    for key, expected in orthanc.items():
        if key in TIME_DEPENDENT_FIELDS | RANDOM_FIELDS:
            continue
        if key not in isengard:
            found.append(f"{key} is missing")
        elif key.endswith("MainDicomTags"):
            found += [f"{key}: {d}" for d in _tags_differences(expected, isengard[key], level, sample)]
        elif isinstance(expected, list):
            if sorted(expected) != sorted(isengard[key]):
                found.append(f"{key}: {expected} != {isengard[key]}")
        elif isengard[key] != expected:
            found.append(f"{key}: {expected!r} != {isengard[key]!r}")
    found += [f"unexpected field {key}" for key in set(isengard) - set(orthanc) - NEWER_FIELDS]
    return found


def _tags_differences(orthanc: dict, isengard: dict, level: str, sample: str) -> list[str]:
    found = [
        f"{tag}: {value!r} != {isengard.get(tag, '<absent>')!r}"
        for tag, value in orthanc.items()
        if isengard.get(tag) != value and (sample, tag) not in DECODED_BETTER
    ]
    found += [f"unexpected tag {tag}" for tag in set(isengard) - set(orthanc) - NEWER_MAIN_TAGS.get(level, set())]
    return found


def assert_no_differences(differences: dict[str, list[str]]) -> None:
    """Fail with every difference, one per line (pytest would truncate a dictionary)."""
    if differences:
        pytest.fail("\n".join(f"{where}: {found}" for where, found in differences.items()), pytrace=False)


def error_differences(orthanc: Answer, isengard: Answer) -> list[str]:
    if orthanc.status != isengard.status:
        return [f"status {orthanc.status} != {isengard.status}: {orthanc.body} / {isengard.body}"]
    if orthanc.status == 200:
        return []
    return [
        f"{key}: {value!r} != {isengard.body.get(key)!r}"
        for key, value in orthanc.body.items()
        if key not in FREE_TEXT_ERROR_FIELDS and isengard.body.get(key) != value
    ]


def plain_differences(orthanc: dict, isengard: dict, ignored: AbstractSet[str] = frozenset(), newer: AbstractSet[str] = frozenset()) -> list[str]:
    found = [
        f"{key}: {value!r} != {isengard.get(key, '<absent>')!r}"
        for key, value in orthanc.items()
        if key not in ignored and isengard.get(key) != value
    ]
    return found + [f"unexpected field {key}" for key in set(isengard) - set(orthanc) - newer]


# -- POST /instances -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CORPUS)
def test_store_answers_match(uploads, name):
    orthanc_answer, isengard_answer = uploads[name]
    assert error_differences(orthanc_answer, isengard_answer) == []
    if orthanc_answer.status == 200:
        assert isengard_answer.body == orthanc_answer.body


def test_duplicates_are_already_stored_by_both(servers, uploads):
    for name in ("DummyCT.dcm", "Brainix/Flair/IM-0001-0001.dcm", "Encodings/Lena-utf8.dcm"):
        orthanc_answer, isengard_answer = servers.upload((SAMPLES / name).read_bytes())
        assert orthanc_answer.body["Status"] == "AlreadyStored"
        assert isengard_answer.body == orthanc_answer.body


def _with_uids(name: str = "DummyCT.dcm", **changes: str | None) -> bytes:
    """A sample with new UIDs, then `changes` applied (None removes the attribute)."""
    dataset = pydicom.dcmread(SAMPLES / name)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        setattr(dataset, keyword, generate_uid())
    for keyword, value in changes.items():
        if value is None:
            delattr(dataset, keyword)
        else:
            setattr(dataset, keyword, value)
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # pydicom, on writing "  "
@pytest.mark.parametrize("value", [None, "", "  "], ids=["absent", "empty", "spaces"])
@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
def test_missing_uids_are_refused_alike(servers, keyword, value):
    orthanc_answer, isengard_answer = servers.upload(_with_uids(**{keyword: value}))
    assert orthanc_answer.status in (400, 404)
    assert error_differences(orthanc_answer, isengard_answer) == []


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.99])
@pytest.mark.parametrize("name", ["DummyCT.dcm", "Brainix/Flair/IM-0001-0001.dcm", "Formats/Jpeg.dcm"])
def test_truncated_files_are_refused_alike(servers, name, keep):
    """Cut in a header, in native or in encapsulated pixel data."""
    data = _with_uids(name)
    orthanc_answer, isengard_answer = servers.upload(data[: int(len(data) * keep)])
    assert isengard_answer.status == 400
    assert error_differences(orthanc_answer, isengard_answer) == []


# -- resources -------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", LEVELS)
def test_resource_lists_match(servers, uploads, level):
    orthanc_answer, isengard_answer = servers.both("GET", f"/{level}")
    assert set(isengard_answer.body) == set(orthanc_answer.body)


@pytest.mark.parametrize("name", CORPUS)
def test_resources_json_match(uploads, listings, name):
    differences = {}
    for level, public_id in stored_ids(uploads, name).items():
        orthanc_resources, isengard_resources = listings[level]
        found = resource_differences(orthanc_resources[public_id], isengard_resources[public_id], level, name)
        if found:
            differences[level] = found
    assert_no_differences(differences)


def test_global_statistics_match(servers, uploads):
    orthanc_answer, isengard_answer = servers.both("GET", "/statistics")
    assert plain_differences(orthanc_answer.body, isengard_answer.body) == []


@pytest.mark.parametrize("level", LEVELS)
def test_resource_statistics_match(servers, listings, level):
    differences = {}
    for public_id in listings[level][0]:
        orthanc_answer, isengard_answer = servers.both("GET", f"/{level}/{public_id}/statistics")
        found = plain_differences(orthanc_answer.body, isengard_answer.body, newer=NEWER_STATISTICS)
        if found:
            differences[public_id] = found
    assert_no_differences(differences)


# Routes from a resource to its ancestors (an object) and its descendants (a list), per level.
NAVIGATION = {
    "patients": ["studies", "series", "instances"],
    "studies": ["patient", "series", "instances"],
    "series": ["patient", "study", "instances"],
    "instances": ["patient", "study", "series"],
}
TARGET_LEVEL = {"patient": "patients", "study": "studies", "series": "series", "studies": "studies", "instances": "instances"}
# A few samples whose hierarchy has several branches (two studies, multi-instance series...).
NAVIGATED_SAMPLES = ["Brainix/Flair/IM-0001-0001.dcm", "Comunix/Pet/IM-0001-0001.dcm", "Series/Lena-1.dcm", "Knix/Loc/IM-0001-0001.dcm"]


@pytest.mark.parametrize("level, route", [(level, route) for level, routes in NAVIGATION.items() for route in routes])
def test_navigation_routes_match(servers, uploads, level, route):
    differences = {}
    for name in NAVIGATED_SAMPLES:
        public_id = stored_ids(uploads, name)[level]
        orthanc_answer, isengard_answer = servers.both("GET", f"/{level}/{public_id}/{route}")
        assert isengard_answer.status == orthanc_answer.status == 200
        orthanc_found = orthanc_answer.body if isinstance(orthanc_answer.body, list) else [orthanc_answer.body]
        isengard_found = {r["ID"]: r for r in (isengard_answer.body if isinstance(isengard_answer.body, list) else [isengard_answer.body])}
        assert set(isengard_found) == {r["ID"] for r in orthanc_found}
        for resource in orthanc_found:
            found = resource_differences(resource, isengard_found[resource["ID"]], TARGET_LEVEL[route], name)
            if found:
                differences[f"{name}: {resource['ID']}"] = found
    assert_no_differences(differences)


@pytest.mark.parametrize("level", LEVELS)
def test_metadata_match(servers, listings, level):
    """Every metadata Orthanc records, with the same value, but the reception and update dates."""
    ignored = TIME_DEPENDENT_FIELDS | INSTANCE_ONLY_METADATA if level == "series" else TIME_DEPENDENT_FIELDS
    differences = {}
    for public_id in listings[level][0]:
        orthanc_answer, isengard_answer = servers.both("GET", f"/{level}/{public_id}/metadata?expand")
        # The instances' LastUpdate is checked by the test below.
        found = plain_differences(orthanc_answer.body, isengard_answer.body, ignored, NEWER_METADATA | {"LastUpdate"})
        if found:
            differences[public_id] = found
    assert_no_differences(differences)


def test_instances_have_no_last_update(servers, uploads):
    """LastUpdate is a metadata of patients, studies and series only (faq/features.rst)."""
    public_id = stored_ids(uploads, "DummyCT.dcm")["instances"]
    orthanc_answer, isengard_answer = servers.both("GET", f"/instances/{public_id}/metadata")
    assert "LastUpdate" not in orthanc_answer.body
    assert "LastUpdate" not in isengard_answer.body


# -- DELETE ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "level, sample",
    [
        ("instances", "Brainix/Flair/IM-0001-0002.dcm"),  # its series keeps other instances
        ("series", "Comunix/Ct/IM-0001-0001.dcm"),  # its study keeps the PET series
        ("studies", "Brainix/Flair/IM-0001-0001.dcm"),  # its patient has other studies
        ("instances", "Encodings/Lena-latin1.dcm"),  # the only instance of its patient
        ("patients", "Knee/T1/IM-0001-0001.dcm"),
    ],
)
def test_delete_answers_match(servers, uploads, level, sample):
    """The deleted files are uploaded again afterwards, so that the other tests see all samples."""
    public_id = stored_ids(uploads, sample)[level]
    deleted = [name for name in CORPUS if stored_ids(uploads, name).get(level) == public_id]
    try:
        orthanc_answer, isengard_answer = servers.both("DELETE", f"/{level}/{public_id}")
        assert isengard_answer == orthanc_answer
        orthanc_answer, isengard_answer = servers.both("GET", f"/{level}/{public_id}")
        assert isengard_answer.status == orthanc_answer.status == 404
    finally:
        for name in deleted:
            servers.upload((SAMPLES / name).read_bytes())
