"""The built-in demo model: lets `make run` work with no provider configured.

Its answers say plainly that they come from a demo, so nobody mistakes them for a model.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence

from mpchat.providers.types import Delta, Finish, Message, Options, StreamEvent, Usage

__all__ = ["DEMO_NOTICE", "DemoModel"]

DEMO_NOTICE = "【演示模型】"


class DemoModel:
    name = "demo"
    model = "mpchat-demo"
    models: tuple[str, ...] = ("mpchat-demo",)
    tools = False

    def __init__(self, *, chunk_delay: float = 0.03) -> None:
        self._delay = chunk_delay

    async def aclose(self) -> None:
        pass

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int | None = None,
        options: Options | None = None,
    ) -> AsyncGenerator[StreamEvent]:
        last = messages[-1].get("content") if messages else ""
        question = last if isinstance(last, str) else ""
        turns = sum(1 for m in messages if m.get("role") == "user")
        answer = (
            f"{DEMO_NOTICE}这是 mpchat 内置的演示模型，未连接真实的大模型。"
            f"你说的是：“{question[:200]}”。这是本会话的第 {turns} 个问题。"
            "配置 MPCHAT_UPSTREAM_BASE_URL 等变量后即可接入真实模型。"
        )
        for start in range(0, len(answer), 8):
            if self._delay:
                await asyncio.sleep(self._delay)
            yield Delta(answer[start : start + 8])
        prompt = sum(len(c) for m in messages if isinstance(c := m.get("content"), str))
        yield Finish("stop", Usage(prompt_tokens=prompt, completion_tokens=len(answer)))
