"""Summaries of older turns, made in the background after an answer.

When a turn's context left older turns out, the model (``MPCHAT_SUMMARY_MODEL``, default the
chat model; through the same routes, gates and budgets as chats) is asked to fold the
previous summary and the turns after it, up to where the context's hysteresis says
(`mpchat.chat.context.SUMMARY_TARGET`), into a new summary: incremental, so each job reads
only what is new. Later turns send that summary in the system prompt instead of those turns.
A failure only means the next turn tries again; nothing waits on it, least of all an answer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from mpchat.chat.upstream import Upstream
from mpchat.estimate import estimate_tokens
from mpchat.providers.types import Delta, Options
from mpchat.storage import summaries
from mpchat.storage.crypto import Keyring

__all__ = ["Summarizer"]

log = logging.getLogger("mpchat.summarize")

# Each line has a reason (docs/chat.md, "Summaries of older turns").
PROMPT = (
    "你负责压缩一段对话的历史，供助手在后续对话中参考。\n"
    "请把“已有摘要”（如有）和下面新增的对话合并成一份新的摘要，不超过 300 字，使用中文。\n"
    "必须原样保留用户说过的关于自己和问题的事实：姓名、称呼、数字、金额、日期、"
    "订单号和各类编号、地址、型号、偏好，以及双方已经做出的决定和约定。\n"
    "保留仍未解决的问题和助手答应要做的事；删去寒暄、重复和已被更正的内容。\n"
    "按时间顺序，用陈述句写成一段；只输出摘要本身，不要加标题或解释。"
)
SUMMARY_MAX_TOKENS = 600


class Summarizer:
    def __init__(self, *, engine: AsyncEngine, keyring: Keyring, upstream: Upstream,
                 model: str | None = None) -> None:
        self._engine = engine
        self._keyring = keyring
        self._upstream = upstream
        if model is not None and not upstream.serves(model):
            log.warning("no route serves the summary model %s: the chat model summarises",
                        model)
            model = None
        self.model = model  # None: the routes' own model
        self.calls = 0  # summaries asked of the provider (for the benchmark and tests)
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
            key, model = f"summary:{user_id}", self.model
            admission = await self._upstream.admit(key, tokens=tokens, model=model)
            self.calls += 1
            parts = [
                event.text
                async for event in self._upstream.stream(
                    messages, user_key=key, tokens=tokens, admission=admission,
                    max_tokens=SUMMARY_MAX_TOKENS,
                    options=Options(model=model) if model else None,
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
