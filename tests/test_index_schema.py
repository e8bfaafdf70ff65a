"""The index schema: migrations build exactly the declared schema, and re-running them is harmless."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from isengard.index import Index, sqlite_url
from isengard.index.schema import metadata


def test_migrations_build_the_declared_schema(tmp_path):
    index = Index(sqlite_url(tmp_path))
    with index.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
        assert differences == []
        assert MigrationContext.configure(connection).get_current_revision() is not None
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
