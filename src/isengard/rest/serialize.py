"""Resources as the REST API shows them (`GET /studies/{id}`, `?expand`, `/tools/find`).

Everything is read in a few batched queries per list, so that expanding thousands
of studies stays fast.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING
from datetime import datetime, timedelta, timezone

from ..dicom.levels import Level
from ..dicom.parse import int32, parse_integer
from ..dicom.tags import OWN_MAIN_DICOM_TAGS, PATIENT_TAGS, format_tag, tag_name
from ..index import IndexTransaction, MetadataType, Resource
from ..index.find import requested_tags
from ..storage import ContentType, StorageArea
from pydicom.datadict import tag_for_keyword

if TYPE_CHECKING:
    from ..server import Isengard

PATIENT_TAG_NUMBERS = frozenset(tag_for_keyword(k) for k in PATIENT_TAGS)
OWN_TAG_NUMBERS = {level: frozenset(int(t) for t in tags) for level, tags in OWN_MAIN_DICOM_TAGS.items()}
CHILDREN_KEY = {Level.PATIENT: "Studies", Level.STUDY: "Series", Level.SERIES: "Instances"}
PARENT_KEY = {Level.STUDY: "ParentPatient", Level.SERIES: "ParentStudy", Level.INSTANCE: "ParentSeries"}


@dataclass(frozen=True)
class TagFormat:
    """How tag dictionaries are written: by keyword (default), `full` or `short`."""

    full: bool = False
    short: bool = False

    def tags(self, tags: dict[int, str]) -> dict:
        ordered = sorted(tags.items())
        if self.full:
            return {format_tag(t): {"Name": tag_name(t), "Type": "String", "Value": v} for t, v in ordered}
        if self.short:
            return {format_tag(t): v for t, v in ordered}
        return {tag_name(t): v for t, v in ordered}


def stable_before(stable_age: int) -> str:
    """Resources last updated at or before this time are stable (nothing new for StableAge
    seconds); LastUpdate dates compare as strings, being all written as 20240131T235959."""
    return (datetime.now(timezone.utc) - timedelta(seconds=stable_age)).strftime("%Y%m%dT%H%M%S")


def resources_json(
    index: IndexTransaction, found: list[Resource], fmt: TagFormat = TagFormat(), stable_age: int = 60
) -> list[dict]:
    """The expanded JSON of resources that are all of the same level."""
    if not found:
        return []
    level = found[0].level
    ids = [r.internal_id for r in found]
    tags = index.main_tags_of(ids)
    labels = index.labels_of(ids)
    parents = index.public_ids([r.parent_id for r in found if r.parent_id is not None])
    children = index.children_public_ids(ids) if level != Level.INSTANCE else {}
    last_updates = index.metadata_values(ids, MetadataType.LAST_UPDATE)
    stable_since = stable_before(stable_age)
    extra = _level_fields(index, level, ids)

    answers = []
    for resource in found:
        own = {t: v for t, v in tags[resource.internal_id].items() if t in OWN_TAG_NUMBERS[level]}
        answer: dict = {"ID": resource.public_id, "Type": level.title, "MainDicomTags": fmt.tags(own)}
        if level == Level.STUDY:
            patient = {t: v for t, v in tags[resource.internal_id].items() if t in PATIENT_TAG_NUMBERS}
            answer["PatientMainDicomTags"] = fmt.tags(patient)
        if level in PARENT_KEY:
            answer[PARENT_KEY[level]] = parents[resource.parent_id]
        if level in CHILDREN_KEY:
            answer[CHILDREN_KEY[level]] = children[resource.internal_id]
        if level != Level.INSTANCE:
            answer["LastUpdate"] = last_updates.get(resource.internal_id, "")
            answer["IsStable"] = answer["LastUpdate"] <= stable_since
        answer["Labels"] = labels[resource.internal_id]
        answer.update(extra.get(resource.internal_id, {}))
        answers.append(answer)
    return answers


def _level_fields(index: IndexTransaction, level: Level, ids: list[int]) -> dict[int, dict]:
    if level == Level.SERIES:
        expected = {i: _position(text) for i, text in index.metadata_values(ids, MetadataType.EXPECTED_NUMBER_OF_INSTANCES).items()}
        counted = [i for i in ids if expected.get(i) is not None]
        positions = index.children_metadata_values(counted, MetadataType.INDEX_IN_SERIES) if counted else {}
        return {
            i: {"ExpectedNumberOfInstances": expected.get(i), "Status": series_status(expected.get(i), positions.get(i, []))}
            for i in ids
        }
    if level == Level.INSTANCE:
        index_in_series = index.metadata_values(ids, MetadataType.INDEX_IN_SERIES)
        files = index.attachments_of(ids, ContentType.DICOM)
        fields = {}
        for i in ids:
            attachment = files.get(i)
            fields[i] = {
                "FileSize": attachment.info.uncompressed_size if attachment else 0,
                "FileUuid": attachment.info.uuid if attachment else "",
                "IndexInSeries": _position(index_in_series.get(i)),
            }
        return fields
    return {}


def _position(text: str | None) -> int | None:
    number = parse_integer(text)
    return None if number is None else int32(number)


def series_status(expected: int | None, positions: list[str | None]) -> str:
    """Whether a series has all its announced instances, judged on their IndexInSeries (in the
    order they arrived, the first anomaly decides); instances without one are not counted."""
    if expected is None:
        return "Unknown"
    seen: set[int] = set()
    for text in positions:
        if text is None:
            continue
        position = _position(text)
        if position is None:
            return "Unknown"
        if not 1 <= position <= expected or position in seen:
            return "Inconsistent"
        seen.add(position)
    return "Complete" if len(seen) == expected else "Missing"


def expand(
    isengard: "Isengard", index: IndexTransaction, found: list[Resource], fmt: TagFormat, requested: list[int] = (),
    storage: StorageArea | None = None,
) -> list[dict]:
    """The answers of `?expand` and of `"Expand": true`: the resources' JSON with the server's
    StableAge, and their "RequestedTags" when some are requested (those that only the files hold
    are read from `storage`, if given)."""
    answers = resources_json(index, found, fmt, isengard.config.raw.get("StableAge", 60))
    if requested:
        values = requested_tags(index, storage, found, list(requested))
        for answer, resource in zip(answers, found):
            answer["RequestedTags"] = fmt.tags(values[resource.internal_id])
    return answers
