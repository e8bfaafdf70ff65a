"""Which presentation contexts the DICOM server accepts.

Storage SOP classes are accepted in the transfer syntaxes of AcceptedTransferSyntaxes and the
*TransferSyntaxAccepted options (changed at run time by /tools/accepted-transfer-syntaxes);
SOP classes that no DICOM dictionary names are accepted for storage too if
UnknownSopClassAccepted. Other services (verification, queries...) use the uncompressed
transfer syntaxes. The contexts are chosen anew for each association, so that changes apply
to the associations that follow them.
"""

import functools
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from pydicom.uid import UID_dictionary
from pynetdicom import build_context
from pynetdicom.presentation import AllStoragePresentationContexts, PresentationContext
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import register_uid, uid_to_service_class

from ..config import ConfigurationError

IMPLICIT_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
EXPLICIT_BIG_ENDIAN = "1.2.840.10008.1.2.2"


def _jpeg_family(*numbers: int) -> tuple[str, ...]:
    return tuple(f"1.2.840.10008.1.2.4.{number}" for number in numbers)


# The groups of transfer syntaxes that an option enables or disables at once.
GROUPS: dict[str, tuple[str, ...]] = {
    "DeflatedTransferSyntaxAccepted": ("1.2.840.10008.1.2.1.99",),
    "JpegTransferSyntaxAccepted": _jpeg_family(*range(50, 67), 70),
    "Jpeg2000TransferSyntaxAccepted": _jpeg_family(90, 91, 92, 93),
    "JpegLosslessTransferSyntaxAccepted": _jpeg_family(80, 81),  # JPEG-LS, in Orthanc's naming
    "JpipTransferSyntaxAccepted": _jpeg_family(94, 95),
    "Mpeg2TransferSyntaxAccepted": _jpeg_family(100, 101),
    "RleTransferSyntaxAccepted": ("1.2.840.10008.1.2.5",),
    "Mpeg4TransferSyntaxAccepted": _jpeg_family(102, 103, 104, 105, 106),
    "H265TransferSyntaxAccepted": _jpeg_family(107, 108),
}


def _uid_order(uid: str) -> tuple[int, ...]:
    return tuple(int(part) for part in uid.split("."))


# The transfer syntaxes the server can accept, in Orthanc's order (that of their UIDs' numbers).
KNOWN_TRANSFER_SYNTAXES: tuple[str, ...] = tuple(sorted(
    {IMPLICIT_LITTLE_ENDIAN, EXPLICIT_LITTLE_ENDIAN, EXPLICIT_BIG_ENDIAN, "1.2.840.10008.1.2.6.1",
     "1.2.840.10008.1.2.6.2", *(uid for group in GROUPS.values() for uid in group)},
    key=_uid_order,
))
# Non-storage services, and their preference when the peer proposes several.
UNCOMPRESSED = (EXPLICIT_LITTLE_ENDIAN, EXPLICIT_BIG_ENDIAN, IMPLICIT_LITTLE_ENDIAN)
# pynetdicom's storage SOP classes, and the others that the DICOM dictionary names "... Storage"
# (retired ones included, which DCMTK-based nodes still send), except storage commitment and DICOMDIRs.
PYNETDICOM_STORAGE = frozenset(context.abstract_syntax for context in AllStoragePresentationContexts)
NOT_STORAGE = frozenset({"1.2.840.10008.1.20.1", "1.2.840.10008.1.20.2", "1.2.840.10008.1.3.10"})
STORAGE_SOP_CLASSES = PYNETDICOM_STORAGE | frozenset(
    uid for uid, (name, kind, *_) in UID_dictionary.items() if kind == "SOP Class" and "Storage" in name
) - NOT_STORAGE
DEFAULT_PATTERNS = ["1.2.840.10008.1.*"]


