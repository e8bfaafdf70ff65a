"""Tags read from the stored files: /tags, /header, /content, module, shared-tags, instances-tags."""

import pytest

from conftest import running_isengard, sample


@pytest.fixture(scope="module")
def seg(isengard):
    return isengard, isengard.upload(sample("DicomSeg.dcm"))


def test_tags_in_three_formats(seg):
    server, answer = seg
    uri = f"/instances/{answer['ID']}"
    full = server.client.get(uri + "/tags").json()
    assert full["0010,0020"] == {"Name": "PatientID", "Type": "String", "Value": "TCGA-08-0360"}
    assert full["0062,0002"]["Type"] == "Sequence" and len(full["0062,0002"]["Value"]) == 3
    assert server.client.get(uri + "/tags?short").json()["0010,0020"] == "TCGA-08-0360"
    simplified = server.client.get(uri + "/tags?simplify").json()
    assert simplified == server.client.get(uri + "/simplified-tags").json()
    assert simplified["SegmentSequence"][0]["SegmentLabel"] == "Necrosis"
    assert "PixelData" not in simplified


def test_header_is_the_file_meta_group(seg):
    server, answer = seg
    header = server.client.get(f"/instances/{answer['ID']}/header?simplify").json()
    assert header["TransferSyntaxUID"] and header["MediaStorageSOPInstanceUID"]
    assert all(key.startswith("0002,") for key in server.client.get(f"/instances/{answer['ID']}/header").json())


def test_content_walks_sequences_down_to_raw_values(seg):
    server, answer = seg
    uri = f"/instances/{answer['ID']}/content"
    assert "0062-0002" in server.client.get(uri).json()
    assert server.client.get(uri + "/0062-0002").json() == ["0", "1", "2"]
    assert "0062-0005" in server.client.get(uri + "/0062-0002/0").json()
    value = server.client.get(uri + "/0062-0002/0/0062-0005")
    assert value.content == b"Necrosis" and value.headers["content-type"] == "application/octet-stream"
    for missing in ("/0062-0002/9", "/9999-9999", "/not-a-tag", "/0062-0002/0/0062-0005/0"):
        assert server.client.get(uri + missing).status_code == 404, missing


def test_modules_and_shared_tags(isengard):
    files = sorted(sample("Brainix/Flair").iterdir())[:2]
    answers = [isengard.upload(path) for path in files]
    study, series = answers[0]["ParentStudy"], answers[0]["ParentSeries"]
    module = isengard.client.get(f"/studies/{study}/module?simplify").json()
    assert module["StudyDescription"] == "IRM cérébrale, neuro-crâne"
    assert "PatientName" not in module and "SeriesInstanceUID" not in module
    patient = isengard.client.get(f"/studies/{study}/module-patient?simplify").json()
    assert patient["PatientName"] == "BRAINIX"
    shared = isengard.client.get(f"/series/{series}/shared-tags?simplify").json()
    assert shared["SeriesInstanceUID"] and "SOPInstanceUID" not in shared
    every = isengard.client.get(f"/series/{series}/instances-tags?simplify").json()
    assert set(every) == {a["ID"] for a in answers}


def test_private_tags_named_by_the_dictionary_option(tmp_path):
    dictionary = {"6003,1010": ["SQ", "GeImageGroup", 1, 1, "GEMS_Ultrasound_ImageGroup_001"]}
    with running_isengard(tmp_path, Dictionary=dictionary) as server:
        answer = server.upload(sample("PrivateTags.dcm"))
        tags = server.client.get(f"/instances/{answer['ID']}/tags").json()
        assert tags["6003,1010"]["Name"] == "GeImageGroup"


def test_bad_dictionary_option_stops_start_up(tmp_path):
    with pytest.raises(RuntimeError, match="Dictionary"):
        with running_isengard(tmp_path, Dictionary={"0010,0010": ["PN", "Redefined"]}):
            pass


def test_unknown_instance(isengard):
    for route in ("tags", "header", "content", "simplified-tags"):
        assert isengard.client.get(f"/instances/nope/{route}").status_code == 404
    assert isengard.client.get("/studies/nope/module").status_code == 404
