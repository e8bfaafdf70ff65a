"""Metadata, attachments and labels on the four levels: names, revisions, compression, bad input."""

import hashlib
import struct
import zlib
from pathlib import Path

import pytest

from conftest import ServerProcess, running_isengard, sample

DUMMY_CT = "DummyCT.dcm"
USER_OPTIONS = {
    "UserMetadata": {"Sample": 1024, "Other": 2000},
    "UserContentType": {"Report": 1025, "Pdf": [1026, "application/pdf"]},
}
LEVELS = ["patients", "studies", "series", "instances"]
PARENT_KEYS = {"patients": "ParentPatient", "studies": "ParentStudy", "series": "ParentSeries", "instances": "ID"}


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def etag(revision: int, data: bytes) -> str:
    return f'"{revision}-{md5(data)}"'


def stored_files(server: ServerProcess) -> set[str]:
    """UUIDs of the files in the storage area (the index lives beside them)."""
    return {path.name for path in Path(server.config["StorageDirectory"]).glob("??/??/*")}


def file_path(server: ServerProcess, uuid: str) -> Path:
    return Path(server.config["StorageDirectory"]) / uuid[:2] / uuid[2:4] / uuid


def changes_after(server: ServerProcess, seq: int) -> list[tuple[str, str]]:
    answer = server.client.get("/changes", params={"since": seq, "limit": 1000}).json()
    return [(c["ChangeType"], c["ID"]) for c in answer["Changes"]]


def last_seq(server: ServerProcess) -> int:
    return server.client.get("/changes", params={"last": ""}).json()["Last"]


@pytest.fixture(scope="module")
def lenient(tmp_path_factory):
    """CheckRevisions false, no compression, with user metadata and content types."""
    with running_isengard(tmp_path_factory.mktemp("lenient"), **USER_OPTIONS) as server:
        server.ids = server.upload(sample(DUMMY_CT))
        yield server


@pytest.fixture(scope="module")
def strict(tmp_path_factory):
    """CheckRevisions and StorageCompression true."""
    folder = tmp_path_factory.mktemp("strict")
    with running_isengard(folder, CheckRevisions=True, StorageCompression=True, **USER_OPTIONS) as server:
        server.ids = server.upload(sample(DUMMY_CT))
        yield server


def uri(server: ServerProcess, level: str = "instances") -> str:
    return f"/{level}/{server.ids[PARENT_KEYS[level]]}"


def assert_error(response, status: int, orthanc_status: int) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["HttpStatus"] == status
    assert body["OrthancStatus"] == orthanc_status


# -- metadata -----------------------------------------------------------------------------------


def test_metadata_lists_names_values_and_numbers(lenient):
    client = lenient.client
    names = client.get(f"{uri(lenient)}/metadata").json()
    for name in ("IndexInSeries", "ReceptionDate", "Origin", "TransferSyntax", "SopClassUid", "RemoteIP"):
        assert name in names
    expanded = client.get(f"{uri(lenient)}/metadata", params={"expand": ""}).json()
    assert list(expanded) == sorted(expanded)
    assert expanded["Origin"] == "RestApi"
    assert expanded["TransferSyntax"] == "1.2.840.10008.1.2.4.70"
    assert expanded["IndexInSeries"] == "1"
    numeric = client.get(f"{uri(lenient)}/metadata", params={"expand": "", "numeric": ""}).json()
    assert numeric["8"] == "RestApi" and numeric["2"] == expanded["ReceptionDate"]
    assert "8" in client.get(f"{uri(lenient)}/metadata", params={"numeric": ""}).json()
    assert "LastUpdate" in client.get(f"{uri(lenient, 'studies')}/metadata").json()


def test_builtin_metadata_by_name_or_number_with_etag(lenient):
    by_name = lenient.client.get(f"{uri(lenient)}/metadata/SopClassUid")
    assert by_name.status_code == 200
    assert by_name.text == "1.2.840.10008.5.1.4.1.1.4"
    assert by_name.headers["content-type"].startswith("text/plain")
    assert by_name.headers["etag"] == etag(0, by_name.content)
    by_number = lenient.client.get(f"{uri(lenient)}/metadata/10")
    assert by_number.text == by_name.text


