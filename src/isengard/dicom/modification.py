"""Modifications of instances (/instances/{id}/modify), with Orthanc's safeguards: the DICOM
identifiers change only with "Force", and a modified instance is a new instance.

The identifiers below the highest one a modification changes get new UIDs: a new SOP instance UID
always (unless kept or replaced), new series and study UIDs too when the patient or the study
changes (Orthanc 1.10.1 does the same). `uids` maps each old UID to its new one, so that the
instances of one series, or study, modified together stay together.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.uid import generate_uid

from ..errors import ErrorCode, IsengardError, bad_request
from .create import json_tag, set_json_value
from .levels import Level
from .tags import IDENTIFIER_TAG, format_tag, tag_name

NewUid = Callable[[BaseTag, str], str]  # (identifier tag, old UID) -> new UID


@dataclass(frozen=True)
class Modification:
    replace: Mapping[BaseTag, Any]
    remove: frozenset[BaseTag] = frozenset()
    keep: frozenset[BaseTag] = frozenset()
    remove_private_tags: bool = False
    transcode: str | None = None

    @classmethod
    def from_json(cls, body: Any) -> "Modification":
        if not isinstance(body, dict):
            raise bad_request("The body of a modification must be a JSON object")
        modification = cls(
            replace=body_replacements(body),
            remove=body_tags(body, "Remove"),
            keep=body_tags(body, "Keep"),
            remove_private_tags=body_flag(body, "RemovePrivateTags"),
            transcode=body_transcode(body),
        )
        modification._check(force=body_flag(body, "Force"))
        return modification

    def apply(self, dataset: Dataset, level: Level = Level.INSTANCE, uids: NewUid | None = None) -> None:
        """Modify `dataset` in place, as an instance of the resource of `level` being modified:
        the identifiers of that level and below are new."""
        new_uid = uids or (lambda _tag, _old: generate_uid())
        changed = [other for other in Level if IDENTIFIER_TAG[other] in self.replace or other == level]
        for tag in self.remove:
            dataset.pop(tag, None)
        if self.remove_private_tags:
            dataset.remove_private_tags()
        for tag, value in self.replace.items():
            set_json_value(dataset, tag, value)
        for identified in Level:
            tag = IDENTIFIER_TAG[identified]
            renewed = identified == Level.INSTANCE or any(identified >= other for other in changed)
            if renewed and identified != Level.PATIENT and tag not in self.replace and tag not in self.keep \
                    and tag in dataset:
                dataset[tag].value = new_uid(tag, str(dataset[tag].value))

    def to_json(self) -> dict[str, Any]:
        """A request making this modification again (with Force: it passed the checks once)."""
        return {"Replace": {format_tag(tag): value for tag, value in self.replace.items()},
                "Remove": [format_tag(tag) for tag in self.remove], "Keep": [format_tag(tag) for tag in self.keep],
                "RemovePrivateTags": self.remove_private_tags, "Transcode": self.transcode, "Force": True}

    def _check(self, force: bool) -> None:
        """Orthanc's safeguards on the identifiers of the DICOM model."""
        identifiers = set(IDENTIFIER_TAG.values())
        removed = identifiers & self.remove
        if removed:
            raise bad_request(f"Cannot remove {_names_of(removed)}: it identifies the resource")
        touched = identifiers & (set(self.replace) | self.keep)
        if touched and not force:
            raise bad_request(f'Changing or keeping {_names_of(touched)} needs "Force": true')


def body_replacements(body: dict) -> dict[BaseTag, Any]:
    """The "Replace" object of a request: tag -> JSON value."""
    replace = body.get("Replace", {})
    if not isinstance(replace, dict):
        raise bad_request('"Replace" must be a JSON object')
    return {json_tag(name): value for name, value in replace.items()}


def body_tags(body: dict, field: str) -> frozenset[BaseTag]:
    """A list of tags of a request ("Remove", "Keep")."""
    names = body.get(field, [])
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise bad_request(f'"{field}" must be a list of tags')
    return frozenset(map(json_tag, names))


def body_flag(body: dict, field: str) -> bool:
    value = body.get(field, False)
    if not isinstance(value, bool):
        raise IsengardError(ErrorCode.BAD_PARAMETER_TYPE, f'"{field}" must be true or false')
    return value


def body_transcode(body: dict) -> str | None:
    """The transfer syntax of "Transcode", if any."""
    value = body.get("Transcode")
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not all(part.isdigit() for part in value.split(".")):
        raise IsengardError(ErrorCode.PARAMETER_OUT_OF_RANGE, f'"Transcode" must be a transfer syntax UID, not {value!r}')
    return value


def _names_of(tags: set[BaseTag]) -> str:
    return ", ".join(sorted(tag_name(tag) for tag in tags))
