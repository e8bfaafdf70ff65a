"""The index schema, one for SQLite and PostgreSQL (SQLAlchemy Core).

Changes to it go through a new Alembic revision in `migrations/versions`. A new database is
created from these tables directly (`Index.migrate`): the migrations must build the same schema,
which `tests/test_index_schema.py` checks on SQLite and PostgreSQL.
"""

from functools import lru_cache

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
)
from sqlalchemy.sql.selectable import Alias

# The Alembic revision that builds this schema (the last one of migrations/versions).
SCHEMA_REVISION = "0003"

metadata = MetaData()

# Integer primary keys: BigInteger on PostgreSQL, INTEGER (the rowid alias) on SQLite.
Id = BigInteger().with_variant(Integer(), "sqlite")
# Tables keyed by (resource, something) are stored in the order of that key on SQLite: without
# a rowid, the key needs no index of its own, which an ingest would write too.
CLUSTERED = {"sqlite_with_rowid": False}

resources = Table(
    "resources",
    metadata,
    Column("internal_id", Id, primary_key=True, autoincrement=True),
    Column("resource_type", Integer, nullable=False),
    Column("public_id", String(64), nullable=False, unique=True),
    Column("parent_id", Id, ForeignKey("resources.internal_id", ondelete="CASCADE"), nullable=True),
    Index("ix_resources_parent", "parent_id"),
    Index("ix_resources_type", "resource_type", "internal_id"),
)

# `tag` is (group << 16) | element. The study level keeps a copy of the patient tags.
main_dicom_tags = Table(
    "main_dicom_tags",
    metadata,
    Column("resource_id", Id, ForeignKey("resources.internal_id", ondelete="CASCADE"), primary_key=True),
    Column("tag", Integer, primary_key=True),
    Column("value", Text, nullable=False),
    **CLUSTERED,
)
# The one index of the values, for all matching (see find.value_condition): case-insensitive
# matching, the default of /tools/find and C-FIND, compares lower(value).
Index("ix_main_dicom_tags_folded", main_dicom_tags.c.tag, func.lower(main_dicom_tags.c.value))

resource_metadata = Table(
    "metadata",
    metadata,
    Column("resource_id", Id, ForeignKey("resources.internal_id", ondelete="CASCADE"), primary_key=True),
    Column("type", Integer, primary_key=True),
    Column("value", Text, nullable=False),
    Column("revision", Integer, nullable=False, default=0),
    **CLUSTERED,
)

attached_files = Table(
    "attached_files",
    metadata,
    Column("resource_id", Id, ForeignKey("resources.internal_id", ondelete="CASCADE"), primary_key=True),
    Column("content_type", Integer, primary_key=True),
    Column("uuid", String(36), nullable=False),
    Column("compressed_size", BigInteger, nullable=False),
    Column("uncompressed_size", BigInteger, nullable=False),
    Column("compression_type", Integer, nullable=False),
    Column("uncompressed_md5", String(32), nullable=False),
    Column("compressed_md5", String(32), nullable=False),
    Column("revision", Integer, nullable=False, default=0),
    **CLUSTERED,
)

labels = Table(
    "labels",
    metadata,
    Column("resource_id", Id, ForeignKey("resources.internal_id", ondelete="CASCADE"), primary_key=True),
    Column("label", String(64), primary_key=True),
    Index("ix_labels_label", "label"),
    **CLUSTERED,
)

changes = Table(
    "changes",
    metadata,
    Column("seq", Id, primary_key=True, autoincrement=True),
    Column("change_type", String(32), nullable=False),
    Column("resource_type", Integer, nullable=False),
    Column("public_id", String(64), nullable=False),
    Column("date", String(16), nullable=False),
)

exported_resources = Table(
    "exported_resources",
    metadata,
    Column("seq", Id, primary_key=True, autoincrement=True),
    Column("resource_type", Integer, nullable=False),
    Column("public_id", String(64), nullable=False),
    Column("remote_modality", Text, nullable=False),
    Column("patient_id", Text, nullable=False),
    Column("study_instance_uid", Text, nullable=False),
    Column("series_instance_uid", Text, nullable=False),
    Column("sop_instance_uid", Text, nullable=False),
    Column("date", String(16), nullable=False),
)

global_properties = Table(
    "global_properties",
    metadata,
    Column("property", Integer, primary_key=True, autoincrement=False),
    Column("value", Text, nullable=False),
)


@lru_cache(maxsize=None)
def alias(table: Table, name: str) -> Alias:
    """A named alias of a table, made once: an alias builds its column collection on first use,
    which costs more than running a typical query."""
    return table.alias(name)
