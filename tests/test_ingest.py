"""The store pipeline through POST /instances: identifiers, statuses, bad input, consistency."""

import hashlib
import io
import random
import sqlite3
import threading
import time
import zipfile
from pathlib import Path

import httpx
import pydicom
import pytest

from conftest import SAMPLES, running_isengard, sample

LATIN1 = "Encodings/Lena-latin1.dcm"
# Identifiers computed by Orthanc 1.10.1 for this file.
LATIN1_IDS = {
    "ID": "a07b33bf-c41e029a-04713d29-282089b4-3dce78ce",
    "ParentPatient": "274b8ddb-7a81c953-4205e1b0-76dec123-043a4c41",
    "ParentStudy": "90ca69a3-ea5c22b7-939a95e6-4157daea-ff1a74e7",
    "ParentSeries": "378c7b1b-3f9a342e-a0268acf-410ed699-b235e087",
}


def test_store_answers_orthanc_identifiers_then_already_stored(fresh_isengard):
    first = fresh_isengard.upload(sample(LATIN1))
    assert {k: first[k] for k in LATIN1_IDS} == LATIN1_IDS
    assert first["Status"] == "Success"
    assert first["Path"] == f"/instances/{LATIN1_IDS['ID']}"
    second = fresh_isengard.upload(sample(LATIN1))
    assert second["Status"] == "AlreadyStored"
    assert fresh_isengard.client.get("/statistics").json()["CountInstances"] == 1


def test_stored_file_is_returned_byte_for_byte(fresh_isengard):
    data = sample(LATIN1).read_bytes()
    fresh_isengard.upload(sample(LATIN1))
    response = fresh_isengard.client.get(f"/instances/{LATIN1_IDS['ID']}/file")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/dicom"
    assert response.content == data


def test_character_sets_are_decoded_in_main_tags(isengard):
    isengard.upload(sample(LATIN1))
    patient = isengard.client.get(f"/patients/{LATIN1_IDS['ParentPatient']}").json()
    assert patient["MainDicomTags"]["PatientName"] == "Test-éüäöò"


@pytest.mark.parametrize(
    "body, details",
    [
        (b"", "empty"),
        (b"not a dicom file at all" * 10, "invalid DICOM"),
    ],
)
def test_non_dicom_bodies_are_refused_with_400(isengard, body, details):
    response = isengard.client.post("/instances", content=body)
    assert response.status_code == 400
    error = response.json()
    assert error["OrthancError"] == "Bad file format"
    assert error["OrthancStatus"] == 15
    assert details in error["Details"]


@pytest.mark.parametrize("cut", [0.5, 0.9, 0.999])
def test_truncated_files_are_refused_and_store_nothing(fresh_isengard, cut):
    data = sample("TransferSyntaxes/1.2.840.10008.1.2.1.dcm").read_bytes()
    response = fresh_isengard.client.post("/instances", content=data[: int(len(data) * cut)])
    assert response.status_code == 400, response.text
    assert fresh_isengard.client.get("/instances").json() == []


def test_truncated_encapsulated_pixel_data_is_refused(fresh_isengard):
    data = sample("TransferSyntaxes/1.2.840.10008.1.2.4.50.dcm").read_bytes()
    response = fresh_isengard.client.post("/instances", content=data[:-10])
    assert response.status_code == 400
    assert fresh_isengard.client.get("/instances").json() == []


def test_missing_patient_id_is_allowed_as_orthanc_does(fresh_isengard, tmp_path):
    ds = pydicom.dcmread(sample("DummyCT.dcm"))
    del ds.PatientID
    path = tmp_path / "nopatient.dcm"
    ds.save_as(path)
    answer = fresh_isengard.upload(path)
    # SHA-1 of the empty string, as Orthanc computes it for an absent PatientID.
    assert answer["ParentPatient"] == "da39a3ee-5e6b4b0d-3255bfef-95601890-afd80709"


@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
def test_missing_dicom_uids_are_refused_as_orthanc_does(fresh_isengard, tmp_path, keyword):
    ds = pydicom.dcmread(sample("DummyCT.dcm"))
    delattr(ds, keyword)
    path = tmp_path / "incomplete.dcm"
    ds.save_as(path)
    response = fresh_isengard.client.post("/instances", content=path.read_bytes())
    assert response.status_code == 404
    assert response.json()["OrthancError"] == "Inexistent tag"
    assert keyword in response.json()["Details"]
    assert fresh_isengard.client.get("/instances").json() == []


def test_deeply_nested_sequences_are_refused_without_crashing(isengard):
    response = isengard.client.post("/instances", content=sample("2026-05-06-Deeply-Nested-Sequence.dcm").read_bytes())
    assert response.status_code == 400
    assert isengard.client.get("/system").status_code == 200


def test_zip_archive_stores_each_dicom_member(fresh_isengard):
    folder = sample("Brainix/Flair")
    files = sorted(folder.iterdir())[:5]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in files:
            archive.write(path, f"flair/{path.name}")
        archive.writestr("README.txt", "not DICOM")
    response = fresh_isengard.client.post("/instances", content=buffer.getvalue())
    assert response.status_code == 200
    answers = response.json()
    assert [a["Status"] for a in answers].count("Success") == 5
    assert [a for a in answers if a["Status"] == "Failure"][0]["Path"] == "README.txt"
    assert len(fresh_isengard.client.get("/instances").json()) == 5


def test_invalid_zip_is_refused(isengard):
    response = isengard.client.post("/instances", content=b"PK\x03\x04garbage")
    assert response.status_code == 400


