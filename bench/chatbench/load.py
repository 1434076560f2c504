"""One chat, driven and timed as a client sees it.

Three wire formats: an OpenAI-style completion, streamed (SSE) or not (one JSON body), sent
direct to the provider, through LiteLLM's proxy or through mpchat's ``/v1`` surface; and
mpchat's NDJSON chat. Each is read to the end of the body and times the same points: status
line and headers, first piece of content, last event. A non-streamed answer has one piece of
content, the whole message, so its "first delta" is the body read and parsed.

A streamed chat is good only when the stream ended properly (``done``, or ``[DONE]``), with at
least one delta and no ``error`` event. mpchat's other event types (``start``, ``queued``,
``ping``, ``reasoning``, anything new) are ignored, except that ``start`` names the
conversation; only ``delta`` text counts as the answer. A non-streamed chat is good when it
answers 200 with a non-empty ``choices[0].message.content``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import orjson

__all__ = [
    "MODEL",
    "PROMPT",
    "Chat",
    "Endpoint",
    "MpchatClient",
    "Sample",
    "make_chat",
    "new_session",
    "openai_json_chat",
    "openai_stream_chat",
]

MODEL = "fake-model"
PROMPT = "你好，请简单介绍一下你自己。"


@dataclass(slots=True)
class Sample:
    """One streamed chat, times in seconds from just before the request was sent."""

    ok: bool
    ttfb: float = 0.0  # status line and headers received
    first_delta: float = 0.0  # first piece of content parsed
    total: float = 0.0  # the stream's terminating event parsed and the body read to its end
    deltas: int = 0  # content events received
    chars: int = 0  # characters of answer text received
    error: str = ""


Chat = Callable[[], Awaitable[Sample]]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a load client sends its chats and in which dialect (JSON-serialisable)."""

    kind: Literal["openai", "mpchat"]
    base: str  # http://127.0.0.1:<port>
    api_key: str = "x"  # bearer for OpenAI-style targets; mpchat users log in instead
    stream: bool = True  # OpenAI-style targets: SSE (True) or one JSON body (False)


def new_session(connections: int, *, total_timeout: float = 120.0) -> aiohttp.ClientSession:
    """One client session for a whole phase, allowed ``connections`` sockets at once."""
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=0, keepalive_timeout=30)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=total_timeout, sock_connect=10),
    )


