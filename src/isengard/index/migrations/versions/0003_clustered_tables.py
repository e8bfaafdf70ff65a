"""one index of the main DICOM tag values (on their lower-cased form); on SQLite, the tables
keyed by resource are stored without rowid

Revision ID: 0003
Revises: 0002
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'

CLUSTERED_TABLES = ('main_dicom_tags', 'metadata', 'attached_files', 'labels')


def upgrade() -> None:
    op.drop_index('ix_main_dicom_tags_value', table_name='main_dicom_tags')
    if op.get_bind().dialect.name != 'sqlite':
        return
    # Rebuilt tables keep the indexes SQLAlchemy can reflect; not the one on an expression.
    op.drop_index('ix_main_dicom_tags_folded', table_name='main_dicom_tags')
    for table in CLUSTERED_TABLES:
        with op.batch_alter_table(table, recreate='always', table_kwargs={'sqlite_with_rowid': False}):
            pass
    op.create_index('ix_main_dicom_tags_folded', 'main_dicom_tags', ['tag', sa.text('lower(value)')], unique=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        op.drop_index('ix_main_dicom_tags_folded', table_name='main_dicom_tags')
        for table in CLUSTERED_TABLES:
            with op.batch_alter_table(table, recreate='always'):
                pass
        op.create_index('ix_main_dicom_tags_folded', 'main_dicom_tags', ['tag', sa.text('lower(value)')], unique=False)
    op.create_index('ix_main_dicom_tags_value', 'main_dicom_tags', ['tag', 'value'], unique=False)
