"""System routes, resources, navigation, deletion, errors and access control."""

import asyncio
import re

import httpx
import pytest

from conftest import running_isengard, sample

FLAIR = "Brainix/Flair"


@pytest.fixture(scope="module")
def loaded(isengard):
    files = sorted(sample(FLAIR).iterdir())[:3]
    answers = [isengard.upload(path) for path in files]
    return isengard, answers


def test_system_reports_orthanc_api_level_and_isengard_version(isengard):
    system = isengard.client.get("/system").json()
    assert system["ApiVersion"] == 16 and system["Version"] == "1.10.1"
    assert system["IsengardVersion"]
    assert system["DicomAet"] == "ORTHANC"
    assert system["HttpPort"] == isengard.port


def test_hierarchy_and_navigation(loaded):
    server, answers = loaded
    client = server.client
    patient_id, study_id, series_id = (answers[0][k] for k in ("ParentPatient", "ParentStudy", "ParentSeries"))
    instance_ids = [a["ID"] for a in answers]

    patient = client.get(f"/patients/{patient_id}").json()
    assert patient["Type"] == "Patient" and patient["Studies"] == [study_id]
    assert patient["MainDicomTags"]["PatientName"] == "BRAINIX"
    study = client.get(f"/studies/{study_id}").json()
    assert study["ParentPatient"] == patient_id and study["Series"] == [series_id]
    assert study["PatientMainDicomTags"]["PatientID"] == "5Yp0E"
    assert "PatientName" not in study["MainDicomTags"]
    series = client.get(f"/series/{series_id}").json()
    assert series["MainDicomTags"]["Modality"] == "MR"
    assert sorted(series["Instances"]) == sorted(instance_ids)
    instance = client.get(f"/instances/{instance_ids[0]}").json()
    assert instance["ParentSeries"] == series_id and instance["FileSize"] > 0

    assert client.get(f"/instances/{instance_ids[0]}/patient").json()["ID"] == patient_id
    assert client.get(f"/series/{series_id}/study").json()["ID"] == study_id
    assert sorted(i["ID"] for i in client.get(f"/patients/{patient_id}/instances").json()) == sorted(instance_ids)
    assert client.get(f"/studies/{study_id}/series").json()[0]["ID"] == series_id


def test_listing_with_expand_since_limit_and_formats(loaded):
    server, answers = loaded
    client = server.client
    all_instances = client.get("/instances").json()
    assert client.get("/instances?since=1&limit=1").json() == all_instances[1:2]
    expanded = client.get("/series?expand").json()
    assert expanded[0]["MainDicomTags"]["Modality"] == "MR"
    short = client.get("/series?expand&short").json()
    assert short[0]["MainDicomTags"]["0008,0060"] == "MR"
    full = client.get("/series?expand&full").json()
    assert full[0]["MainDicomTags"]["0008,0060"] == {"Name": "Modality", "Type": "String", "Value": "MR"}


def test_statistics_count_and_sizes(loaded):
    server, answers = loaded
    stats = server.client.get(f"/studies/{answers[0]['ParentStudy']}/statistics").json()
    assert stats["CountSeries"] == 1 and stats["CountInstances"] == 3
    sizes = sum(len(p.read_bytes()) for p in sorted(sample(FLAIR).iterdir())[:3])
    assert int(stats["DiskSize"]) == sizes
    assert server.client.get("/statistics").json()["CountInstances"] >= 3


def test_changes_log(fresh_isengard):
    answer = fresh_isengard.upload(sample("DummyCT.dcm"))
    changes = fresh_isengard.client.get("/changes").json()
    assert [c["ChangeType"] for c in changes["Changes"]] == ["NewInstance", "NewSeries", "NewStudy", "NewPatient"]
    assert changes["Done"] is True and changes["Last"] == 4
    assert changes["Changes"][0]["ID"] == answer["ID"]
    page = fresh_isengard.client.get("/changes?since=1&limit=2").json()
    assert [c["Seq"] for c in page["Changes"]] == [2, 3] and page["Done"] is False
    assert fresh_isengard.client.get("/changes?last").json()["Changes"][0]["Seq"] == 4