@pytest.mark.parametrize("name", ["ReceptionDate", "2", "0", "1023", "65536", "-5"])
def test_builtin_and_out_of_range_metadata_are_read_only(lenient, name):
    before = lenient.client.get(f"{uri(lenient)}/metadata/ReceptionDate").text
    assert_error(lenient.client.put(f"{uri(lenient)}/metadata/{name}", content=b"x"), 403, 22)
    assert_error(lenient.client.delete(f"{uri(lenient)}/metadata/{name}"), 403, 22)
    assert lenient.client.get(f"{uri(lenient)}/metadata/ReceptionDate").text == before


@pytest.mark.parametrize("level", LEVELS)
def test_user_metadata_lifecycle_on_every_level(lenient, level):
    client = lenient.client
    base = uri(lenient, level)
    seq = last_seq(lenient)
    put = client.put(f"{base}/metadata/Sample", content="héllo".encode())
    assert put.status_code == 200 and put.content == b""
    assert put.headers["etag"] == etag(0, "héllo".encode())
    assert client.get(f"{base}/metadata/1024").text == "héllo"
    assert client.put(f"{base}/metadata/1500", content=b"by number").headers["etag"] == etag(0, b"by number")
    listed = client.get(f"{base}/metadata").json()
    assert listed[-2:] == ["Sample", "1500"]  # numbered as Orthanc, user types last
    assert client.get(f"{base}/metadata", params={"expand": ""}).json()["1500"] == "by number"

    second = client.put(f"{base}/metadata/Sample", content=b"again")
    assert second.headers["etag"] == etag(1, b"again")
    assert client.get(f"{base}/metadata/Sample").headers["etag"] == etag(1, b"again")
    for name in ("Sample", "1500"):
        assert client.delete(f"{base}/metadata/{name}").status_code == 200
        assert_error(client.get(f"{base}/metadata/{name}"), 404, 17)
    assert_error(client.delete(f"{base}/metadata/Sample"), 404, 17)
    resource_id = base.split("/")[2]
    assert changes_after(lenient, seq) == [("UpdatedMetadata", resource_id)] * 5


def test_unknown_names_resources_and_methods(lenient):
    client = lenient.client
    assert_error(client.get(f"{uri(lenient)}/metadata/NoSuchName"), 404, 7)
    assert_error(client.put(f"{uri(lenient)}/metadata/sample", content=b"x"), 404, 7)  # names are case-sensitive
    assert_error(client.get(f"{uri(lenient)}/metadata/Other"), 404, 17)  # known name, never set
    assert_error(client.get("/instances/nope/metadata"), 404, 17)
    assert_error(client.put("/instances/nope/metadata/Sample", content=b"x"), 404, 17)
    assert_error(client.get(f"/studies/{lenient.ids['ID']}/metadata"), 404, 17)  # an instance is no study
    refused = client.post(f"{uri(lenient)}/metadata/Sample")
    assert refused.status_code == 405
    assert refused.headers["allow"] == "GET,PUT,DELETE"
    assert client.put(f"{uri(lenient)}/metadata").headers["allow"] == "GET"


def test_metadata_value_must_be_utf8(lenient):
    assert_error(lenient.client.put(f"{uri(lenient)}/metadata/Other", content=b"\xff\xfe"), 400, 8)
    assert_error(lenient.client.get(f"{uri(lenient)}/metadata/Other"), 404, 17)


def test_if_match_is_checked_when_given_even_without_check_revisions(lenient):
    client = lenient.client
    url = f"{uri(lenient)}/metadata/Other"
    client.put(url, content=b"v0")
    assert client.put(url, content=b"v1").status_code == 200  # not required here
    assert_error(client.put(url, content=b"v2", headers={"If-Match": etag(0, b"v0")}), 409, 43)
    assert_error(client.put(url, content=b"v2", headers={"If-Match": "1"}), 400, 3)
    assert client.get(url).text == "v1"
    assert client.put(url, content=b"v2", headers={"If-Match": etag(1, b"v1")}).status_code == 200
    assert client.delete(url).status_code == 200


