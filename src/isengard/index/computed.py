"""Tags computed from the hierarchy rather than read from a file: ModalitiesInStudy, the counts of
related resources... (C-FIND return keys, `RequestedTags` of `/tools/find`).

Each is defined at one level only (ModalitiesInStudy for studies, NumberOfSeriesRelatedInstances for
series...); every value is computed for a whole list of resources in one query.
"""

from dataclasses import dataclass

from sqlalchemy import Select, func, select
from sqlalchemy.sql.selectable import Alias

from ..dicom.levels import Level
from .enums import MetadataType
from .index import IndexTransaction, _chunks
from .schema import alias, main_dicom_tags, resource_metadata, resources

MODALITY = 0x00080060
MODALITIES_IN_STUDY = 0x00080061
SOP_CLASSES_IN_STUDY = 0x00080062
NUMBER_OF_PATIENT_RELATED_STUDIES = 0x00201200
NUMBER_OF_PATIENT_RELATED_SERIES = 0x00201202
NUMBER_OF_PATIENT_RELATED_INSTANCES = 0x00201204
NUMBER_OF_STUDY_RELATED_SERIES = 0x00201206
NUMBER_OF_STUDY_RELATED_INSTANCES = 0x00201208
NUMBER_OF_SERIES_RELATED_INSTANCES = 0x00201209


@dataclass(frozen=True)
class _Count:
    level: Level  # the level whose resources the tag describes
    counted: Level  # the level of the descendants it counts


COUNTS = {
    NUMBER_OF_PATIENT_RELATED_STUDIES: _Count(Level.PATIENT, Level.STUDY),
    NUMBER_OF_PATIENT_RELATED_SERIES: _Count(Level.PATIENT, Level.SERIES),
    NUMBER_OF_PATIENT_RELATED_INSTANCES: _Count(Level.PATIENT, Level.INSTANCE),
    NUMBER_OF_STUDY_RELATED_SERIES: _Count(Level.STUDY, Level.SERIES),
    NUMBER_OF_STUDY_RELATED_INSTANCES: _Count(Level.STUDY, Level.INSTANCE),
    NUMBER_OF_SERIES_RELATED_INSTANCES: _Count(Level.SERIES, Level.INSTANCE),
}

# The computed tags each level knows.
COMPUTED_TAGS: dict[Level, frozenset[int]] = {
    level: frozenset(tag for tag, count in COUNTS.items() if count.level == level)
    | ({MODALITIES_IN_STUDY, SOP_CLASSES_IN_STUDY} if level == Level.STUDY else frozenset())
    for level in Level
}


def is_computed(tag: int, level: Level) -> bool:
    return tag in COMPUTED_TAGS[level]


def computed_tags(index: IndexTransaction, level: Level, internal_ids: list[int], tags: list[int]) -> dict[int, dict[int, str]]:
    """The values of the computed `tags` (those defined at `level`; others are ignored) of resources of `level`."""
    found: dict[int, dict[int, str]] = {i: {} for i in internal_ids}
    for tag in tags:
        if not is_computed(tag, level):
            continue
        for chunk in _chunks(internal_ids):
            for internal_id, value in _compute(index, tag, chunk).items():
                found[internal_id][tag] = value
    return found


def _compute(index: IndexTransaction, tag: int, ids: list[int]) -> dict[int, str]:
    if tag in COUNTS:
        count = COUNTS[tag]
        root, leaf, query = descendants_query(count.level, count.counted, ids)
        rows = index.connection.execute(query.add_columns(func.count(leaf.c.internal_id)).group_by(root.c.internal_id))
        counts = dict(rows.all())
        return {i: str(counts.get(i, 0)) for i in ids}
    if tag == MODALITIES_IN_STUDY:
        # The Modality of each series is looked up by its key: joined, SQLite (without statistics)
        # would rather scan the (tag, value) index, all series of the database (~40 ms for 10,000).
        _, series, query = descendants_query(Level.STUDY, Level.SERIES, ids)
        modality = select(main_dicom_tags.c.value).where(
            main_dicom_tags.c.resource_id == series.c.internal_id, main_dicom_tags.c.tag == MODALITY
        )
        return _joined_sets(index, query.add_columns(modality.scalar_subquery()), ids)
    _, instance, query = descendants_query(Level.STUDY, Level.INSTANCE, ids)
    query = query.join(
        resource_metadata,
        (resource_metadata.c.resource_id == instance.c.internal_id)
        & (resource_metadata.c.type == int(MetadataType.SOP_CLASS_UID)),
    ).add_columns(resource_metadata.c.value)
    return _joined_sets(index, query, ids)


def _joined_sets(index: IndexTransaction, query: Select, ids: list[int]) -> dict[int, str]:
    """The distinct non-empty values found for each resource, sorted and joined by backslashes."""
    values: dict[int, set[str]] = {i: set() for i in ids}
    for internal_id, value in index.connection.execute(query.distinct()):
        if value:
            values[internal_id].add(value)
    return {i: "\\".join(sorted(v)) for i, v in values.items()}


def descendants_query(level: Level, descendant_level: Level, ids: list[int]) -> tuple[Alias, Alias, Select]:
    """SELECT root.internal_id FROM the resources `ids` of `level` joined down to their descendants
    of `descendant_level` (the two aliases are returned, for more columns or joins)."""
    root = alias(resources, "root")
    current = root
    joined = root
    for depth in range(descendant_level - level):
        child = alias(resources, f"descendant{depth}")
        joined = joined.join(child, child.c.parent_id == current.c.internal_id)
        current = child
    query = select(root.c.internal_id).select_from(joined).where(root.c.internal_id.in_(ids))
    return root, current, query
