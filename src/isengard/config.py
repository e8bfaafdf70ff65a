"""Orthanc-style configuration: commented JSON files (or a folder of them) plus environment overrides."""

import json
import logging
import os
import re
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .dicom.charsets import ENCODINGS
from .network.modalities import Modality, parse_modalities
from .network.worklists import WorklistsSettings, parse_worklists_option

log = logging.getLogger(__name__)

# Every top-level option of Orthanc 1.10.1's default configuration file, the commented-out ones included,
# plus RegisteredUsers (documented in Orthanc's manual) and Worklists (of its worklists plugin). Isengard
# accepts them all, even those it ignores.
ORTHANC_OPTIONS = frozenset({
    "AcceptedTransferSyntaxes", "AuthenticationEnabled", "BuiltinDecoderTranscoderOrder", "CaseSensitivePN",
    "CheckRevisions", "ConcurrentJobs", "DatabaseServerIdentifier", "DeflatedTransferSyntaxAccepted",
    "DefaultEncoding", "DefaultPrivateCreator", "DeidentifyLogs", "DeidentifyLogsDicomVersion", "DicomAet",
    "DicomAlwaysAllowEcho", "DicomAlwaysAllowFind", "DicomAlwaysAllowFindWorklist", "DicomAlwaysAllowGet",
    "DicomAlwaysAllowMove", "DicomAlwaysAllowStore", "DicomAssociationCloseDelay", "DicomCheckCalledAet",
    "DicomCheckModalityHost", "DicomEchoChecksFind", "DicomLossyTranscodingQuality", "DicomModalities",
    "DicomModalitiesInDatabase", "DicomPort", "DicomScpTimeout", "DicomScuPreferredTransferSyntax",
    "DicomScuTimeout", "DicomServerEnabled", "DicomThreadsCount", "DicomTlsCertificate", "DicomTlsEnabled",
    "DicomTlsPrivateKey", "DicomTlsRemoteCertificateRequired", "DicomTlsTrustedCertificates", "Dictionary",
    "ExecuteLuaEnabled", "ExternalDictionaries", "H265TransferSyntaxAccepted", "HttpCompressionEnabled",
    "HttpDescribeErrors", "HttpPort", "HttpProxy", "HttpRequestTimeout", "HttpServerEnabled",
    "HttpThreadsCount", "HttpTimeout", "HttpVerbose", "HttpsCACertificates", "HttpsVerifyPeers", "IndexDirectory",
    "IngestTranscoding", "IngestTranscodingOfCompressed", "IngestTranscodingOfUncompressed",
    "Jpeg2000TransferSyntaxAccepted", "JpegLosslessTransferSyntaxAccepted", "JpegTransferSyntaxAccepted",
    "JpipTransferSyntaxAccepted", "JobsHistorySize", "KeepAlive", "LimitFindInstances", "LimitFindResults",
    "LoadPrivateDictionary", "Locale", "LogExportedResources", "LuaScripts", "MallocArenaMax",
    "MaximumPatientCount", "MaximumPduLength", "MaximumStorageCacheSize", "MaximumStorageSize",
    "MediaArchiveSize", "MetricsEnabled", "Mpeg2TransferSyntaxAccepted", "Mpeg4TransferSyntaxAccepted", "Name",
    "OrthancExplorerEnabled", "OrthancPeers", "OrthancPeersInDatabase", "OverwriteInstances", "Pkcs11",
    "Plugins", "QueryRetrieveSize", "RegisteredUsers", "RemoteAccessAllowed", "RleTransferSyntaxAccepted",
    "SaveJobs", "SslCertificate", "SslCiphersAccepted", "SslEnabled", "SslMinimumProtocolVersion",
    "SslTrustedClientCertificates", "SslVerifyPeers", "StableAge", "StorageAccessOnFind",
    "StorageCommitmentReportsSize", "StorageCompression", "StorageDirectory", "StoreDicom",
    "StoreMD5ForAttachments", "StrictAetComparison", "SyncStorageArea", "SynchronousCMove",
    "SynchronousZipStream", "TcpNoDelay", "TemporaryDirectory", "TranscodeDicomProtocol",
    "UnknownSopClassAccepted", "UserContentType", "UserMetadata", "WebDavDeleteAllowed", "WebDavEnabled",
    "WebDavUploadAllowed", "Worklists", "ZipLoaderThreads",
})
ISENGARD_OPTIONS = frozenset({"DatabaseUrl"})
KNOWN_OPTIONS = ORTHANC_OPTIONS | ISENGARD_OPTIONS

