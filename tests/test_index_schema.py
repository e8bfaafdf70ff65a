"""The index schema: migrations build exactly the declared schema, and re-running them is harmless."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from isengard.index import Index, sqlite_url
from isengard.index.schema import SCHEMA_REVISION, metadata


def test_migrations_build_the_declared_schema(tmp_path):
    index = Index(sqlite_url(tmp_path))
    with index.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
        assert differences == []
        assert MigrationContext.configure(connection).get_current_revision() == SCHEMA_REVISION
    index.close()


def test_reopening_an_index_keeps_its_content(tmp_path):
    index = Index(sqlite_url(tmp_path))
    with index.write() as transaction:
        transaction.set_global_property(99, "kept")
    index.close()
    reopened = Index(sqlite_url(tmp_path))
    with reopened.read() as transaction:
        assert transaction.global_property(99) == "kept"
    assert "resources" in inspect(reopened.engine).get_table_names()
    reopened.close()


def test_schema_revision_is_the_head_of_the_migrations():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from isengard.index.index import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_heads() == [SCHEMA_REVISION]


def test_migration_from_the_previous_revision_keeps_the_content(tmp_path):
    """0003 rebuilds tables (without rowid, on SQLite) and drops an index: rows stay as they were."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine

    from isengard.index.index import MIGRATIONS

    url = sqlite_url(tmp_path)
    engine = create_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    rows = {
        "resources": (1, 0, "patient", None),
        "main_dicom_tags": (1, 0x00100020, "ID"),
        "metadata": (1, 7, "value", 2),
        "labels": (1, "label"),
        "attached_files": (1, 1, "uuid", 10, 20, 2, "md5a", "md5b", 3),
    }
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0002")
        for table, row in rows.items():
            connection.exec_driver_sql(f"INSERT INTO {table} VALUES ({', '.join('?' * len(row))})", row)
    engine.dispose()

    index = Index(url)
    with index.engine.connect() as connection:
        for table, row in rows.items():
            assert connection.exec_driver_sql(f"SELECT * FROM {table}").fetchall() == [row]
        schema = dict(connection.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall())
    index.close()
    for table in ("main_dicom_tags", "metadata", "labels", "attached_files"):
        assert schema[table].rstrip().endswith("WITHOUT ROWID")
    assert "ix_main_dicom_tags_value" not in schema
    assert {"ix_main_dicom_tags_folded", "ix_labels_label", "ix_resources_parent", "ix_resources_type"} <= set(schema)


@pytest.mark.parametrize(
    "tag, text, case_sensitive",
    [
        (0x00100020, "ID1", False),  # PatientID, case-insensitive
        (0x00100020, "ID1", True),
        (0x00100010, "DOE^*", False),  # PatientName, wildcard
        (0x00100010, "DOE^*", True),
        (0x00080020, "20200101", False),  # StudyDate, one day
        (0x00080020, "20200101-20201231", False),  # and a range
        (0x0020000D, "1.2.3\\1.2.4", False),  # StudyInstanceUID, a list
    ],
)
def test_matching_main_tags_searches_the_value_index(tmp_path, tag, text, case_sensitive):
    """Every kind of constraint on an indexed tag looks up (tag, lower(value)) rather than
    reading every value of the tag."""
    from isengard.dicom.levels import Level
    from isengard.index.find import FindQuery, _Plan, parse_constraint

    index = Index(sqlite_url(tmp_path))
    find_plan = _Plan(FindQuery(Level.STUDY, [parse_constraint(tag, text, case_sensitive)]), sqlite=True)
    with index.read() as transaction:
        plan = [step[3] for step in transaction.rows("EXPLAIN QUERY PLAN " + find_plan.sql(), find_plan.parameters.values)]
    index.close()
    assert any("USING INDEX ix_main_dicom_tags_folded (tag=? AND <expr>" in step for step in plan), plan
