"""index of the lower-cased main DICOM tag values, for case-insensitive finds

Revision ID: 0002
Revises: 0001
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'


def upgrade() -> None:
    op.create_index(
        'ix_main_dicom_tags_folded', 'main_dicom_tags', ['tag', sa.text('lower(value)')], unique=False
    )


def downgrade() -> None:
    op.drop_index('ix_main_dicom_tags_folded', table_name='main_dicom_tags')
