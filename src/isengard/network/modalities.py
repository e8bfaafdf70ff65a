"""The remote DICOM nodes Isengard knows (DicomModalities, and those added through the REST API).

A modality is written either as an array `["AET", "host", port]` (with an optional fourth
item, the manufacturer) or as an object with the fields of `Modality.to_json()`. Both forms
are validated as Orthanc does, with its error codes.
"""

import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from ..errors import ErrorCode, IsengardError


class Request(Enum):
    """The DICOM operations a remote modality may ask of this server (Orthanc's names)."""

    ECHO = "Echo"
    FIND = "Find"
    FIND_WORKLIST = "FindWorklist"
    GET = "Get"
    MOVE = "Move"
    STORE = "Store"
    N_ACTION = "NAction"
    N_EVENT_REPORT = "NEventReport"


# The manufacturers Orthanc knows, and the obsolete names it still reads as one of them.
MANUFACTURERS = {
    **{name: name for name in ("Generic", "GenericNoWildcardInDates", "GenericNoUniversalWildcard", "Vitrea", "GE")},
    "AgfaImpax": "GenericNoWildcardInDates",
    "SyngoVia": "GenericNoWildcardInDates",
    "EFilm2": "Generic",
    "MedInria": "Generic",
    "ClearCanvas": "Generic",
    "Dcm4Chee": "Generic",
}
PORTS = range(1, 65535)  # Orthanc refuses 65535 too


@dataclass(frozen=True)
class Modality:
    aet: str
    host: str
    port: int
    manufacturer: str = "Generic"
    allow_echo: bool = True
    allow_find: bool = True
    allow_find_worklist: bool = True
    allow_get: bool = True
    allow_move: bool = True
    allow_store: bool = True
    allow_n_action: bool = True
    allow_event_report: bool = True
    allow_transcoding: bool = True
    local_aet: str = ""  # the AET Isengard calls itself toward this modality ("": DicomAet)
    timeout: int = 0  # seconds of the associations toward it (0: DicomScuTimeout)
    use_dicom_tls: bool = False

    def allows(self, request: Request) -> bool:
        return getattr(self, _PERMISSIONS[request])

    def to_json(self) -> dict[str, Any]:
        """The configuration as GET /modalities/{id}/configuration shows it."""
        return {key: getattr(self, attribute) for key, attribute in sorted(_JSON_FIELDS.items())}


_PERMISSIONS = {
    Request.ECHO: "allow_echo",
    Request.FIND: "allow_find",
    Request.FIND_WORKLIST: "allow_find_worklist",
    Request.GET: "allow_get",
    Request.MOVE: "allow_move",
    Request.STORE: "allow_store",
    Request.N_ACTION: "allow_n_action",
    Request.N_EVENT_REPORT: "allow_event_report",
}
_JSON_FIELDS = {
    "AET": "aet", "Host": "host", "Port": "port", "Manufacturer": "manufacturer",
    "AllowEcho": "allow_echo", "AllowFind": "allow_find", "AllowFindWorklist": "allow_find_worklist",
    "AllowGet": "allow_get", "AllowMove": "allow_move", "AllowStore": "allow_store",
    "AllowNAction": "allow_n_action", "AllowEventReport": "allow_event_report",
    "AllowTranscoding": "allow_transcoding", "LocalAet": "local_aet", "Timeout": "timeout",
    "UseDicomTls": "use_dicom_tls",
}
_BOOLEAN_FIELDS = [key for key, attribute in _JSON_FIELDS.items() if attribute.startswith("allow_")] + ["UseDicomTls"]


def bad_format(details: str = "") -> IsengardError:
    return IsengardError(ErrorCode.BAD_FILE_FORMAT, details)


def parse_modality(value: Any) -> Modality:
    """A modality from its array or object form; IsengardError (with Orthanc's code) if invalid."""
    if isinstance(value, list):
        return _parse_array(value)
    if isinstance(value, dict):
        return _parse_object(value)
    raise bad_format()


