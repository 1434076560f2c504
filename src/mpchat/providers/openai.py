"""An OpenAI-compatible Chat Completions client, streamed over one pooled aiohttp session.

Works with OpenAI, DeepSeek, Qwen's compatible mode, Ollama and vLLM: anything that
speaks ``POST {base_url}/chat/completions`` with ``stream: true`` and SSE ``data:`` lines.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from mpchat.providers.retry import parse_retry_after
from mpchat.providers.types import (
    Delta,
    Finish,
    ProviderConnectionError,
    ProviderError,
    ProviderRejected,
    ProviderStatus,
    ProviderTimeout,
    StreamEvent,
    Usage,
)

__all__ = ["OpenAICompatible", "Timeouts"]


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Split deadlines: each names the wait it bounds."""

    connect: float = 5.0
    first_token: float = 30.0
    chunk_gap: float = 30.0
    total: float = 180.0


class OpenAICompatible:
    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        base_url: str,
        api_key: str | None,
        model: str,
        name: str = "upstream",
        timeouts: Timeouts | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self._session = session
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._timeouts = timeouts or Timeouts()
        self._http_timeout = aiohttp.ClientTimeout(
            total=None, connect=self._timeouts.connect, sock_connect=self._timeouts.connect
        )

    def __repr__(self) -> str:  # never show the key
        return f"OpenAICompatible(name={self.name!r}, url={self._url!r}, model={self.model!r})"

    async def aclose(self) -> None:
        """The session belongs to the app's lifespan; nothing of ours to close."""

    async def stream(
        self, messages: Sequence[Mapping[str, str]], *, max_tokens: int | None = None
    ) -> AsyncGenerator[StreamEvent]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": list(messages),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if max_tokens:
            body["max_tokens"] = max_tokens
        loop = asyncio.get_running_loop()
        t = self._timeouts
        deadline = loop.time() + t.total
        # Until the first delta the wait is bounded by first_token, then by chunk_gap;
        # never past total. Timers wrap each read only: a yield inside a timeout would
        # let the timer cancel the consumer instead of this read.
        next_deadline = min(deadline, loop.time() + t.first_token)
        resp: aiohttp.ClientResponse | None = None
        reason, usage = "stop", None
        try:
            async with asyncio.timeout_at(next_deadline):
                resp = await self._session.post(
                    self._url, data=orjson.dumps(body), headers=self._headers,
                    timeout=self._http_timeout,
                )
            if resp.status != 200:
                raise _status_error(resp)
            reader = resp.content
            pending = b""
            done = False
            while True:
                try:
                    async with asyncio.timeout_at(next_deadline):
                        received = await reader.readany()
                except TimeoutError:
                    if done:  # a server that keeps the stream open after [DONE]
                        break
                    raise
                if not received:  # the end of the body: the connection can be reused
                    break
                # Everything that has arrived is handled at once: deltas that arrived
                # together leave as one delta (one line, one write to the client), so
                # under load the work per delta falls instead of piling up.
                *lines, pending = (pending + received + reader.read_nowait()).split(b"\n")
                texts = []
                for raw in lines:
                    data = _sse_data(raw)
                    if data is None or done:
                        continue
                    if data == b"[DONE]":
                        done = True  # read on to the end, so the connection is reused
                        continue
                    text, chunk_reason, chunk_usage = _read_chunk(_parse(data))
                    usage = chunk_usage or usage
                    reason = chunk_reason or reason
                    if text:
                        texts.append(text)
                if texts:
                    next_deadline = min(deadline, loop.time() + t.chunk_gap)
                    yield Delta("".join(texts))
        except TimeoutError:
            raise ProviderTimeout("provider did not answer in time") from None
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise ProviderConnectionError(type(exc).__name__) from None
        finally:
            if resp is not None:
                # A fully read body returns the connection to the pool; anything else
                # (a client that went away, an error) closes it, so the provider sees
                # the cancellation and stops generating.
                resp.release()
        yield Finish(reason, usage)


def _status_error(resp: aiohttp.ClientResponse) -> ProviderError:
    if resp.status == 429 or resp.status >= 500:
        return ProviderStatus(resp.status, parse_retry_after(resp.headers.get("Retry-After")))
    return ProviderRejected(resp.status)


def _sse_data(raw: bytes) -> bytes | None:
    """The payload of an SSE ``data:`` line; None for blank lines, comments, other fields."""
    if not raw.startswith(b"data:"):
        return None
    return raw[5:].strip()


def _parse(data: bytes) -> dict[str, Any]:
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ProviderConnectionError("provider sent a malformed stream chunk") from None
    if not isinstance(chunk, dict):
        raise ProviderConnectionError("provider sent a malformed stream chunk")
    if "error" in chunk:  # some providers report failures inside the stream
        raise ProviderConnectionError("provider reported an error mid-stream")
    return chunk


def _read_chunk(chunk: dict[str, Any]) -> tuple[str, str | None, Usage | None]:
    usage = None
    raw_usage = chunk.get("usage")
    if isinstance(raw_usage, dict):
        usage = Usage(
            int(raw_usage.get("prompt_tokens") or 0), int(raw_usage.get("completion_tokens") or 0)
        )
    choices = chunk.get("choices") or ()
    if not choices:
        return "", None, usage
    choice = choices[0]
    delta = choice.get("delta") or {}
    return delta.get("content") or "", choice.get("finish_reason"), usage
