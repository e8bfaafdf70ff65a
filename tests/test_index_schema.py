"""The index schema: migrations build exactly the declared schema, and re-running them is harmless."""

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
