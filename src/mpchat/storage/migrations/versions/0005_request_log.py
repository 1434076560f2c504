"""request log: the OpenAI-compatible surface's requests, encrypted, when the operator turns it on

Revision ID: 0005
Revises: 0004
"""

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('api_requests',
    sa.Column('id', sa.String(length=48), nullable=False),
    sa.Column('key_id', sa.String(length=32), nullable=False),
    sa.Column('model', sa.String(length=128), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('finish_reason', sa.String(length=40), nullable=True),
    sa.Column('prompt_tokens', sa.Integer(), nullable=False),
    sa.Column('completion_tokens', sa.Integer(), nullable=False),
    sa.Column('record', sa.LargeBinary(), nullable=False),
    sa.Column('record_key', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_requests'))
    )
    with op.batch_alter_table('api_requests', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_requests_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_api_requests_key_id_created_at'), ['key_id', 'created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_api_requests_record_key'), ['record_key'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('api_requests', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_requests_record_key'))
        batch_op.drop_index(batch_op.f('ix_api_requests_key_id_created_at'))
        batch_op.drop_index(batch_op.f('ix_api_requests_created_at'))
    op.drop_table('api_requests')
