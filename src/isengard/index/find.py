"""Finding resources by DICOM tags, labels and metadata (`/tools/find`, `/tools/lookup`, C-FIND).

Matching follows DICOM C-FIND (PS3.4 C.2.2.2) the way Orthanc does it: a value matches exactly, `*`
and `?` are wildcards (text VRs only), `a\\b` is a list of exact values, `lo-hi`, `-hi` and `lo-` are
ranges for dates and times (compared as strings), and an empty constraint matches everything.

Constraints on main DICOM tags of the queried level or of its ancestors are SQL over the index (the
study level keeps a copy of the patient tags, which spares a join). A main tag stored only below the
queried level matches nothing, as in Orthanc. Any other tag is checked in the DICOM file of one
instance of each resource left by SQL.

SQL answers exactly, except on SQLite for case-insensitive values with non-ASCII letters (SQLite
folds ASCII only): there it selects a superset (such letters match any character) that Python
narrows down with the value it selects alongside.
"""

import io
import itertools
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag
from sqlalchemy import func, select

from ..dicom.levels import Level
from ..dicom.parse import element_text, value_text
from ..dicom.tags import IDENTIFIER_TAG, MAIN_DICOM_TAGS, PATIENT_ID, format_tag
from ..errors import ErrorCode, IsengardError, bad_request
from ..storage import ContentType, StorageArea
from ..storage.area import FileInfo
from .computed import MODALITIES_IN_STUDY, MODALITY, computed_tags, descendants_query, is_computed
from .enums import MetadataType
from .index import IndexTransaction, Resource, _chunks, _resource
from .schema import labels, main_dicom_tags, resource_metadata, resources

log = logging.getLogger(__name__)

# PS3.4 C.2.2.2.4: wildcards apply to text only; ranges (C.2.2.2.5) to dates and times only.
WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
RANGE_VRS = frozenset({"DA", "DT", "TM"})

STORED_TAGS = {level: frozenset(int(tag) for tag in tags) for level, tags in MAIN_DICOM_TAGS.items()}


class Kind(Enum):
    EQUAL = "equal"
    LIST = "list"
    RANGE = "range"  # values: (lower, upper), an empty bound being open
    WILDCARD = "wildcard"


@dataclass(frozen=True)
class Constraint:
    """One C-FIND constraint on a DICOM tag (or, for metadata queries, on a metadata type)."""

    tag: int
    kind: Kind
    values: tuple[str, ...]
    case_sensitive: bool = False

    def matches(self, value: str | None) -> bool:
        """A value absent from the resource (None) matches nothing, not even `*`."""
        if value is None:
            return False
        if self.kind is Kind.RANGE:
            lower, upper = self.values
            return (not lower or value >= lower) and (not upper or value <= upper)
        if self.kind is Kind.WILDCARD:
            return self._regex.fullmatch(self._fold(value)) is not None
        return self._fold(value) in {self._fold(v) for v in self.values}

    def _fold(self, text: str) -> str:
        return text if self.case_sensitive else text.lower()

    @cached_property
    def _regex(self) -> re.Pattern[str]:
        pieces = {"*": ".*", "?": "."}
        pattern = "".join(pieces.get(c, re.escape(c)) for c in self._fold(self.values[0]))
        return re.compile(pattern, re.DOTALL)


def value_representation(tag: int) -> str:
    try:
        return dictionary_VR(tag)
    except KeyError:
        group, element = tag >> 16, tag & 0xFFFF
        return "LO" if group % 2 == 1 and 0x10 <= element <= 0xFF else "UN"  # private creators are LO


