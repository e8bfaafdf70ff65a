"""The index: the DICOM hierarchy, its main tags, metadata, attachments, labels and logs.

`Index.write()` and `Index.read()` open a transaction and hand out an
`IndexTransaction`, the one API through which the rest of Isengard reads and
changes the database. The same code serves SQLite (the default) and PostgreSQL.
"""

import logging
import threading
import time
from functools import lru_cache
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import (
    BindParameter, Column, Connection, MetaData, PrimaryKeyConstraint, String, Table, and_, bindparam, delete, event, func,
    insert, inspect, literal_column, select, update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect, Engine, create_engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.expression import Executable

from ..dicom.levels import Level
from ..errors import ErrorCode, IsengardError, unknown_resource
from ..storage.area import CompressionType, FileInfo
from . import schema
from .schema import SCHEMA_REVISION, metadata
from .enums import ChangeType, MetadataType
from .schema import attached_files, changes, exported_resources, global_properties, labels, main_dicom_tags
from .schema import resource_metadata, resources

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"

# Statements run for each instance stored or each resource shown, built once and run on the
# driver's cursor (see _run).
LOOKUP = select(resources).where(resources.c.public_id == bindparam("public_id"))
RESOURCE = select(resources).where(resources.c.internal_id == bindparam("internal_id"))
CHILDREN = select(resources).where(resources.c.parent_id == bindparam("parent_id")).order_by(resources.c.internal_id)
METADATA = select(resource_metadata.c.type, resource_metadata.c.value, resource_metadata.c.revision).where(
    resource_metadata.c.resource_id == bindparam("resource_id")
)
METADATA_VALUE = select(resource_metadata.c.value).where(
    resource_metadata.c.resource_id == bindparam("resource_id"), resource_metadata.c.type == bindparam("type")
)
ATTACHMENTS = select(attached_files).where(attached_files.c.resource_id == bindparam("resource_id"))
ATTACHMENT = ATTACHMENTS.where(attached_files.c.content_type == bindparam("content_type"))
COUNT = select(func.count()).select_from(resources).where(resources.c.resource_type == bindparam("resource_type"))
LABELS = select(labels.c.label).where(labels.c.resource_id == bindparam("resource_id")).order_by(labels.c.label)
# The four resources of an instance (the ingest path runs these on the driver's cursor, see _run).
LOOKUP_CHAIN = select(resources).where(resources.c.public_id.in_([bindparam(f"id{level}") for level in range(4)]))


def _insert(table: Table, *columns: str):  # type: ignore[no-untyped-def]
    """An INSERT of these columns, with parameters of the same names (compiled once, see _run)."""
    return insert(table).values({column: bindparam(column) for column in columns})


INSERT_RESOURCE = _insert(resources, "resource_type", "public_id", "parent_id").returning(resources.c.internal_id)
INSERT_MAIN_TAGS = _insert(main_dicom_tags, "resource_id", "tag", "value")
INSERT_ATTACHMENT = _insert(attached_files, *(c.name for c in attached_files.columns))
INSERT_CHANGE = _insert(changes, "change_type", "resource_type", "public_id", "date")


@lru_cache(maxsize=None)
def _driver_sql(statement: Executable, dialect: Dialect) -> str:
    return str(statement.compile(dialect=dialect))


# Batched reads select rows of a list of resources with `IN (:i0, :i1, ...)`; lists are padded to
# a power of two, so that each statement compiles to at most ten SQL strings per dialect.
InListStatement = Callable[[list[BindParameter]], Executable]
IN_LIST_CHUNK = 512


@lru_cache(maxsize=None)
def _in_list_sql(make_statement: InListStatement, size: int, dialect: Dialect) -> str:
    return _driver_sql(make_statement([bindparam(f"i{n}") for n in range(size)]), dialect)


def _in_list_parameters(ids: list[int]) -> tuple[int, dict[str, int]]:
    size = 1 << (len(ids) - 1).bit_length()
    padded = ids + [ids[-1]] * (size - len(ids))
    return size, {f"i{n}": value for n, value in enumerate(padded)}


def _main_tags_in(ids: list[BindParameter]) -> Executable:
    columns = main_dicom_tags.c
    return select(columns.resource_id, columns.tag, columns.value).where(columns.resource_id.in_(ids))


def _labels_in(ids: list[BindParameter]) -> Executable:
    return select(labels.c.resource_id, labels.c.label).where(labels.c.resource_id.in_(ids)).order_by(labels.c.label)


def _public_ids_in(ids: list[BindParameter]) -> Executable:
    return select(resources.c.internal_id, resources.c.public_id).where(resources.c.internal_id.in_(ids))


def _children_in(ids: list[BindParameter]) -> Executable:
    columns = resources.c
    return select(columns.parent_id, columns.public_id).where(columns.parent_id.in_(ids)).order_by(columns.internal_id)


def _children_rows_in(ids: list[BindParameter]) -> Executable:
    return select(resources).where(resources.c.parent_id.in_(ids)).order_by(resources.c.internal_id)


def _metadata_in(ids: list[BindParameter]) -> Executable:
    columns = resource_metadata.c
    return select(columns.resource_id, columns.value).where(columns.resource_id.in_(ids), columns.type == bindparam("type"))


def _children_metadata_in(ids: list[BindParameter]) -> Executable:
    has_type = and_(resource_metadata.c.resource_id == resources.c.internal_id, resource_metadata.c.type == bindparam("type"))
    return (
        select(resources.c.parent_id, resource_metadata.c.value)
        .select_from(resources.outerjoin(resource_metadata, has_type))
        .where(resources.c.parent_id.in_(ids))
        .order_by(resources.c.internal_id)
    )


def _attachments_in(ids: list[BindParameter]) -> Executable:
    columns = attached_files.c
    return select(attached_files).where(columns.resource_id.in_(ids), columns.content_type == bindparam("content_type"))


def _upsert_metadata_statement(insert_factory):  # type: ignore[no-untyped-def]
    statement = insert_factory(resource_metadata).values(
        {column: bindparam(column) for column in ("resource_id", "type", "value", "revision")}
    )
    return statement.on_conflict_do_update(
        index_elements=["resource_id", "type"],
        # A literal 1: a bound one would need a value of its own in the driver's parameters.
        set_={"value": statement.excluded.value, "revision": resource_metadata.c.revision + literal_column("1")},
    )


UPSERT_METADATA = {"sqlite": _upsert_metadata_statement(sqlite_insert), "postgresql": _upsert_metadata_statement(pg_insert)}


def now_iso() -> str:
    """The current UTC time as Orthanc writes dates in the index: 20240131T235959 (formatted once
    per second: strftime cost 4% of an ingest, called twice per instance)."""
    global _last_now
    second = int(time.time())
    if _last_now[0] != second:
        _last_now = (second, datetime.fromtimestamp(second, timezone.utc).strftime("%Y%m%dT%H%M%S"))
    return _last_now[1]


_last_now = (0, "")


@dataclass(frozen=True)
class Resource:
    internal_id: int
    level: Level
    public_id: str
    parent_id: int | None


@dataclass(frozen=True)
class StoredAttachment:
    info: FileInfo
    revision: int


@dataclass
class AddedInstance:
    """What `add_instance` did: the four resources, which of them are new, and the
    files of an overwritten instance, to be removed from storage after commit."""

    resources: dict[Level, Resource]
    created: list[Level]
    already_stored: bool = False
    replaced_files: list[str] = field(default_factory=list)


@dataclass
class DeletedResource:
    files: list[str]
    remaining_ancestor: Resource | None
    deleted: list[Resource]


@dataclass(frozen=True)
class Change:
    seq: int
    change_type: str
    level: Level
    public_id: str
    date: str


NEW_RESOURCE_CHANGE = {
    Level.PATIENT: ChangeType.NEW_PATIENT,
    Level.STUDY: ChangeType.NEW_STUDY,
    Level.SERIES: ChangeType.NEW_SERIES,
    Level.INSTANCE: ChangeType.NEW_INSTANCE,
}


class Index:
    def __init__(self, url: str):
        self.engine = _create_engine(url)
        sqlite = self.engine.dialect.name == "sqlite"
        # SQLite allows one writer at a time: the threads of a process queue here, and the
        # processes sharing the index on its lock (BEGIN IMMEDIATE, with a busy timeout)...
        self._write_lock = threading.Lock() if sqlite else None
        self.migrate()
        # ...and the threads share one connection, which spares a pool check-out per transaction.
        self._writer = self.engine.connect() if sqlite else None
        self._checkpointer = _Checkpointer(self.engine) if sqlite else None

    def migrate(self) -> None:
        """Bring the schema to SCHEMA_REVISION. A new database gets the declared schema at once;
        an older one goes through the migrations, and only then is Alembic loaded (slow to import,
        and 11 MiB of a server's memory)."""
        with self.engine.begin() as connection:
            tables = inspect(connection).get_table_names()
            if not tables:
                metadata.create_all(connection)
                ALEMBIC_VERSION.create(connection)
                connection.execute(insert(ALEMBIC_VERSION).values(version_num=SCHEMA_REVISION))
                return
            revision = None
            if ALEMBIC_VERSION.name in tables:
                revision = connection.execute(select(ALEMBIC_VERSION.c.version_num)).scalar()
        if revision != SCHEMA_REVISION:
            run_migrations(self.engine)

    @property
    def conflict_errors(self) -> tuple[type[Exception], ...]:
        """What a write raises on a unique key taken by a concurrent writer since it looked
        (through SQLAlchemy, or the driver's cursor of the ingest path)."""
        return (IntegrityError, self.engine.dialect.dbapi.IntegrityError)  # type: ignore[union-attr]

    @property
    def writer_busy(self) -> bool:
        """Whether a write transaction is under way (a caller that must not block can go elsewhere)."""
        return self._write_lock is not None and self._write_lock.locked()

    @contextmanager
    def write(self) -> Iterator["IndexTransaction"]:
        if self._write_lock is None:
            with self.engine.begin() as connection:
                yield IndexTransaction(connection)
            return
        with self._write_lock, self._writer.begin():  # type: ignore[union-attr]
            # Take the database's write lock now: a transaction that read before writing would
            # fail, rather than wait, if another process wrote in between.
            self._writer.connection.dbapi_connection.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]
            yield IndexTransaction(self._writer)  # type: ignore[arg-type]

    @contextmanager
    def read(self) -> Iterator["IndexTransaction"]:
        with self.engine.connect() as connection:
            yield IndexTransaction(connection)

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        if self._writer is not None:
            self._writer.close()
        self.engine.dispose()