async def openai_stream_chat(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> Sample:
    """One OpenAI-style streamed completion (SSE), as a direct caller or a LiteLLM client."""
    body = orjson.dumps(
        {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
    )
    sample = Sample(ok=False)
    t0 = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            sample.ttfb = time.perf_counter() - t0
            if resp.status != 200:
                sample.error = f"HTTP {resp.status}: {(await resp.text())[:200]}"
                return sample
            done = False
            async for line in resp.content:
                if not line.startswith(b"data: "):
                    continue
                data = line[6:].strip()
                if data == b"[DONE]":
                    done = True
                    continue
                event = orjson.loads(data)
                if event.get("error"):
                    sample.error = f"error event: {str(event['error'])[:150]}"
                    continue
                choices = event.get("choices") or []
                text = (choices[0].get("delta") or {}).get("content") if choices else None
                if text:
                    if not sample.deltas:
                        sample.first_delta = time.perf_counter() - t0
                    sample.deltas += 1
                    sample.chars += len(text)
            sample.total = time.perf_counter() - t0
            sample.ok = done and sample.deltas > 0 and not sample.error
            if not sample.ok and not sample.error:
                sample.error = f"stream ended without [DONE] after {sample.deltas} deltas"
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        sample.error = f"{type(exc).__name__}: {exc}"[:200]
    return sample


async def openai_json_chat(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> Sample:
    """One OpenAI-style completion with ``stream: false``: one ``chat.completion`` body.

    TTFB is the status line and headers; "first delta" and total are the body read and parsed
    (the whole answer arrives at once, so they coincide).
    """
    body = orjson.dumps(
        {"model": MODEL, "stream": False, "messages": [{"role": "user", "content": PROMPT}]}
    )
    sample = Sample(ok=False)
    t0 = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            sample.ttfb = time.perf_counter() - t0
            raw = await resp.read()
            if resp.status != 200:
                sample.error = f"HTTP {resp.status}: {raw[:200].decode(errors='replace')}"
                return sample
            answer = orjson.loads(raw)
            sample.first_delta = sample.total = time.perf_counter() - t0
            choices = answer.get("choices") if isinstance(answer, dict) else None
            message = (choices[0].get("message") or {}) if choices else {}
            text = message.get("content")
            if isinstance(text, str) and text:
                sample.deltas, sample.chars, sample.ok = 1, len(text), True
            else:
                shown = raw[:150].decode(errors="replace")
                sample.error = f"no choices[0].message.content: {shown}"
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        sample.error = f"{type(exc).__name__}: {exc}"[:200]
    return sample


@dataclass(slots=True)
class User:
    token: str
    conversation_id: str | None = None
    turns: int = 0


class MpchatClient:
    """Chats as many users, each continuing its own conversation for ``turns`` turns.

    Users wait in a queue, so no user ever has two chats in flight (as on a phone), and a
    continued conversation makes mpchat read and decrypt the history on every turn. After
    ``turns`` turns the user starts a new conversation, which keeps the history bounded.
    """

    def __init__(self, session: aiohttp.ClientSession, base: str, *, turns: int) -> None:
        self._session = session
        self._base = base
        self._turns = turns
        self._idle: asyncio.Queue[User] = asyncio.Queue()

    async def login(self, users: int, *, run_id: str) -> None:
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            async with (
                sem,
                self._session.post(
                    f"{self._base}/api/v1/login", json={"code": f"bench-{run_id}-{i}"}
                ) as resp,
            ):
                if resp.status != 200:
                    raise RuntimeError(f"login failed: HTTP {resp.status} {await resp.text()}")
                self._idle.put_nowait(User(token=(await resp.json())["token"]))

        await asyncio.gather(*(one(i) for i in range(users)))

    async def chat(self) -> Sample:
        user = await self._idle.get()
        try:
            return await self._chat_as(user)
        finally:
            self._idle.put_nowait(user)

    async def _chat_as(self, user: User) -> Sample:
        payload: dict[str, Any] = {"content": PROMPT}
        if user.conversation_id and user.turns < self._turns:
            payload["conversation_id"] = user.conversation_id
        else:
            user.conversation_id, user.turns = None, 0
        headers = {"Authorization": f"Bearer {user.token}", "Content-Type": "application/json"}
        sample = Sample(ok=False)
        t0 = time.perf_counter()
        try:
            async with self._session.post(
                f"{self._base}/api/v1/chat", data=orjson.dumps(payload), headers=headers
            ) as resp:
                sample.ttfb = time.perf_counter() - t0
                if resp.status != 200:
                    sample.error = f"HTTP {resp.status}: {(await resp.text())[:200]}"
                    return sample
                done = False
                async for line in resp.content:
                    if not line.strip():
                        continue
                    event = orjson.loads(line)
                    kind = event.get("type")
                    if kind == "delta":
                        if not sample.deltas:
                            sample.first_delta = time.perf_counter() - t0
                        sample.deltas += 1
                        sample.chars += len(event.get("text") or "")
                    elif kind == "start":
                        user.conversation_id = event.get("conversation_id")
                    elif kind == "done":
                        done = True
                    elif kind in ("error", "retract"):
                        sample.error = f"{kind}: {event.get('code') or event.get('reason')}"
                    # Anything else (queued, ping, reasoning, ...) is not the answer: ignored.
                sample.total = time.perf_counter() - t0
                sample.ok = done and sample.deltas > 0 and not sample.error
                if done:
                    user.turns += 1
                elif not sample.error:
                    sample.error = f"stream ended without done after {sample.deltas} deltas"
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            sample.error = f"{type(exc).__name__}: {exc}"[:200]
        return sample


async def make_chat(
    session: aiohttp.ClientSession,
    endpoint: Endpoint,
    *,
    users: int = 0,
    turns: int = 8,
    run_id: str = "",
) -> Chat:
    """A function that runs one chat against ``endpoint`` (mpchat: after ``users`` log in)."""
    if endpoint.kind == "mpchat":
        client = MpchatClient(session, endpoint.base, turns=turns)
        await client.login(users, run_id=run_id)
        return client.chat
    url = f"{endpoint.base}/v1/chat/completions"
    headers = {"Authorization": f"Bearer {endpoint.api_key}", "Content-Type": "application/json"}
    one = openai_stream_chat if endpoint.stream else openai_json_chat
    return lambda: one(session, url, headers)
