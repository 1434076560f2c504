"""Key rotation: re-encrypt stored values under the newest key (`mpchat rotate-keys`).

Each encrypted column records its key id, so the rows still under an older key are
found by ``key_id != primary``. They are rewritten in batches, one transaction each:

* resumable: a crash loses at most the batch in flight, and a rewritten row no longer
  matches the selection, so the next run simply continues;
* safe beside a running service: each update is conditional on the row still holding
  the key id *and* ciphertext that were read, so a value changed meanwhile is left alone;
* never fatal on bad data: a value no key decrypts (tampered, moved, or its key already
  removed) is reported and skipped. Keyset paging (``pk > last``) steps over such rows,
  so they cannot make a run loop forever.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Column, Table, and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from mpchat.storage.crypto import (
    Ciphertext,
    DecryptError,
    Keyring,
    message_aad,
    summary_aad,
    title_aad,
)
from mpchat.storage.request_log import request_aad
from mpchat.storage.tables import api_requests, conversations, messages

__all__ = [
    "BatchProgress",
    "RotationReport",
    "Unreadable",
    "count_stale",
    "rotate_keys",
]

DEFAULT_BATCH = 500


@dataclass(frozen=True, slots=True)
class _Target:
    """One encrypted column: where it lives, its key-id column and how its AAD is built
    (from the row's ``id`` and its ``owner``: the user, or the API key)."""

    name: str
    table: Table
    pk: Column[Any]
    blob: Column[Any]
    key: Column[Any]
    owner: Column[Any]
    aad: Callable[[Any], bytes]


def _target(table: Table, column: str, owner: str, aad: Callable[[Any], bytes], *,
            pk: str = "id") -> _Target:
    """The encrypted ``column`` of ``table``: its key id is in ``<column>_key``."""
    return _Target(f"{table.name}.{column}", table, table.c[pk], table.c[column],
                   table.c[f"{column}_key"], table.c[owner], aad)


_TARGETS = (
    _target(messages, "content", "user_id",
            lambda row: message_aad(message_id=row.id, user_id=row.owner), pk="seq"),
    _target(conversations, "title", "user_id",
            lambda row: title_aad(conversation_id=row.id, user_id=row.owner)),
    _target(conversations, "summary", "user_id",
            lambda row: summary_aad(conversation_id=row.id, user_id=row.owner)),
    _target(api_requests, "record", "key_id",
            lambda row: request_aad(request_id=row.id, key_id=row.owner)),
)


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A stored value that no key in the keyring decrypts (it is left as it is)."""

    column: str
    row: str  # the row's primary key, as text
    key_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class BatchProgress:
    """Reported after each committed batch."""

    column: str
    rewritten: int  # in this batch
    skipped: int  # changed by someone else since it was read
    unreadable: int
    total_rewritten: int  # in this column so far, this run


@dataclass(slots=True)
class RotationReport:
    rewritten: int = 0
    skipped: int = 0
    unreadable: list[Unreadable] = field(default_factory=list)


async def count_stale(engine: AsyncEngine, keyring: Keyring) -> dict[str, int]:
    """Per column, how many values are not under the newest key (unreadable ones included)."""
    counts: dict[str, int] = {}
    async with engine.connect() as conn:
        for target in _TARGETS:
            query = select(func.count()).select_from(target.table).where(_stale(target, keyring))
            counts[target.name] = int((await conn.execute(query)).scalar_one())
    return counts


def _stale(target: _Target, keyring: Keyring) -> Any:
    return and_(target.key.is_not(None), target.blob.is_not(None), target.key != keyring.primary)


async def rotate_keys(
    engine: AsyncEngine,
    keyring: Keyring,
    *,
    batch_size: int = DEFAULT_BATCH,
    on_batch: Callable[[BatchProgress], None] | None = None,
) -> RotationReport:
    """Rewrite every readable value not under ``keyring.primary``; see the module doc.

    ``on_batch`` runs after each batch has committed (an exception from it stops the
    run there, like a crash would, with everything before it kept).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    report = RotationReport()
    for target in _TARGETS:
        await _rotate_column(engine, keyring, target, batch_size, report, on_batch)
    return report


async def _rotate_column(
    engine: AsyncEngine,
    keyring: Keyring,
    target: _Target,
    batch_size: int,
    report: RotationReport,
    on_batch: Callable[[BatchProgress], None] | None,
) -> None:
    table = target.table
    after: Any = None
    total = 0
    while True:
        query = select(
            target.pk.label("pk"), table.c.id, target.owner.label("owner"),
            target.blob.label("blob"), target.key.label("key_id"),
        ).where(_stale(target, keyring))
        if after is not None:
            query = query.where(target.pk > after)
        query = query.order_by(target.pk).limit(batch_size)
        rewritten = skipped = unreadable = 0
        async with engine.begin() as conn:
            rows = (await conn.execute(query)).all()
            if not rows:
                return
            for row in rows:
                pk, blob, old_key = row.pk, row.blob, row.key_id
                try:
                    plain = keyring.decrypt(Ciphertext(old_key, blob), target.aad(row))
                except DecryptError as exc:
                    unreadable += 1
                    report.unreadable.append(Unreadable(target.name, str(pk), old_key, str(exc)))
                    continue
                sealed = keyring.encrypt(plain, target.aad(row))
                result = await conn.execute(
                    update(table)
                    .where(target.pk == pk, target.key == old_key, target.blob == blob)
                    .values({target.blob.name: sealed.blob, target.key.name: sealed.key_id})
                )
                if result.rowcount == 1:
                    rewritten += 1
                else:
                    skipped += 1
            after = rows[-1].pk
        total += rewritten
        report.rewritten += rewritten
        report.skipped += skipped
        if on_batch is not None:
            on_batch(BatchProgress(target.name, rewritten, skipped, unreadable, total))
        if len(rows) < batch_size:
            return