def run_migrations(engine: Engine) -> None:
    """Upgrade the database to the last Alembic revision."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


# Alembic's table of the revision a database is at, as Alembic creates it.
ALEMBIC_VERSION = Table(
    "alembic_version", MetaData(), Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)


class _Checkpointer(threading.Thread):
    """Copies SQLite's write-ahead log into the database in the background: left to SQLite, a
    commit every thousand pages pays for it (tens of milliseconds, with an fsync)."""

    PERIOD = 1.0

    def __init__(self, engine: Engine):
        super().__init__(name="sqlite-checkpointer", daemon=True)
        self.engine = engine
        self._stopped = threading.Event()
        self.start()

    def run(self) -> None:
        while not self._stopped.wait(self.PERIOD):
            try:
                with self.engine.connect() as connection:
                    connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
            except Exception:
                log.exception("Checkpoint of the SQLite index failed")

    def stop(self) -> None:
        self._stopped.set()
        self.join()


def _create_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    # Named parameters, as psycopg's, so that the ingest path hands the same dicts to both drivers.
    engine = create_engine(url, pool_size=8, max_overflow=16, paramstyle="named")

    @event.listens_for(engine, "connect")
    def _configure_sqlite(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        # Transactions are begun by SQLAlchemy; WAL lets readers run beside the writer.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA wal_autocheckpoint=0")  # done by Index's checkpointer thread
        cursor.close()

    return engine


def sqlite_url(directory: Path) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{directory / 'index.db'}"


class IndexTransaction:
    """Reads and writes of the index within one database transaction."""

    def __init__(self, connection: Connection):
        self.connection = connection
        self._upsert_factory = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert

    # -- resources -----------------------------------------------------------------

    def lookup(self, public_id: str, level: Level | None = None) -> Resource | None:
        row = self._run(LOOKUP, {"public_id": public_id}).fetchone()
        if row is None or (level is not None and row[1] != level):
            return None
        return _resource(row)

    def get(self, public_id: str, level: Level | None = None) -> Resource:
        """The resource or an UnknownResource error (HTTP 404)."""
        resource = self.lookup(public_id, level)
        if resource is None:
            raise unknown_resource(public_id)
        return resource

    def resource(self, internal_id: int) -> Resource:
        return _resource(self._run(RESOURCE, {"internal_id": internal_id}).fetchone())

    def parent(self, resource: Resource) -> Resource | None:
        return self.resource(resource.parent_id) if resource.parent_id is not None else None

    def ancestor(self, resource: Resource, level: Level) -> Resource:
        while resource.level > level:
            resource = self.resource(resource.parent_id)  # type: ignore[arg-type]
        return resource

    def children(self, resource: Resource) -> list[Resource]:
        return [_resource(row) for row in self._run(CHILDREN, {"parent_id": resource.internal_id}).fetchall()]

    def children_public_ids(self, internal_ids: list[int]) -> dict[int, list[str]]:
        found: dict[int, list[str]] = {i: [] for i in internal_ids}
        for parent_id, public_id in self._rows_in(_children_in, internal_ids):
            found[parent_id].append(public_id)
        return found

    def descendants(self, resource: Resource, level: Level) -> list[Resource]:
        """All resources of `level` below (or equal to) `resource`, in insertion order."""
        current = [resource]
        while current and current[0].level < level:
            rows = self._rows_in(_children_rows_in, [r.internal_id for r in current])
            current = [_resource(row) for row in sorted(rows)]  # chunks of parents: sorted again by ID
        return current

    def public_ids(self, internal_ids: list[int]) -> dict[int, str]:
        return dict(self._rows_in(_public_ids_in, internal_ids))

    def list_resources(self, level: Level, since: int = 0, limit: int = 0) -> list[Resource]:
        query = (
            select(resources).where(resources.c.resource_type == int(level)).order_by(resources.c.internal_id)
        )
        if since:
            query = query.offset(since)
        if limit:
            query = query.limit(limit)
        return [_resource(row) for row in self.connection.execute(query)]

    def count(self, level: Level) -> int:
        return self._run(COUNT, {"resource_type": int(level)}).fetchone()[0]

    # -- main DICOM tags -------------------------------------------------------------

    def main_tags(self, internal_id: int) -> dict[int, str]:
        return self.main_tags_of([internal_id])[internal_id]

    def main_tags_of(self, internal_ids: list[int]) -> dict[int, dict[int, str]]:
        found: dict[int, dict[int, str]] = {i: {} for i in internal_ids}
        for resource_id, tag, value in self._rows_in(_main_tags_in, internal_ids):
            found[resource_id][tag] = value
        return found

    # -- metadata ----------------------------------------------------------------

    def metadata(self, internal_id: int) -> dict[int, tuple[str, int]]:
        """Metadata type -> (value, revision)."""
        rows = self._run(METADATA, {"resource_id": internal_id}).fetchall()
        return {type_: (value, revision) for type_, value, revision in rows}

    def metadata_value(self, internal_id: int, type_: int) -> str | None:
        row = self._run(METADATA_VALUE, {"resource_id": internal_id, "type": int(type_)}).fetchone()
        return row[0] if row else None

    def metadata_values(self, internal_ids: list[int], type_: int) -> dict[int, str]:
        return dict(self._rows_in(_metadata_in, internal_ids, type=int(type_)))

    def children_metadata_values(self, internal_ids: list[int], type_: int) -> dict[int, list[str | None]]:
        """For each resource, one metadata value per child (None where unset), in insertion order."""
        found: dict[int, list[str | None]] = {i: [] for i in internal_ids}
        for parent_id, value in self._rows_in(_children_metadata_in, internal_ids, type=int(type_)):
            found[parent_id].append(value)
        return found

    def set_metadata(self, internal_id: int, values: dict[int, str]) -> None:
        """Set metadata; an existing value gets its revision incremented."""
        self._upsert_metadata({(internal_id, int(t)): v for t, v in values.items()})

    def _upsert_metadata(self, values: dict[tuple[int, int], str]) -> None:
        """Set (resource, metadata type) -> value in one statement."""
        if values:
            rows = [{"resource_id": r, "type": t, "value": v, "revision": 0} for (r, t), v in values.items()]
            self._run(UPSERT_METADATA[self.connection.dialect.name], rows)

    def delete_metadata(self, internal_id: int, type_: int) -> bool:
        result = self.connection.execute(
            delete(resource_metadata).where(
                and_(resource_metadata.c.resource_id == internal_id, resource_metadata.c.type == int(type_))
            )
        )
        return result.rowcount > 0

    # -- attachments -----------------------------------------------------------------

    def attachments(self, internal_id: int) -> dict[int, StoredAttachment]:
        rows = self._run(ATTACHMENTS, {"resource_id": internal_id}).fetchall()
        return {attachment.info.content_type: attachment for attachment in map(_attachment_of_row, rows)}

    def attachment(self, internal_id: int, content_type: int) -> StoredAttachment | None:
        row = self._run(ATTACHMENT, {"resource_id": internal_id, "content_type": int(content_type)}).fetchone()
        return _attachment_of_row(row) if row else None

    def attachments_of(self, internal_ids: list[int], content_type: int) -> dict[int, StoredAttachment]:
        """The attachment of `content_type` of each resource that has one."""
        rows = self._rows_in(_attachments_in, internal_ids, content_type=int(content_type))
        return {row[0]: _attachment_of_row(row) for row in rows}

    def set_attachment(self, internal_id: int, info: FileInfo) -> str | None:
        """Record an attachment; returns the UUID of the file it replaces, if any."""
        previous = self.attachment(internal_id, info.content_type)
        row = _attachment_row(internal_id, info)
        if previous is None:
            self.connection.execute(INSERT_ATTACHMENT, row)
            return None
        values = {k: v for k, v in row.items() if k not in ("resource_id", "content_type", "revision")}
        self.connection.execute(
            update(attached_files)
            .where(
                and_(attached_files.c.resource_id == internal_id, attached_files.c.content_type == info.content_type)
            )
            .values(revision=attached_files.c.revision + 1, **values)
        )
        return previous.info.uuid

    def delete_attachment(self, internal_id: int, content_type: int) -> str | None:
        """Forget an attachment; returns the UUID of its file, to remove after commit."""
        previous = self.attachment(internal_id, content_type)
        if previous is None:
            return None
        self.connection.execute(
            delete(attached_files).where(
                and_(attached_files.c.resource_id == internal_id, attached_files.c.content_type == int(content_type))
            )
        )
        return previous.info.uuid

    # -- labels ------------------------------------------------------------------

    def labels(self, internal_id: int) -> list[str]:
        return [label for (label,) in self._run(LABELS, {"resource_id": internal_id}).fetchall()]

    def labels_of(self, internal_ids: list[int]) -> dict[int, list[str]]:
        found: dict[int, list[str]] = {i: [] for i in internal_ids}
        for resource_id, label in self._rows_in(_labels_in, internal_ids):
            found[resource_id].append(label)
        return found

    def add_label(self, internal_id: int, label: str) -> None:
        statement = self._upsert_factory(labels).on_conflict_do_nothing()
        self.connection.execute(statement, {"resource_id": internal_id, "label": label})

    def remove_label(self, internal_id: int, label: str) -> None:
        self.connection.execute(delete(labels).where(and_(labels.c.resource_id == internal_id, labels.c.label == label)))

    def all_labels(self) -> list[str]:
        return list(self.connection.execute(select(labels.c.label).distinct().order_by(labels.c.label)).scalars())

    # -- instances -----------------------------------------------------------------

    def add_instance(
        self,
        public_ids: dict[Level, str],
        main_tags: dict[Level, dict[int, str]],
        files: list[FileInfo],
        instance_metadata: dict[int, str],
        resource_metadata_values: dict[Level, dict[int, str]],
        overwrite: bool,
    ) -> AddedInstance:
        """Index one instance and create its missing ancestors, in the caller's transaction."""
        found = self._lookup_chain(public_ids)
        existing = found.get(public_ids[Level.INSTANCE])
        replaced: list[str] = []
        if existing is not None:
            if not overwrite:
                chain = {Level(r.level): r for r in found.values()}
                return AddedInstance(resources=chain, created=[], already_stored=True)
            replaced = [a.info.uuid for a in self.attachments(existing.internal_id).values()]
            self.connection.execute(delete(resources).where(resources.c.internal_id == existing.internal_id))
            del found[existing.public_id]

        date = now_iso()
        chain: dict[Level, Resource] = {}
        created: list[Level] = []
        parent_id = None
        for level in Level:
            resource = found.get(public_ids[level])
            if resource is None:
                resource = self._create_resource(level, public_ids[level], parent_id)
                created.append(level)
            chain[level] = resource
            parent_id = resource.internal_id

        instance_id = chain[Level.INSTANCE].internal_id
        tag_rows = [
            {"resource_id": chain[level].internal_id, "tag": int(tag), "value": value}
            for level in created
            for tag, value in main_tags[level].items()
        ]
        if tag_rows:
            self._run(INSERT_MAIN_TAGS, tag_rows)
        metadata = {(chain[level].internal_id, int(t)): v for level in created for t, v in resource_metadata_values.get(level, {}).items()}
        metadata.update({(instance_id, int(t)): v for t, v in instance_metadata.items()})
        # Instances have no LastUpdate: it tells when a patient, study or series last received one.
        metadata.update({(chain[level].internal_id, int(MetadataType.LAST_UPDATE)): date for level in Level if level != Level.INSTANCE})
        self._upsert_metadata(metadata)
        if files:
            self._run(INSERT_ATTACHMENT, [_attachment_row(instance_id, info) for info in files])

        logged = [Level.INSTANCE] + [level for level in (Level.SERIES, Level.STUDY, Level.PATIENT) if level in created]
        self._run(
            INSERT_CHANGE,
            [
                {"change_type": NEW_RESOURCE_CHANGE[level].value, "resource_type": int(level), "public_id": public_ids[level], "date": date}
                for level in logged
            ],
        )
        return AddedInstance(resources=chain, created=created, replaced_files=replaced)

    def replace_main_tags(self, internal_id: int, tags: dict[int, str]) -> None:
        """The main tags of a resource, read again from its files (/reconstruct)."""
        self.connection.execute(delete(main_dicom_tags).where(main_dicom_tags.c.resource_id == internal_id))
        if tags:
            self._run(INSERT_MAIN_TAGS, [{"resource_id": internal_id, "tag": int(tag), "value": value} for tag, value in tags.items()])

    def _lookup_chain(self, public_ids: dict[Level, str]) -> dict[str, Resource]:
        rows = self._run(LOOKUP_CHAIN, {f"id{level}": public_id for level, public_id in public_ids.items()})
        return {public_id: Resource(i, Level(t), public_id, parent) for i, t, public_id, parent in rows.fetchall()}

    def _create_resource(self, level: Level, public_id: str, parent_id: int | None) -> Resource:
        values = {"resource_type": int(level), "public_id": public_id, "parent_id": parent_id}
        internal_id = self._run(INSERT_RESOURCE, values).fetchone()[0]
        return Resource(internal_id, level, public_id, parent_id)

    def _run(self, statement: Executable, parameters: dict | list[dict]):  # type: ignore[no-untyped-def]
        """Execute a statement of the ingest path on the driver's cursor, in this transaction:
        its SQL is compiled once per dialect, and SQLAlchemy's per-call work (about a third
        of the cost of indexing an instance) is spared."""
        return self._run_sql(_driver_sql(statement, self.connection.dialect), parameters)

    def _run_sql(self, sql: str, parameters: dict | list[dict]):  # type: ignore[no-untyped-def]
        cursor = self.connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        if isinstance(parameters, list):
            cursor.executemany(sql, parameters)
        else:
            cursor.execute(sql, parameters)
        return cursor

    def rows(self, sql: str, parameters: dict[str, object]) -> list[tuple]:
        """The rows of a query written for the database's driver (named parameters in its style)."""
        return self._run_sql(sql, parameters).fetchall()

    def _rows_in(self, make_statement: InListStatement, ids: list[int], **parameters: int) -> list[tuple]:
        """The rows of a batched read of these resources, on the driver's cursor (SQLAlchemy's
        per-call work costs several times the query itself)."""
        rows: list[tuple] = []
        for chunk in _chunks(ids, IN_LIST_CHUNK):
            size, chunk_parameters = _in_list_parameters(chunk)
            sql = _in_list_sql(make_statement, size, self.connection.dialect)
            rows += self.rows(sql, {**chunk_parameters, **parameters})
        return rows

    # -- deletion ------------------------------------------------------------------

    def delete(self, resource: Resource) -> DeletedResource:
        """Delete a resource, its descendants, and the ancestors it leaves empty."""
        deleted = [r for level in Level if level >= resource.level for r in self.descendants(resource, level)]
        files = self._attachment_uuids([r.internal_id for r in deleted])
        self.connection.execute(delete(resources).where(resources.c.internal_id == resource.internal_id))

        remaining = None
        parent = self.parent(resource)
        while parent is not None:
            if self.children(parent):
                remaining = parent
                break
            files += self._attachment_uuids([parent.internal_id])
            deleted.append(parent)
            self.connection.execute(delete(resources).where(resources.c.internal_id == parent.internal_id))
            parent = self.parent(parent)

        date = now_iso()
        for gone in deleted:
            self.log_change(ChangeType.DELETED, gone.level, gone.public_id, date)
        return DeletedResource(files=files, remaining_ancestor=remaining, deleted=deleted)

    def _attachment_uuids(self, internal_ids: list[int]) -> list[str]:
        uuids: list[str] = []
        for chunk in _chunks(internal_ids):
            rows = self.connection.execute(select(attached_files.c.uuid).where(attached_files.c.resource_id.in_(chunk)))
            uuids += rows.scalars().all()
        return uuids

    # -- changes and exports ---------------------------------------------------------

    def log_change(self, change_type: ChangeType, level: Level, public_id: str, date: str | None = None) -> None:
        self.connection.execute(
            insert(changes).values(
                change_type=change_type.value, resource_type=int(level), public_id=public_id, date=date or now_iso()
            )
        )

    def changes(self, since: int, limit: int) -> tuple[list[Change], bool]:
        """Changes after `since`, at most `limit`; the flag tells whether the log is exhausted."""
        rows = self.connection.execute(
            select(changes).where(changes.c.seq > since).order_by(changes.c.seq).limit(limit + 1)
        ).all()
        return [_change(row) for row in rows[:limit]], len(rows) <= limit

    def last_change(self) -> Change | None:
        row = self.connection.execute(select(changes).order_by(changes.c.seq.desc()).limit(1)).first()
        return _change(row) if row else None

    def last_change_seq(self) -> int:
        return self.connection.execute(select(func.coalesce(func.max(changes.c.seq), 0))).scalar_one()

    def clear_changes(self) -> None:
        self.connection.execute(delete(changes))

    def log_export(self, level: Level, public_id: str, remote_modality: str, identifiers: dict[str, str]) -> None:
        self.connection.execute(
            insert(exported_resources).values(
                resource_type=int(level),
                public_id=public_id,
                remote_modality=remote_modality,
                patient_id=identifiers.get("PatientID", ""),
                study_instance_uid=identifiers.get("StudyInstanceUID", ""),
                series_instance_uid=identifiers.get("SeriesInstanceUID", ""),
                sop_instance_uid=identifiers.get("SOPInstanceUID", ""),
                date=now_iso(),
            )
        )

    def exports(self, since: int, limit: int) -> tuple[list[dict], bool]:
        rows = self.connection.execute(
            select(exported_resources)
            .where(exported_resources.c.seq > since)
            .order_by(exported_resources.c.seq)
            .limit(limit + 1)
        ).all()
        return [dict(row._mapping) for row in rows[:limit]], len(rows) <= limit

    def last_export_seq(self) -> int:
        return self.connection.execute(select(func.coalesce(func.max(exported_resources.c.seq), 0))).scalar_one()

    def clear_exports(self) -> None:
        self.connection.execute(delete(exported_resources))

    # -- global properties -------------------------------------------------------------

    def global_property(self, key: int) -> str | None:
        row = self.connection.execute(
            select(global_properties.c.value).where(global_properties.c.property == int(key))
        ).first()
        return row[0] if row else None

    def set_global_property(self, key: int, value: str) -> None:
        statement = self._upsert_factory(global_properties)
        statement = statement.on_conflict_do_update(index_elements=["property"], set_={"value": statement.excluded.value})
        self.connection.execute(statement, {"property": int(key), "value": value})

    # -- statistics ----------------------------------------------------------------

    def sizes(self, internal_ids: list[int] | None = None, content_type: int | None = None) -> tuple[int, int]:
        """(compressed, uncompressed) sizes of the attachments of the given resources (all if None)."""
        query = select(
            func.coalesce(func.sum(attached_files.c.compressed_size), 0),
            func.coalesce(func.sum(attached_files.c.uncompressed_size), 0),
        )
        if content_type is not None:
            query = query.where(attached_files.c.content_type == int(content_type))
        queries = [query] if internal_ids is None else [
            query.where(attached_files.c.resource_id.in_(chunk)) for chunk in _chunks(internal_ids)
        ]
        compressed = uncompressed = 0
        for chunk_query in queries:
            c, u = self.connection.execute(chunk_query).one()
            compressed += int(c)  # PostgreSQL sums big integers into decimals
            uncompressed += int(u)
        return compressed, uncompressed


