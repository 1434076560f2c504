"""The OpenAI-compatible client against the fake: SSE parsing, split timeouts, errors, reuse."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from mpchat.fakes.upstream import FakeUpstream
from mpchat.providers.openai import OpenAICompatible, Timeouts
from mpchat.providers.types import (
    Delta,
    Finish,
    ProviderConnectionError,
    ProviderInvalid,
    ProviderRejected,
    ProviderStatus,
    ProviderTimeout,
)

MESSAGES = [{"role": "user", "content": "hi"}]


async def _collect(client: OpenAICompatible) -> list[object]:
    return [event async for event in client.stream(MESSAGES)]


def _client(http: aiohttp.ClientSession, base_url: str, **timeouts: float) -> OpenAICompatible:
    return OpenAICompatible(session=http, base_url=base_url, api_key="sk-abcdefghijkl",
                            model="m", timeouts=Timeouts(**timeouts))


async def test_stream_yields_deltas_then_finish_with_usage(fake_upstream: FakeUpstream):
    async with aiohttp.ClientSession() as http:
        events = await _collect(_client(http, fake_upstream.base_url))
    deltas = [e.text for e in events if isinstance(e, Delta)]
    # Deltas that arrive together may leave as one; the text is the same, in order.
    assert "".join(deltas) == "".join(f"片段{i} " for i in range(20))
    assert 1 <= len(deltas) <= 20
    finish = events[-1]
    assert isinstance(finish, Finish) and finish.reason == "stop"
    assert finish.usage is not None and finish.usage.completion_tokens == 20


async def test_connection_is_reused_after_a_complete_answer(fake_upstream: FakeUpstream):
    connector = aiohttp.TCPConnector(limit=10)
    async with aiohttp.ClientSession(connector=connector) as http:
        client = _client(http, fake_upstream.base_url)
        await _collect(client)
        await _collect(client)
        # Both answers went over one kept-alive connection.
        assert sum(len(v) for v in connector._conns.values()) == 1


@pytest.mark.parametrize(("step", "error", "status"), [
    ({"status": 429, "retry_after": 3}, ProviderStatus, 429),
    ({"status": 500}, ProviderStatus, 500),
    ({"status": 401}, ProviderRejected, 401),
])
async def test_status_errors(fake_upstream: FakeUpstream, step, error, status):
    fake_upstream.script = [step]
    async with aiohttp.ClientSession() as http:
        with pytest.raises(error) as info:
            await _collect(_client(http, fake_upstream.base_url))
    assert info.value.status == status
    if "retry_after" in step:
        assert info.value.retry_after == 3


async def test_deltas_arriving_apart_stay_apart(fake_upstream: FakeUpstream):
    fake_upstream.script = [{"trickle": 0.05, "text": ["一", "二", "三"]}]
    async with aiohttp.ClientSession() as http:
        events = await _collect(_client(http, fake_upstream.base_url))
    assert [e.text for e in events if isinstance(e, Delta)] == ["一", "二", "三"]


async def test_first_token_timeout(fake_upstream: FakeUpstream):
    fake_upstream.script = [{"hang": True}]
    async with aiohttp.ClientSession() as http:
        with pytest.raises(ProviderTimeout):
            await _collect(_client(http, fake_upstream.base_url, first_token=0.1))


async def test_chunk_gap_timeout_after_first_delta(fake_upstream: FakeUpstream):
    fake_upstream.script = [{"trickle": 0.5, "text": ["a", "b"]}]
    got: list[object] = []
    async with aiohttp.ClientSession() as http:
        client = _client(http, fake_upstream.base_url, first_token=5, chunk_gap=0.1)
        with pytest.raises(ProviderTimeout):
            async for event in client.stream(MESSAGES):
                got.append(event)
    assert got == [Delta("a")]


async def test_total_deadline(fake_upstream: FakeUpstream):
    fake_upstream.script = [{"trickle": 0.06, "text": list("abcdefghij")}]
    async with aiohttp.ClientSession() as http:
        client = _client(http, fake_upstream.base_url, chunk_gap=1, total=0.2)
        with pytest.raises(ProviderTimeout):
            await _collect(client)


async def test_drop_mid_stream_is_a_connection_error(fake_upstream: FakeUpstream):
    fake_upstream.script = [{"drop_after": 2}]
    async with aiohttp.ClientSession() as http:
        with pytest.raises(ProviderConnectionError):
            await _collect(_client(http, fake_upstream.base_url))


async def test_connection_refused():
    async with aiohttp.ClientSession() as http:
        with pytest.raises(ProviderConnectionError):
            await _collect(_client(http, "http://127.0.0.1:1/v1"))


async def test_sse_comments_crlf_and_error_payloads():
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b": keep-alive\r\n\r\n")
        await resp.write(b'data: {"choices":[{"delta":{"role":"assistant"}}]}\r\n\r\n')
        await resp.write(b'data: {"choices":[{"delta":{"content":"ok"}}]}\r\n\r\n')
        if request.query.get("fail"):
            await resp.write(b'data: {"error":{"message":"boom"}}\n\n')
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as http:
            events = await _collect(_client(http, f"http://127.0.0.1:{port}/v1"))
            assert events == [Delta("ok"), Finish("stop", None)]
            bad = _client(http, f"http://127.0.0.1:{port}/v1")
            bad._url += "?fail=1"
            with pytest.raises(ProviderInvalid):
                await _collect(bad)
    finally:
        await runner.cleanup()


def test_repr_hides_the_key():
    client = OpenAICompatible(session=None, base_url="http://x/v1", api_key="sk-secret-123456",  # type: ignore[arg-type]
                              model="m")
    assert "sk-secret" not in repr(client)