def test_multipart_form_upload(fresh_isengard):
    files = sorted(sample("Brainix/Flair").iterdir())[:2]
    response = fresh_isengard.client.post(
        "/instances", files=[("files", (p.name, p.read_bytes(), "application/dicom")) for p in files]
    )
    assert response.status_code == 200
    assert [a["Status"] for a in response.json()] == ["Success", "Success"]


def test_overwrite_instances_replaces_the_file(tmp_path):
    original = sample("DummyCT.dcm")
    changed = tmp_path / "changed.dcm"
    ds = pydicom.dcmread(original)
    ds.StudyDescription = "Overwritten"
    ds.save_as(changed)
    with running_isengard(tmp_path / "server", OverwriteInstances=True) as server:
        first = server.upload(original)
        second = server.upload(changed)
        assert second["ID"] == first["ID"] and second["Status"] == "Success"
        stored = server.client.get(f"/instances/{first['ID']}/file").content
        assert stored == changed.read_bytes()
        files = [p for p in (tmp_path / "server" / "db").rglob("*") if p.is_file() and len(p.name) == 36]
        assert len(files) == 1  # the replaced file is gone from storage


def test_every_sample_is_stored_or_refused_cleanly(fresh_isengard):
    """The whole corpus: every file gets a 200 or a 4xx with a JSON error, never a 500."""
    statuses = {}
    for path in sorted(SAMPLES.rglob("*")):
        if path.is_file():
            response = fresh_isengard.client.post("/instances", content=path.read_bytes())
            statuses[path] = response.status_code
            assert response.status_code in (200, 400, 404), (path, response.text)
            if response.status_code != 200:
                assert "OrthancError" in response.json()
    assert sum(1 for s in statuses.values() if s == 200) > 200


def _index_files(folder: Path) -> dict[str, str]:
    """uuid -> uncompressed MD5 of every DICOM attachment the index names."""
    with sqlite3.connect(folder / "db" / "index.db") as db:
        return dict(db.execute("SELECT uuid, uncompressed_md5 FROM attached_files"))


def test_kill_during_ingest_leaves_index_and_storage_consistent(tmp_path):
    """kill -9 at random points of concurrent uploads, several times: after each restart
    every indexed file is complete on disk and no temporary file remains."""
    files = sorted(sample("Brainix/Flair").iterdir()) + sorted(sample("Knee").rglob("*.dcm"))
    rng = random.Random(1234)
    folder = tmp_path / "server"
    for _round in range(4):
        with running_isengard(folder, SyncStorageArea=True) as server:
            stop = threading.Event()

            def upload_forever(offset: int) -> None:
                with httpx.Client(base_url=server.url, timeout=5) as client:
                    i = offset
                    while not stop.is_set():
                        try:
                            client.post("/instances", content=files[i % len(files)].read_bytes())
                        except httpx.HTTPError:
                            return
                        i += 3

            threads = [threading.Thread(target=upload_forever, args=(n,)) for n in range(3)]
            for thread in threads:
                thread.start()
            time.sleep(rng.uniform(0.3, 1.5))
            server.kill()
            stop.set()
            for thread in threads:
                thread.join()
        indexed = _index_files(folder)
        storage = folder / "db"
        for file_uuid, md5 in indexed.items():
            path = storage / file_uuid[:2] / file_uuid[2:4] / file_uuid
            assert path.exists(), f"index names a missing file {file_uuid}"
            assert hashlib.md5(path.read_bytes()).hexdigest() == md5, f"index names a corrupt file {file_uuid}"

    with running_isengard(folder) as server:
        assert not list((folder / "db").rglob("*.tmp"))
        count = server.client.get("/statistics").json()["CountInstances"]
        assert count == len(_index_files(folder)) > 0
        for instance in server.client.get("/instances").json()[:20]:
            assert server.client.get(f"/instances/{instance}/file").status_code == 200


def test_default_encoding_decodes_files_without_specific_character_set(tmp_path):
    ds = pydicom.dcmread(sample("DummyCT.dcm"))
    if "SpecificCharacterSet" in ds:
        del ds.SpecificCharacterSet
    ds.PatientName = "Ж"  # stored below as raw ISO 8859-5 bytes
    ds["PatientName"].value = "Ж".encode("iso8859_5").decode("latin_1")
    path = tmp_path / "cyrillic.dcm"
    ds.save_as(path)
    with running_isengard(tmp_path / "server", DefaultEncoding="Cyrillic") as server:
        answer = server.upload(path)
        name = server.client.get(f"/patients/{answer['ParentPatient']}").json()["MainDicomTags"]["PatientName"]
        assert name == "Ж"


def test_two_servers_share_one_sqlite_index(tmp_path):
    """Two processes writing the same SQLite index at once (the same new patient, study and
    series): none fails, neither on the database's lock nor on a resource the other created."""
    from concurrent.futures import ThreadPoolExecutor

    files = sorted(sample("Brainix/Flair").iterdir())[:12]
    storage = str(tmp_path / "shared")
    with running_isengard(tmp_path / "a", StorageDirectory=storage) as first, \
            running_isengard(tmp_path / "b", StorageDirectory=storage) as second:
        servers = [first, second]
        with ThreadPoolExecutor(len(files)) as pool:
            responses = list(pool.map(lambda n: servers[n % 2].client.post("/instances", content=files[n].read_bytes()),
                                      range(len(files))))
        assert [r.status_code for r in responses] == [200] * len(files)
        assert len(first.client.get("/patients").json()) == 1
        assert len(second.client.get("/instances").json()) == len(files)
