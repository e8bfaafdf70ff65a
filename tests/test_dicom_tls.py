"""DICOM TLS (DicomTls* options, "UseDicomTls" modalities) against real peers: DCMTK's echoscu,
storescu and storescp with +tls, pynetdicom, and Orthanc 1.10.1 both ways. The certificates (a
test CA, certificates it signs, and a self-signed impostor) are made by `openssl` at test time.
"""

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE, build_context
from pynetdicom.sop_class import Verification

from conftest import free_port, running_isengard, sample, stop_process, wait_for_port
from isengard.errors import ErrorCode, IsengardError
from isengard.network.modalities import Modality
from isengard.network.scu import ScuSettings, echo
from isengard.network.tls import DicomTls, TlsError
from orthanc import running_orthanc

if shutil.which("openssl") is None or "--enable-tls" not in subprocess.run(
    ["storescu", "--help"], capture_output=True, text=True
).stdout:
    pytest.skip("needs the openssl command and DCMTK built with OpenSSL", allow_module_level=True)


# -- certificates and peers -----------------------------------------------------------------------


def _openssl(folder: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """ca.crt signs isengard.crt and dcmtk.crt; impostor.crt signs itself. Keys are NAME.key."""
    folder = tmp_path_factory.mktemp("pki")
    for name in ("ca", "impostor", "isengard", "dcmtk"):
        request = ["req", "-nodes", "-newkey", "rsa:2048", "-keyout", f"{name}.key", "-subj", f"/CN={name}"]
        if name in ("ca", "impostor"):
            _openssl(folder, *request, "-x509", "-days", "2", "-out", f"{name}.crt")
        else:
            _openssl(folder, *request, "-out", f"{name}.csr")
            _openssl(folder, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                     "-CAcreateserial", "-days", "2", "-out", f"{name}.crt")
    return folder


def tls_options(pki: Path, **options) -> dict:
    """Isengard's configuration with its certificate, trusting the test CA."""
    return {
        "DicomTlsCertificate": str(pki / "isengard.crt"), "DicomTlsPrivateKey": str(pki / "isengard.key"),
        "DicomTlsTrustedCertificates": str(pki / "ca.crt"), **options,
    }


def tls_modality(aet: str, port: int) -> dict:
    return {"AET": aet, "Host": "127.0.0.1", "Port": port, "UseDicomTls": True}


def with_certificate(pki: Path, name: str) -> list[str]:
    """DCMTK's options to present NAME's certificate and trust the test CA."""
    return ["+tls", str(pki / f"{name}.key"), str(pki / f"{name}.crt"), "+cf", str(pki / "ca.crt")]


def dcmtk(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=30, env={**os.environ, "TCP_NODELAY": "1"})


@contextmanager
def storescp(folder: Path, tls: list[str]) -> Iterator[tuple[int, Path]]:
    """DCMTK's storescp over TLS, as AET TLSSCP: its port and its verbose log."""
    port, log = free_port(), folder / "storescp.log"
    folder.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as output:
        process = subprocess.Popen(["storescp", "-v", "-aet", "TLSSCP", "-od", str(folder), *tls, str(port)],
                                   stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port)
        yield port, log
    finally:
        stop_process(process)


@pytest.fixture(scope="module")
def peer(pki, tmp_path_factory) -> Iterator[tuple[int, Path]]:
    """A storescp that presents dcmtk.crt and trusts the test CA."""
    with storescp(tmp_path_factory.mktemp("peer"), with_certificate(pki, "dcmtk")) as running:
        yield running


@pytest.fixture(scope="module")
def impostor(pki, tmp_path_factory) -> Iterator[int]:
    """A storescp whose certificate no one trusts."""
    with storescp(tmp_path_factory.mktemp("impostor"), with_certificate(pki, "impostor")) as (port, _log):
        yield port


@pytest.fixture(scope="module")
def server(pki, peer, impostor, tmp_path_factory):
    """Isengard with DICOM TLS, 2 associations at once, a 2-second DicomScpTimeout."""
    modalities = {
        "tls": tls_modality("TLSSCP", peer[0]),
        "plain": ["TLSSCP", "127.0.0.1", peer[0]],
        "impostor": tls_modality("TLSSCP", impostor),
    }
    options = tls_options(pki, DicomTlsEnabled=True, DicomThreadsCount=2, DicomScpTimeout=2, DicomModalities=modalities)
    with running_isengard(tmp_path_factory.mktemp("isengard"), **options) as running:
        yield running


def echoscu(server, *options: str) -> subprocess.CompletedProcess:
    return dcmtk("echoscu", "127.0.0.1", str(server.config["DicomPort"]), *options)


# -- the DICOM server over TLS ---------------------------------------------------------------------


def test_dcmtk_echoes_and_stores_over_tls(server, pki):
    assert echoscu(server, *with_certificate(pki, "dcmtk")).returncode == 0
    path = sample("DummyCT.dcm")
    stored = dcmtk("storescu", "-aet", "TLSSCU", "127.0.0.1", str(server.config["DicomPort"]),
                   *with_certificate(pki, "dcmtk"), str(path))
    assert stored.returncode == 0, stored.stderr
    uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
    instance = server.client.post("/tools/lookup", content=uid).json()[0]["ID"]
    assert server.client.get(f"/instances/{instance}/metadata/RemoteAET").text == "TLSSCU"


def test_clients_without_a_trusted_certificate_are_refused(server, pki):
    anonymous = echoscu(server, "--anonymous-tls", "+cf", str(pki / "ca.crt"))
    impostor = echoscu(server, *with_certificate(pki, "impostor"))
    assert anonymous.returncode != 0 and impostor.returncode != 0
    assert "peer did not return a certificate" in server.log()
    assert "certificate verify failed" in server.log()


def test_plain_dicom_clients_are_refused(server):
    assert echoscu(server).returncode != 0
    plain = AE("PYSCU").associate("127.0.0.1", server.config["DicomPort"], [build_context(Verification)])
    assert not plain.is_established
    assert "wrong version number" in server.log()  # the A-ASSOCIATE-RQ read as a TLS record


def test_failed_handshakes_and_silent_clients_do_not_hold_the_server(server, pki):
    """pynetdicom handshakes in its accept loop and keeps a failed connection's thread (one of the
    DicomThreadsCount) until DicomScpTimeout; Isengard handshakes in the connection's thread and
    ends it at once on failure."""
    for _ in range(3):  # more failures than DicomThreadsCount (2)
        echoscu(server)
        echoscu(server, "--anonymous-tls", "+cf", str(pki / "ca.crt"))
    with socket.create_connection(("127.0.0.1", server.config["DicomPort"])) as silent:
        start = time.monotonic()
        assert echoscu(server, *with_certificate(pki, "dcmtk")).returncode == 0
        assert time.monotonic() - start < 1.5
        silent.settimeout(10)
        assert silent.recv(1) == b""  # dropped after DicomScpTimeout (2 s)
        assert 1.5 < time.monotonic() - start < 5


def test_clients_without_certificate_are_let_in_when_not_required(pki, tmp_path):
    options = tls_options(pki, DicomTlsEnabled=True, DicomTlsRemoteCertificateRequired=False)
    with running_isengard(tmp_path, **options) as lenient:
        assert echoscu(lenient, "--anonymous-tls", "+cf", str(pki / "ca.crt")).returncode == 0
        assert echoscu(lenient, *with_certificate(pki, "dcmtk")).returncode == 0
        assert echoscu(lenient, *with_certificate(pki, "impostor")).returncode != 0  # a certificate shown is checked


# -- associations toward modalities with "UseDicomTls" ---------------------------------------------


def test_echo_toward_a_tls_modality(server):
    assert server.client.post("/modalities/tls/echo", json={}).json() == {}
    plain = server.client.post("/modalities/plain/echo", json={})  # the same node without TLS
    assert plain.status_code == 500 and plain.json()["OrthancStatus"] == 9


def test_echo_toward_a_modality_whose_certificate_is_not_trusted(server):
    answer = server.client.post("/modalities/impostor/echo", json={})
    assert answer.status_code == 500 and answer.json()["OrthancStatus"] == 9
    assert "Cannot open a DICOM TLS connection" in answer.json()["Details"]


def test_each_operation_has_its_own_association(server, peer):
    """In Orthanc 1.10.1, DicomAssociationCloseDelay keeps open only the associations of Lua scripts,
    which Isengard does not run: two echoes through the REST API are two associations, each released
    at once (as Orthanc's /modalities/{id}/store and /echo do)."""
    _port, log = peer
    before = log.read_text().count("Association Received")
    for _ in range(2):
        assert server.client.post("/modalities/tls/echo", json={}).status_code == 200
    deadline = time.monotonic() + 2
    while log.read_text().count("Association Release") < before + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    text = log.read_text()
    assert text.count("Association Received") == before + 2 and text.count("Association Release") >= before + 2


def test_tls_toward_a_modality_needs_the_certificate_options(peer):
    modality = Modality("TLSSCP", "127.0.0.1", peer[0], use_dicom_tls=True)
    with pytest.raises(IsengardError) as raised:
        echo(modality, ScuSettings("ISENGARD", 5, 16384))  # no DicomTls* options
    assert raised.value.code == ErrorCode.BAD_SEQUENCE_OF_CALLS and "DicomTlsCertificate" in str(raised.value)
    assert raised.value.http_status == 500  # as Orthanc 1.10.1 answers /modalities/{id}/echo then


def test_isengard_and_orthanc_echo_over_tls_both_ways(pki, tmp_path):
    isengard_port, orthanc_port = free_port(), free_port()
    with running_orthanc(
        tmp_path / "orthanc", DicomServerEnabled=True, DicomPort=orthanc_port, DicomAet="REFERENCE",
        DicomTlsEnabled=True, DicomTlsCertificate=str(pki / "dcmtk.crt"), DicomTlsPrivateKey=str(pki / "dcmtk.key"),
        DicomTlsTrustedCertificates=str(pki / "ca.crt"),
        DicomModalities={"isengard": tls_modality("ISENGARD", isengard_port)},
    ) as orthanc, running_isengard(
        tmp_path / "isengard", **tls_options(pki, DicomTlsEnabled=True), DicomPort=isengard_port, DicomAet="ISENGARD",
        DicomModalities={"orthanc": tls_modality("REFERENCE", orthanc_port)},
    ) as isengard:
        assert isengard.client.post("/modalities/orthanc/echo", json={}).json() == {}
        assert orthanc.client.post("/modalities/isengard/echo", json={}).status_code == 200


# -- the files of the DicomTls* options ------------------------------------------------------------


def test_bad_files_are_named_with_their_option(pki, tmp_path):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not PEM\n")
    locked = ["rsa", "-in", str(pki / "isengard.key"), "-aes256", "-passout", "pass:secret", "-out", "locked.key"]
    _openssl(tmp_path, *locked)
    good = DicomTls(str(pki / "isengard.crt"), str(pki / "isengard.key"), str(pki / "ca.crt"))
    good.client_context()
    missing, locked = str(tmp_path / "nothing.key"), str(tmp_path / "locked.key")
    cases = [
        (replace(good, certificate=None), ErrorCode.BAD_SEQUENCE_OF_CALLS, 'needs the option "DicomTlsCertificate"'),
        (replace(good, private_key=missing), ErrorCode.INEXISTENT_FILE, f'"DicomTlsPrivateKey": no file at {missing}'),
        (replace(good, certificate=str(garbage)), ErrorCode.BAD_FILE_FORMAT,
         f'"DicomTlsCertificate": no PEM certificate read from {garbage}'),
        (replace(good, private_key=str(garbage)), ErrorCode.BAD_FILE_FORMAT,
         f'"DicomTlsPrivateKey": {garbage} holds no PEM private key'),
        (replace(good, private_key=locked), ErrorCode.BAD_FILE_FORMAT, "holds no PEM private key without password"),
        (replace(good, private_key=str(pki / "dcmtk.key")), ErrorCode.BAD_FILE_FORMAT,
         f"the key in {pki / 'dcmtk.key'} is not that of the certificate in {good.certificate}"),
        (replace(good, trusted_certificates=str(pki / "dcmtk.key")), ErrorCode.BAD_FILE_FORMAT,
         '"DicomTlsTrustedCertificates": no PEM certificate read from'),
    ]
    for tls, code, message in cases:
        with pytest.raises(TlsError) as raised:
            tls.server_context(1)
        assert raised.value.code == code and message in str(raised.value), str(raised.value)


def test_a_bad_file_stops_the_start_up(pki, tmp_path):
    """Even without DicomTlsEnabled: as Orthanc, the files given are checked at start-up."""
    options = tls_options(pki, DicomTlsPrivateKey=str(tmp_path / "missing.key"))
    with pytest.raises(RuntimeError, match=f'Option "DicomTlsPrivateKey": no file at {tmp_path / "missing.key"}'):
        with running_isengard(tmp_path / "isengard", **options):
            pass
