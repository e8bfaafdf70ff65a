"""The index schema: migrations build exactly the declared schema, and re-running them is harmless."""

import subprocess
import sys

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from isengard.index import Index, sqlite_url
from isengard.index.index import run_migrations
from isengard.index.schema import SCHEMA_REVISION, metadata
from postgresql import postgresql_bin, running_postgresql


def test_migrations_build_the_declared_schema(tmp_path):
    engine = create_engine(sqlite_url(tmp_path))
    run_migrations(engine)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
        assert differences == []
        assert MigrationContext.configure(connection).get_current_revision() == SCHEMA_REVISION
    engine.dispose()


def test_a_new_index_is_created_as_the_migrations_build_it(tmp_path):
    """A new database gets the declared schema directly, without Alembic: the same tables, columns,
    keys and indexes (clustered tables included) as the migrations, at the same revision."""
    migrated = create_engine(sqlite_url(tmp_path / "migrated"))
    run_migrations(migrated)
    created = Index(sqlite_url(tmp_path / "created"))
    assert _physical_schema(created.engine) == _physical_schema(migrated)
    created.close()
    migrated.dispose()

    # ...and without loading Alembic (this process has loaded it, a server's does not).
    program = (
        "import sys; from pathlib import Path; from isengard.index import Index, sqlite_url; "
        f"Index(sqlite_url(Path({str(tmp_path / 'alone')!r}))).close(); print('alembic' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True).stdout == "False\n"


@pytest.mark.skipif(postgresql_bin() is None, reason="PostgreSQL is not installed (Debian package postgresql)")
def test_a_new_index_is_created_as_the_migrations_build_it_on_postgresql():
    with running_postgresql() as url:
        engine = create_engine(url)
        run_migrations(engine)
        migrated = _physical_schema(engine)
        with engine.begin() as connection:
            metadata.drop_all(connection)
            connection.exec_driver_sql("DROP TABLE alembic_version")
        created = Index(url)
        assert _physical_schema(created.engine) == migrated
        created.close()
        engine.dispose()


def _physical_schema(engine) -> dict:
    inspector = inspect(engine)
    schema: dict = {}
    with engine.connect() as connection:
        for table in inspector.get_table_names():
            schema[table] = {
                "columns": [(c["name"], str(c["type"]), c["nullable"], c["default"]) for c in inspector.get_columns(table)],
                "primary key": inspector.get_pk_constraint(table)["constrained_columns"],
                "foreign keys": inspector.get_foreign_keys(table),
                "indexes": sorted((i["name"], str(i.get("column_names")), str(i.get("expressions")), i["unique"]) for i in inspector.get_indexes(table)),
                "unique": sorted(str(u["column_names"]) for u in inspector.get_unique_constraints(table)),
            }
            if engine.dialect.name != "sqlite":
                continue
            schema[table] |= {
                # SQLite's reflection skips indexes on expressions: their SQL is compared.
                "index sql": sorted(
                    " ".join(sql.replace('"', "").split())
                    for (sql,) in connection.exec_driver_sql(
                        "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL", (table,)
                    )
                ),
                "without rowid": connection.exec_driver_sql(
                    "SELECT sql FROM sqlite_master WHERE name = ?", (table,)
                ).scalar().rstrip().endswith("WITHOUT ROWID"),
            }
        schema["revision"] = connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    return schema


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