def test_if_none_match_answers_304_for_the_current_revision(lenient):
    client = lenient.client
    url = f"{uri(lenient)}/metadata/Origin"
    current = client.get(url).headers["etag"]
    cached = client.get(url, headers={"If-None-Match": current})
    assert cached.status_code == 304 and cached.headers["etag"] == current
    assert client.get(url, headers={"If-None-Match": etag(3, b"other")}).text == "RestApi"
    assert_error(client.get(url, headers={"If-None-Match": "garbage"}), 400, 3)


def test_revisions_are_enforced_with_check_revisions(strict):
    client = strict.client
    url = f"{uri(strict, 'series')}/metadata/Sample"
    first = client.put(url, content=b"hello", headers={"If-Match": etag(7, b"ignored for a new item")})
    assert first.headers["etag"] == etag(0, b"hello")

    missing = client.put(url, content=b"hello2")
    assert_error(missing, 409, 43)
    assert "If-Match" in missing.json()["Details"]
    assert_error(client.put(url, content=b"hello2", headers={"If-Match": etag(1, b"hello")}), 409, 43)
    assert_error(client.put(url, content=b"hello2", headers={"If-Match": etag(0, b"wrong md5")}), 409, 43)
    assert client.get(url).text == "hello"

    updated = client.put(url, content=b"hello2", headers={"If-Match": first.headers["etag"]})
    assert updated.headers["etag"] == etag(1, b"hello2")
    assert_error(client.delete(url), 409, 43)
    assert_error(client.delete(url, headers={"If-Match": first.headers["etag"]}), 409, 43)
    assert client.get(url).text == "hello2"
    assert client.delete(url, headers={"If-Match": updated.headers["etag"]}).status_code == 200
    assert_error(client.get(url), 404, 17)


# -- attachments ----------------------------------------------------------------------------------


def test_dicom_attachment_describes_the_stored_file(lenient):
    client = lenient.client
    data = sample(DUMMY_CT).read_bytes()
    assert client.get(f"{uri(lenient)}/attachments").json() == ["dicom"]
    assert client.get(f"{uri(lenient)}/attachments", params={"full": ""}).json() == {"dicom": 1}
    assert client.get(f"{uri(lenient, 'studies')}/attachments").json() == []
    operations = client.get(f"{uri(lenient)}/attachments/dicom")
    assert "data" in operations.json() and "verify-md5" in operations.json()
    assert operations.headers["etag"] == f'"0-{md5(data)}"'

    info = client.get(f"{uri(lenient)}/attachments/1/info").json()
    assert info["ContentType"] == 1
    assert info["UncompressedMD5"] == info["CompressedMD5"] == md5(data)
    assert info["UncompressedSize"] == info["CompressedSize"] == len(data)
    assert info["Uuid"] in stored_files(lenient)
    file = client.get(f"{uri(lenient)}/attachments/dicom/data")
    assert file.content == data
    assert file.headers["content-type"] == "application/dicom"
    assert file.headers["content-disposition"] == f'filename="{info["Uuid"]}.dcm"'
    for route, expected in [("md5", md5(data)), ("size", str(len(data))), ("is-compressed", "0"),
                            ("compressed-size", str(len(data))), ("uuid", info["Uuid"])]:
        assert client.get(f"{uri(lenient)}/attachments/dicom/{route}").text == expected
    assert client.post(f"{uri(lenient)}/attachments/dicom/verify-md5").json() == {}


def test_dicom_attachment_cannot_be_replaced_or_deleted(lenient):
    before = stored_files(lenient)
    for name in ("dicom", "1", "3", "1023", "65536"):
        assert_error(lenient.client.put(f"{uri(lenient)}/attachments/{name}", content=b"x"), 403, 22)
        assert_error(lenient.client.delete(f"{uri(lenient)}/attachments/{name}"), 403, 22)
    assert stored_files(lenient) == before
    assert lenient.client.get(f"{uri(lenient)}/file").content == sample(DUMMY_CT).read_bytes()


