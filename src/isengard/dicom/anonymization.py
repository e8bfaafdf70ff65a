"""Anonymization (/…/anonymize): the Basic Application Level Confidentiality Profile of PS3.15
(DICOM 2023, see basic_profile.py) applied to an instance and to its nested datasets, then the
request's Keep, Remove and Replace.

As Orthanc: an attribute to remove (X, and every combination with X) goes; one to empty or replace
by a dummy (Z, D, Z/D) is kept empty; UIDs (U) are replaced, each old UID by the same new one
throughout a call, so that an anonymized study stays one study; the patient gets a new ID and the
name "Anonymized<N>"; private tags go unless KeepPrivateTags.
"""

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.uid import generate_uid

from .. import __version__
from ..errors import ErrorCode, IsengardError, bad_request
from .basic_profile import ACTIONS, MASKED_ACTIONS
from .create import set_json_value
from .modification import body_flag, body_replacements, body_tags, body_transcode
from .tags import PATIENT_ID, format_tag

PROFILE = "2023b"
ACTION_OF = {tag: action for action, tags in ACTIONS.items() for tag in tags}
PATIENT_NAME = 0x00100010
DEIDENTIFICATION_METHOD = f"Isengard {__version__} - PS 3.15-{PROFILE} Table E.1-1 Basic Profile"


@dataclass
class Replacements:
    """The new value of each UID and patient replaced during one anonymization (of an instance, or
    of every instance of a resource): the same old value always gets the same new one."""

    new_patient_name: Callable[[], str]
    uids: dict[str, str] = field(default_factory=dict)
    patients: dict[str, tuple[str, str]] = field(default_factory=dict)  # old ID -> new ID and name

    def uid(self, old: str) -> str:
        return self.uids.setdefault(old, generate_uid())

    def patient(self, old_id: str) -> tuple[str, str]:
        if old_id not in self.patients:
            self.patients[old_id] = (str(uuid.uuid4()), self.new_patient_name())
        return self.patients[old_id]


@dataclass(frozen=True)
class Anonymization:
    replace: dict[BaseTag, Any] = field(default_factory=dict)
    remove: frozenset[BaseTag] = frozenset()
    keep: frozenset[BaseTag] = frozenset()
    keep_private_tags: bool = False
    transcode: str | None = None

    @classmethod
    def from_json(cls, body: Any) -> "Anonymization":
        if not isinstance(body, dict):
            raise bad_request("The body of an anonymization must be a JSON object")
        version = body.get("DicomVersion", PROFILE)
        if version != PROFILE:
            raise IsengardError(ErrorCode.NOT_IMPLEMENTED, f"Isengard anonymizes by the profile of DICOM {PROFILE} only, "
                                                           f"not {version}")
        return cls(
            replace=body_replacements(body),
            remove=body_tags(body, "Remove"),
            keep=body_tags(body, "Keep"),
            keep_private_tags=body_flag(body, "KeepPrivateTags"),
            transcode=body_transcode(body),
        )

    def to_json(self) -> dict[str, Any]:
        """A request making this anonymization again."""
        return {"Replace": {format_tag(tag): value for tag, value in self.replace.items()},
                "Remove": [format_tag(tag) for tag in self.remove], "Keep": [format_tag(tag) for tag in self.keep],
                "KeepPrivateTags": self.keep_private_tags, "Transcode": self.transcode}

    def apply(self, dataset: Dataset, replacements: Replacements) -> None:
        """Anonymize `dataset` in place."""
        new_id, new_name = replacements.patient(str(dataset.get("PatientID", "")))
        self._profile(dataset, replacements)
        if PATIENT_ID not in self.keep:
            dataset.PatientID = new_id
        if PATIENT_NAME not in self.keep:
            dataset.PatientName = new_name
        dataset.PatientIdentityRemoved = "YES"
        dataset.DeidentificationMethod = DEIDENTIFICATION_METHOD
        for tag in self.remove:
            dataset.pop(tag, None)
        for tag, value in self.replace.items():
            set_json_value(dataset, tag, value)

    def _profile(self, dataset: Dataset, replacements: Replacements) -> None:
        for element in list(dataset):
            tag = element.tag
            if tag in self.keep:
                continue
            if tag.is_private:
                if not self.keep_private_tags:
                    del dataset[tag]
                continue
            action = _action(int(tag))
            if action.startswith("X") or (action == "D" and element.VR == "SQ"):
                del dataset[tag]
            elif action in ("Z", "D", "Z/D"):
                element.value = [] if element.VR == "SQ" else None
            elif action == "U" and element.value:
                element.value = [replacements.uid(str(value)) for value in element.value] \
                    if element.VM > 1 else replacements.uid(str(element.value))
            elif element.VR == "SQ":
                for item in element.value:
                    self._profile(item, replacements)


def _action(tag: int) -> str:
    action = ACTION_OF.get(tag)
    if action is not None:
        return action
    return next((action for masked, mask, action in MASKED_ACTIONS if tag & mask == masked), "")
