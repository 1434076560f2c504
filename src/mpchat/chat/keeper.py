"""Where an ended answer goes: the `Keeper` of its producer.

The mini program's chat keeps it in the conversation (`ConversationKeeper`: the answer's
row, written at ``start`` with status ``streaming``, is settled); the stateless
OpenAI-compatible surface keeps nothing but what the key used
(`mpchat.chat.completions.UsageKeeper`).
"""

from __future__ import annotations

from typing import Any, Protocol

from mpchat.chat.answer import Answer
from mpchat.storage import answers as stored
from mpchat.storage.crypto import Keyring
from mpchat.storage.transactions import Transactions

__all__ = ["ConversationKeeper", "Keeper"]


class Keeper(Protocol):
    """Where an ended answer goes; called once, in the producer's shielded settling."""

    async def keep(self, answer: Answer, *, content: str, meta: dict[str, Any],
                   event_seq: int) -> bool:
        """Keep the answer (``answer.status`` and ``usage`` are set); False when it has
        nowhere to go any more (its conversation was deleted meanwhile)."""
        ...

    async def drop(self, answer: Answer) -> None:
        """Nothing was said: there is no answer (its question stays ``unanswered``)."""
        ...


class ConversationKeeper:
    """The conversation's storage: the answer's row, written at ``start``, is settled."""

    def __init__(self, transactions: Transactions, keyring: Keyring) -> None:
        self._tx = transactions
        self._keyring = keyring

    async def keep(self, answer: Answer, *, content: str, meta: dict[str, Any],
                   event_seq: int) -> bool:
        return await stored.finish_answer(
            self._tx, self._keyring, message_id=answer.message_id,
            user_id=answer.user_id, conversation_id=answer.conversation_id, content=content,
            status=answer.status, prompt_tokens=answer.usage["prompt_tokens"],
            completion_tokens=answer.usage["completion_tokens"], meta=meta,
            event_seq=event_seq,
        )

    async def drop(self, answer: Answer) -> None:
        await stored.drop_answer(self._tx, message_id=answer.message_id,
                                 question_id=answer.question_id,
                                 conversation_id=answer.conversation_id)
