"""the operator's console: users.blocked_at, usage records (one row per answer, no text) and
their daily roll-up

Revision ID: 0008
Revises: 0007
"""

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('blocked_at', sa.DateTime(timezone=True), nullable=True))
    seq = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
    op.create_table(
        'usage_records',
        sa.Column('seq', seq, autoincrement=True, nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('user_id', sa.String(length=32), nullable=False),
        sa.Column('message_id', sa.String(length=32), nullable=False),
        sa.Column('provider', sa.String(length=64), nullable=False),
        sa.Column('model', sa.String(length=128), nullable=False),
        sa.Column('profile', sa.String(length=64), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('error_code', sa.String(length=32), nullable=True),
        sa.Column('prompt_tokens', sa.Integer(), nullable=False),
        sa.Column('completion_tokens', sa.Integer(), nullable=False),
        sa.Column('cost', sa.BigInteger(), nullable=True),
        sa.Column('timings', sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint('seq', name=op.f('pk_usage_records')),
    )
    with op.batch_alter_table('usage_records', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_usage_records_created_at'), ['created_at'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_usage_records_user_id_created_at'),
                              ['user_id', 'created_at'], unique=False)


    op.create_table(
        'usage_daily',
        sa.Column('day', sa.DateTime(timezone=True), nullable=False),
        sa.Column('model', sa.String(length=128), nullable=False),
        sa.Column('chats', sa.Integer(), nullable=False),
        sa.Column('refused', sa.Integer(), nullable=False),
        sa.Column('errors', sa.JSON(), nullable=False),
        sa.Column('prompt_tokens', sa.BigInteger(), nullable=False),
        sa.Column('completion_tokens', sa.BigInteger(), nullable=False),
        sa.Column('cost', sa.BigInteger(), nullable=False),
        sa.Column('p50_ms', sa.JSON(), nullable=False),
        sa.Column('p95_ms', sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint('day', 'model', name=op.f('pk_usage_daily')),
    )


def downgrade() -> None:
    op.drop_table('usage_daily')
    op.drop_table('usage_records')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('blocked_at')