def parse_constraint(tag: int, text: str, case_sensitive: bool = False, vr: str | None = None) -> Constraint | None:
    """The constraint a C-FIND value expresses; None for the empty value, which matches everything."""
    if not text:
        return None
    vr = vr or value_representation(tag)
    if vr in RANGE_VRS and "-" in text:  # a range before a list: "a-b\c" is the range [a, "b\c"], as in Orthanc
        lower, upper = text.split("-", 1)
        return Constraint(tag, Kind.RANGE, (lower, upper), case_sensitive)
    if "\\" in text or tag == MODALITIES_IN_STUDY:
        return Constraint(tag, Kind.LIST, tuple(text.split("\\")), case_sensitive)
    if "*" in text or "?" in text:
        if vr not in WILDCARD_VRS:
            raise IsengardError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"Wildcards are not allowed on tag {format_tag(tag)}")
        return Constraint(tag, Kind.WILDCARD, (text,), case_sensitive)
    return Constraint(tag, Kind.EQUAL, (text,), case_sensitive)


class LabelsConstraint(Enum):
    ALL = "All"
    ANY = "Any"
    NONE = "None"


@dataclass(frozen=True)
class OrderKey:
    key: int  # a DICOM tag, or a metadata type
    is_metadata: bool = False
    descending: bool = False


@dataclass
class FindQuery:
    level: Level
    constraints: list[Constraint] = field(default_factory=list)
    metadata: list[Constraint] = field(default_factory=list)  # `tag` is the metadata type
    labels: list[str] = field(default_factory=list)
    labels_constraint: LabelsConstraint = LabelsConstraint.ALL
    parent: tuple[Level, str] | None = None  # only resources below this one (public ID)
    order_by: list[OrderKey] = field(default_factory=list)
    since: int = 0
    limit: int = 0  # 0: no limit


def indexed_level(tag: int, level: Level) -> Level | None:
    """The level whose index rows hold `tag` for resources of `level`: their own, else the nearest
    ancestor's (the study's copy for patient tags); None if neither stores it."""
    holders = [upper for upper in Level if upper <= level and tag in STORED_TAGS[upper]]
    return max(holders) if holders else None


def _stored_below(tag: int, level: Level) -> bool:
    return any(tag in STORED_TAGS[lower] for lower in Level if lower > level)


# -- finding -----------------------------------------------------------------------------------


def find(index: IndexTransaction, storage: StorageArea | None, query: FindQuery, cap: int = 0) -> list[Resource]:
    """The resources matching `query`, in insertion order (or `order_by`), paged by since/limit;
    `cap` (LimitFindResults/LimitFindInstances) bounds how far the paging may go. Without `storage`
    (StorageAccessOnFind), a constraint on a tag that only the files hold matches nothing."""
    window = _window(query.since, query.limit, cap)
    if window is None:
        return []
    offset, count = window
    plan = _Plan(query, sqlite=index.connection.dialect.name == "sqlite", read_files=storage is not None)
    if not plan.needs_python:
        return [plan.resource(row) for row in index.rows(plan.sql(offset, count), plan.parameters.values)]
    candidates = index.rows(plan.sql(), plan.parameters.values)
    return _filter(index, storage, plan, candidates, offset, count)  # type: ignore[arg-type]  # files only with storage


def _window(since: int, limit: int, cap: int) -> tuple[int, int | None] | None:
    """(offset, count) of the answers to return, count None meaning all; None when nothing is left."""
    end = since + limit if limit else None
    if cap:
        end = cap if end is None else min(end, cap)
    if end is None:
        return since, None
    return (since, end - since) if end > since else None


def _filter(
    index: IndexTransaction, storage: StorageArea, plan: "_Plan", candidates: Sequence[tuple], offset: int, count: int | None
) -> list[Resource]:
    """Check in Python what SQL could not; chunks grow so that a small limit reads few files."""
    found: list[Resource] = []
    skipped = 0
    for chunk in _growing_chunks(candidates):
        kept = [plan.resource(row) for row in chunk if plan.recheck(row)]
        if plan.file_constraints and kept:
            tags = [c.tag for c in plan.file_constraints]
            values = file_tags(index, storage, plan.level, [r.internal_id for r in kept], tags)
            kept = [r for r in kept if all(c.matches(values[r.internal_id].get(c.tag)) for c in plan.file_constraints)]
        for resource in kept:
            if skipped < offset:
                skipped += 1
                continue
            found.append(resource)
            if count is not None and len(found) == count:
                return found
    return found


