"""`/tools/find` and `/tools/lookup` on a real server loaded with sample files.

Expected answers are derived from the files themselves (read with pydicom); a differential test
compares the identifiers found with those of Orthanc 1.10.1 loaded with the same files; another
times study-level finds over an index of 10,000 studies.
"""

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from sqlalchemy import insert

from conftest import ServerProcess, running_isengard, sample
from orthanc import orthanc  # noqa: F401 (the module-scoped fixture)
from postgresql import postgresql_bin, running_postgresql
from isengard.dicom.identifiers import DicomIdentifiers
from isengard.dicom.levels import Level
from isengard.dicom.tags import parse_tag
from isengard.index import Index, sqlite_url
from isengard.index.schema import main_dicom_tags, resources

SAMPLE_FOLDERS = ("Brainix", "Knee", "Phenix", "PatientWith2studies", "Encodings", "Comunix")
ANSWER_KEYS = {Level.PATIENT: "ParentPatient", Level.STUDY: "ParentStudy", Level.SERIES: "ParentSeries", Level.INSTANCE: "ID"}


def text(ds: Dataset, keyword: str) -> str | None:
    """A top-level value as the server writes it (None when absent)."""
    if keyword not in ds:
        return None
    value = ds[keyword].value
    if isinstance(value, (list, pydicom.multival.MultiValue)):
        return "\\".join(str(v) for v in value)
    return "" if value is None else str(value)