@pytest.mark.parametrize("level", LEVELS)
def test_user_attachment_lifecycle_on_every_level(lenient, level):
    client = lenient.client
    base = uri(lenient, level)
    seq = last_seq(lenient)
    files = stored_files(lenient)
    put = client.put(f"{base}/attachments/Pdf", content=b"%PDF-1.4 report")
    assert put.status_code == 200 and put.json() == {}
    assert put.headers["etag"] == etag(0, b"%PDF-1.4 report")
    data = client.get(f"{base}/attachments/1026/data")
    assert data.content == b"%PDF-1.4 report"
    assert data.headers["content-type"] == "application/pdf"
    client.put(f"{base}/attachments/1500", content=b"plain")
    assert client.get(f"{base}/attachments/1500/data").headers["content-type"] == "application/octet-stream"
    full = client.get(f"{base}/attachments", params={"full": ""}).json()
    assert {k: v for k, v in full.items() if k != "dicom"} == {"1500": 1500, "Pdf": 1026}
    assert len(stored_files(lenient) - files) == 2

    old_uuid = client.get(f"{base}/attachments/Pdf/uuid").text
    replaced = client.put(f"{base}/attachments/Pdf", content=b"%PDF-1.4 second")
    assert replaced.headers["etag"] == etag(1, b"%PDF-1.4 second")
    assert old_uuid not in stored_files(lenient)  # the replaced file went after the commit
    assert client.get(f"{base}/attachments/Pdf/data").content == b"%PDF-1.4 second"

    for name in ("Pdf", "1500"):
        assert client.delete(f"{base}/attachments/{name}").status_code == 200
        assert_error(client.get(f"{base}/attachments/{name}/data"), 404, 17)
    assert stored_files(lenient) == files
    resource_id = base.split("/")[2]
    assert changes_after(lenient, seq) == [("UpdatedAttachment", resource_id)] * 5


def test_attachment_errors(lenient):
    client = lenient.client
    files = stored_files(lenient)
    assert_error(client.get(f"{uri(lenient)}/attachments/NoSuchName/data"), 404, 7)
    assert_error(client.get(f"{uri(lenient)}/attachments/DICOM"), 404, 7)  # names are case-sensitive
    assert_error(client.get(f"{uri(lenient)}/attachments/Report"), 404, 17)  # known name, never set
    assert_error(client.delete(f"{uri(lenient)}/attachments/Report"), 404, 17)
    assert_error(client.get(f"{uri(lenient)}/attachments/dicom/bogus"), 404, 17)
    assert_error(client.put("/instances/nope/attachments/Report", content=b"orphan"), 404, 17)
    assert_error(client.get("/series/nope/attachments"), 404, 17)
    assert stored_files(lenient) == files  # the file written for the unknown resource was removed
    assert client.get(f"{uri(lenient)}/attachments/dicom/compress").headers["allow"] == "POST"
    assert client.put(f"{uri(lenient)}/attachments/dicom/data").headers["allow"] == "GET"


def test_attachment_revisions_with_check_revisions(strict):
    client = strict.client
    url = f"{uri(strict, 'studies')}/attachments/Report"
    files = stored_files(strict)
    first = client.put(url, content=b"first")
    assert first.headers["etag"] == etag(0, b"first")
    assert_error(client.put(url, content=b"second"), 409, 43)
    assert_error(client.put(url, content=b"second", headers={"If-Match": etag(0, b"other")}), 409, 43)
    assert_error(client.delete(url), 409, 43)
    assert client.get(f"{url}/data").content == b"first"
    assert len(stored_files(strict) - files) == 1  # refused writes left no file behind

    cached = client.get(f"{url}/info", headers={"If-None-Match": first.headers["etag"]})
    assert cached.status_code == 304
    second = client.put(url, content=b"second", headers={"If-Match": first.headers["etag"]})
    assert second.headers["etag"] == etag(1, b"second")
    assert client.delete(url, headers={"If-Match": second.headers["etag"]}).status_code == 200
    assert stored_files(strict) == files


