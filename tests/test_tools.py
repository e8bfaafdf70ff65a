"""Small /tools routes, and reset/shutdown of a real server process."""

import re
import time
from datetime import datetime, timezone

import httpx
from pydicom.uid import UID

from conftest import running_isengard, sample


def test_generate_uid(isengard):
    uids = {isengard.client.get(f"/tools/generate-uid?level={level}").text for level in ("patient", "study", "series", "instance")}
    assert len(uids) == 4 and all(UID(uid).is_valid for uid in uids)
    assert isengard.client.get("/tools/generate-uid").status_code == 400
    assert isengard.client.get("/tools/generate-uid?level=galaxy").status_code == 400


def test_now_is_utc_in_orthanc_format(isengard):
    answer = isengard.client.get("/tools/now").text
    assert re.fullmatch(r"\d{8}T\d{6}", answer)
    stamp = datetime.strptime(answer, "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc)
    assert abs((datetime.now(timezone.utc) - stamp).total_seconds()) < 5
    assert re.fullmatch(r"\d{8}T\d{6}", isengard.client.get("/tools/now-local").text)


def test_default_encoding_get_and_put(fresh_isengard):
    client = fresh_isengard.client
    assert client.get("/tools/default-encoding").text == "Latin1"
    assert client.put("/tools/default-encoding", content="Utf8").status_code == 200
    assert client.get("/tools/default-encoding").text == "Utf8"
    assert client.put("/tools/default-encoding", content="Klingon").status_code == 400
    assert client.get("/tools/default-encoding").text == "Utf8"


def test_log_level(fresh_isengard):
    client = fresh_isengard.client
    assert client.get("/tools/log-level").text == "default"
    assert client.put("/tools/log-level", content="verbose").status_code == 200
    assert client.get("/tools/log-level").text == "verbose"
    error = client.put("/tools/log-level", content="loud")
    assert error.status_code == 400 and error.json()["OrthancError"] == "Parameter out of range"


def test_metrics_prometheus_counts(fresh_isengard):
    fresh_isengard.upload(sample("DummyCT.dcm"))
    client = fresh_isengard.client
    assert client.get("/tools/metrics").text == "1"
    metrics = dict(line.split(" ")[:2] for line in client.get("/tools/metrics-prometheus").text.splitlines())
    assert metrics["orthanc_count_instances"] == "1" and metrics["orthanc_count_patients"] == "1"
    assert float(metrics["orthanc_disk_size_mb"]) > 0
    assert client.put("/tools/metrics", content="0").status_code == 200
    assert client.get("/tools/metrics").text == "0"
    assert client.get("/tools/metrics-prometheus").text == ""


def test_dicom_conformance_lists_storage_classes(isengard):
    statement = isengard.client.get("/tools/dicom-conformance").text
    assert "1.2.840.10008.5.1.4.1.1.2" in statement  # CT Image Storage
    assert "CTImageStorage" in statement


def _wait_until_down(server, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and server.process.poll() is None:
        time.sleep(0.05)


def test_shutdown_stops_the_process(tmp_path):
    with running_isengard(tmp_path) as server:
        assert server.client.post("/tools/shutdown").status_code == 200
        _wait_until_down(server)
        assert server.process.returncode == 0


def test_reset_restarts_with_the_configuration_read_again(tmp_path):
    with running_isengard(tmp_path) as server:
        server.upload(sample("DummyCT.dcm"))
        server.config["Name"] = "Renamed"
        server.config_path.write_text(__import__("json").dumps(server.config))
        assert server.client.post("/tools/reset").status_code == 200
        deadline = time.monotonic() + 20
        name = None
        while time.monotonic() < deadline and name != "Renamed":
            try:
                name = httpx.get(server.url + "/system", timeout=1).json()["Name"]
            except httpx.HTTPError:
                time.sleep(0.1)
        assert name == "Renamed"
        assert server.process.poll() is None
        assert len(server.client.get("/instances").json()) == 1


def test_bulk_delete(fresh_isengard):
    client = fresh_isengard.client
    ids = [client.post("/instances", content=sample(path).read_bytes()).json()
           for path in ("TransferSyntaxes/1.2.840.10008.1.2.1.dcm", "SignedCT.dcm", "DummyCT.dcm")]
    # a study, an instance of it (gone with it), another instance, and an unknown identifier
    resources = [ids[0]["ParentStudy"], ids[0]["ID"], ids[1]["ID"], "nonexistent"]
    assert client.post("/tools/bulk-delete", json={"Resources": resources}).status_code == 200
    assert client.get("/instances").json() == [ids[2]["ID"]]
    assert client.post("/tools/bulk-delete", json={}).status_code == 400
    assert client.post("/tools/bulk-delete", json={"Resources": "all"}).status_code == 400