@dataclass
class Catalog:
    """The uploaded files, in upload order, with the public IDs of their four resources."""

    server: ServerProcess
    files: list[tuple[dict[Level, str], Dataset]]

    def ids(self, level: Level, keep: Callable[[Dataset], bool] = lambda ds: True, first_only: bool = False) -> list[str]:
        """Resources of `level`, in insertion order, with a file that passes `keep` (or whose first file
        does, with `first_only`: the server reads tags outside its index from the first instance)."""
        seen: dict[str, bool] = {}
        for ids, ds in self.files:
            if ids[level] not in seen:
                seen[ids[level]] = keep(ds)
            elif not first_only:
                seen[ids[level]] = seen[ids[level]] or keep(ds)
        return [public_id for public_id, kept in seen.items() if kept]

    def where(self, level: Level, keyword: str, test: Callable[[str], bool], first_only: bool = False) -> set[str]:
        return set(self.ids(level, lambda ds: text(ds, keyword) is not None and test(text(ds, keyword)), first_only))

    def find(self, body: dict) -> list:
        response = self.server.client.post("/tools/find", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    def found(self, level: Level, case_sensitive: bool | None = None, **query: str) -> set[str]:
        body: dict = {"Level": level.title, "Query": query}
        if case_sensitive is not None:
            body["CaseSensitive"] = case_sensitive
        return set(self.find(body))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def catalog(request, tmp_path_factory) -> Iterator[Catalog]:
    """The sample files on a server whose index is SQLite, then PostgreSQL (their SQL differs)."""
    with ExitStack() as stack:
        options = {}
        if request.param == "postgresql":
            if postgresql_bin() is None:
                pytest.skip("PostgreSQL is not installed (Debian package postgresql)")
            options["DatabaseUrl"] = stack.enter_context(running_postgresql())
        server = stack.enter_context(running_isengard(tmp_path_factory.mktemp("catalog"), **options))
        paths = sorted(path for folder in SAMPLE_FOLDERS for path in sample(folder).rglob("*.dcm"))
        files = []
        for path in paths:
            answer = server.upload(path)
            ids = {level: answer[key] for level, key in ANSWER_KEYS.items()}
            files.append((ids, pydicom.dcmread(path, stop_before_pixels=True)))
        yield Catalog(server, files)


def assert_error(response, status: int, orthanc_status: int, details: str = "") -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert (body["HttpStatus"], body["OrthancStatus"], body["Uri"]) == (status, orthanc_status, "/tools/find")
    assert details in body.get("Details", "")


# -- matching -------------------------------------------------------------------------------------


def test_single_values_match_without_case_unless_asked(catalog):
    knee = catalog.where(Level.PATIENT, "PatientName", lambda v: v == "KNEE")
    assert len(knee) == 1
    assert catalog.found(Level.PATIENT, PatientName="knee") == knee
    assert catalog.found(Level.PATIENT, case_sensitive=True, PatientName="knee") == set()
    assert catalog.found(Level.PATIENT, case_sensitive=True, PatientName="KNEE") == knee
    # Every VR, not only PN, as Orthanc 1.10.1 does
    accession = catalog.where(Level.STUDY, "AccessionNumber", lambda v: v == "A10003245599")
    assert catalog.found(Level.STUDY, AccessionNumber="a10003245599") == accession != set()
    assert catalog.found(Level.STUDY, PatientName="KNEE", StudyDescription="nothing like that") == set()


def test_wildcards_on_text(catalog):
    names = lambda test: catalog.where(Level.PATIENT, "PatientName", test)  # noqa: E731
    assert catalog.found(Level.PATIENT, PatientName="BRAIN*") == names(lambda v: v.startswith("BRAIN")) != set()
    assert catalog.found(Level.PATIENT, PatientName="*nix") == names(lambda v: v.upper().endswith("NIX"))
    assert len(catalog.found(Level.PATIENT, PatientName="*nix")) == 3
    assert catalog.found(Level.PATIENT, PatientName="?HENIX") == names(lambda v: v == "PHENIX")
    assert catalog.found(Level.PATIENT, case_sensitive=True, PatientName="?henix") == set()
    comunix = catalog.where(Level.STUDY, "StudyDescription", lambda v: v == "Neck^1HEAD_NECK_PETCT")
    assert catalog.found(Level.STUDY, StudyDescription="neck^1head_neck?petct") == comunix != set()
    # % and _ are no wildcards in DICOM
    assert catalog.found(Level.STUDY, StudyDescription="Neck^1HEAD%") == set()
    assert catalog.found(Level.STUDY, StudyDescription="Neck^1HEAD_NECK_PETCX") == set()
    assert catalog.found(Level.STUDY, StudyDescription="Neck^1HEAD_*") == comunix


def test_case_folding_beyond_ascii(catalog):
    greek = catalog.where(Level.PATIENT, "PatientName", lambda v: v == "Test-Θ")
    assert catalog.found(Level.PATIENT, PatientName="test-θ") == greek != set()
    accented = catalog.where(Level.PATIENT, "PatientName", lambda v: v.lower().startswith("test-éüäö"))
    assert len(accented) > 1
    assert catalog.found(Level.PATIENT, PatientName="TEST-ÉÜÄÖ*") == accented
    assert catalog.found(Level.PATIENT, case_sensitive=True, PatientName="Test-éüäö*") == accented
    assert catalog.found(Level.PATIENT, case_sensitive=True, PatientName="TEST-ÉÜÄÖ*") == set()


@pytest.mark.parametrize(
    "level, tag, value",
    [("Study", "StudyDate", "2006*"), ("Study", "StudyInstanceUID", "1.2*"), ("Series", "SeriesNumber", "1?"),
     ("Series", "SliceThickness", "5*"), ("Study", "StudyTime", "*")],
)
def test_wildcards_are_refused_where_dicom_forbids_them(catalog, level, tag, value):
    response = catalog.server.client.post("/tools/find", json={"Level": level, "Query": {tag: value}})
    tag_number = parse_tag(tag)
    assert_error(response, 400, 3, f"Wildcards are not allowed on tag {tag_number.group:04x},{tag_number.element:04x}")


def test_date_and_time_ranges(catalog):
    dates = lambda test: catalog.where(Level.STUDY, "StudyDate", test)  # noqa: E731
    assert catalog.found(Level.STUDY, StudyDate="20050101-20091231") == dates(lambda v: "20050101" <= v <= "20091231")
    # Bounds compare as strings, as in Orthanc: empty dates come before any lower bound
    assert catalog.found(Level.STUDY, StudyDate="-20050101") == dates(lambda v: v <= "20050101")
    assert catalog.found(Level.STUDY, StudyDate="20100101-") == dates(lambda v: v >= "20100101")
    assert len(dates(lambda v: v >= "20100101")) == 2
    assert catalog.found(Level.STUDY, StudyTime="-120000") == catalog.where(Level.STUDY, "StudyTime", lambda v: v <= "120000")
    assert catalog.found(Level.STUDY, StudyDate="-") == dates(lambda v: True)
    # A dash is no range for other VRs
    assert catalog.found(Level.STUDY, StudyDescription="IRM-DU GENOU") == set()


def test_lists_of_values(catalog):
    uids = [text(ds, "StudyInstanceUID") for ids, ds in catalog.files if text(ds, "PatientName") in ("KNEE", "PHENIX")]
    both = catalog.where(Level.STUDY, "PatientName", lambda v: v in ("KNEE", "PHENIX"))
    assert catalog.found(Level.STUDY, StudyInstanceUID="\\".join(sorted(set(uids)))) == both
    assert len(both) == 2
    # Items of a list are exact values, wildcards included
    assert catalog.found(Level.STUDY, StudyDescription="IRM*\\test ct") == catalog.where(
        Level.STUDY, "StudyDescription", lambda v: v == "Test CT"
    )
    assert catalog.found(Level.STUDY, StudyDate="20061201\\20080819") == catalog.where(
        Level.STUDY, "StudyDate", lambda v: v in ("20061201", "20080819")
    )


def test_modalities_in_study_and_tags_of_lower_levels(catalog):
    with_pt_or_mr = catalog.where(Level.STUDY, "Modality", lambda v: v in ("PT", "MR"))
    assert catalog.found(Level.STUDY, ModalitiesInStudy="PT\\MR") == with_pt_or_mr
    assert catalog.found(Level.STUDY, ModalitiesInStudy="ct") == catalog.where(Level.STUDY, "Modality", lambda v: v == "CT")
    # As in Orthanc, a main tag of a lower level matches nothing
    assert catalog.found(Level.STUDY, Modality="CT") == set()
    assert catalog.found(Level.PATIENT, StudyDescription="*") == set()


def test_constraints_on_upper_levels(catalog):
    knee_series = catalog.where(Level.SERIES, "PatientName", lambda v: v == "KNEE")
    assert len(knee_series) == 2
    assert catalog.found(Level.SERIES, PatientName="knee", StudyDate="20080101-20081231", Modality="MR") == knee_series
    flair = catalog.ids(Level.INSTANCE, lambda ds: ds.PatientID == "5Yp0E" and ds.SeriesDescription == "sT2W/FLAIR")
    assert len(flair) == 22
    found = catalog.find({"Level": "Instance", "Query": {"PatientID": "5yp0e", "SeriesDescription": "st2w/flair"}})
    assert found == flair  # in insertion order


def test_tags_outside_the_index_are_read_from_the_files(catalog):
    thick = catalog.where(Level.SERIES, "SliceThickness", lambda v: v == "5", first_only=True)
    assert thick and catalog.found(Level.SERIES, SliceThickness="5") == thick
    original = catalog.where(Level.INSTANCE, "ImageType", lambda v: v.lower().startswith("original"))
    assert original and catalog.found(Level.INSTANCE, ImageType="original*") == original
    mr = "1.2.840.10008.5.1.4.1.1.4"
    assert catalog.found(Level.STUDY, SOPClassUID=mr) == catalog.where(Level.STUDY, "SOPClassUID", lambda v: v == mr, True)
    assert catalog.found(Level.PATIENT, SOPClassUID=mr) == catalog.where(Level.PATIENT, "SOPClassUID", lambda v: v == mr, True)
    assert catalog.found(Level.INSTANCE, Rows="512") == catalog.where(Level.INSTANCE, "Rows", lambda v: v == "512")
    # With tags of the index too, and a limit that stops reading files early
    assert catalog.find({"Level": "Series", "Query": {"SliceThickness": "5", "Modality": "CT"}, "Limit": 1}) == [
        next(s for s in catalog.ids(Level.SERIES) if s in thick & catalog.found(Level.SERIES, Modality="CT"))
    ]


def test_empty_values_match_everything_and_star_needs_the_tag(catalog):
    everything = set(catalog.ids(Level.STUDY))
    assert catalog.found(Level.STUDY, PatientName="", NoSuchTag="", StudyDate="") == everything
    referred = catalog.where(Level.STUDY, "ReferringPhysicianName", lambda v: True)
    assert catalog.found(Level.STUDY, ReferringPhysicianName="*") == referred
    assert referred < everything or referred == everything
    assert catalog.found(Level.INSTANCE, **{"0099,1010": ""}) == set(catalog.ids(Level.INSTANCE))


def test_limit_and_since_page_in_insertion_order(catalog):
    everything = catalog.find({"Level": "Instance", "Query": {}})
    assert everything == catalog.ids(Level.INSTANCE)
    pages = [catalog.find({"Level": "Instance", "Query": {}, "Since": since, "Limit": 7}) for since in range(0, len(everything), 7)]
    assert all(len(page) == 7 for page in pages[:-1])
    assert [i for page in pages for i in page] == everything
    assert catalog.find({"Level": "Instance", "Query": {}, "Since": len(everything)}) == []
    assert catalog.find({"Level": "Study", "Query": {"PatientName": "KNEE"}, "Limit": 100}) == catalog.ids(
        Level.STUDY, lambda ds: ds.PatientName == "KNEE"
    )


# -- answers --------------------------------------------------------------------------------------


def test_expanded_answers_and_requested_tags(catalog):
    client = catalog.server.client
    comunix_files = [ds for ids, ds in catalog.files if ds.PatientName == "COMUNIX"]
    study_id = catalog.ids(Level.STUDY, lambda ds: ds.PatientName == "COMUNIX")[0]
    requested = ["ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
                 "SOPClassesInStudy", "PatientName", "InstitutionName", "Manufacturer", "NumberOfSeriesRelatedInstances"]
    body = {"Level": "Study", "Query": {"PatientName": "comunix"}, "Expand": True, "RequestedTags": requested}
    [answer] = catalog.find(body)
    reference = client.get(f"/studies/{study_id}").json()
    for key in ("ID", "Type", "MainDicomTags", "PatientMainDicomTags", "ParentPatient", "Series", "Labels"):
        assert answer[key] == reference[key]
    first = comunix_files[0]
    assert answer["RequestedTags"] == {
        "ModalitiesInStudy": "\\".join(sorted({ds.Modality for ds in comunix_files})),
        "NumberOfStudyRelatedSeries": str(len({ds.SeriesInstanceUID for ds in comunix_files})),
        "NumberOfStudyRelatedInstances": str(len(comunix_files)),
        "SOPClassesInStudy": "\\".join(sorted({ds.SOPClassUID for ds in comunix_files})),
        "PatientName": "COMUNIX",
        "InstitutionName": first.InstitutionName,
        "Manufacturer": first.Manufacturer,  # a series tag, read from the study's first instance
    }  # NumberOfSeriesRelatedInstances is no study tag: left out

    short = catalog.find({**body, "Short": True})[0]
    assert short["RequestedTags"]["0008,0061"] == answer["RequestedTags"]["ModalitiesInStudy"]
    assert short["MainDicomTags"]["0020,000d"] == first.StudyInstanceUID
    full = catalog.find({**body, "Full": True})[0]
    assert full["RequestedTags"]["0020,1208"] == {
        "Name": "NumberOfStudyRelatedInstances", "Type": "String", "Value": str(len(comunix_files))
    }
    assert catalog.find({**body, "Expand": False}) == [study_id]

    series = catalog.find({"Level": "Series", "Query": {"PatientName": "COMUNIX", "Modality": "PT"}, "Expand": True,
                           "RequestedTags": ["NumberOfSeriesRelatedInstances", "StudyDate", "PatientID"]})
    assert [s["RequestedTags"] for s in series] == [
        {"NumberOfSeriesRelatedInstances": "2", "StudyDate": first.StudyDate, "PatientID": first.PatientID}
    ]
    [patient] = catalog.find({"Level": "Patient", "Query": {"PatientID": first.PatientID}, "Expand": True,
                              "RequestedTags": ["NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries",
                                                "NumberOfPatientRelatedInstances"]})
    assert patient["RequestedTags"] == {
        "NumberOfPatientRelatedStudies": "1", "NumberOfPatientRelatedSeries": "2", "NumberOfPatientRelatedInstances": "4"
    }


def test_labels(catalog):
    client = catalog.server.client
    studies = catalog.ids(Level.STUDY)
    labelled = {studies[0]: ["find_a"], studies[1]: ["find_a", "find_b"], studies[2]: ["find_b"]}
    for study_id, names in labelled.items():
        for name in names:
            assert client.put(f"/studies/{study_id}/labels/{name}").status_code == 200

    def found(names: list[str], constraint: str | None = None) -> set[str]:
        body = {"Level": "Study", "Query": {}, "Labels": names}
        return set(catalog.find(body | ({"LabelsConstraint": constraint} if constraint else {})))

    try:
        assert found(["find_a"]) == {studies[0], studies[1]}
        assert found(["find_a", "find_b"]) == found(["find_a", "find_b"], "All") == {studies[1]}
        assert found(["find_a", "find_b"], "Any") == set(studies[:3])
        assert found(["find_a"], "None") == set(studies) - {studies[0], studies[1]}
        assert found([], "Any") == set(studies)
        assert catalog.find({"Level": "Series", "Query": {}, "Labels": ["find_a"]}) == []
    finally:
        for study_id, names in labelled.items():
            for name in names:
                client.delete(f"/studies/{study_id}/labels/{name}")


def test_metadata_order_and_parent(catalog):
    knee_study = catalog.ids(Level.STUDY, lambda ds: ds.PatientName == "KNEE")[0]
    knee_instances = catalog.ids(Level.INSTANCE, lambda ds: ds.PatientName == "KNEE")
    by_parent = catalog.find({"Level": "Instance", "Query": {}, "ParentStudy": knee_study,
                              "MetadataQuery": {"SopClassUid": "1.2.840.10008.5.1.4.1.1.4"}})
    assert by_parent == knee_instances
    first_images = catalog.ids(Level.INSTANCE, lambda ds: ds.PatientName == "KNEE" and ds.InstanceNumber == 1)
    body = {"Level": "Instance", "Query": {}, "ParentStudy": knee_study, "MetadataQuery": {"IndexInSeries": "1"}}
    assert catalog.find(body) == first_images

    studies = catalog.ids(Level.STUDY)
    dates = {ids[Level.STUDY]: text(ds, "StudyDate") or "" for ids, ds in catalog.files}
    newest_first = sorted(studies, key=lambda s: dates[s], reverse=True)  # stable: ties in insertion order
    order = [{"Type": "DicomTag", "Key": "StudyDate", "Direction": "DESC"}]
    assert catalog.find({"Level": "Study", "Query": {}, "OrderBy": order}) == newest_first
    assert catalog.find({"Level": "Study", "Query": {}, "OrderBy": order, "Since": 1, "Limit": 2}) == newest_first[1:3]

    client = catalog.server.client
    bad_order = [{"Type": "DicomTag", "Key": "SliceThickness"}]
    assert_error(client.post("/tools/find", json={"Level": "Study", "Query": {}, "OrderBy": bad_order}), 400, 3)
    assert_error(client.post("/tools/find", json={"Level": "Study", "Query": {}, "ParentSeries": "x"}), 400, 8)


@pytest.mark.parametrize(
    "body, status, orthanc_status, details",
    [
        (b"not json", 400, 8, "must contain a JSON object"),
        (b"[]", 400, 8, "must contain a JSON object"),
        (b"", 400, 8, "must contain a JSON object"),
        (b'{"Query": {}}', 400, 8, 'Field "Level"'),
        (b'{"Level": 3, "Query": {}}', 400, 8, 'Field "Level"'),
        (b'{"Level": "Study"}', 400, 8, 'Field "Query"'),
        (b'{"Level": "Study", "Query": []}', 400, 8, 'Field "Query"'),
        (b'{"Level": "Galaxy", "Query": {}}', 400, 3, "Galaxy"),
        (b'{"Level": "Study", "Query": {"PatientName": 3}}', 400, 8, 'Tag "PatientName" should be associated with a string'),
        (b'{"Level": "Study", "Query": {"NoSuchTag": "x"}}', 400, 27, "NoSuchTag"),
        (b'{"Level": "Study", "Query": {}, "Limit": -1}', 400, 3, 'Field "Limit"'),
        (b'{"Level": "Study", "Query": {}, "Since": "2"}', 400, 8, 'Field "Since"'),
        (b'{"Level": "Study", "Query": {}, "CaseSensitive": "yes"}', 400, 8, 'Field "CaseSensitive"'),
        (b'{"Level": "Study", "Query": {}, "Expand": true, "RequestedTags": "PatientName"}', 400, 8, "RequestedTags"),
        (b'{"Level": "Study", "Query": {}, "Expand": true, "RequestedTags": ["Nope"]}', 400, 27, "Nope"),
        (b'{"Level": "Study", "Query": {}, "Labels": ["a b"]}', 400, 3, "a b"),
        (b'{"Level": "Study", "Query": {}, "Labels": "a"}', 400, 8, 'Field "Labels"'),
        (b'{"Level": "Study", "Query": {}, "Labels": ["a"], "LabelsConstraint": "Some"}', 400, 8, "LabelsConstraint"),
        (b'{"Level": "Study", "Query": {}, "MetadataQuery": {"NoSuchMetadata": "x"}}', 400, 3, "NoSuchMetadata"),
        (b'{"Level": "Study", "Query": {}, "OrderBy": [{"Type": "Tag", "Key": "StudyDate"}]}', 400, 8, "OrderBy"),
    ],
)
def test_bad_bodies_are_refused_and_change_nothing(catalog, body, status, orthanc_status, details):
    client = catalog.server.client
    before = client.get("/statistics").json()
    assert_error(client.post("/tools/find", content=body), status, orthanc_status, details)
    assert client.get("/statistics").json() == before


def test_lookup_by_dicom_identifier(catalog):
    client = catalog.server.client
    ids, ds = next((ids, ds) for ids, ds in catalog.files if ds.PatientName == "BRAINIX")

    def lookup(body: str) -> list:
        response = client.post("/tools/lookup", content=body.encode())
        assert response.status_code == 200
        return response.json()

    patient = [{"ID": ids[Level.PATIENT], "Path": f"/patients/{ids[Level.PATIENT]}", "Type": "Patient"}]
    assert lookup("5Yp0E") == lookup("5yp0e") == lookup(" 5Yp0E\n") == patient
    for level, keyword in ((Level.STUDY, "StudyInstanceUID"), (Level.SERIES, "SeriesInstanceUID"), (Level.INSTANCE, "SOPInstanceUID")):
        assert lookup(ds[keyword].value) == [{"ID": ids[level], "Path": f"/{level.route}/{ids[level]}", "Type": level.title}]
    assert lookup("no such identifier") == lookup("") == []


def test_limit_find_results_and_instances_cap_answers(tmp_path):
    with running_isengard(tmp_path / "capped", LimitFindResults=2, LimitFindInstances=3) as server:
        for path in [*sample("PatientWith2studies").iterdir(), sample("Phenix/IM-0001-0001.dcm"), *sorted(sample("Comunix").rglob("*.dcm"))]:
            server.upload(path)

        def find(body: dict) -> list:
            return server.client.post("/tools/find", json=body).json()

        studies = find({"Level": "Study", "Query": {}})
        assert len(studies) == 2
        assert find({"Level": "Study", "Query": {}, "Since": 1}) == studies[1:]
        assert find({"Level": "Study", "Query": {}, "Since": 2}) == []
        assert find({"Level": "Study", "Query": {}, "Limit": 1}) == studies[:1]
        assert len(find({"Level": "Instance", "Query": {}})) == 3
        assert len(find({"Level": "Instance", "Query": {}, "Limit": 10})) == 3


# -- scale and reference --------------------------------------------------------------------------

STUDIES = 10_000
NAMES = ("SMITH", "JONES", "DOE", "MARTIN", "MÜLLER")
MODALITIES = ("CT", "MR", "PT", "US")


@dataclass(frozen=True)
class SyntheticStudy:
    number: int

    @property
    def patient_id(self) -> str:
        return f"P{self.number // 2:05d}"  # two studies per patient

    @property
    def patient_name(self) -> str:
        return f"{NAMES[self.number // 2 % len(NAMES)]}^{self.number // 2}"

    @property
    def tags(self) -> dict[Level, dict[str, str]]:
        uid = f"1.2.3.{self.number}"
        patient = {"PatientID": self.patient_id, "PatientName": self.patient_name}
        return {
            Level.PATIENT: patient,
            Level.STUDY: {"StudyInstanceUID": uid, "StudyDate": f"20{self.number % 20:02d}0{self.number % 9 + 1}15",
                          "AccessionNumber": f"ACC{self.number}", **patient},
            Level.SERIES: {"SeriesInstanceUID": f"{uid}.1", "Modality": MODALITIES[self.number % len(MODALITIES)]},
            Level.INSTANCE: {"SOPInstanceUID": f"{uid}.1.1"},
        }


def build_index(folder: Path) -> list[SyntheticStudy]:
    """An index of 10,000 studies of one series and one instance each, written in bulk."""
    studies = [SyntheticStudy(number) for number in range(STUDIES)]
    rows: list[dict] = []
    values: list[dict] = []
    patients: dict[str, int] = {}
    for study in studies:
        tags = study.tags
        uids = [tags[level][keyword] for level, keyword in
                ((Level.STUDY, "StudyInstanceUID"), (Level.SERIES, "SeriesInstanceUID"), (Level.INSTANCE, "SOPInstanceUID"))]
        public_ids = DicomIdentifiers(study.patient_id, *uids).public_ids()
        parent = patients.get(study.patient_id)
        for level in Level:
            if level == Level.PATIENT and parent is not None:
                continue
            internal_id = len(rows) + 1
            rows.append({"internal_id": internal_id, "resource_type": int(level), "public_id": public_ids[level], "parent_id": parent})
            values += [{"resource_id": internal_id, "tag": int(parse_tag(k)), "value": v} for k, v in tags[level].items()]
            patients.setdefault(study.patient_id, internal_id)
            parent = internal_id
    index = Index(sqlite_url(folder))
    with index.engine.begin() as connection:
        connection.execute(insert(resources), rows)
        connection.execute(insert(main_dicom_tags), values)
    index.close()
    return studies


def test_study_find_over_10000_studies_is_fast(tmp_path):
    folder = tmp_path / "large"
    studies = build_index(folder / "db")
    with running_isengard(folder) as server:

        def timed(body: dict) -> tuple[list, float]:
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                response = server.client.post("/tools/find", json=body)
                best = min(best, time.perf_counter() - start)
            assert response.status_code == 200, response.text
            return response.json(), best

        def count(keep: Callable[[dict[Level, dict[str, str]]], bool]) -> int:
            return sum(1 for study in studies if keep(study.tags))

        queries = [
            ({"PatientID": "p01234"}, count(lambda t: t[Level.PATIENT]["PatientID"] == "P01234")),
            ({"PatientName": "smith^1*"}, count(lambda t: t[Level.PATIENT]["PatientName"].startswith("SMITH^1"))),
            ({"PatientName": "müller^4*"}, count(lambda t: t[Level.PATIENT]["PatientName"].startswith("MÜLLER^4"))),
            ({"StudyInstanceUID": "1.2.3.4567"}, 1),
            ({"AccessionNumber": "acc777\\ACC778"}, 2),
            ({"StudyDate": "20050101-20050331"}, count(lambda t: "20050101" <= t[Level.STUDY]["StudyDate"] <= "20050331")),
            ({"ModalitiesInStudy": "ct", "PatientName": "DOE*"},
             count(lambda t: t[Level.SERIES]["Modality"] == "CT" and t[Level.PATIENT]["PatientName"].startswith("DOE"))),
        ]
        for query, expected in queries:
            found, seconds = timed({"Level": "Study", "Query": query})
            assert len(found) == expected > 0, query
            assert seconds < 0.5, f"{query} took {seconds:.3f} s"
        found, seconds = timed({"Level": "Instance", "Query": {"PatientID": "P00042", "Modality": "MR"}})
        assert len(found) == 1 and seconds < 0.5
        found, seconds = timed({"Level": "Study", "Query": {}, "Since": 9990, "Limit": 5})
        assert len(found) == 5 and seconds < 0.5


# Queries whose answers Orthanc 1.10.1 and Isengard must agree on (as sets: Orthanc's order is arbitrary).
DIFFERENTIAL_QUERIES = [
    ("Patient", {"PatientName": "brainix"}, None),
    ("Patient", {"PatientName": "brainix"}, True),
    ("Patient", {"PatientName": "BRAIN*"}, None),
    ("Patient", {"PatientName": "*I?"}, None),
    ("Patient", {"PatientName": "*i?"}, True),
    ("Patient", {"PatientSex": "m"}, None),
    ("Patient", {"PatientBirthDate": "19490301"}, None),
    ("Patient", {"SOPClassUID": "1.2.840.10008.5.1.4.1.1.4"}, None),
    ("Patient", {"ReferringPhysicianName": "*"}, None),
    ("Patient", {"ModalitiesInStudy": "CT"}, None),
    ("Study", {"StudyDescription": "irm*"}, None),
    ("Study", {"StudyDescription": "IRM*\\Test CT"}, None),
    ("Study", {"StudyDescription": "Neck^1HEAD_NECK?PETCT"}, None),
    ("Study", {"StudyDescription": "Neck^1HEAD%"}, None),
    ("Study", {"AccessionNumber": "a10003245599"}, None),
    ("Study", {"AccessionNumber": "a10003245599"}, True),
    ("Study", {"Modality": "CT"}, None),
    ("Study", {"ModalitiesInStudy": "CT"}, None),
    ("Study", {"ModalitiesInStudy": "PT\\mr"}, None),
    ("Study", {"StudyDate": "20050101-20091231"}, None),
    ("Study", {"StudyDate": "-20050101"}, None),
    ("Study", {"StudyDate": "20100101-"}, None),
    ("Study", {"StudyDate": "-"}, None),
    ("Study", {"StudyDate": "20061201\\20080819"}, None),
    ("Study", {"StudyDate": "2006*\\20080819"}, None),
    ("Study", {"StudyDate": "20061201-20061201\\20080819"}, None),
    ("Study", {"StudyDate": "2006*"}, None),
    ("Study", {"StudyTime": "-120000"}, None),
    ("Study", {"SeriesDescription": "*"}, None),
    ("Study", {"SOPClassUID": "1.2.840.10008.5.1.4.1.1.4"}, None),
    ("Study", {"SpecificCharacterSet": "ISO_IR 100"}, None),
    ("Study", {"ReferringPhysicianName": "*"}, None),
    ("Study", {"PatientID": "5yp0e", "StudyDate": "20061201"}, None),
    ("Study", {"NoSuchTag": ""}, None),
    ("Study", {"0099,1010": "x*"}, None),
    ("Series", {"PatientID": "5Yp0E"}, None),
    ("Series", {"PatientID": "5yp0e", "StudyDescription": "*neuro*"}, None),
    ("Series", {"Manufacturer": "philips*"}, None),
    ("Series", {"Manufacturer": "philips*"}, True),
    ("Series", {"SliceThickness": "5"}, None),
    ("Series", {"SliceThickness": "5*"}, None),
    ("Series", {"SOPClassUID": "1.2.840.10008.5.1.4.1.1.4"}, None),
    ("Series", {"ModalitiesInStudy": "CT"}, None),
    ("Instance", {}, None),
    ("Instance", {"Rows": "512"}, None),
    ("Instance", {"ImageType": "original*"}, None),
    ("Instance", {"Modality": "mr", "PatientName": "knee", "StudyDate": "20080819", "SeriesDescription": "T1*"}, None),
    ("Instance", {"InstanceNumber": "1"}, None),
    ("Instance", {"InstanceNumber": "1*"}, None),
]


def test_same_identifiers_as_orthanc(catalog, orthanc):  # noqa: F811 (the fixture)
    for path in sorted(path for folder in SAMPLE_FOLDERS for path in sample(folder).rglob("*.dcm")):
        assert orthanc.client.post("/instances", content=path.read_bytes()).status_code == 200
    differences = []
    for level, query, case_sensitive in DIFFERENTIAL_QUERIES:
        body = {"Level": level, "Query": query} | ({"CaseSensitive": case_sensitive} if case_sensitive else {})
        expected = orthanc.client.post("/tools/find", json=body)
        actual = catalog.server.client.post("/tools/find", json=body)
        if expected.status_code != actual.status_code:
            differences.append((body, expected.status_code, actual.status_code))
        elif expected.status_code == 200 and sorted(expected.json()) != sorted(actual.json()):
            differences.append((body, sorted(expected.json()), sorted(actual.json())))
    for identifier in ("5Yp0E", "5yp0e", " TEST_1 ", "", "unknown", catalog.files[0][1].StudyInstanceUID,
                       catalog.files[0][1].SeriesInstanceUID, catalog.files[0][1].SOPInstanceUID):
        expected = orthanc.client.post("/tools/lookup", content=identifier.encode()).json()
        actual = catalog.server.client.post("/tools/lookup", content=identifier.encode()).json()
        if expected != actual:
            differences.append((identifier, expected, actual))
    assert differences == []