# Orthanc's docker images read ORTHANC__HTTP_PORT and the like; Isengard's own prefix is applied last, so it wins.
ENVIRONMENT_PREFIXES = ("ORTHANC__", "ISENGARD__")

USER_RANGE = range(1024, 65536)  # numbers left to users for metadata and attachment types
DEFAULT_MIME = "application/octet-stream"


class ConfigurationError(Exception):
    """The configuration cannot be read or holds a bad value; the message names the file or option."""


# --- Reading files ----------------------------------------------------------------------------------------------

# A string literal (kept as is, so "http://..." survives) or a comment (blanked out).
_TOKEN = re.compile(r'"(?:\\.|[^"\\\n])*"|//[^\n]*|/\*.*?\*/', re.DOTALL)
# As in Orthanc, ${VAR} and ${VAR:-default} are replaced by environment variables (outside comments here).
_VARIABLE = re.compile(r"\$\{([^}:]+)(?::-([^}]*))?\}")


def strip_comments(text: str) -> str:
    """Blank out // and /* */ comments; newlines and columns are kept so JSON errors point at the right place."""

    def blank(match: re.Match[str]) -> str:
        token = match[0]
        return token if token.startswith('"') else re.sub(r"[^\n]", " ", token)

    return _TOKEN.sub(blank, text)


def _substitute_environment(text: str) -> str:
    return _VARIABLE.sub(lambda m: os.environ.get(m[1], m[2] or ""), text)


def read_file(path: Path) -> dict[str, Any]:
    """One configuration file as a dict."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"Cannot read the configuration file {path}: {exc}") from exc
    try:
        content = json.loads(_substitute_environment(strip_comments(text)))
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            f"Bad JSON in the configuration file {path}, line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from exc
    if not isinstance(content, dict):
        raise ConfigurationError(f"The configuration file {path} must hold a JSON object")
    return content


def read_folder(folder: Path) -> dict[str, Any]:
    """Merge the *.json files of a folder; as in Orthanc, an option may be defined in one file only."""
    merged: dict[str, Any] = {}
    origin: dict[str, Path] = {}
    for path in sorted(p for p in folder.glob("*.json") if p.is_file()):
        for key, value in read_file(path).items():
            if key in origin:
                raise ConfigurationError(f'Option "{key}" is defined in both {origin[key]} and {path}')
            merged[key], origin[key] = value, path
    return merged


# --- Environment overrides --------------------------------------------------------------------------------------


def snake_case(option: str) -> str:
    """HttpPort -> HTTP_PORT, HttpsCACertificates -> HTTPS_CA_CERTIFICATES (the docker images' naming)."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", option).upper()


_SNAKE_CASE = {snake_case(option): option for option in KNOWN_OPTIONS}


def _env_value(text: str) -> Any:
    """JSON when the text parses as JSON (8050, false, {...}), else the text itself; NaN stays a string."""
    try:
        return json.loads(text, parse_constant=lambda constant: text)
    except json.JSONDecodeError:
        return text


def environment_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for prefix in ENVIRONMENT_PREFIXES:
        for variable, text in environ.items():
            if not variable.startswith(prefix):
                continue
            suffix = variable[len(prefix):]
            option = suffix if suffix in KNOWN_OPTIONS else _SNAKE_CASE.get(suffix)
            if option is None:
                log.warning("Environment variable %s names no known option; ignored", variable)
            else:
                overrides[option] = _env_value(text)
    return overrides


# --- Options Isengard honours -----------------------------------------------------------------------------------

Parser = Callable[[str, Any], Any]


def _port(option: str, value: int) -> int:
    if not 0 < value < 65536:
        raise ConfigurationError(f'Option "{option}" must be a TCP port (1-65535), not {value}')
    return value


FOLDER_OPTIONS = ("StorageDirectory", "IndexDirectory")


def _path(option: str, value: str) -> Path:
    return Path(value).absolute()  # the default, or an environment override: from the working directory


def _transfer_syntax(option: str, value: str) -> str:
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)+", value):
        raise ConfigurationError(f'Option "{option}" must be a transfer syntax UID, not "{value}"')
    return value