def test_compressed_storage_serves_both_forms(strict):
    client = strict.client
    base = f"{uri(strict)}/attachments"
    content = b"compressible " * 1000
    client.put(f"{base}/Report", content=content)
    info = client.get(f"{base}/Report/info").json()
    compressed = client.get(f"{base}/Report/compressed-data").content
    assert client.get(f"{base}/Report/data").content == content
    assert struct.unpack("<Q", compressed[:8])[0] == len(content)  # Orthanc's layout: size, then zlib
    assert zlib.decompress(compressed[8:]) == content
    assert info["CompressedSize"] == len(compressed) < len(content) == info["UncompressedSize"]
    assert info["CompressedMD5"] == md5(compressed) == client.get(f"{base}/Report/compressed-md5").text
    assert info["UncompressedMD5"] == md5(content) == client.get(f"{base}/Report/md5").text
    assert client.get(f"{base}/Report/is-compressed").text == "1"
    assert client.post(f"{base}/Report/verify-md5").json() == {}
    assert client.get(f"{base}/dicom/data").content == sample(DUMMY_CT).read_bytes()
    assert client.get(f"{base}/dicom/is-compressed").text == "1"


def test_compress_and_uncompress_rewrite_the_file(strict):
    client = strict.client
    base = f"{uri(strict, 'patients')}/attachments/Report"
    content = b"to be recompressed " * 500
    client.put(base, content=content)
    seq = last_seq(strict)
    compressed = client.get(f"{base}/info").json()

    assert client.post(f"{base}/uncompress").json() == {}
    plain = client.get(f"{base}/info").json()
    assert plain["Uuid"] != compressed["Uuid"]
    assert compressed["Uuid"] not in stored_files(strict) and plain["Uuid"] in stored_files(strict)
    assert plain["CompressedSize"] == plain["UncompressedSize"] == len(content)
    assert plain["CompressedMD5"] == plain["UncompressedMD5"] == md5(content)
    assert client.get(f"{base}/is-compressed").text == "0"
    assert client.get(f"{base}/data").content == client.get(f"{base}/compressed-data").content == content
    assert client.post(f"{base}/uncompress").json() == {}  # already so: nothing happens
    assert client.get(f"{base}/info").json() == plain

    assert client.post(f"{base}/compress").json() == {}
    again = client.get(f"{base}/info").json()
    assert again["Uuid"] not in (plain["Uuid"], compressed["Uuid"])
    assert plain["Uuid"] not in stored_files(strict)
    assert client.get(f"{base}/data").content == content
    assert client.get(f"{base}").headers["etag"] == etag(2, content)  # each rewrite is a revision
    assert changes_after(strict, seq) == [("UpdatedAttachment", strict.ids["ParentPatient"])] * 2


def test_dicom_attachment_can_be_uncompressed(strict):
    client = strict.client
    data = sample(DUMMY_CT).read_bytes()
    assert client.get(f"{uri(strict)}/attachments/dicom/is-compressed").text == "1"
    assert client.post(f"{uri(strict)}/attachments/dicom/uncompress").json() == {}
    info = client.get(f"{uri(strict)}/attachments/dicom/info").json()
    assert info["CompressedSize"] == info["UncompressedSize"] == len(data)
    assert file_path(strict, info["Uuid"]).read_bytes() == data
    assert client.get(f"{uri(strict)}/file").content == data


