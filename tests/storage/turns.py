"""Writing whole turns through the storage functions the chat path uses (a test helper)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from mpchat.storage import answers
from mpchat.storage import messages as store
from mpchat.storage.crypto import Keyring
from mpchat.storage.transactions import Transactions


async def begin(
    tx: Transactions, keyring: Keyring, *, lease: float = 3600, owner: str = "test",
    **kwargs: Any,
) -> store.Turn:
    """`begin_turn`: the question, and its answer's row streaming under ``owner``."""
    return await store.begin_turn(
        tx, keyring, answer_id=store.new_id(), owner=owner,
        lease_until=datetime.now(UTC) + timedelta(seconds=lease), **kwargs,
    )


async def store_turn(
    engine: AsyncEngine, keyring: Keyring, *, user_id: str, conversation_id: str | None,
    question: str, answer: str, status: str = "complete",
) -> store.Turn:
    """A question and its settled answer, as one chat turn leaves them (test data)."""
    tx = Transactions(engine)
    try:
        turn = await begin(tx, keyring, user_id=user_id, conversation_id=conversation_id,
                           content=question, tokens=10)
        await answers.finish_answer(
            tx, keyring, message_id=turn.answer_id, user_id=user_id,
            conversation_id=turn.conversation_id, content=answer, status=status,
            prompt_tokens=1, completion_tokens=1, meta={}, event_seq=2,
        )
    finally:
        await tx.aclose()
    return turn