def _growing_chunks(rows: Sequence[tuple], first: int = 16, largest: int = 512) -> Iterator[Sequence[tuple]]:
    start, size = 0, first
    while start < len(rows):
        yield rows[start : start + size]
        start += size
        size = min(size * 2, largest)


class Parameters:
    """The values of the parameters of SQL text, each written as its placeholder for the driver
    (SQLite's or psycopg's named style) by calling this with the value."""

    def __init__(self, sqlite: bool):
        self.values: dict[str, object] = {}
        self._style = ":{}" if sqlite else "%({})s"

    def __call__(self, value: object) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return self._style.format(name)


RESOURCES, MAIN_TAGS, METADATA, LABELS = resources.name, main_dicom_tags.name, resource_metadata.name, labels.name


class _Plan:
    """The SQL of a find, and what is left to check in Python.

    Filters are uncorrelated `IN (subquery)` conditions: on an ancestor level, they select its
    matching resources and descend from them along the parent index, as Orthanc does; the database
    runs each once over the (tag, value) index, however many resources there are. Order keys and
    values to recheck in Python are joined to the target resource instead.

    The SQL is written as text, values as parameters and integers (levels, tags) inline: built with
    SQLAlchemy's expressions, and run through its connection, a find spent 0.4 ms in SQLAlchemy
    for 0.06 ms in SQLite.
    """

    def __init__(self, query: FindQuery, sqlite: bool, read_files: bool = True):
        self.query = query
        self.level = query.level
        self.sqlite = sqlite
        self.read_files = read_files
        self.parameters = Parameters(sqlite)
        self._numbers = itertools.count()
        self._joined: dict[Level, str] = {self.level: "target"}  # aliases of the target and its ancestors
        self._joins: list[str] = []
        self._filtered: dict[Level, str] = {self.level: "target"}  # aliases of the filtered levels
        self._filters: dict[Level, list[str]] = {self.level: []}
        self._columns: list[str] = []
        self._order: list[str] = []
        self._rechecks: list[tuple[int, Constraint]] = []  # (column of the value, constraint)
        self.file_constraints: list[Constraint] = []
        for constraint in query.constraints:
            self._add_tag_constraint(constraint)
        for constraint in query.metadata:
            self._add_metadata_constraint(constraint)
        self._add_labels()
        if query.parent is not None:
            self._add_parent(*query.parent)
        for key in query.order_by:
            self._add_order(key)
        self._order.append("target.internal_id")

    @property
    def needs_python(self) -> bool:
        return bool(self._rechecks or self.file_constraints)

    def sql(self, offset: int = 0, count: int | None = None) -> str:
        above = [f"target.parent_id IN ({self._descend(level, c)})" for level, c in self._filters.items() if level < self.level]
        # A parent found above implies the level: without the redundant test, SQLite descends the parent index.
        where = above or [f"target.resource_type = {int(self.level)}"]
        columns = ", ".join(["target.internal_id", "target.public_id", "target.parent_id", *self._columns])
        sql = (
            f"SELECT {columns} FROM {RESOURCES} AS target{''.join(self._joins)}"
            f" WHERE {' AND '.join(where + self._filters[self.level])} ORDER BY {', '.join(self._order)}"
        )
        if count is not None:
            sql += f" LIMIT {int(count)}"
        elif offset and self.sqlite:
            sql += " LIMIT -1"  # SQLite has no OFFSET without LIMIT
        return sql + f" OFFSET {int(offset)}" if offset else sql

    def _descend(self, level: Level, conditions: list[str]) -> str:
        """The IDs of the parents of the target whose ancestors at `level` meet `conditions`."""
        node = self._filtered[level]
        ids = f"SELECT {node}.internal_id FROM {RESOURCES} AS {node} WHERE {' AND '.join(conditions)}"
        for _ in range(level + 1, self.level):
            child = f"below{next(self._numbers)}"
            ids = f"SELECT {child}.internal_id FROM {RESOURCES} AS {child} WHERE {child}.parent_id IN ({ids})"
        return ids

    def resource(self, row: tuple) -> Resource:
        return Resource(row[0], self.level, row[1], row[2])

    def recheck(self, row: tuple) -> bool:
        return all(constraint.matches(row[position]) for position, constraint in self._rechecks)

    def _filter(self, level: Level, condition: str) -> None:
        self._filters.setdefault(level, []).append(condition)

    def _filtered_node(self, level: Level) -> str:
        if level not in self._filtered:
            node = f"filtered{int(level)}"
            self._filtered[level] = node
            self._filter(level, f"{node}.resource_type = {int(level)}")  # e.g. patient tags are also on studies
        return self._filtered[level]

    def _joined_node(self, level: Level) -> str:
        """The alias of the target's ancestor at `level`, joined on first use."""
        if level not in self._joined:
            child = self._joined_node(Level(level + 1))
            ancestor = f"ancestor{int(level)}"
            self._joins.append(f" JOIN {RESOURCES} AS {ancestor} ON {ancestor}.internal_id = {child}.parent_id")
            self._joined[level] = ancestor
        return self._joined[level]

    def _add_tag_constraint(self, constraint: Constraint) -> None:
        if constraint.tag == MODALITIES_IN_STUDY and self.level == Level.STUDY:
            self._add_modalities_in_study(constraint)
            return
        holder = indexed_level(constraint.tag, self.level)
        if holder is not None:
            self._add_main_tag_constraint(holder, constraint)
        elif _stored_below(constraint.tag, self.level) or not self.read_files:
            self._filter(self.level, FALSE)
        else:
            self.file_constraints.append(constraint)

    def _add_main_tag_constraint(self, level: Level, constraint: Constraint) -> None:
        row = f"value{next(self._numbers)}"
        condition, exact = value_condition(f"{row}.value", constraint, self.sqlite, self.parameters)
        if exact:
            matching = f"SELECT {row}.resource_id FROM {MAIN_TAGS} AS {row} WHERE {row}.tag = {int(constraint.tag)} AND {condition}"
            self._filter(level, f"{self._filtered_node(level)}.internal_id IN ({matching})")
        else:
            self._join_value(row, MAIN_TAGS, self._joined_node(level), constraint.tag)
            self._filter(self.level, condition)
            self._recheck(row, constraint)

    def _add_metadata_constraint(self, constraint: Constraint) -> None:
        # A join: metadata have no index on their values, but one on (resource, type).
        row = f"value{next(self._numbers)}"
        condition, exact = value_condition(f"{row}.value", constraint, self.sqlite, self.parameters)
        self._join_value(row, METADATA, "target", constraint.tag)
        self._filter(self.level, condition)
        if not exact:
            self._recheck(row, constraint)

    def _join_value(self, row: str, table: str, node: str, key: int, outer: bool = False) -> None:
        """Join `row`, an alias of `table` (main DICOM tags or metadata), on its entry `key` for `node`."""
        key_column = "tag" if table == MAIN_TAGS else "type"
        join = "LEFT OUTER JOIN" if outer else "JOIN"
        self._joins.append(
            f" {join} {table} AS {row} ON {row}.resource_id = {node}.internal_id AND {row}.{key_column} = {int(key)}"
        )

    def _recheck(self, row: str, constraint: Constraint) -> None:
        self._rechecks.append((3 + len(self._columns), constraint))  # after the 3 columns of the resource
        self._columns.append(f"{row}.value")

    def _add_modalities_in_study(self, constraint: Constraint) -> None:
        """Studies with at least one series of one of the modalities (Orthanc's reading of C-FIND)."""
        condition, _ = value_condition("modality.value", constraint, self.sqlite, self.parameters, prefilter=False)
        studies = (
            f"SELECT series.parent_id FROM {RESOURCES} AS series JOIN {MAIN_TAGS} AS modality"
            f" ON modality.resource_id = series.internal_id WHERE modality.tag = {MODALITY} AND {condition}"
        )
        self._filter(self.level, f"target.internal_id IN ({studies})")

    def _add_labels(self) -> None:
        wanted = self.query.labels
        if not wanted:
            return
        def labelled(among: list[str]) -> str:
            return f"SELECT {LABELS}.resource_id FROM {LABELS} WHERE {_among(f'{LABELS}.label', among, self.parameters)}"

        match self.query.labels_constraint:
            case LabelsConstraint.ALL:
                for label in wanted:
                    self._filter(self.level, f"target.internal_id IN ({labelled([label])})")
            case LabelsConstraint.ANY:
                self._filter(self.level, f"target.internal_id IN ({labelled(wanted)})")
            case LabelsConstraint.NONE:
                self._filter(self.level, f"target.internal_id NOT IN ({labelled(wanted)})")

    def _add_parent(self, level: Level, public_id: str) -> None:
        if level >= self.level:
            raise bad_request(f"A {level.title} cannot be the parent of a {self.level.title}")
        self._filter(level, f"{self._filtered_node(level)}.public_id = {self.parameters(public_id)}")

    def _add_order(self, key: OrderKey) -> None:
        row = f"order{len(self._order)}"
        if key.is_metadata:
            self._join_value(row, METADATA, "target", key.key, outer=True)
        else:
            holder = indexed_level(key.key, self.level)
            if holder is None:
                raise IsengardError(
                    ErrorCode.PARAMETER_OUT_OF_RANGE,
                    f"Cannot order {self.level.route} by {format_tag(key.key)}, which is no main DICOM tag of them",
                )
            self._join_value(row, MAIN_TAGS, self._joined_node(holder), key.key, outer=True)
        self._order.append(f"{row}.value {'DESC' if key.descending else 'ASC'} NULLS LAST")


