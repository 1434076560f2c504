"""quota: balances, reservations, the append-only ledger and WeChat Pay orders

Revision ID: 0006
Revises: 0005
"""

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('quota_accounts',
    sa.Column('user_id', sa.String(length=32), nullable=False),
    sa.Column('credits', sa.BigInteger(), nullable=False),
    sa.Column('free_used', sa.BigInteger(), nullable=False),
    sa.Column('period_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('credits >= 0', name=op.f('ck_quota_accounts_credits_not_negative')),
    sa.CheckConstraint('free_used >= 0', name=op.f('ck_quota_accounts_free_used_not_negative')),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_quota_accounts'))
    )
    op.create_table('quota_reservations',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.String(length=32), nullable=False),
    sa.Column('model', sa.String(length=128), nullable=False),
    sa.Column('prompt_tokens', sa.Integer(), nullable=False),
    sa.Column('max_completion_tokens', sa.Integer(), nullable=False),
    sa.Column('free_units', sa.BigInteger(), nullable=False),
    sa.Column('credit_units', sa.BigInteger(), nullable=False),
    sa.Column('period_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('cost', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('settled_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_quota_reservations'))
    )
    op.create_index(op.f('ix_quota_reservations_status_created_at'), 'quota_reservations', ['status', 'created_at'], unique=False)
    op.create_table('quota_ledger',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('key', sa.String(length=96), nullable=False),
    sa.Column('user_id', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('free_amount', sa.BigInteger(), nullable=False),
    sa.Column('balance_after', sa.BigInteger(), nullable=False),
    sa.Column('reason', sa.String(length=200), nullable=True),
    sa.Column('order_id', sa.String(length=32), nullable=True),
    sa.Column('message_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_quota_ledger')),
    sa.UniqueConstraint('key', name=op.f('uq_quota_ledger_key'))
    )
    op.create_index(op.f('ix_quota_ledger_user_id_seq'), 'quota_ledger', ['user_id', 'seq'], unique=False)
    op.create_index(op.f('ix_quota_ledger_created_at'), 'quota_ledger', ['created_at'], unique=False)
    op.create_table('payment_orders',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('user_id', sa.String(length=32), nullable=False),
    sa.Column('plan_id', sa.String(length=32), nullable=False),
    sa.Column('title', sa.String(length=64), nullable=False),
    sa.Column('price_fen', sa.BigInteger(), nullable=False),
    sa.Column('credits', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('prepay_id', sa.String(length=128), nullable=True),
    sa.Column('transaction_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('paid_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payment_orders'))
    )
    op.create_index(op.f('ix_payment_orders_user_id_created_at'), 'payment_orders', ['user_id', 'created_at'], unique=False)
    op.create_index(op.f('ix_payment_orders_paid_at'), 'payment_orders', ['paid_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_payment_orders_paid_at'), table_name='payment_orders')
    op.drop_index(op.f('ix_payment_orders_user_id_created_at'), table_name='payment_orders')
    op.drop_table('payment_orders')
    op.drop_index(op.f('ix_quota_ledger_created_at'), table_name='quota_ledger')
    op.drop_index(op.f('ix_quota_ledger_user_id_seq'), table_name='quota_ledger')
    op.drop_table('quota_ledger')
    op.drop_index(op.f('ix_quota_reservations_status_created_at'), table_name='quota_reservations')
    op.drop_table('quota_reservations')
    op.drop_table('quota_accounts')
