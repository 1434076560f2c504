"""The schema, as SQLAlchemy Core tables (the migrations in ``migrations/`` create it).

Ordering never relies on timestamps: ``messages.seq`` is an auto-increment key, so two
messages written in the same microsecond still have a strict order, and a
conversation's ``last_seq`` (the seq of its newest message) orders the list and its
cursors.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import JSON, TypeDecorator

__all__ = [
    "api_keys",
    "audit_events",
    "conversations",
    "messages",
    "metadata",
    "payment_orders",
    "quota_accounts",
    "quota_ledger",
    "quota_reservations",
    "sessions",
    "usage_daily",
    "usage_records",
    "users",
    "utc_now",
]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)

# SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid alias).
SeqType = BigInteger().with_variant(Integer(), "sqlite")


Moment = dt.datetime | None


class UtcDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes in and out, on every backend.

    PostgreSQL keeps the zone; SQLite stores the UTC wall time and hands back naive values.
    The one place that knows it, instead of a fix-up after every read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Moment, dialect: Dialect) -> Moment:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return value

    def process_result_value(self, value: Moment, dialect: Dialect) -> Moment:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value


UTC = UtcDateTime()


def utc_now() -> dt.datetime:
    """The time every timestamp column is written with."""
    return dt.datetime.now(dt.UTC)

users = Table(
    "users",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("openid", String(128), nullable=False, unique=True),
    Column("created_at", UTC, nullable=False),
    Column("blocked_at", UTC, nullable=True),  # set by the operator: 403 blocked
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", UTC, nullable=False),
    Column("expires_at", UTC, nullable=False),
    Index(None, "user_id"),
    Index(None, "expires_at"),  # the retention job's purge of expired sessions
)

conversations = Table(
    "conversations",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("title", LargeBinary, nullable=True),
    Column("title_key", String(32), nullable=True),
    Column("summary", LargeBinary, nullable=True),
    Column("summary_key", String(32), nullable=True),
    Column("summary_upto", SeqType, nullable=True),
    Column("message_count", Integer, nullable=False, default=0),
    Column("last_seq", SeqType, nullable=False, default=0),
    Column("created_at", UTC, nullable=False),
    Column("updated_at", UTC, nullable=False),
    Index(None, "user_id", "last_seq"),
)

messages = Table(
    "messages",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("id", String(32), nullable=False, unique=True),
    Column(
        "conversation_id",
        String(32),
        ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("user_id", String(32), nullable=False),
    Column("role", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("content_key", String(32), nullable=False),
    Column("tokens", Integer, nullable=False, default=0),
    Column("prompt_tokens", Integer, nullable=True),
    Column("completion_tokens", Integer, nullable=True),
    Column("meta", JSON, nullable=True),
    Column("created_at", UTC, nullable=False),
    # An answer being produced (status "streaming"): the instance producing it, until when
    # its claim holds (renewed while it lives), and the seq of the last event its stored
    # text covers (for a resumed stream's snapshot).
    Column("owner", String(32), nullable=True),
    Column("lease_until", UTC, nullable=True),
    Column("event_seq", Integer, nullable=True),
    Index(None, "conversation_id", "seq"),
    Index(None, "status", "lease_until"),
    Index(None, "content_key"),
    Index(None, "user_id"),
)

# Content safety decisions (``mpchat.storage.audit``). No foreign key to users: a user's
# deletion must not erase the record of what was refused, and the user is only a keyed hash.
audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("created_at", UTC, nullable=False),
    Column("check", String(16), nullable=False),
    Column("stage", String(16), nullable=False),
    Column("verdict", String(16), nullable=False),
    Column("rule", String(64), nullable=True),
    Column("user_hash", String(64), nullable=False),
    Column("message_id", String(32), nullable=True),
    Column("trace_id", String(64), nullable=True),
    Column("excerpt", Text, nullable=True),
    # Which rule decided: the list entry (file:line) and span; WeChat's verdict and policy.
    Column("detail", JSON, nullable=True),
    Index(None, "created_at"),
    Index(None, "user_hash", "seq"),
)

# Operator-issued API keys (``mpchat.apikeys``). Only the SHA-256 of a secret is kept; the
# prefix is its visible start, for support. ``models`` is a JSON list, or NULL for every model.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("prefix", String(32), nullable=False),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("models", JSON, nullable=True),
    Column("rpm", Integer, nullable=True),
    Column("tpm", Integer, nullable=True),
    Column("quota", BigInteger, nullable=True),
    Column("used_tokens", BigInteger, nullable=False, default=0),
    Column("expires_at", UTC, nullable=True),
    Column("revoked_at", UTC, nullable=True),
    Column("created_at", UTC, nullable=False),
)

# The OpenAI-compatible surface's request log: off unless MPCHAT_OPENAI_LOG_REQUESTS; the
# messages and the answer, one encrypted JSON record a request; purged after
# MPCHAT_OPENAI_LOG_DAYS.
api_requests = Table(
    "api_requests",
    metadata,
    Column("id", String(48), primary_key=True),  # the completion's id
    Column("key_id", String(32), nullable=False),
    Column("model", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("finish_reason", String(40), nullable=True),
    Column("prompt_tokens", Integer, nullable=False),
    Column("completion_tokens", Integer, nullable=False),
    Column("record", LargeBinary, nullable=False),
    Column("record_key", String(32), nullable=False),
    Column("created_at", UTC, nullable=False),
    Index(None, "key_id", "created_at"),
    Index(None, "created_at"),
    Index(None, "record_key"),
)

# Quotas and credits (``mpchat.quota``, docs/quota.md). No foreign keys to users: balances,
# the ledger and orders are financial records that outlive a user's deleted conversations.
# The CHECKs are the last line: whatever a bug or a race did, a balance cannot go below zero.
quota_accounts = Table(
    "quota_accounts",
    metadata,
    Column("user_id", String(32), primary_key=True),
    Column("credits", BigInteger, nullable=False),  # purchased or granted, not reserved
    Column("free_used", BigInteger, nullable=False),  # free units used or reserved this period
    Column("period_start", UTC, nullable=False),  # the period free_used counts in
    Column("updated_at", UTC, nullable=False),
    CheckConstraint("credits >= 0", name="credits_not_negative"),
    CheckConstraint("free_used >= 0", name="free_used_not_negative"),
)

# One per answer (``key``: its message id) from reserve to settle.
quota_reservations = Table(
    "quota_reservations",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("user_id", String(32), nullable=False),
    Column("model", String(128), nullable=False),
    Column("prompt_tokens", Integer, nullable=False),
    Column("max_completion_tokens", Integer, nullable=False),
    Column("free_units", BigInteger, nullable=False),
    Column("credit_units", BigInteger, nullable=False),
    Column("period_start", UTC, nullable=False),
    Column("status", String(16), nullable=False),  # open | settled
    Column("cost", BigInteger, nullable=True),  # units charged in the end
    Column("created_at", UTC, nullable=False),
    Column("settled_at", UTC, nullable=True),
    Index(None, "status", "created_at"),
)

# Append-only: every change of a balance, with the idempotency key that makes it happen once.
quota_ledger = Table(
    "quota_ledger",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("key", String(96), nullable=False, unique=True),
    Column("user_id", String(32), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("amount", BigInteger, nullable=False),  # credits: + granted or returned, - taken
    Column("free_amount", BigInteger, nullable=False),  # free units: + returned, - taken
    Column("balance_after", BigInteger, nullable=False),  # credits after this row
    Column("reason", String(200), nullable=True),
    Column("order_id", String(32), nullable=True),
    Column("message_id", String(64), nullable=True),
    Column("created_at", UTC, nullable=False),
    Index(None, "user_id", "seq"),
    Index(None, "created_at"),
)

# WeChat Pay orders; ``id`` is the out_trade_no WeChat Pay knows them by.
payment_orders = Table(
    "payment_orders",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", String(32), nullable=False),
    Column("plan_id", String(32), nullable=False),
    Column("title", String(64), nullable=False),
    Column("price_fen", BigInteger, nullable=False),
    Column("credits", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),  # pending | paid | closed
    Column("prepay_id", String(128), nullable=True),
    Column("transaction_id", String(64), nullable=True),
    Column("created_at", UTC, nullable=False),
    Column("expires_at", UTC, nullable=False),
    Column("paid_at", UTC, nullable=True),
    Index(None, "user_id", "created_at"),
    Index(None, "paid_at"),
)


# One row per answer (``mpchat.storage.usage``): who (by id), which route, tokens, cost, how it
# ended and its timings (ms); never text. Kept for MPCHAT_USAGE_RETENTION_DAYS.
usage_records = Table(
    "usage_records",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("created_at", UTC, nullable=False),
    Column("user_id", String(32), nullable=False),
    Column("message_id", String(32), nullable=False),
    Column("provider", String(64), nullable=False),
    Column("model", String(128), nullable=False),
    Column("profile", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("error_code", String(32), nullable=True),
    Column("prompt_tokens", Integer, nullable=False),
    Column("completion_tokens", Integer, nullable=False),
    Column("cost", BigInteger, nullable=True),  # quota cost units, when quotas are on
    Column("timings", JSON, nullable=True),
    Index(None, "created_at"),
    Index(None, "user_id", "created_at"),
)

# Usage records rolled up per UTC day and model before the retention task deletes them, so
# the console's daily plots reach back further than the raw rows (``mpchat.storage.usage``).
usage_daily = Table(
    "usage_daily",
    metadata,
    Column("day", UTC, primary_key=True),
    Column("model", String(128), primary_key=True),  # "" for chats refused before an answer
    Column("chats", Integer, nullable=False),
    Column("refused", Integer, nullable=False),
    Column("errors", JSON, nullable=False),  # {code: count}
    Column("prompt_tokens", BigInteger, nullable=False),
    Column("completion_tokens", BigInteger, nullable=False),
    Column("cost", BigInteger, nullable=False),
    Column("p50_ms", JSON, nullable=False),  # {phase: ms or null}
    Column("p95_ms", JSON, nullable=False),
)
