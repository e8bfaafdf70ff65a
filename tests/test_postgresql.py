"""The same index on PostgreSQL: ingest, navigation, find, metadata, deletion, and two servers on one database."""

import pytest

from conftest import running_isengard, sample
from postgresql import postgresql_bin, running_postgresql

pytestmark = pytest.mark.skipif(postgresql_bin() is None, reason="PostgreSQL is not installed (Debian package postgresql)")


@pytest.fixture(scope="module")
def database():
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install isengard[postgresql])")
    with running_postgresql() as url:
        yield url


def test_core_flows_on_postgresql(database, tmp_path):
    files = sorted(sample("Brainix/Flair").iterdir())[:4]
    with running_isengard(tmp_path / "a", DatabaseUrl=database) as server:
        answers = [server.upload(path) for path in files]
        assert {a["Status"] for a in answers} == {"Success"}
        assert server.upload(files[0])["Status"] == "AlreadyStored"
        stats = server.client.get("/statistics").json()
        assert stats["CountInstances"] == 4 and int(stats["TotalDiskSize"]) == sum(len(p.read_bytes()) for p in files)
        study = answers[0]["ParentStudy"]
        assert server.client.get(f"/studies/{study}").json()["PatientMainDicomTags"]["PatientName"] == "BRAINIX"
        found = server.client.post("/tools/find", json={"Level": "Study", "Query": {"PatientName": "brain*"}}).json()
        assert found == [study]
        instance = answers[0]["ID"]
        assert server.client.put(f"/instances/{instance}/metadata/1024", content=b"one").status_code == 200
        assert server.client.put(f"/instances/{instance}/metadata/1024", content=b"two").status_code == 200
        assert server.client.get(f"/instances/{instance}/metadata/1024").text == "two"
        assert server.client.put(f"/studies/{study}/labels/urgent").status_code == 200

        # A second server on the same database (and storage) sees the same index.
        with running_isengard(tmp_path / "b", DatabaseUrl=database, StorageDirectory=str(tmp_path / "a" / "db")) as other:
            assert other.client.get(f"/studies/{study}/labels").json() == ["urgent"]
            assert other.client.get(f"/instances/{instance}/file").content == files[0].read_bytes()
            assert other.client.delete(f"/patients/{answers[0]['ParentPatient']}").status_code == 200

        assert server.client.get("/patients").json() == []
        assert server.client.get("/statistics").json()["TotalDiskSize"] == "0"


def test_concurrent_writers_creating_the_same_patient(database, tmp_path):
    """Writers on PostgreSQL race to create the same new patient, study and series: the
    losers retry instead of failing (threads of one server, and two servers)."""
    from concurrent.futures import ThreadPoolExecutor

    files = sorted(sample("Brainix/Flair").iterdir())[:12]
    storage = str(tmp_path / "shared-storage")
    with running_isengard(tmp_path / "a", DatabaseUrl=database, StorageDirectory=storage) as first, \
            running_isengard(tmp_path / "b", DatabaseUrl=database, StorageDirectory=storage) as second:
        servers = [first, second]
        with ThreadPoolExecutor(len(files)) as pool:
            responses = list(pool.map(lambda n: servers[n % 2].client.post("/instances", content=files[n].read_bytes()),
                                      range(len(files))))
        assert [r.status_code for r in responses] == [200] * len(files)
        assert {r.json()["Status"] for r in responses} == {"Success"}
        assert len(first.client.get("/patients").json()) == 1
        assert len(second.client.get("/instances").json()) == len(files)
