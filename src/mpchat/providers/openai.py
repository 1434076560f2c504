"""An OpenAI-compatible Chat Completions client, streamed over one pooled aiohttp session.

Works with OpenAI, DeepSeek, Qwen's compatible mode, Moonshot, Zhipu, Doubao, Ollama and
vLLM: anything that speaks ``POST {base_url}/chat/completions`` with ``stream: true`` and
SSE ``data:`` lines (or, from a server that ignores ``stream``, one JSON answer). Asked for
``stream: false`` (`Options.stream`), it reads one JSON ``chat.completion`` instead, with the
same decoder, bounds and errors, and yields the same events a stream would (the whole text
as one `Delta`, then `Finish`). Their dialects and the bounds on what one answer may cost
are in docs/providers.md.

Every way a provider can answer ends in `Finish` or a `ProviderError`; nothing a provider
sends reaches a plain Python exception.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from mpchat.providers.answer import Answer, StreamLimits
from mpchat.providers.chunks import decode_completion
from mpchat.providers.retry import parse_retry_after
from mpchat.providers.sse import LineSplitter
from mpchat.providers.types import (
    Message,
    Options,
    ProviderConnectionError,
    ProviderError,
    ProviderInvalid,
    ProviderRejected,
    ProviderStatus,
    ProviderTimeout,
    StreamEvent,
)

__all__ = ["OpenAICompatible", "StreamLimits", "Timeouts"]

# Lines handled between two chances for the event loop to run something else: a read of
# tiny lines can hold tens of thousands of them, a few ms of work per slice at most.
_SLICE = 256
# How long the end of the body may lag behind ``[DONE]`` before the connection is dropped
# instead of reused (a well-behaved server sends both in one write).
_DONE_GRACE = 0.1


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Split deadlines: each names the wait it bounds."""

    connect: float = 5.0
    first_token: float = 30.0  # request sent -> first text or reasoning
    chunk_gap: float = 30.0  # between two pieces of text or reasoning
    total: float = 180.0


