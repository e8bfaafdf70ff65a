"""The event bus fed by the store pipeline and deletions, and the exports log, in-process."""

import json

import pytest
from starlette.testclient import TestClient

from conftest import sample
from isengard.config import load_configuration
from isengard.dicom.levels import Level
from isengard.index import ChangeType
from isengard.ingest import Origin
from isengard.rest import create_app
from isengard.server import Isengard


@pytest.fixture
def isengard(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"StorageDirectory": str(tmp_path / "db")}))
    server = Isengard(load_configuration(path))
    yield server
    server.close()


def test_new_and_deleted_resources_are_published_after_commit(isengard):
    seen = []

    def subscriber(event):
        # Published after the commit: the index already holds (or no longer holds) the resource.
        with isengard.index.read() as index:
            seen.append((event.change_type, event.level, index.lookup(event.public_id) is not None))

    isengard.events.subscribe(subscriber)
    result = isengard.ingest.store(sample("DummyCT.dcm").read_bytes(), Origin("RestApi"))
    assert seen == [
        (ChangeType.NEW_INSTANCE, Level.INSTANCE, True),
        (ChangeType.NEW_SERIES, Level.SERIES, True),
        (ChangeType.NEW_STUDY, Level.STUDY, True),
        (ChangeType.NEW_PATIENT, Level.PATIENT, True),
    ]
    seen.clear()
    isengard.ingest.store(sample("DummyCT.dcm").read_bytes(), Origin("RestApi"))
    assert seen == []  # AlreadyStored publishes nothing
    with isengard.index.read() as index:
        patient = index.get(result.public_ids[Level.PATIENT])
    isengard.delete(patient)
    assert {(c, present) for c, _, present in seen} == {(ChangeType.DELETED, False)}
    assert {level for _, level, _ in seen} == set(Level)
    isengard.events.unsubscribe(subscriber)


def test_a_failing_subscriber_does_not_stop_the_store(isengard, caplog):
    def broken(_event):
        raise RuntimeError("subscriber bug")

    received = []
    isengard.events.subscribe(broken)
    isengard.events.subscribe(received.append)
    result = isengard.ingest.store(sample("DummyCT.dcm").read_bytes(), Origin("RestApi"))
    assert result.status.value == "Success"
    assert len(received) == 4
    assert "subscriber bug" in caplog.text


def test_exports_log(isengard):
    result = isengard.ingest.store(sample("DummyCT.dcm").read_bytes(), Origin("RestApi"))
    study = result.public_ids[Level.STUDY]
    with isengard.index.write() as index:
        index.log_export(Level.STUDY, study, "PACS", {"PatientID": "PID", "StudyInstanceUID": "1.2.3"})
    client = TestClient(create_app(isengard), client=("127.0.0.1", 50000))
    exports = client.get("/exports").json()
    assert exports["Done"] is True and exports["Last"] == 1
    assert exports["Exports"][0] | {"Date": None} == {
        "Date": None,
        "ID": study,
        "Path": f"/studies/{study}",
        "PatientID": "PID",
        "RemoteModality": "PACS",
        "ResourceType": "Study",
        "Seq": 1,
        "StudyInstanceUID": "1.2.3",
        "SeriesInstanceUID": "",
        "SOPInstanceUID": "",
    }
    assert client.delete("/exports").status_code == 200
    assert client.get("/exports").json()["Exports"] == []
