"""The registry of remote modalities, its REST API (/modalities, /tools/dicom-echo), C-ECHO as
SCU toward real peers (DCMTK's storescp, Orthanc 1.10.1 both ways), and the rules of the
modalities, access control and accepted transfer syntaxes.
"""

import json
import socket
import subprocess
import threading
import time

import pytest
from pynetdicom import AE, build_context
from pynetdicom.sop_class import Verification

from conftest import free_port, running_isengard, sample, stop_process, wait_for_port
from isengard.config import Configuration, ConfigurationError
from isengard.errors import ErrorCode, IsengardError
from isengard.network.access import AccessControl
from isengard.network.modalities import Modality, ModalityRegistry, Request, parse_modality
from isengard.network.presentation import AcceptedSyntaxes, configured_transfer_syntaxes
from isengard.network.scu import ScuSettings, association
from isengard.server import Isengard
from orthanc import running_orthanc

MODALITIES = {
    "sample": ["STORESCP", "127.0.0.1", 2000],
    "vitrea": ["VITREA", "127.0.0.1", 104, "Vitrea"],
    "untrusted": {
        "AET": "UNTRUSTED", "Host": "localhost", "Port": 104, "AllowEcho": False, "AllowStorageCommitment": False,
        "LocalAet": "HELLO", "Timeout": 7, "UseDicomTls": True, "Manufacturer": "AgfaImpax",
    },
}
OPERATIONS = [
    "configuration", "echo", "find", "find-instance", "find-patient", "find-series", "find-study",
    "find-worklist", "move", "query", "storage-commitment", "store", "store-straight",
]


