"""streaming answers: the owner's lease and the seq the stored text covers

Revision ID: 0003
Revises: 0002
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('event_seq', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_messages_status_lease_until'), ['status', 'lease_until'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_messages_status_lease_until'))
        batch_op.drop_column('event_seq')
        batch_op.drop_column('lease_until')
        batch_op.drop_column('owner')