# -- SQL matching --------------------------------------------------------------------------------

TRUE, FALSE = "1 = 1", "1 = 0"
LIKE_ESCAPE = "ESCAPE '\\'"


def value_condition(
    column: str, constraint: Constraint, sqlite: bool, parameters: Parameters, prefilter: bool = True
) -> tuple[str, bool]:
    """SQL matching `column` against `constraint` (its values added to `parameters`), and whether
    it is exact. With `prefilter`, a case-insensitive non-ASCII value on SQLite selects a superset
    (not exact); without, it may miss values whose non-ASCII letters differ in case. The condition
    is either one comparison or parenthesized.

    Main tag values have one index, on (tag, lower(value)): every condition includes one on
    lower(value) that the index can serve, case-sensitive ones too (a second index on the values
    as they are cost a quarter of the database writes of an ingest)."""
    if constraint.kind is Kind.RANGE:
        return _range_condition(column, constraint.values, sqlite, parameters), True
    if constraint.kind is Kind.WILDCARD:
        return _wildcard_condition(column, constraint.values[0], constraint.case_sensitive, sqlite, prefilter, parameters)
    return _equality_condition(column, constraint.values, constraint.case_sensitive, sqlite, prefilter, parameters)


def _all(conditions: list[str]) -> str:
    return conditions[0] if len(conditions) == 1 else "(" + " AND ".join(conditions) + ")"