def _aet(option: str, value: str) -> str:
    if not 0 < len(value) <= 16:
        raise ConfigurationError(f'Option "{option}" must have 1 to 16 characters, not "{value}"')
    return value


def _encoding(option: str, value: str) -> str:
    if value not in ENCODINGS:
        raise ConfigurationError(f'Option "{option}" must be one of {", ".join(sorted(ENCODINGS))}, not "{value}"')
    return value


STORAGE_ACCESS_ON_FIND = ("Always", "Answers", "Never")


def _storage_access(option: str, value: str) -> str:
    if value not in STORAGE_ACCESS_ON_FIND:
        raise ConfigurationError(f'Option "{option}" must be one of {", ".join(STORAGE_ACCESS_ON_FIND)}, not "{value}"')
    return value


def _users(option: str, value: dict) -> dict[str, str]:
    if not all(isinstance(password, str) for password in value.values()):
        raise ConfigurationError(f'Option "{option}" must map user names to password strings')
    return dict(value)


def _user_number(option: str, key: str, number: Any) -> int:
    if not _is_int(number) or number not in USER_RANGE:
        raise ConfigurationError(
            f'Option "{option}": "{key}" must be a number between 1024 and 65535, not {json.dumps(number)}'
        )
    return number


def _unique_numbers(option: str, numbers: list[int]) -> None:
    if len(set(numbers)) != len(numbers):
        raise ConfigurationError(f'Option "{option}" gives the same number to two names')


def _user_metadata(option: str, value: dict) -> dict[str, int]:
    parsed = {key: _user_number(option, key, number) for key, number in value.items()}
    _unique_numbers(option, list(parsed.values()))
    return parsed


def _user_content_types(option: str, value: dict) -> dict[str, tuple[int, str]]:
    """Each entry is a number or [number] or [number, "mime/type"]; the MIME type defaults to a binary one."""
    parsed = {}
    for key, entry in value.items():
        number, mime = entry, DEFAULT_MIME
        if isinstance(entry, list) and len(entry) in (1, 2):
            number, mime = entry[0], entry[1] if len(entry) == 2 else DEFAULT_MIME
        if not isinstance(mime, str):
            raise ConfigurationError(f'Option "{option}": the MIME type of "{key}" must be a string')
        parsed[key] = (_user_number(option, key, number), mime)
    _unique_numbers(option, [number for number, _ in parsed.values()])
    return parsed


def _modalities(option: str, value: dict) -> dict[str, Modality]:
    try:
        return parse_modalities(value)
    except ValueError as exc:
        raise ConfigurationError(f'Option "{option}": {exc}') from None


def _worklists(option: str, value: dict) -> WorklistsSettings:
    try:
        return parse_worklists_option(value)
    except ValueError as exc:
        raise ConfigurationError(f'Option "{option}": {exc}') from None


def _pdu_length(option: str, value: int) -> int:
    if not 4096 <= value <= 131072:
        raise ConfigurationError(f'Option "{option}" must be between 4096 and 131072, not {value}')
    return value


def _positive(option: str, value: int) -> int:
    if value < 1:
        raise ConfigurationError(f'Option "{option}" must be at least 1, not {value}')
    return value


@dataclass(frozen=True)
class Option:
    """An option Isengard honours: its default, what the default configuration file says of it, its parser."""

    name: str
    default: Any  # None: absent by default (shown commented-out in the default file with `example`)
    help: str
    parse: Parser | None = None
    example: Any = None

    @property
    def value_type(self) -> type:
        return type(self.default if self.default is not None else self.example)

    @property
    def attribute(self) -> str:
        return snake_case(self.name).lower()


