"""Summaries of older turns, made in the background after an answer.

When a turn's context left older turns out, the model is asked (through the same routes,
gates and budgets as chats) to fold them, with any earlier summary, into a short summary.
Later turns then send that summary in the system prompt instead of losing those turns.
A failure only means the next turn tries again; nothing waits on it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from mpchat.chat.upstream import Upstream
from mpchat.estimate import estimate_tokens
from mpchat.providers.types import Delta
from mpchat.storage import summaries
from mpchat.storage.crypto import Keyring

__all__ = ["Summarizer"]

log = logging.getLogger("mpchat.summarize")

PROMPT = (
    "请把下面这段对话（以及已有的摘要）压缩成一段不超过 300 字的中文摘要，"
    "保留用户的身份信息、偏好、已确定的事实和未解决的问题，只输出摘要本身。"
)


class Summarizer:
    def __init__(self, *, engine: AsyncEngine, keyring: Keyring, upstream: Upstream) -> None:
        self._engine = engine
        self._keyring = keyring
        self._upstream = upstream
        self._running: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    def schedule(self, *, conversation_id: str, user_id: str, before: int) -> None:
        """Summarise the turns before seq ``before``; at most one job per conversation."""
        if conversation_id in self._running:
            return
        self._running.add(conversation_id)
        task = asyncio.create_task(self._run(conversation_id, user_id, before))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_idle(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _run(self, conversation_id: str, user_id: str, before: int) -> None:
        try:
            old, turns, upto = await summaries.summary_source(
                self._engine, self._keyring, conversation_id=conversation_id, user_id=user_id,
                before=before,
            )
            if not turns:
                return
            transcript = "\n".join(f"{t.role}: {t.content}" for t in turns)
            if old:
                transcript = f"已有摘要：{old}\n\n{transcript}"
            messages = [{"role": "system", "content": PROMPT},
                        {"role": "user", "content": transcript}]
            tokens = sum(estimate_tokens(m["content"]) for m in messages)
            admission = await self._upstream.admit(f"summary:{user_id}", tokens=tokens)
            parts = [
                event.text
                async for event in self._upstream.stream(
                    messages, user_key=f"summary:{user_id}", tokens=tokens,
                    admission=admission, max_tokens=600,
                )
                if isinstance(event, Delta)
            ]
            text = "".join(parts).strip()
            if text:
                await summaries.save_summary(
                    self._engine, self._keyring, conversation_id=conversation_id,
                    user_id=user_id, text=text, upto=upto,
                )
        except Exception as exc:  # a background nicety: log and let the next turn retry
            log.warning("summary of %s failed: %s", conversation_id, type(exc).__name__)
        finally:
            self._running.discard(conversation_id)