def test_delete_cascades_to_empty_parents(fresh_isengard):
    files = sorted(sample(FLAIR).iterdir())[:2]
    first, second = (fresh_isengard.upload(p) for p in files)
    client = fresh_isengard.client
    answer = client.delete(f"/instances/{first['ID']}").json()
    assert answer["RemainingAncestor"] == {
        "ID": first["ParentSeries"],
        "Path": f"/series/{first['ParentSeries']}",
        "Type": "Series",
    }
    assert client.delete(f"/instances/{second['ID']}").json() == {"RemainingAncestor": None}
    assert client.get("/patients").json() == []
    assert client.get("/statistics").json()["TotalDiskSize"] == "0"
    assert not [p for p in (fresh_isengard.folder / "db").rglob("*") if p.is_file() and len(p.name) == 36]
    deleted = [c for c in client.get("/changes").json()["Changes"] if c["ChangeType"] == "Deleted"]
    assert {c["ResourceType"] for c in deleted} == {"Instance", "Series", "Study", "Patient"}


def test_unknown_resources_and_routes_answer_404_json(isengard):
    for uri in ("/patients/nope", "/studies/nope/series", "/instances/nope/file", "/no/such/route"):
        response = isengard.client.get(uri)
        assert response.status_code == 404, uri
        assert response.json()["HttpStatus"] == 404
    assert isengard.client.delete("/series/nope").status_code == 404


def test_wrong_method_answers_405(isengard):
    assert isengard.client.put("/system").status_code == 405
    assert isengard.client.delete("/statistics").status_code == 405


def test_bad_query_arguments(isengard):
    response = isengard.client.get("/instances?limit=abc")
    assert response.status_code == 400
    assert response.json()["OrthancError"] == "Parameter out of range"


def test_basic_authentication(tmp_path):
    users = {"alice": "wonderland"}
    with running_isengard(tmp_path, AuthenticationEnabled=True, RegisteredUsers=users) as server:
        assert httpx.get(server.url + "/system").status_code == 401
        assert httpx.get(server.url + "/system", auth=("alice", "wrong")).status_code == 401
        assert httpx.get(server.url + "/system", auth=("bob", "wonderland")).status_code == 401
        response = httpx.post(
            server.url + "/instances", content=sample("DummyCT.dcm").read_bytes(), auth=("alice", "wonderland")
        )
        assert response.status_code == 200
        metadata = httpx.get(f"{server.url}/instances/{response.json()['ID']}/metadata/HttpUsername", auth=("alice", "wonderland"))
        assert metadata.text == "alice"


def _call(app, client_host: str) -> int:
    """Run one GET /system through the ASGI app as if it came from `client_host`."""
    statuses = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": "/system", "raw_path": b"/system", "query_string": b"", "root_path": "", "headers": [],
        "client": (client_host, 50000), "server": ("127.0.0.1", 8042),
    }
    asyncio.run(app(scope, receive, send))
    return statuses[0]


def test_remote_access_refused_unless_allowed(tmp_path):
    from isengard.config import load_configuration
    from isengard.rest import create_app
    from isengard.server import Isengard

    for allowed, remote_status in ((False, 403), (True, 200)):
        path = tmp_path / f"{allowed}.json"
        path.write_text(
            f'{{"StorageDirectory": "{tmp_path / str(allowed)}", "RemoteAccessAllowed": {str(allowed).lower()}, '
            '"AuthenticationEnabled": false}'
        )
        isengard = Isengard(load_configuration(path))
        app = create_app(isengard)
        assert _call(app, "127.0.0.1") == 200
        assert _call(app, "::1") == 200
        # An address of the TEST-NET range: nothing is sent on the network, the call stays in-process.
        assert _call(app, "192.0.2.10") == remote_status
        isengard.close()


