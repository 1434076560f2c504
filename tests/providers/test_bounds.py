"""Each misbehaviour of the fake ends in its contract outcome, with memory and loop lag bounded."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from mpchat.fakes.upstream import FakeUpstream
from mpchat.providers.openai import StreamLimits
from mpchat.providers.types import (
    Delta,
    Finish,
    ProviderConnectionError,
    ProviderInvalid,
    ProviderTimeout,
)
from tests.providers.helpers import Probe, finish, make_client, texts

MiB = 1 << 20
# The loop may be kept busy a few ms by one answer; the margin is for a shared CI machine.
MAX_LAG = 0.05


async def _run(fake: FakeUpstream, step: dict, *, limits: StreamLimits | None = None,
               **timeouts: float) -> tuple[list[object], BaseException | None]:
    """The events until the answer ended, and the error it ended with (if any)."""
    fake.script = [step]
    got: list[object] = []
    async with aiohttp.ClientSession() as http:
        client = make_client(http, fake.base_url, limits=limits, **timeouts)
        try:
            async for event in client.stream([{"role": "user", "content": "hi"}]):
                got.append(event)
        except Exception as exc:  # the outcome is what the tests look at
            return got, exc
    return got, None


@pytest.mark.parametrize(("step", "size"), [
    ({"oversized": 24 * MiB}, "one 24 MiB chunk"),
    ({"no_newline": 24 * MiB}, "a 24 MiB line that never ends"),
])
async def test_oversized_lines_are_invalid_with_memory_bounded(fake_upstream, step, size):
    async with asyncio.timeout(20), Probe() as probe:
        events, error = await _run(fake_upstream, step)
    assert isinstance(error, ProviderInvalid), size
    assert texts(events)[0] == "".join(f"片段{i} " for i in range(20))  # what came before
    assert probe.rss_growth < 16 * MiB, probe.rss_growth
    assert probe.max_lag < MAX_LAG, (probe.max_lag, probe.max_wall_lag)
    await asyncio.wait_for(fake_upstream.wait_idle(), 5)  # the connection was closed


@pytest.mark.parametrize("kind", ["content", "reasoning"])
async def test_an_endless_stream_ends_at_the_limit(fake_upstream, kind):
    limits = StreamLimits(max_answer_chars=5000, max_reasoning_chars=8000)
    async with asyncio.timeout(20), Probe() as probe:
        events, error = await _run(fake_upstream, {"endless": kind, "text": ["a"]},
                                   limits=limits)
    assert error is None
    assert finish(events) == Finish("length", None)
    answer, reasoning = texts(events)
    if kind == "content":
        assert len(answer) == 5000 and answer.startswith("a无尽 ")
    else:
        assert answer == "a" and len(reasoning) == 8000
    assert probe.max_lag < MAX_LAG, (probe.max_lag, probe.max_wall_lag)
    assert probe.rss_growth < 16 * MiB
    await asyncio.wait_for(fake_upstream.wait_idle(), 5)  # reading stopped, response closed
    assert fake_upstream.stats.completed == 0


async def test_endless_keepalives_time_out(fake_upstream):
    async with asyncio.timeout(10):
        events, error = await _run(fake_upstream, {"endless": "keepalive"}, chunk_gap=0.3)
    assert isinstance(error, ProviderTimeout)
    assert texts(events)[0]  # the default text came first; the keep-alives are no progress


async def test_the_answer_is_cut_at_max_answer_chars(fake_upstream):
    events, error = await _run(fake_upstream, {"text": ["一二三", "四五六", "七八九"]},
                               limits=StreamLimits(max_answer_chars=5))
    assert error is None
    assert texts(events)[0] == "一二三四五"
    assert finish(events).reason == "length"


async def test_done_then_an_open_connection_ends_at_once(fake_upstream):
    # Timeouts far above the time allowed: only [DONE] can end this read in time.
    async with asyncio.timeout(2):
        events, error = await _run(fake_upstream, {"done_then_hang": True, "text": ["好"]},
                                   first_token=30, chunk_gap=30, total=60)
        assert error is None
        assert events == [Delta("好"), Finish("stop", events[-1].usage)]  # type: ignore[union-attr]
        await fake_upstream.wait_idle()  # the connection was released, not kept waiting
    assert fake_upstream.stats.cancelled == 1


async def test_a_huge_batch_of_lines_does_not_block_the_loop(fake_upstream):
    line = 'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n'
    count = 100_000
    raw = line * count + 'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n'
    async with asyncio.timeout(30), Probe() as probe:
        events, error = await _run(fake_upstream, {"raw": raw + "data: [DONE]\n\n"},
                                   limits=StreamLimits(max_answer_chars=10 * count))
    assert error is None
    assert len(texts(events)[0]) == count
    assert probe.max_lag < MAX_LAG, (probe.max_lag, probe.max_wall_lag)


async def test_reasoning_is_progress_for_the_first_token_timeout(fake_upstream):
    # DeepSeek's reasoner: thinking for a second before any content, a chunk every 0.1 s,
    # with a first-token timeout of 0.3 s and a chunk timeout of 0.3 s.
    step = {"reasoning": 10, "trickle": 0.1, "text": ["答案"]}
    events, error = await _run(fake_upstream, step, first_token=0.3, chunk_gap=0.3)
    assert error is None
    assert texts(events) == ("答案", "".join(f"思考{i} " for i in range(10)))
    # Without progress the same wait is a timeout.
    _, error = await _run(fake_upstream, {"trickle": 0.5, "text": ["a", "b"]}, first_token=0.3,
                          chunk_gap=0.3)
    assert isinstance(error, ProviderTimeout)


@pytest.mark.parametrize("kind", ["garbage_after", "wrong_types_after", "error_after"])
async def test_invalid_chunks_before_and_after_the_first_delta(fake_upstream, kind):
    events, error = await _run(fake_upstream, {kind: 0, "text": ["a", "b"]})
    assert isinstance(error, ProviderInvalid) and events == []  # retried like a 5xx
    events, error = await _run(fake_upstream, {kind: 1, "text": ["a", "b"]})
    assert isinstance(error, ProviderInvalid) and events == [Delta("a")]  # truncated


@pytest.mark.parametrize("raw", [
    "data: [DONE]\n\n",
    "",
    ": keep-alive\n\n",
    'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\ndata: [DONE]\n\n',
    'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":0}}\n\n',
])
async def test_an_empty_answer_is_invalid(fake_upstream, raw):
    events, error = await _run(fake_upstream, {"raw": raw})
    assert isinstance(error, ProviderInvalid) and events == []


async def test_a_stream_that_stops_mid_answer_is_a_connection_error(fake_upstream):
    raw = 'data: {"choices":[{"index":0,"delta":{"content":"半"}}]}\n\n'
    events, error = await _run(fake_upstream, {"raw": raw})
    assert isinstance(error, ProviderConnectionError) and events == [Delta("半")]


async def test_a_json_body_is_one_answer(fake_upstream):
    events, error = await _run(fake_upstream, {"json_body": True, "reasoning": ["想"],
                                               "text": ["整", "段"], "finish_reason": "length"})
    assert error is None
    assert texts(events) == ("整段", "想")
    assert finish(events).reason == "length"
    assert finish(events).usage is not None
    for body in ['{"error":{"message":"overloaded"}}', '{"choices":[]}', "[]", "{"]:
        events, error = await _run(fake_upstream, {"raw": body,
                                                   "content_type": "application/json"})
        assert isinstance(error, ProviderInvalid) and events == [], body


@pytest.mark.parametrize(("sent", "passed"), [
    ("length", "length"), ("content_filter", "content_filter"), ("sensitive", "content_filter"),
    ("tool_calls", "tool_calls"),
])
async def test_finish_reasons_pass_through(fake_upstream, sent, passed):
    events, error = await _run(fake_upstream, {"finish_reason": sent, "usage": "last"})
    assert error is None and finish(events).reason == passed


@pytest.mark.parametrize("sent", ["network_error", "insufficient_system_resource", "STOP!", ""])
async def test_failures_named_as_finish_reasons_are_errors(fake_upstream, sent):
    events, error = await _run(fake_upstream, {"finish_reason": sent, "text": ["a"]})
    assert isinstance(error, ProviderInvalid)
    assert events == [Delta("a")]


@pytest.mark.parametrize("step", [
    {"parts": True}, {"usage": "choice"}, {"usage": "last"}, {"usage": "none"},
    {"crlf": True, "nospace": True, "comments": True},
    {"reasoning": 2, "reasoning_field": "reasoning"},
])
async def test_dialects_read_alike(fake_upstream, step):
    events, error = await _run(fake_upstream, {**step, "text": ["你", "好"]})
    assert error is None
    assert texts(events)[0] == "你好"
    end = finish(events)
    assert end.reason == "stop"
    assert (end.usage is None) == (step.get("usage") == "none")
