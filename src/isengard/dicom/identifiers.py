"""Public identifiers of resources, computed exactly as Orthanc does.

Each identifier is the SHA-1 of the DICOM identifiers of the resource and of its
ancestors joined by '|', written as five dash-separated groups of 8 hex digits.
"""

import hashlib
from dataclasses import dataclass

from .levels import Level


def hash_identifier(text: str) -> str:
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()
    return "-".join(digest[i : i + 8] for i in range(0, 40, 8))


@dataclass(frozen=True)
class DicomIdentifiers:
    """The four DICOM identifiers that place an instance in the hierarchy."""

    patient_id: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str

    def public_id(self, level: Level) -> str:
        parts = (self.patient_id, self.study_instance_uid, self.series_instance_uid, self.sop_instance_uid)
        return hash_identifier("|".join(parts[: level + 1]))

    def public_ids(self) -> dict[Level, str]:
        return {level: self.public_id(level) for level in Level}
