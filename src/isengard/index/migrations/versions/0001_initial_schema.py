"""initial schema

Revision ID: 0001
Revises: 
"""

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None


def upgrade() -> None:
    op.create_table('changes',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('change_type', sa.String(length=32), nullable=False),
    sa.Column('resource_type', sa.Integer(), nullable=False),
    sa.Column('public_id', sa.String(length=64), nullable=False),
    sa.Column('date', sa.String(length=16), nullable=False),
    sa.PrimaryKeyConstraint('seq')
    )
    op.create_table('exported_resources',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('resource_type', sa.Integer(), nullable=False),
    sa.Column('public_id', sa.String(length=64), nullable=False),
    sa.Column('remote_modality', sa.Text(), nullable=False),
    sa.Column('patient_id', sa.Text(), nullable=False),
    sa.Column('study_instance_uid', sa.Text(), nullable=False),
    sa.Column('series_instance_uid', sa.Text(), nullable=False),
    sa.Column('sop_instance_uid', sa.Text(), nullable=False),
    sa.Column('date', sa.String(length=16), nullable=False),
    sa.PrimaryKeyConstraint('seq')
    )
    op.create_table('global_properties',
    sa.Column('property', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('property')
    )
    op.create_table('resources',
    sa.Column('internal_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('resource_type', sa.Integer(), nullable=False),
    sa.Column('public_id', sa.String(length=64), nullable=False),
    sa.Column('parent_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.ForeignKeyConstraint(['parent_id'], ['resources.internal_id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('internal_id'),
    sa.UniqueConstraint('public_id')
    )
    with op.batch_alter_table('resources', schema=None) as batch_op:
        batch_op.create_index('ix_resources_parent', ['parent_id'], unique=False)
        batch_op.create_index('ix_resources_type', ['resource_type', 'internal_id'], unique=False)

    op.create_table('attached_files',
    sa.Column('resource_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('content_type', sa.Integer(), nullable=False),
    sa.Column('uuid', sa.String(length=36), nullable=False),
    sa.Column('compressed_size', sa.BigInteger(), nullable=False),
    sa.Column('uncompressed_size', sa.BigInteger(), nullable=False),
    sa.Column('compression_type', sa.Integer(), nullable=False),
    sa.Column('uncompressed_md5', sa.String(length=32), nullable=False),
    sa.Column('compressed_md5', sa.String(length=32), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['resource_id'], ['resources.internal_id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('resource_id', 'content_type')
    )
    op.create_table('labels',
    sa.Column('resource_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('label', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['resource_id'], ['resources.internal_id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('resource_id', 'label')
    )
    with op.batch_alter_table('labels', schema=None) as batch_op:
        batch_op.create_index('ix_labels_label', ['label'], unique=False)

    op.create_table('main_dicom_tags',
    sa.Column('resource_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('tag', sa.Integer(), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['resource_id'], ['resources.internal_id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('resource_id', 'tag')
    )
    with op.batch_alter_table('main_dicom_tags', schema=None) as batch_op:
        batch_op.create_index('ix_main_dicom_tags_value', ['tag', 'value'], unique=False)

    op.create_table('metadata',
    sa.Column('resource_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('type', sa.Integer(), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['resource_id'], ['resources.internal_id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('resource_id', 'type')
    )


def downgrade() -> None:
    op.drop_table('metadata')
    with op.batch_alter_table('main_dicom_tags', schema=None) as batch_op:
        batch_op.drop_index('ix_main_dicom_tags_value')

    op.drop_table('main_dicom_tags')
    with op.batch_alter_table('labels', schema=None) as batch_op:
        batch_op.drop_index('ix_labels_label')

    op.drop_table('labels')
    op.drop_table('attached_files')
    with op.batch_alter_table('resources', schema=None) as batch_op:
        batch_op.drop_index('ix_resources_type')
        batch_op.drop_index('ix_resources_parent')

    op.drop_table('resources')
    op.drop_table('global_properties')
    op.drop_table('exported_resources')
    op.drop_table('changes')