def _attachment_row(internal_id: int, info: FileInfo) -> dict:
    return {
        "resource_id": internal_id,
        "content_type": info.content_type,
        "uuid": info.uuid,
        "compressed_size": info.compressed_size,
        "uncompressed_size": info.uncompressed_size,
        "compression_type": int(info.compression),
        "uncompressed_md5": info.uncompressed_md5,
        "compressed_md5": info.compressed_md5,
        "revision": 0,
    }


def _chunks(ids: list[int], size: int = 500) -> Iterator[list[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def _resource(row: Sequence) -> Resource:
    """A resource of a row of the resources table (its columns in order)."""
    internal_id, resource_type, public_id, parent_id = row
    return Resource(internal_id, Level(resource_type), public_id, parent_id)


ATTACHMENT_COLUMNS = tuple(column.name for column in attached_files.columns)


def _attachment_of_row(row: Sequence) -> StoredAttachment:
    """An attachment of a row of the attachments table (its columns in order)."""
    values = dict(zip(ATTACHMENT_COLUMNS, row))
    info = FileInfo(
        uuid=values["uuid"],
        content_type=values["content_type"],
        uncompressed_size=values["uncompressed_size"],
        uncompressed_md5=values["uncompressed_md5"],
        compressed_size=values["compressed_size"],
        compressed_md5=values["compressed_md5"],
        compression=CompressionType(values["compression_type"]),
    )
    return StoredAttachment(info=info, revision=values["revision"])


def _change(row) -> Change:  # type: ignore[no-untyped-def]
    return Change(row.seq, row.change_type, Level(row.resource_type), row.public_id, row.date)


def revision_conflict(details: str) -> IsengardError:
    return IsengardError(ErrorCode.REVISION, details)


__all__ = ["Index", "IndexTransaction", "Resource", "schema", "sqlite_url"]