@pytest.fixture(scope="module")
def storescp(tmp_path_factory):
    """DCMTK's storescp, as the remote node toward which Isengard echoes."""
    port = free_port()
    folder = tmp_path_factory.mktemp("storescp")
    process = subprocess.Popen(["storescp", "--output-directory", str(folder), "-aet", "STORESCP", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    yield port
    stop_process(process)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_isengard(tmp_path_factory.mktemp("modalities"), DicomModalities=MODALITIES, DicomScuTimeout=2) as running:
        yield running


# -- the REST API ---------------------------------------------------------------------------------


def test_configured_modalities_are_listed_and_expanded(server):
    assert server.client.get("/modalities").json() == ["sample", "untrusted", "vitrea"]
    expanded = server.client.get("/modalities", params={"expand": "false"}).json()  # present means expanded
    assert expanded["sample"] == {
        "AET": "STORESCP", "AllowEcho": True, "AllowEventReport": True, "AllowFind": True, "AllowFindWorklist": True,
        "AllowGet": True, "AllowMove": True, "AllowNAction": True, "AllowStore": True, "AllowTranscoding": True,
        "Host": "127.0.0.1", "LocalAet": "", "Manufacturer": "Generic", "Port": 2000, "Timeout": 0, "UseDicomTls": False,
    }
    untrusted = server.client.get("/modalities/untrusted/configuration").json()
    assert untrusted["Manufacturer"] == "GenericNoWildcardInDates"  # an obsolete name, read as Orthanc does
    assert (untrusted["AllowEcho"], untrusted["AllowNAction"], untrusted["AllowEventReport"]) == (False, False, False)
    assert (untrusted["LocalAet"], untrusted["Timeout"], untrusted["UseDicomTls"]) == ("HELLO", 7, True)
    assert server.client.get("/modalities/vitrea").json() == OPERATIONS


def test_put_get_delete_a_modality(server):
    client = server.client
    put = client.put("/modalities/added", json={"AET": "ADDED", "Host": "127.0.0.1", "Port": "4243", "AllowMove": False})
    assert put.status_code == 200 and put.text == ""
    configuration = client.get("/modalities/added/configuration").json()
    assert (configuration["Port"], configuration["AllowMove"], configuration["AllowFind"]) == (4243, False, True)
    client.put("/modalities/added", content=json.dumps(["REPLACED", "10.0.0.1", 11112, "GE"])).raise_for_status()
    configuration = client.get("/modalities/added/configuration").json()
    assert (configuration["AET"], configuration["Manufacturer"], configuration["AllowMove"]) == ("REPLACED", "GE", True)
    assert client.delete("/modalities/added").status_code == 200
    assert "added" not in client.get("/modalities").json()


def test_unknown_modality_answers_as_orthanc(server):
    missing = server.client.get("/modalities/missing")
    assert (missing.status_code, missing.content) == (404, b"")
    for method, path in [("GET", "/modalities/missing/configuration"), ("DELETE", "/modalities/missing"),
                         ("POST", "/modalities/missing/echo")]:
        answer = server.client.request(method, path)
        assert answer.status_code == 404
        assert answer.json()["OrthancStatus"] == ErrorCode.INEXISTENT_ITEM.status


# (status, OrthancStatus) of Orthanc 1.10.1 for bad modality definitions.
BAD_MODALITIES = [
    ({}, 15), ({"AET": 1, "Host": "h", "Port": 5}, 15), ({"AET": "A", "Host": "h"}, 15),
    ({"AET": "A", "Host": "h", "Port": 70000}, 3), ({"AET": "A", "Host": "h", "Port": "abc"}, 15),
    ({"AET": "A", "Host": "h", "Port": 5, "AllowEcho": "no"}, 15), ({"AET": "A", "Host": "h", "Port": 5, "Timeout": -1}, 15),
    ({"AET": "A", "Host": "h", "Port": 5.5}, 15), (["A", "h"], 15), (["A", "h", 65535], 3), (["A", "h", 0], 3),
    (["A", "h", 5, "Bogus"], 3), (["A", "h", 5, "GE", "x"], 15), ("text", 15),
]


@pytest.mark.parametrize(("body", "orthanc_status"), BAD_MODALITIES)
def test_bad_modalities_are_refused(server, body, orthanc_status):
    answer = server.client.put("/modalities/bad", content=json.dumps(body))
    assert answer.status_code == 400
    assert answer.json()["OrthancStatus"] == orthanc_status
    assert server.client.get("/modalities/bad").status_code == 404


def test_modalities_rest_api_matches_orthanc(server, tmp_path):
    """The same modalities and the same requests give the same answers from both servers."""
    with running_orthanc(tmp_path / "orthanc", DicomModalities=MODALITIES) as orthanc:
        def answers(client):
            bodies = [body for body, _ in BAD_MODALITIES] + [["OK", "127.0.0.1", "104"], {"AET": "O", "Host": "h", "Port": 1}]
            results = [client.put("/modalities/probe", content=json.dumps(body)) for body in bodies]
            listing = client.get("/modalities", params={"expand": ""}).json()
            client.delete("/modalities/probe")
            statuses = [(r.status_code, r.json()["OrthancStatus"] if r.content else None) for r in results]
            return statuses, listing, client.get("/modalities/sample").json()

        assert answers(server.client) == answers(orthanc.client)


# -- C-ECHO as SCU ------------------------------------------------------------------------------


def test_echo_toward_storescp(server, storescp):
    client = server.client
    client.put("/modalities/scp", json=["STORESCP", "127.0.0.1", storescp]).raise_for_status()
    assert client.post("/modalities/scp/echo").json() == {}
    assert client.post("/modalities/scp/echo", json={"Timeout": 3}).json() == {}
    body = {"AET": "STORESCP", "Host": "127.0.0.1", "Port": storescp}
    assert client.post("/tools/dicom-echo", json=body).json() == {}
    long_aets = {**body, "AET": "A-VERY-LONG-CALLED-AET", "LocalAet": "A-VERY-LONG-CALLING-AET"}
    assert client.post("/tools/dicom-echo", json=long_aets).json() == {}  # cut to 16 characters, as Orthanc
    no_aet = client.post("/tools/dicom-echo", json={**body, "AET": ""})
    assert no_aet.status_code == 500 and no_aet.json()["OrthancStatus"] == 9
    find = client.post("/modalities/scp/echo", json={"CheckFind": True})  # storescp answers no C-FIND
    assert find.status_code == 500 and find.json()["OrthancStatus"] == 2016


def test_echo_failures_are_network_errors(server):
    closed = free_port()
    answer = server.client.post("/tools/dicom-echo", json={"AET": "NOBODY", "Host": "127.0.0.1", "Port": closed})
    assert answer.status_code == 500
    assert (answer.json()["OrthancStatus"], answer.json()["OrthancError"]) == (9, "Error in the network protocol")
    bad = server.client.post("/modalities/sample/echo", content="garbage")
    assert bad.status_code == 400 and bad.json()["OrthancStatus"] == 15
    assert server.client.post("/modalities/sample/echo", json={"Timeout": "x"}).status_code == 400
    assert server.client.post("/tools/dicom-echo", json={"AET": "X"}).status_code == 400


def test_echo_timeout_toward_a_node_that_never_answers(server):
    with socket.socket() as silent:  # accepts the TCP connection, never answers the association request
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        body = {"AET": "SILENT", "Host": "127.0.0.1", "Port": silent.getsockname()[1]}
        for options, seconds in [({"Timeout": 1}, 1), ({}, 2)]:  # the request's Timeout, else DicomScuTimeout
            start = time.monotonic()
            answer = server.client.post("/tools/dicom-echo", json={**body, **options})
            assert answer.status_code == 500
            assert seconds - 0.2 < time.monotonic() - start < seconds + 2


def test_slow_requests_do_not_hold_the_others(server, silent_port):
    """Blocking handlers run on a pool of 40 threads (asyncio's default has 6 on this machine):
    20 echoes that each wait 1 s for a silent node run at once."""
    from concurrent.futures import ThreadPoolExecutor

    body = {"AET": "SILENT", "Host": "127.0.0.1", "Port": silent_port, "Timeout": 1}
    with ThreadPoolExecutor(20) as pool:
        start = time.monotonic()
        answers = list(pool.map(lambda _: server.client.post("/tools/dicom-echo", json=body), range(20)))
        elapsed = time.monotonic() - start
    assert [answer.status_code for answer in answers] == [500] * 20
    assert elapsed < 2.5


def test_isengard_and_orthanc_echo_and_store_both_ways(tmp_path):
    isengard_port, orthanc_port = free_port(), free_port()
    with running_orthanc(
        tmp_path / "orthanc", DicomServerEnabled=True, DicomPort=orthanc_port, DicomAet="REFERENCE",
        DicomModalities={"isengard": ["ISENGARD", "127.0.0.1", isengard_port]},
    ) as orthanc, running_isengard(
        tmp_path / "isengard", DicomPort=isengard_port, DicomAet="ISENGARD", DicomAlwaysAllowStore=False,
        DicomModalities={"orthanc": ["REFERENCE", "127.0.0.1", orthanc_port]},
    ) as isengard:
        assert isengard.client.post("/modalities/orthanc/echo", json={"CheckFind": True}).json() == {}
        assert orthanc.client.post("/modalities/isengard/echo", json={}).status_code == 200
        uploaded = orthanc.client.post("/instances", content=sample("DummyCT.dcm").read_bytes()).json()
        stored = orthanc.client.post("/modalities/isengard/store", json={"Resources": [uploaded["ID"]], "Synchronous": True})
        assert stored.status_code == 200, stored.text
        metadata = isengard.client.get(f"/instances/{uploaded['ID']}/metadata", params={"expand": ""}).json()
        assert (metadata["RemoteAET"], metadata["CalledAET"], metadata["Origin"]) == ("REFERENCE", "ISENGARD", "DicomProtocol")


# -- sockets ---------------------------------------------------------------------------------------


def _nodelay(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def test_scu_sockets_set_tcp_nodelay(storescp):
    modality = Modality("STORESCP", "127.0.0.1", storescp)
    with association(modality, ScuSettings("ISENGARD", 5, 16384), [build_context(Verification)]) as assoc:
        assert _nodelay(assoc.dul.socket.socket)


def test_scp_sockets_set_tcp_nodelay(tmp_path):
    isengard = Isengard(Configuration.from_raw({"StorageDirectory": str(tmp_path), "DicomPort": free_port()}))
    isengard.dicom_server.start()
    try:
        assoc = AE("PEER").associate("127.0.0.1", isengard.config.dicom_port, [build_context(Verification)])
        served = [thread for thread in threading.enumerate() if thread.name.startswith("AcceptorThread")]
        assert served and all(_nodelay(thread.dul.socket.socket) for thread in served)
        assoc.release()
    finally:
        isengard.close()


# -- rules: modalities, access control, transfer syntaxes ----------------------------------------


def test_modality_forms():
    assert parse_modality(["A", "h", "104"]) == Modality("A", "h", 104)
    modality = parse_modality({"AET": "A", "Host": "h", "Port": 1, "AllowStorageCommitment": False, "AllowNAction": True})
    assert (modality.allow_n_action, modality.allow_event_report) == (True, False)
    with pytest.raises(IsengardError, match="Unknown modality manufacturer"):
        parse_modality(["A", "h", 1, "generic"])  # manufacturers are case-sensitive
    with pytest.raises(ConfigurationError, match='"DicomModalities": modality "bad"'):
        Configuration.from_raw({"DicomModalities": {"bad": ["A", "h", 0]}})


def _access(*modalities: Modality, always=frozenset(), strict=False, **options) -> AccessControl:
    registry = ModalityRegistry({str(n): m for n, m in enumerate(modalities)}, strict_aet_comparison=strict)
    return AccessControl(registry, "ISENGARD", frozenset(always), **options)


def test_access_control_rules():
    store_only = Modality("SCANNER", "10.0.0.5", 104, allow_echo=False)
    access = _access(store_only, check_called_aet=True)
    assert access.refuse_association("SCANNER", "isengard", "10.0.0.5") is None  # without case
    assert access.refuse_association("SCANNER", "OTHER", "10.0.0.5").bad_called_aet
    assert access.refuse_association("NOBODY", "ISENGARD", "10.0.0.5") is not None
    assert access.refuse_request("scanner", "10.0.0.9", Request.STORE) is None  # no host check by default
    assert access.refuse_request("SCANNER", "10.0.0.5", Request.ECHO) is not None
    strict = _access(store_only, strict=True)
    assert strict.refuse_request("scanner", "10.0.0.5", Request.STORE) is not None
    hosts = _access(store_only, check_modality_host=True)
    assert hosts.refuse_association("SCANNER", "ISENGARD", "10.0.0.9") is not None
    assert hosts.refuse_request("SCANNER", "10.0.0.9", Request.STORE) is not None
    lenient = _access(store_only, always={Request.ECHO})
    assert lenient.refuse_association("NOBODY", "ISENGARD", "10.0.0.9") is None
    assert lenient.refuse_request("NOBODY", "10.0.0.9", Request.ECHO) is None
    assert lenient.refuse_request("NOBODY", "10.0.0.9", Request.STORE) is not None


def test_access_control_with_several_modalities_of_one_aet():
    here = Modality("TWIN", "10.0.0.1", 104)
    there = Modality("TWIN", "10.0.0.2", 104, allow_store=False)
    assert _access(here, there).refuse_request("TWIN", "10.0.0.1", Request.STORE) is not None  # not allowed for all
    assert _access(here, there, check_modality_host=True).refuse_request("TWIN", "10.0.0.1", Request.STORE) is None
    assert _access(here, there).refuse_request("TWIN", "10.0.0.2", Request.ECHO) is None


def test_configured_transfer_syntaxes():
    everything = configured_transfer_syntaxes({})
    assert len(everything) == 42 and "1.2.840.10008.1.2.4.80" in everything
    assert configured_transfer_syntaxes({"AcceptedTransferSyntaxes": "1.2.840.10008.1.2.4.9?"}) == {
        f"1.2.840.10008.1.2.4.9{n}" for n in range(6)}
    assert configured_transfer_syntaxes({"AcceptedTransferSyntaxes": ["1.2.840.10008.1.2"], "RleTransferSyntaxAccepted": True}) == {
        "1.2.840.10008.1.2", "1.2.840.10008.1.2.5"}
    assert "1.2.840.10008.1.2.4.80" not in configured_transfer_syntaxes({"JpegLosslessTransferSyntaxAccepted": False})
    with pytest.raises(ConfigurationError):
        configured_transfer_syntaxes({"JpegTransferSyntaxAccepted": "no"})


def test_storage_contexts_follow_orthancs_preference():
    syntaxes = AcceptedSyntaxes(configured_transfer_syntaxes({"AcceptedTransferSyntaxes": ["1.2.840.10008.1.2.4.*"]}))
    ct, verification = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.1"
    contexts = {cx.abstract_syntax: cx.transfer_syntax for cx in syntaxes.contexts_for([ct, verification, ct], [verification])}
    assert contexts[ct][0] == "1.2.840.10008.1.2.4.50" and "1.2.840.10008.1.2.1" not in contexts[ct]
    assert contexts[verification] == ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2"]
    assert syntaxes.contexts_for(["1.2.3.4"], []) == []
    syntaxes.unknown_sop_class_accepted = True
    assert [cx.abstract_syntax for cx in syntaxes.contexts_for(["1.2.3.4"], [])] == ["1.2.3.4"]


def test_accepted_transfer_syntaxes_rest_api_matches_orthanc(server, tmp_path):
    bodies = ['["1.2.840.10008.1.2", "1.2.840.10008.1.2.4.9*"]', '"1.2.840.10008.1.2.1"', "1.2.840.10008.1.2.1", "abc",
              "*.5", "?.2.840.10008.1.2", "[1]", '{"a": 1}', "", '["*"]']
    with running_orthanc(tmp_path / "orthanc") as orthanc:
        def answers(client):
            results = [client.put("/tools/accepted-transfer-syntaxes", content=body) for body in bodies]
            unknown = [client.put("/tools/unknown-sop-class-accepted", content=value).status_code for value in ("1", "yes", "0")]
            return [(r.status_code, r.json() if r.status_code == 200 else r.json()["OrthancStatus"]) for r in results], unknown

        assert answers(server.client) == answers(orthanc.client)
        assert server.client.post("/tools/accepted-transfer-syntaxes", json=["*"]).status_code == 405  # as Orthanc 1.10.1