def test_requested_tags_on_listings_and_resources(loaded):
    server, answers = loaded
    study = answers[0]["ParentStudy"]
    expanded = server.client.get("/studies?expand&requestedTags=ModalitiesInStudy;NumberOfStudyRelatedInstances;PatientName").json()
    mine = next(s for s in expanded if s["ID"] == study)
    assert mine["RequestedTags"] == {"ModalitiesInStudy": "MR", "NumberOfStudyRelatedInstances": "3", "PatientName": "BRAINIX"}
    one = server.client.get(f"/studies/{study}?requested-tags=0008,1030&short").json()
    assert one["RequestedTags"] == {"0008,1030": "IRM cérébrale, neuro-crâne"}
    # A tag that is not indexed is read from a stored file.
    series = server.client.get(f"/studies/{study}/series?requestedTags=RepetitionTime").json()
    assert "RepetitionTime" in series[0]["RequestedTags"]
    assert server.client.get("/studies?expand&requestedTags=NotATag").status_code == 400


def test_http_compression_for_the_clients_that_accept_it(loaded, tmp_path):
    """HttpCompressionEnabled (true by default): gzip for a client that accepts it, and a large
    enough answer; never otherwise."""
    server, _ = loaded
    instance = server.client.get("/instances").json()[0]
    url = f"/instances/{instance}/tags"

    def encoding(client: httpx.Client, accept: str) -> str | None:
        answer = client.get(url, headers={"Accept-Encoding": accept})
        assert answer.status_code == 200 and answer.json()  # decoded by httpx when compressed
        return answer.headers.get("content-encoding")

    assert encoding(server.client, "gzip, deflate") == "gzip"
    assert encoding(server.client, "identity") is None
    assert server.client.get("/system", headers={"Accept-Encoding": "gzip"}).headers.get("content-encoding") is None
    with running_isengard(tmp_path / "plain", HttpCompressionEnabled=False) as plain:
        instance = plain.upload(sample("DummyCT.dcm"))["ID"]
        url = f"/instances/{instance}/tags"
        assert encoding(plain.client, "gzip") is None



def test_segment_router_routes_as_starlettes_router(tmp_path):
    """With the routes of the API, each request (every route path, with a trailing slash, each
    method, and unknown paths) gets the same answer as from a router that tries all routes in
    turn: the same route with the same parameters, 405, redirect or 404."""
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route, Router

    from isengard.config import Configuration
    from isengard.rest.app import SegmentRouter, create_app
    from isengard.server import Isengard

    server = Isengard(Configuration.from_raw({"StorageDirectory": str(tmp_path)}))
    try:
        api_routes = create_app(server).router.routes
    finally:
        server.close()

    def naming(path: str):
        async def endpoint(request):
            return PlainTextResponse(f"{path} {sorted(request.path_params.items())}")

        return endpoint

    routes = [Route(route.path, naming(route.path), methods=route.methods) for route in api_routes]
    paths = [re.sub(r"{[^}]*}", "x1", route.path) for route in routes]
    for path in paths + [path + "/" for path in paths] + ["/nothing/here", "/", "/tools", "/instances/"]:
        for method in ("GET", "POST", "PUT", "DELETE"):
            answer = _answer(SegmentRouter(routes), path, method)
            assert answer == _answer(Router(routes), path, method), (method, path)
    assert _answer(SegmentRouter(routes), "/tools/find", "POST")[1] == b"/tools/find []"


def _answer(router, path: str, method: str) -> tuple:
    messages: list[dict] = []
    scope = {
        "type": "http", "method": method, "path": path, "root_path": "", "query_string": b"", "headers": [],
        "scheme": "http", "server": ("localhost", 80),
    }

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    async def send(message: dict) -> None:
        messages.append(message)

    asyncio.run(router(scope, receive, send))
    start, body = messages[0], b"".join(m.get("body", b"") for m in messages[1:])
    return start["status"], body, dict(start["headers"]).get(b"location")