def _parse_array(value: list) -> Modality:
    if len(value) not in (3, 4) or not all(isinstance(item, str) for item in value[:2] + value[3:]):
        raise bad_format()
    manufacturer = _manufacturer(value[3]) if len(value) == 4 else "Generic"
    return Modality(value[0], value[1], _port(value[2]), manufacturer)


def _parse_object(value: Mapping[str, Any]) -> Modality:
    modality = Modality(_string(value, "AET"), _string(value, "Host"), _port(value.get("Port")))
    changes: dict[str, Any] = {}
    if "Manufacturer" in value:
        changes["manufacturer"] = _manufacturer(_string(value, "Manufacturer"))
    if "AllowStorageCommitment" in value:  # an alias of both storage commitment permissions
        allowed = _boolean(value, "AllowStorageCommitment")
        changes.update(allow_n_action=allowed, allow_event_report=allowed)
    for key in _BOOLEAN_FIELDS:
        if key in value:
            changes[_JSON_FIELDS[key]] = _boolean(value, key)
    if "LocalAet" in value:
        changes["local_aet"] = _string(value, "LocalAet")
    if "Timeout" in value:
        changes["timeout"] = parse_timeout(value["Timeout"])
    return replace(modality, **changes)


def _string(value: Mapping[str, Any], key: str) -> str:
    if not isinstance(value.get(key), str):
        raise bad_format(f"String value expected in field: {key}")
    return value[key]


def _boolean(value: Mapping[str, Any], key: str) -> bool:
    if not isinstance(value[key], bool):
        raise bad_format(f"Boolean value expected in field: {key}")
    return value[key]


def parse_timeout(value: Any) -> int:
    """A timeout in whole seconds, as the Timeout fields of modalities and of echo requests."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad_format("Integer value expected in field: Timeout")
    if value < 0:
        raise bad_format("Unsigned integer value expected in field: Timeout")
    return value


def _port(value: Any) -> int:
    """A JSON integer, or a string holding one (Orthanc reads both)."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad_format()
    if value not in PORTS:
        raise IsengardError(
            ErrorCode.PARAMETER_OUT_OF_RANGE, f"A TCP port number must be in range [1..65534], but found: {value}"
        )
    return value


def _manufacturer(name: str) -> str:
    if name not in MANUFACTURERS:
        raise IsengardError(ErrorCode.PARAMETER_OUT_OF_RANGE, f'Unknown modality manufacturer: "{name}"')
    return MANUFACTURERS[name]


def parse_modalities(option: Mapping[str, Any]) -> dict[str, Modality]:
    """The DicomModalities option; ValueError naming the faulty modality."""
    modalities = {}
    for name, value in option.items():
        try:
            modalities[name] = parse_modality(value)
        except IsengardError as exc:
            raise ValueError(f'modality "{name}": {exc.details or exc.code.message}') from None
    return modalities


def same_aet(first: str, second: str, strict: bool) -> bool:
    """AETs compare without case unless StrictAetComparison."""
    return first == second if strict else first.upper() == second.upper()


class ModalityRegistry:
    """The known modalities by name; shared by the REST API and the DICOM server threads."""

    def __init__(self, modalities: Mapping[str, Modality] | None = None, strict_aet_comparison: bool = False):
        self._modalities = dict(modalities or {})
        self.strict_aet_comparison = strict_aet_comparison
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._modalities)

    def items(self) -> list[tuple[str, Modality]]:
        with self._lock:
            return sorted(self._modalities.items())

    def get(self, name: str) -> Modality | None:
        with self._lock:
            return self._modalities.get(name)

    def put(self, name: str, modality: Modality) -> None:
        with self._lock:
            self._modalities[name] = modality

    def delete(self, name: str) -> bool:
        with self._lock:
            return self._modalities.pop(name, None) is not None

    def with_aet(self, aet: str) -> list[Modality]:
        """The modalities that call themselves `aet`."""
        with self._lock:
            return [m for m in self._modalities.values() if same_aet(m.aet, aet, self.strict_aet_comparison)]