OPTIONS: tuple[Option, ...] = (
    Option("Name", "Orthanc", "Name of this server, shown by /system."),
    Option("StorageDirectory", "isengard-db", "Folder of the stored DICOM files. A relative path is taken from "
           "the folder of this file. On Windows, write / or \\\\ instead of \\.", _path),
    Option("IndexDirectory", None, "Folder of the SQLite index (index.db); it is the storage folder when unset.",
           _path, "isengard-db"),
    Option("DatabaseUrl", None, "Isengard only: SQLAlchemy URL of the index database (PostgreSQL for instance), "
           "used instead of the SQLite file of IndexDirectory.", None,
           "postgresql+psycopg://isengard:password@localhost/isengard"),
    Option("StorageCompression", False, "Compress the DICOM files stored (zlib), trading CPU for disk space."),
    Option("SyncStorageArea", True, "Flush every stored file to the disk (fsync) before acknowledging it: slower, "
           "but nothing acknowledged is lost on power failure."),
    Option("OverwriteInstances", False, "What to do with an instance whose SOPInstanceUID is already stored: "
           "replace the stored one (true) or keep it and drop the newcomer (false)."),
    Option("IngestTranscoding", None, "Transfer syntax UID into which every incoming instance is transcoded before "
           "it is stored (lossy syntaxes too: only name one knowingly); unset, instances are stored as received. An "
           "instance that cannot be transcoded is stored as received.", _transfer_syntax, "1.2.840.10008.1.2.4.90"),
    Option("IngestTranscodingOfUncompressed", True, "Whether IngestTranscoding applies to the instances received "
           "uncompressed (implicit or explicit VR little endian, explicit VR big endian)."),
    Option("IngestTranscodingOfCompressed", True, "Whether IngestTranscoding applies to the instances received "
           "compressed."),
    Option("HttpPort", 8042, "TCP port of the REST API.", _port),
    Option("RemoteAccessAllowed", False, "Answer HTTP requests from other hosts, not only from localhost."),
    Option("AuthenticationEnabled", None, "Require HTTP basic authentication by one of RegisteredUsers. When "
           "unset, it is required exactly when RemoteAccessAllowed is true.", None, True),
    Option("RegisteredUsers", {}, 'Users of the REST API, as { "name" : "password" }.', _users),
    Option("HttpCompressionEnabled", True, "Compress HTTP answers (gzip) for clients that accept it."),
    Option("KeepAlive", True, "Keep HTTP connections open between requests."),
    Option("HttpTimeout", 60, "Timeout, in seconds, of the HTTP requests this server sends."),
    Option("CheckRevisions", False, "Protect metadata and attachments with revisions: modifications must quote "
           "the current one (ETag, If-Match), which detects concurrent writers."),
    Option("ConcurrentJobs", 2, "Most jobs (archives, transfers...) that run at the same time; 0: as many as the "
           "processor has cores."),
    Option("JobsHistorySize", 10, "Finished jobs (Success or Failure) kept for /jobs; 0 forgets them at once."),
    Option("SaveJobs", True, "Save the jobs into the index, so that they come back after a restart. Leave it false "
           "when several servers share one index."),
    Option("MediaArchiveSize", 1, "ZIP archives made by asynchronous jobs and kept for download; the least "
           "recently used goes first.", _positive),
    Option("SynchronousZipStream", True, "Send the ZIP archives of synchronous requests while they are made; false: "
           "make the whole file first, then send it."),
    Option("TemporaryDirectory", None, "Folder of large temporary files (the archives of jobs); the system's when "
           "unset.", _path, "/tmp/isengard"),
    Option("DicomAet", "ORTHANC", "Application Entity Title of the DICOM server (16 characters at most).", _aet),
    Option("DicomPort", 4242, "TCP port of the DICOM server.", _port),
    Option("DicomServerEnabled", True, "Run the DICOM server (C-ECHO, C-STORE...) on DicomPort."),
    Option("DicomCheckCalledAet", False, "Refuse associations whose called AET is not DicomAet."),
    Option("DicomAlwaysAllowEcho", True, "Answer C-ECHO from any node, even one DicomModalities does not list."),
    Option("DicomAlwaysAllowStore", True, "Accept C-STORE from any node, even one DicomModalities does not list."),
    Option("DicomAlwaysAllowFind", False, "Answer C-FIND from any node, even one DicomModalities does not list."),
    Option("DicomAlwaysAllowFindWorklist", False, "Answer worklist C-FIND from any node, even one DicomModalities "
           "does not list."),
    Option("DicomAlwaysAllowGet", False, "Answer C-GET from any node, even one DicomModalities does not list."),
    Option("DicomAlwaysAllowMove", False, "Answer C-MOVE from any node, even one DicomModalities does not list."),
    Option("DicomCheckModalityHost", False, "Recognise a modality of DicomModalities only when it connects from the "
           "address of its Host."),
    Option("StrictAetComparison", False, "Compare AETs with their case (they compare without it by default)."),
    Option("DicomModalities", {}, 'The remote DICOM nodes, as { "name" : [ "AET", "host", port ] } or { "name" : '
           '{ "AET" : ..., "Host" : ..., "Port" : ..., "Manufacturer" : "Generic", "AllowEcho" : true, "AllowFind" : '
           'true, "AllowFindWorklist" : true, "AllowGet" : true, "AllowMove" : true, "AllowStore" : true, '
           '"AllowStorageCommitment" : true, "LocalAet" : "", "Timeout" : 0, "UseDicomTls" : false } }. Those added '
           "through the REST API last until the server stops.", _modalities),
    Option("DicomScpTimeout", 30, "Seconds after which the DICOM server closes an association that sends nothing."),
    Option("DicomScuTimeout", 10, "Seconds Isengard waits for a remote node it calls (connection, each answer)."),
    Option("MaximumPduLength", 16384, "Largest PDU, in bytes, that Isengard receives (4096 to 131072).", _pdu_length),
    Option("DicomThreadsCount", 4, "Most associations the DICOM server serves at once.", _positive),
    Option("UnknownSopClassAccepted", False, "Accept C-STORE of SOP classes that the DICOM standard does not name."),
    Option("DicomEchoChecksFind", False, "Follow the C-ECHO of /modalities/{id}/echo by a C-FIND, to check that the "
           "node answers queries too."),
    Option("SynchronousCMove", True, "Serve each C-MOVE request within its association; false: queue a job that "
           "sends the instances, the C-MOVE succeeding at once."),
    Option("DicomTlsEnabled", False, "Every association of the DICOM server is DICOM TLS (needs the three "
           "DicomTls* files below)."),
    Option("DicomTlsCertificate", None, "PEM certificate of Isengard, for the DICOM server and for the modalities "
           'with "UseDicomTls". A relative path starts from the working directory.', example="isengard.crt"),
    Option("DicomTlsPrivateKey", None, "PEM private key (without password) of DicomTlsCertificate.",
           example="isengard.key"),
    Option("DicomTlsTrustedCertificates", None, "PEM certificates that the remote nodes' certificates must be "
           "signed by (or be), for the server and for the associations Isengard opens.", example="trusted.crt"),
    Option("DicomTlsRemoteCertificateRequired", True, "Refuse TLS clients of the DICOM server that present no "
           "certificate (a certificate presented is always checked)."),
    Option("DefaultEncoding", "Latin1", "Character set assumed for DICOM files without SpecificCharacterSet, also "
           "used in C-FIND answers. One of: " + ", ".join(sorted(ENCODINGS)) + ".", _encoding),
    Option("StorageAccessOnFind", "Always", "Whether C-FIND and /tools/find read the stored files for the tags "
           "the index does not hold: Always (to match and to answer), Answers (only to answer: a constraint on "
           "such a tag then matches nothing) or Never (the index only; faster).", _storage_access),
    Option("LimitFindResults", 0, "Most answers to a C-FIND at the patient, study or series level (0: no limit)."),
    Option("LimitFindInstances", 0, "Most answers to a C-FIND at the instance level (0: no limit)."),
    Option("QueryRetrieveSize", 100, "Most queries of /modalities/{id}/query kept in memory for /queries; the "
           "least recently used goes first.", _positive),
    Option("CaseSensitivePN", False, "Match the person names (PN) of C-FIND queries with their case. The other "
           "values always match with their case; by default names match without it, unlike DICOM says."),
    Option("Worklists", {"Enable": False, "Database": "", "FilterIssuerAet": False, "LimitAnswers": 0},
           "The worklist server (C-FIND on the Modality Worklist Information Model), as Orthanc's worklists plugin: "
           '"Enable" it to answer from the .wl files of the "Database" folder (read at each query; a relative '
           'path starts from the working directory); "FilterIssuerAet" only answers the worklists whose '
           "ScheduledStationAETitle is the caller's AET; \"LimitAnswers\" caps the answers (0: no limit).",
           _worklists),
    Option("StorageCommitmentReportsSize", 100, "Most storage commitment reports kept in memory (the least "
           "recently used go first).", _positive),
    Option("Dictionary", {}, 'DICOM tags to add to the dictionary, as { "gggg,eeee" : [ "VR", "Name", minimum '
           'multiplicity, maximum multiplicity (0: any), "private creator" ] }; the last three are optional.'),
    Option("UserMetadata", {}, 'Names of user-defined metadata, as { "Name" : number }, each number being '
           "unique and between 1024 and 65535.", _user_metadata),
    Option("UserContentType", {}, 'Names of user-defined attachment types, as { "name" : number } or '
           '{ "name" : [ number, "mime/type" ] }, each number being unique and between 1024 and 65535.',
           _user_content_types),
)