def _any(conditions: list[str]) -> str:
    return conditions[0] if len(conditions) == 1 else "(" + " OR ".join(conditions) + ")"


def _range_condition(column: str, bounds: tuple[str, ...], sqlite: bool, parameters: Parameters) -> str:
    lower, upper = bounds
    if not lower and not upper:
        return TRUE
    # Folding does not move a value across a bound made of characters below "A" (dates, times):
    # the same range on lower(value) then selects the same rows, through the index.
    values = [column, f"lower({column})"] if sqlite and all(c < "A" for c in lower + upper) else [column]
    low, high = (parameters(bound) if bound else "" for bound in bounds)
    if lower and upper:
        return _all([f"{value} BETWEEN {low} AND {high}" for value in values])
    return _all([f"{value} >= {low}" if lower else f"{value} <= {high}" for value in values])


def _equality_condition(
    column: str, values: tuple[str, ...], case_sensitive: bool, sqlite: bool, prefilter: bool, parameters: Parameters
) -> tuple[str, bool]:
    # Values whose case matters or cannot differ compare as they are, once their lower-cased
    # form has selected the candidates; the others compare lower-cased.
    plain = [v for v in values if case_sensitive or not _is_cased(v)]
    folded = [v for v in values if v not in plain]
    approximate = [v for v in folded if sqlite and prefilter and not v.isascii()]
    lowered = [v.lower() for v in folded if v not in approximate]
    conditions = []
    if plain:
        exact = f'{column} COLLATE "BINARY"' if sqlite else column  # see below
        database_lower = [_database_lower(v, sqlite) for v in plain]
        conditions.append(_all([_among(f"lower({column})", database_lower, parameters), _among(exact, plain, parameters)]))
    if lowered:
        conditions.append(_among(f"lower({column})", lowered, parameters))
    conditions += [_folded_like(column, v, False, True, parameters) for v in approximate]
    return _any(conditions), not approximate