def test_corrupted_file_is_detected_and_never_rewritten(strict):
    client = strict.client
    base = f"{uri(strict, 'series')}/attachments/1500"
    client.put(base, content=b"precious data " * 100)
    client.post(f"{base}/uncompress")
    info = client.get(f"{base}/info").json()
    path = file_path(strict, info["Uuid"])
    damaged = bytearray(path.read_bytes())
    damaged[0] ^= 0xFF
    path.write_bytes(bytes(damaged))

    failed = client.post(f"{base}/verify-md5")
    assert failed.status_code == 400
    assert failed.json()["OrthancStatus"] == 20
    assert_error(client.post(f"{base}/compress"), 500, 20)
    assert client.get(f"{base}/info").json() == info  # the index still names the damaged file
    assert info["Uuid"] in stored_files(strict)

    path.unlink()
    assert_error(client.get(f"{base}/data"), 404, 13)
    assert_error(client.post(f"{base}/verify-md5"), 404, 13)
    assert client.delete(base, headers={"If-Match": client.get(base).headers["etag"]}).status_code == 200


def test_damaged_compressed_stream_is_reported_as_corrupted(strict):
    client = strict.client
    base = f"{uri(strict, 'studies')}/attachments/1600"
    client.put(base, content=b"zlib stream " * 100)
    info = client.get(f"{base}/info").json()
    path = file_path(strict, info["Uuid"])
    path.write_bytes(path.read_bytes()[:8] + b"not zlib at all")
    assert_error(client.post(f"{base}/verify-md5"), 400, 20)
    assert_error(client.post(f"{base}/uncompress"), 500, 20)
    assert client.get(f"{base}/info").json() == info


# -- labels ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", LEVELS)
def test_labels_on_every_level(lenient, level):
    client = lenient.client
    base = uri(lenient, level)
    assert client.get(f"{base}/labels").json() == []
    for label in ("zeta", "Alpha_1", "beta-2", "zeta"):
        put = client.put(f"{base}/labels/{label}")
        assert put.status_code == 200 and put.content == b""
    assert client.get(f"{base}/labels").json() == ["Alpha_1", "beta-2", "zeta"]
    present = client.get(f"{base}/labels/zeta")
    assert present.status_code == 200 and present.content == b""
    assert_error(client.get(f"{base}/labels/ZETA"), 404, 7)
    assert {"Alpha_1", "beta-2", "zeta"} <= set(client.get("/tools/labels").json())
    for label in ("zeta", "Alpha_1", "beta-2", "never-set"):
        assert client.delete(f"{base}/labels/{label}").status_code == 200
    assert client.get(f"{base}/labels").json() == []
    assert client.get("/tools/labels").json() == []


@pytest.mark.parametrize("label", ["with space", "é", "a.b", "x" * 65, "semi;colon"])
def test_invalid_labels_are_refused(lenient, label):
    assert_error(lenient.client.put(f"{uri(lenient)}/labels/{label}"), 400, 3)
    assert_error(lenient.client.delete(f"{uri(lenient)}/labels/{label}"), 400, 3)
    assert lenient.client.get(f"{uri(lenient)}/labels").json() == []


def test_label_limits_and_unknown_resources(lenient):
    client = lenient.client
    longest = "L" * 64
    assert client.put(f"{uri(lenient)}/labels/{longest}").status_code == 200
    assert client.get("/tools/labels").json() == [longest]
    assert client.delete(f"{uri(lenient)}/labels/{longest}").status_code == 200
    assert_error(client.put("/studies/nope/labels/fine"), 404, 17)
    assert_error(client.get("/studies/nope/labels"), 404, 17)
    assert client.post(f"{uri(lenient)}/labels/fine").headers["allow"] == "GET,PUT,DELETE"
    assert client.get("/tools/labels").json() == []


def test_deleting_a_resource_forgets_its_labels_metadata_and_attachments(fresh_isengard):
    client = fresh_isengard.client
    ids = fresh_isengard.upload(sample(DUMMY_CT))
    study = f"/studies/{ids['ParentStudy']}"
    client.put(f"{study}/labels/gone")
    client.put(f"{study}/attachments/1500", content=b"attached to the study")
    client.put(f"{study}/metadata/1500", content=b"value")
    assert len(stored_files(fresh_isengard)) == 2
    assert client.delete(study).status_code == 200
    assert client.get("/tools/labels").json() == []
    assert stored_files(fresh_isengard) == set()