_DESCRIPTIONS = {bool: "true or false", int: "a non-negative integer", str: "a string", dict: "a JSON object"}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is no number


def _value(option: Option, raw: Mapping[str, Any]) -> Any:
    value = raw.get(option.name, option.default)
    if value is None and option.name not in raw:
        return None  # absent, without default; an explicit null fails the type check below
    expected = option.value_type
    valid = _is_int(value) and value >= 0 if expected is int else isinstance(value, expected)
    if not valid:
        raise ConfigurationError(
            f'Option "{option.name}" must be {_DESCRIPTIONS[expected]}, not {json.dumps(value)}'
        )
    return option.parse(option.name, value) if option.parse else value


@dataclass(frozen=True)
class Configuration:
    """The merged options (`raw`, for the options read elsewhere) and the typed values of those honoured here."""

    raw: Mapping[str, Any] = field(repr=False)
    name: str
    storage_directory: Path
    index_directory: Path
    database_url: str = field(repr=False)  # may hold a password
    storage_compression: bool
    sync_storage_area: bool
    overwrite_instances: bool
    ingest_transcoding: str | None
    ingest_transcoding_of_uncompressed: bool
    ingest_transcoding_of_compressed: bool
    http_port: int
    remote_access_allowed: bool
    authentication_enabled: bool
    registered_users: dict[str, str] = field(repr=False)
    http_compression_enabled: bool
    keep_alive: bool
    http_timeout: int
    check_revisions: bool
    concurrent_jobs: int
    jobs_history_size: int
    save_jobs: bool
    media_archive_size: int
    synchronous_zip_stream: bool
    temporary_directory: Path | None
    dicom_aet: str
    dicom_port: int
    dicom_server_enabled: bool
    dicom_check_called_aet: bool
    dicom_always_allow_echo: bool
    dicom_always_allow_store: bool
    dicom_always_allow_find: bool
    dicom_always_allow_find_worklist: bool
    dicom_always_allow_get: bool
    dicom_always_allow_move: bool
    dicom_check_modality_host: bool
    strict_aet_comparison: bool
    dicom_modalities: dict[str, Modality]
    dicom_scp_timeout: int
    dicom_scu_timeout: int
    maximum_pdu_length: int
    dicom_threads_count: int
    unknown_sop_class_accepted: bool
    dicom_echo_checks_find: bool
    synchronous_c_move: bool
    dicom_tls_enabled: bool
    dicom_tls_certificate: str | None
    dicom_tls_private_key: str | None
    dicom_tls_trusted_certificates: str | None
    dicom_tls_remote_certificate_required: bool
    default_encoding: str
    storage_access_on_find: str
    limit_find_results: int
    limit_find_instances: int
    query_retrieve_size: int
    case_sensitive_pn: bool
    worklists: WorklistsSettings
    storage_commitment_reports_size: int
    dictionary: dict[str, Any]
    user_metadata: dict[str, int]
    user_content_type: dict[str, tuple[int, str]]

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> "Configuration":
        """Type-check the honoured options; raises ConfigurationError naming the faulty option."""
        values = {option.attribute: _value(option, raw) for option in OPTIONS}
        values["index_directory"] = values["index_directory"] or values["storage_directory"]
        values["database_url"] = values["database_url"] or f"sqlite:///{values['index_directory'] / 'index.db'}"
        if values["authentication_enabled"] is None:  # Orthanc >= 1.5.8: follows RemoteAccessAllowed
            values["authentication_enabled"] = values["remote_access_allowed"]
        return cls(raw=MappingProxyType(dict(raw)), **values)