def _among(expression: str, values: list[str], parameters: Parameters) -> str:
    if len(values) == 1:
        return f"{expression} = {parameters(values[0])}"
    return f"{expression} IN ({', '.join(parameters(value) for value in values)})"


# Above, SQLite compares the value itself through a COLLATE expression: with `value = 'X'`, its
# planner would put 'X' in lower(value), and no longer see that the index serves that term.


def _database_lower(text: str, sqlite: bool) -> str:
    """lower() as the database computes it: SQLite folds ASCII letters only."""
    return text.translate(ASCII_LOWER) if sqlite else text.lower()


ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _wildcard_condition(
    column: str, pattern: str, case_sensitive: bool, sqlite: bool, prefilter: bool, parameters: Parameters
) -> tuple[str, bool]:
    if set(pattern) == {"*"}:
        return TRUE, True  # the tag must only be present, which the join ensures
    if not sqlite:
        if case_sensitive:
            return f"{column} LIKE {parameters(_like_pattern(pattern))} {LIKE_ESCAPE}", True
        return f"lower({column}) LIKE {parameters(_like_pattern(pattern.lower()))} {LIKE_ESCAPE}", True
    if case_sensitive:  # GLOB, unlike LIKE, is case-sensitive on SQLite
        glob = f"{column} GLOB {parameters(pattern.replace('[', '[[]'))}"
        prefix = _database_lower(_literal_prefix(pattern), sqlite)
        return _all([glob, *_prefix_range(f"lower({column})", prefix, parameters)]), True
    approximate = prefilter and not pattern.isascii()
    return _folded_like(column, pattern, True, approximate, parameters), not approximate


def _folded_like(column: str, pattern: str, wildcards: bool, approximate: bool, parameters: Parameters) -> str:
    """SQLite's lower(value) LIKE pattern, with a range on its literal ASCII prefix for the index.
    SQLite folds ASCII letters only: `approximate` lets any other letter match any character."""
    folded = f"lower({column})"
    like_pattern = _like_pattern(pattern.lower(), wildcards, any_non_ascii=approximate)
    prefix = _literal_prefix(pattern.lower()) if wildcards else pattern.lower()
    ascii_prefix = "".join(itertools.takewhile(str.isascii, prefix))
    return _all([f"{folded} LIKE {parameters(like_pattern)} {LIKE_ESCAPE}", *_prefix_range(folded, ascii_prefix, parameters)])


def _is_cased(text: str) -> bool:
    return text.lower() != text.upper()


def _like_pattern(text: str, wildcards: bool = True, any_non_ascii: bool = False) -> str:
    special = {"\\": "\\\\", "%": "\\%", "_": "\\_"}
    if wildcards:
        special |= {"*": "%", "?": "_"}
    return "".join("_" if any_non_ascii and not c.isascii() else special.get(c, c) for c in text)


def _literal_prefix(pattern: str) -> str:
    return "".join(itertools.takewhile(lambda c: c not in "*?", pattern))