def _wildcard(pattern: str) -> re.Pattern[str]:
    """`*` matches any text, `?` one character; nothing else is special."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern))


def matching_transfer_syntaxes(patterns: Iterable[str]) -> set[str]:
    regexes = [_wildcard(pattern) for pattern in patterns]
    return {uid for uid in KNOWN_TRANSFER_SYNTAXES if any(regex.fullmatch(uid) for regex in regexes)}


def configured_transfer_syntaxes(raw: Mapping[str, Any]) -> set[str]:
    """AcceptedTransferSyntaxes, then the group options that are set (true adds, false removes)."""
    patterns = raw.get("AcceptedTransferSyntaxes", DEFAULT_PATTERNS)
    if isinstance(patterns, str):
        patterns = [patterns]
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise ConfigurationError('Option "AcceptedTransferSyntaxes" must be a list of transfer syntax UIDs')
    accepted = matching_transfer_syntaxes(patterns)
    for option, group in GROUPS.items():
        if option not in raw:
            continue
        if not isinstance(raw[option], bool):
            raise ConfigurationError(f'Option "{option}" must be true or false')
        accepted = accepted | set(group) if raw[option] else accepted - set(group)
    return accepted


def is_unknown_sop_class(uid: str) -> bool:
    """Orthanc's "unknown SOP class": a UID that the DICOM dictionary does not name."""
    return uid not in UID_dictionary


@functools.lru_cache(maxsize=4096)
def _context(abstract_syntax: str, transfer_syntaxes: tuple[str, ...]) -> PresentationContext:
    """Made once: pynetdicom validates each UID, which would cost ~100 ms for an association that
    proposes every storage SOP class. Negotiation only reads supported contexts, so they are shared."""
    return build_context(abstract_syntax, list(transfer_syntaxes))


_registration = threading.Lock()


def _serve_as_storage(uid: str) -> None:
    """Have pynetdicom dispatch the C-STOREs of a SOP class it does not know to its storage service."""
    with _registration:
        if uid_to_service_class(uid) is not StorageServiceClass:
            register_uid(uid, "Storage_" + uid.replace(".", "_"), StorageServiceClass)


class AcceptedSyntaxes:
    """The storage transfer syntaxes and the unknown-SOP-class switch, changed by the REST API
    while associations negotiate with them."""

    def __init__(self, transfer_syntaxes: set[str], unknown_sop_class_accepted: bool = False):
        self._lock = threading.Lock()
        self._transfer_syntaxes = frozenset(transfer_syntaxes)
        self.unknown_sop_class_accepted = unknown_sop_class_accepted

    @property
    def transfer_syntaxes(self) -> list[str]:
        return sorted(self._transfer_syntaxes, key=_uid_order)

    def set_transfer_syntaxes(self, patterns: Iterable[str]) -> list[str]:
        with self._lock:
            self._transfer_syntaxes = frozenset(matching_transfer_syntaxes(patterns))
        return self.transfer_syntaxes

    def storage_preference(self) -> list[str]:
        """Orthanc's choice among the syntaxes a peer proposes: explicit, then implicit little
        endian, then the others in their order."""
        accepted = self._transfer_syntaxes
        first = [uid for uid in (EXPLICIT_LITTLE_ENDIAN, IMPLICIT_LITTLE_ENDIAN) if uid in accepted]
        return first + [uid for uid in KNOWN_TRANSFER_SYNTAXES if uid in accepted and uid not in first]

    def contexts_for(self, requested: Iterable[str], services: Iterable[str]) -> list[PresentationContext]:
        """The contexts to support for the abstract syntaxes a peer proposes; `services` are the
        non-storage abstract syntaxes the server serves."""
        served = set(services)
        storage = tuple(self.storage_preference())
        contexts = []
        for abstract_syntax in dict.fromkeys(requested):
            if abstract_syntax in served:
                contexts.append(_context(abstract_syntax, UNCOMPRESSED))
            elif storage and self._is_storage(abstract_syntax):
                contexts.append(_context(abstract_syntax, storage))
        return contexts

    def _is_storage(self, abstract_syntax: str) -> bool:
        known = abstract_syntax in STORAGE_SOP_CLASSES
        if not known and not (self.unknown_sop_class_accepted and is_unknown_sop_class(abstract_syntax)):
            return False
        if abstract_syntax not in PYNETDICOM_STORAGE:
            _serve_as_storage(abstract_syntax)
        return True
