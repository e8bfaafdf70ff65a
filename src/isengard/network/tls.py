"""DICOM TLS: the SSL contexts of the DICOM server (DicomTlsEnabled) and of the associations that
Isengard opens toward modalities with "UseDicomTls", both from the DicomTls* options.

As in Orthanc, the server and the client share one certificate, one private key (PEM, without
password) and one file of trusted certificates; relative paths are taken from the working
directory. A remote node must present a certificate signed by a trusted one; with
DicomTlsRemoteCertificateRequired false, a client without certificate is accepted too. Host
names are not checked against certificates, as DCMTK does not check them either.
"""

import logging
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pynetdicom import evt

from ..config import Configuration, ConfigurationError
from ..errors import ErrorCode

log = logging.getLogger(__name__)

CERTIFICATE, PRIVATE_KEY, TRUSTED = "DicomTlsCertificate", "DicomTlsPrivateKey", "DicomTlsTrustedCertificates"


class TlsError(ConfigurationError):
    """A DICOM TLS option that is missing, or names a missing or unreadable file. `code` is Orthanc's
    error code for it, for the REST answer when an association toward a modality meets it."""

    def __init__(self, code: ErrorCode, message: str):
        super().__init__(message)
        self.code = code


class _DeferredHandshakeContext(ssl.SSLContext):
    """pynetdicom wraps each accepted socket in its accept loop: a handshake there would let one
    client that sends nothing stop the server from accepting anyone else. The handshake is left to
    TLS_HANDSHAKE_HANDLER, in the connection's own thread, and the socket gets a timeout so that a
    stalled peer is dropped."""

    socket_timeout: float | None = None

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        sock.settimeout(self.socket_timeout)
        return super().wrap_socket(sock, *args, **{**kwargs, "do_handshake_on_connect": False})


def _handshake(event: evt.Event) -> None:
    sock = event.assoc.dul.socket.socket
    try:
        sock.do_handshake()
    except OSError as exc:  # ssl.SSLError (refused certificate, plain DICOM...), timeout, reset
        log.warning("DICOM TLS handshake with %s failed: %s", event.address[0], exc)
        # pynetdicom would otherwise keep the connection's thread, which counts among the
        # DicomThreadsCount associations served, waiting for a request until DicomScpTimeout.
        event.assoc.acse_timeout = 0


# Bound on the server's associations when DICOM TLS is enabled, after TCP_NODELAY_HANDLER.
TLS_HANDSHAKE_HANDLER = (evt.EVT_CONN_OPEN, _handshake)


@dataclass(frozen=True)
class DicomTls:
    certificate: str | None = None
    private_key: str | None = None
    trusted_certificates: str | None = None
    remote_certificate_required: bool = True

    @classmethod
    def from_config(cls, config: Configuration) -> "DicomTls":
        return cls(
            config.dicom_tls_certificate,
            config.dicom_tls_private_key,
            config.dicom_tls_trusted_certificates,
            config.dicom_tls_remote_certificate_required,
        )

    @property
    def configured(self) -> bool:
        """Whether any file is given: Orthanc checks them at start-up even without DicomTlsEnabled."""
        return any((self.certificate, self.private_key, self.trusted_certificates))

    def server_context(self, timeout: float | None) -> ssl.SSLContext:
        """For the DICOM server; `timeout` (seconds, None: none) bounds each read and write."""
        context = _DeferredHandshakeContext(ssl.PROTOCOL_TLS_SERVER)
        context.socket_timeout = timeout
        context.verify_mode = ssl.CERT_REQUIRED if self.remote_certificate_required else ssl.CERT_OPTIONAL
        return self._load(context)

    def client_context(self) -> ssl.SSLContext:
        """For an association toward a modality, which must always prove who it is."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        return self._load(context)

    def _load(self, context: ssl.SSLContext) -> ssl.SSLContext:
        certificate = _existing_file(CERTIFICATE, self.certificate)
        private_key = _existing_file(PRIVATE_KEY, self.private_key)
        trusted = _existing_file(TRUSTED, self.trusted_certificates)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        _load_key_pair(context, certificate, private_key)
        _load_certificates(context, TRUSTED, trusted)
        return context


def _existing_file(option: str, path: str | None) -> Path:
    if not path:
        raise TlsError(ErrorCode.BAD_SEQUENCE_OF_CALLS, f'DICOM TLS needs the option "{option}", which is not set')
    if not Path(path).is_file():
        raise TlsError(ErrorCode.INEXISTENT_FILE, f'Option "{option}": no file at {path}')
    return Path(path)


def _load_key_pair(context: ssl.SSLContext, certificate: Path, private_key: Path) -> None:
    # load_cert_chain fails alike on a bad certificate and on a bad key: the certificate is read alone first.
    _load_certificates(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), CERTIFICATE, certificate)
    try:
        context.load_cert_chain(certificate, private_key, password=_no_password)
    except OSError as exc:  # ssl.SSLError included
        if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
            problem = f"the key in {private_key} is not that of the certificate in {certificate}"
        else:
            problem = f"{private_key} holds no PEM private key without password"
        raise TlsError(ErrorCode.BAD_FILE_FORMAT, f'Option "{PRIVATE_KEY}": {problem}') from None


def _load_certificates(context: ssl.SSLContext, option: str, path: Path) -> None:
    try:
        context.load_verify_locations(path)
    except OSError as exc:  # ssl.SSLError included
        message = f'Option "{option}": no PEM certificate read from {path}: {exc}'
        raise TlsError(ErrorCode.BAD_FILE_FORMAT, message) from None


def _no_password() -> bytes:
    """Answers OpenSSL's request for the password of an encrypted key, which would otherwise be asked
    on the terminal: Orthanc reads keys without password only."""
    return b""