def load_configuration(path: str | Path | None) -> Configuration:
    """The configuration of a file, of the *.json files of a folder, or the defaults (None); then the environment."""
    if path is None:
        raw: dict[str, Any] = {}
    elif Path(path).is_dir():
        raw = read_folder(Path(path))
    elif Path(path).is_file():
        raw = read_file(Path(path))
    else:
        raise ConfigurationError(f"No configuration file or folder at {path}")
    for key in [key for key in raw if key not in KNOWN_OPTIONS]:
        log.warning('Unknown configuration option "%s" in %s; ignored', key, path)
        del raw[key]
    if path is not None:
        _anchor_folders(raw, Path(path) if Path(path).is_dir() else Path(path).parent)
    raw.update(environment_overrides(os.environ))
    return Configuration.from_raw(raw)


def _anchor_folders(raw: dict[str, Any], base: Path) -> None:
    """As Orthanc, relative folders of a configuration file start from the file's own folder."""
    for option in FOLDER_OPTIONS:
        value = raw.get(option)
        if isinstance(value, str) and not Path(value).is_absolute():
            raw[option] = str(base / value)


# --- Default configuration file ---------------------------------------------------------------------------------

_HEADER = """\
  // Isengard configuration, in Orthanc's format: JSON with comments. Only the
  // options Isengard honours are listed here; the other options of Orthanc are
  // accepted and ignored. Instead of one file, Isengard can read a folder of
  // *.json files, each option being defined in one of them. An environment
  // variable ISENGARD__<Option> (ISENGARD__HttpPort=8050, or ISENGARD__HTTP_PORT)
  // overrides the file; its value is read as JSON if it parses, else as text.
  // "${VARIABLE}" or "${VARIABLE:-default}" is replaced by an environment variable.
"""


def default_configuration_text() -> str:
    last_set = max(i for i, option in enumerate(OPTIONS) if option.default is not None)
    blocks = []
    for i, option in enumerate(OPTIONS):
        comment = "\n".join("  // " + line for line in textwrap.wrap(option.help, 74))
        if option.default is None:
            entry = f"  // {json.dumps(option.name)} : {json.dumps(option.example)},"
        else:
            entry = f"  {json.dumps(option.name)} : {json.dumps(option.default)}" + ("," if i < last_set else "")
        blocks.append(f"{comment}\n{entry}\n")
    return "{\n" + _HEADER + "\n" + "\n".join(blocks) + "}\n"


def write_default_configuration(path: str | Path) -> None:
    """Write a commented configuration file with the defaults, as `isengard --config=FILE` does."""
    Path(path).write_text(default_configuration_text(), encoding="utf-8")