class OpenAICompatible:
    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        base_url: str,
        api_key: str | None,
        model: str,
        models: Sequence[str] = (),
        tools: bool = True,
        name: str = "upstream",
        timeouts: Timeouts | None = None,
        limits: StreamLimits | None = None,
        audio: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        # Its /audio/* models when the config file names them (providers/audio.py).
        self.audio = dict(audio or {})
        self.model = model
        self.models = (model, *(m for m in models if m != model))
        self.tools = tools
        self._session = session
        self.base_url = base_url.rstrip("/")  # its audio endpoints too (providers/audio.py)
        self._url = self.base_url + "/chat/completions"
        self._headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._json_headers = {**self._headers, "Accept": "application/json"}
        self._timeouts = timeouts or Timeouts()
        self._limits = limits or StreamLimits()
        # Only the socket's connect is the provider's: aiohttp's ``connect`` would also count
        # the wait for a pooled connection, i.e. local congestion, against the provider.
        self._http_timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=self._timeouts.connect
        )

    def __repr__(self) -> str:  # never show the key
        return f"OpenAICompatible(name={self.name!r}, url={self._url!r}, model={self.model!r})"

    def auth(self) -> dict[str, str]:
        """The Authorization header of its requests (none without a key)."""
        value = self._headers.get("Authorization")
        return {"Authorization": value} if value else {}

    async def aclose(self) -> None:
        """The session belongs to the app's lifespan; nothing of ours to close."""

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int | None = None,
        options: Options | None = None,
    ) -> AsyncGenerator[StreamEvent]:
        body: dict[str, Any] = {}
        if options is not None:
            body.update(options.params)
        body["model"] = options.model if options is not None and options.model else self.model
        body["messages"] = messages if isinstance(messages, list) else list(messages)
        streaming = options is None or options.stream
        body["stream"] = streaming
        if streaming:  # a non-streamed request with stream_options is refused by OpenAI
            body["stream_options"] = {"include_usage": True}
        if max_tokens:
            body["max_tokens"] = max_tokens
        loop = asyncio.get_running_loop()
        t = self._timeouts
        deadline = loop.time() + t.total
        # Until the first text or reasoning the wait is bounded by first_token, then by
        # chunk_gap; never past total. Timers wrap each read only: a yield inside a timeout
        # would let the timer cancel the consumer instead of this read. Not streamed, the
        # first text is the whole answer: its wait is the total one.
        next_deadline = min(deadline, loop.time() + t.first_token) if streaming else deadline
        resp: aiohttp.ClientResponse | None = None
        answer = Answer(self._limits)
        try:
            async with asyncio.timeout_at(next_deadline):
                resp = await self._session.post(
                    self._url, data=orjson.dumps(body),
                    headers=self._headers if streaming else self._json_headers,
                    timeout=self._http_timeout,
                )
            if resp.status != 200:
                raise _status_error(resp)
            if resp.content_type == "application/json":
                raw = await self._body(resp, next_deadline, deadline)
                answer.take(decode_completion(raw))
                for event in answer.drain():
                    yield event
                finish = answer.end(eof=False)
            else:
                reader = resp.content
                splitter = LineSplitter(self._limits.max_line_bytes)
                eof = False
                while not (eof or answer.stopped):
                    # A fast stream never waits in its reads, so the timer around them
                    # would never fire: the deadline is checked here as well.
                    if loop.time() >= next_deadline:
                        raise TimeoutError
                    async with asyncio.timeout_at(next_deadline):
                        received = await reader.readany()
                    if received:
                        rest = reader.read_nowait()
                        lines = splitter.feed(received + rest if rest else received)
                    else:  # the end of the body: a last line may lack its newline
                        eof, lines = True, [splitter.flush()]
                    if len(lines) <= _SLICE:
                        answer.take_lines(lines)
                    else:
                        await _take_in_slices(answer, lines)
                    events = answer.drain()
                    if events:
                        next_deadline = min(deadline, loop.time() + t.chunk_gap)
                        for event in events:
                            yield event
                if answer.done and not reader.at_eof():
                    await _await_eof(reader, min(loop.time() + _DONE_GRACE, deadline))
                finish = answer.end(eof=eof)
        except TimeoutError:
            raise ProviderTimeout("provider did not answer in time") from None
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise ProviderConnectionError(type(exc).__name__) from None
        finally:
            if resp is not None:
                # A fully read body returns the connection to the pool; anything else (a
                # client that went away, an error, an answer cut at its limit, a server
                # that keeps the stream open after [DONE]) closes it, so the provider sees
                # the cancellation and stops generating.
                if resp.content.at_eof():
                    resp.release()
                else:
                    resp.close()
        yield finish

    async def _body(
        self, resp: aiohttp.ClientResponse, first_deadline: float, total_deadline: float
    ) -> bytes:
        """A JSON body, bounded (`StreamLimits.body_bytes`); its pieces are joined once."""
        loop = asyncio.get_running_loop()
        parts: list[bytes] = []
        size, limit, deadline = 0, self._limits.body_bytes, first_deadline
        if (resp.content_length or 0) > limit:  # known too long: not a byte of it is read
            raise ProviderInvalid("provider sent a JSON body over the size limit")
        while True:
            if loop.time() >= deadline:
                raise TimeoutError
            async with asyncio.timeout_at(deadline):
                received = await resp.content.readany()
            if not received:
                return b"".join(parts)
            size += len(received)
            if size > limit:
                raise ProviderInvalid("provider sent a JSON body over the size limit")
            parts.append(received)
            deadline = min(total_deadline, loop.time() + self._timeouts.chunk_gap)


async def _take_in_slices(answer: Answer, lines: list[bytes]) -> None:
    for start in range(0, len(lines), _SLICE):
        if start:
            await asyncio.sleep(0)  # let the other answers run
        answer.take_lines(lines[start : start + _SLICE])
        if answer.stopped:
            return


async def _await_eof(reader: aiohttp.StreamReader, until: float) -> None:
    """Give the end of the body a moment to follow ``[DONE]``; whatever comes is not read.

    The answer is complete already: nothing here can fail it. A server that goes on
    sending, or keeps the connection open, only loses the connection (it is not reused).
    """
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout_at(until):
            while loop.time() < until and await reader.readany():
                pass
    except (TimeoutError, aiohttp.ClientError, ConnectionError):
        pass


def _status_error(resp: aiohttp.ClientResponse) -> ProviderError:
    if resp.status == 429 or resp.status >= 500:
        return ProviderStatus(resp.status, parse_retry_after(resp.headers.get("Retry-After")))
    return ProviderRejected(resp.status)