def _prefix_range(column: str, prefix: str, parameters: Parameters) -> list[str]:
    """value >= prefix AND value < the next prefix: an index range, as SQLite compares code points."""
    if not prefix:
        return []
    following = ord(prefix[-1]) + 1
    if following > 0x10FFFF:
        return [f"{column} >= {parameters(prefix)}"]
    if 0xD800 <= following <= 0xDFFF:  # surrogates are no characters
        following = 0xE000
    return [f"{column} >= {parameters(prefix)}", f"{column} < {parameters(prefix[:-1] + chr(following))}"]


# -- tags of resources ---------------------------------------------------------------------------


def requested_tags(
    index: IndexTransaction, storage: StorageArea | None, found: list[Resource], tags: list[int]
) -> dict[int, dict[int, str]]:
    """The values of `tags` for resources of one level: computed tags, main tags of the level and of
    its ancestors from the index, any other from the file of one instance (not without `storage`).
    Absent tags are left out."""
    if not found:
        return {}
    level = found[0].level
    ids = [r.internal_id for r in found]
    values = computed_tags(index, level, ids, [t for t in tags if is_computed(t, level)])
    by_holder: dict[Level, list[int]] = {}
    from_files = []
    for tag in tags:
        if is_computed(tag, level):
            continue
        holder = indexed_level(tag, level)
        if holder is None:
            from_files.append(tag)
        else:
            by_holder.setdefault(holder, []).append(tag)
    for holder, holder_tags in by_holder.items():
        ancestors = _ancestor_ids(index, found, holder)
        stored = index.main_tags_of(sorted(set(ancestors.values())))
        for internal_id, ancestor_id in ancestors.items():
            values[internal_id].update({t: stored[ancestor_id][t] for t in holder_tags if t in stored[ancestor_id]})
    if from_files and storage is not None:
        for internal_id, read in file_tags(index, storage, level, ids, from_files).items():
            values[internal_id].update(read)
    return values


def _ancestor_ids(index: IndexTransaction, found: list[Resource], level: Level) -> dict[int, int]:
    """Internal ID of each resource -> that of its ancestor at `level` (or itself)."""
    ancestors = {r.internal_id: r.internal_id for r in found}
    for _ in range(found[0].level - level):
        parents: dict[int, int] = {}
        for chunk in _chunks(sorted(set(ancestors.values()))):
            query = select(resources.c.internal_id, resources.c.parent_id).where(resources.c.internal_id.in_(chunk))
            parents.update(index.connection.execute(query).tuples().all())
        ancestors = {internal_id: parents[ancestor] for internal_id, ancestor in ancestors.items()}
    return ancestors


def file_tags(
    index: IndexTransaction, storage: StorageArea, level: Level, internal_ids: list[int], tags: list[int]
) -> dict[int, dict[int, str]]:
    """Tags read from the DICOM file of the first instance of each resource (its own for instances)."""
    datasets = file_datasets(index, storage, level, internal_ids, tags)
    return {internal_id: _texts(dataset, tags) for internal_id, dataset in datasets.items()}


def file_datasets(
    index: IndexTransaction, storage: StorageArea, level: Level, internal_ids: list[int], tags: list[int]
) -> "FileHeads":
    """The elements `tags` (sequences included) of the DICOM file of the first instance of each
    resource, as pydicom reads them, each file read when its dataset is first asked for."""
    instances = first_instances(index, level, internal_ids)
    instance_ids = list(instances.values())
    files = index.attachments_of(instance_ids, ContentType.DICOM)
    offsets = index.metadata_values(instance_ids, MetadataType.PIXEL_DATA_OFFSET)
    heads = {}
    for internal_id in internal_ids:
        instance = instances.get(internal_id)
        attachment = files.get(instance) if instance is not None else None
        heads[internal_id] = (attachment.info, offsets.get(instance, "")) if attachment else None
    return FileHeads(storage, heads, tags)


class FileHeads(Mapping[int, Dataset]):
    """Resource -> the head of its file (see file_datasets): an empty dataset for a resource
    whose file cannot be read. Files are read outside the index transaction that found them."""

    def __init__(self, storage: StorageArea, heads: dict[int, tuple[FileInfo, str] | None], tags: list[int]):
        self._storage = storage
        self._heads = heads
        self._tags = tags

    def __getitem__(self, internal_id: int) -> Dataset:
        head = self._heads[internal_id]
        return Dataset() if head is None else _read_head(self._storage, head[0], head[1], self._tags)

    def __iter__(self) -> Iterator[int]:
        return iter(self._heads)

    def __len__(self) -> int:
        return len(self._heads)


def first_instances(index: IndexTransaction, level: Level, internal_ids: list[int]) -> dict[int, int]:
    """Internal ID of each resource -> that of its first instance."""
    if level == Level.INSTANCE:
        return {i: i for i in internal_ids}
    found: dict[int, int] = {}
    for chunk in _chunks(internal_ids):
        root, instance, query = descendants_query(level, Level.INSTANCE, chunk)
        rows = index.connection.execute(query.add_columns(func.min(instance.c.internal_id)).group_by(root.c.internal_id))
        found.update(rows.tuples().all())
    return found


def _read_head(storage: StorageArea, info: FileInfo, pixel_data_offset: str, tags: list[int]) -> Dataset:
    """Only the head of the file is read when the pixel data offset is known."""
    try:
        if pixel_data_offset.isdigit():
            data = storage.read_range(info, int(pixel_data_offset))
        else:
            data = storage.read(info)
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=list(tags), force=True)
    except (IsengardError, InvalidDicomError, EOFError, ValueError, KeyError, TypeError) as exc:
        log.warning("Cannot read the tags of the stored file %s: %s", info.uuid, exc)
        return Dataset()


def _texts(dataset: Dataset, tags: list[int]) -> dict[int, str]:
    try:
        return {tag: text for tag in tags if (text := matchable_text(dataset, tag)) is not None}
    except (ValueError, KeyError, TypeError) as exc:  # pydicom decodes values lazily
        log.warning("Cannot read the tags of a stored file: %s", exc)
        return {}


def matchable_text(dataset: Dataset, tag: int) -> str | None:
    """The text of an element (see element_text). A private element read without its VR (implicit
    VR) has one when pydicom's private dictionary knows it, which needs its private creator in
    `dataset` (C-FIND queries carry it, and so the tags read for them)."""
    raw = dataset._dict.get(tag)
    text = element_text(dataset, Tag(tag))
    if text is None and isinstance(raw, RawDataElement) and raw.VR in (None, "UN") and Tag(tag).is_private:
        element = dataset[tag]
        return value_text(element.VR, element.value)
    return text


# -- lookup by identifier ----------------------------------------------------------------------


def lookup_identifier(index: IndexTransaction, identifier: str) -> list[Resource]:
    """Resources whose PatientID, StudyInstanceUID, SeriesInstanceUID or SOPInstanceUID is `identifier`,
    by level. As Orthanc normalizes identifiers, the PatientID compares without case (UIDs have none)."""
    sqlite = index.connection.dialect.name == "sqlite"
    parameters = Parameters(sqlite)
    matches = []
    for level, tag in IDENTIFIER_TAG.items():
        constraint = Constraint(int(tag), Kind.EQUAL, (identifier,), case_sensitive=tag != PATIENT_ID)
        condition, _ = value_condition("tag_value.value", constraint, sqlite, parameters, prefilter=False)
        matches.append(f"(resource.resource_type = {int(level)} AND tag_value.tag = {int(tag)} AND {condition})")
    sql = (
        f"SELECT resource.internal_id, resource.resource_type, resource.public_id, resource.parent_id"
        f" FROM {RESOURCES} AS resource JOIN {MAIN_TAGS} AS tag_value ON tag_value.resource_id = resource.internal_id"
        f" WHERE {' OR '.join(matches)} ORDER BY resource.resource_type, resource.internal_id"
    )
    return [_resource(row) for row in index.rows(sql, parameters.values)]
