"""A non-streamed request (``Options(stream=False)``): one JSON body, read into the events a
stream gives, with the stream's bounds and errors."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpchat.fakes.upstream import FakeUpstream, FakeUpstreamConfig
from mpchat.providers.chunks import decode_completion
from mpchat.providers.openai import StreamLimits
from mpchat.providers.types import (
    Delta,
    Finish,
    Options,
    ProviderError,
    ProviderInvalid,
    ProviderTimeout,
    Reasoning,
    ToolCall,
    Usage,
)
from tests.providers.helpers import collect, make_client

WHOLE = Options(stream=False)
TEXT = "".join(f"片段{i} " for i in range(20))


async def _ask(fake: FakeUpstream, *steps: dict[str, Any], limits: StreamLimits | None = None,
               options: Options = WHOLE, **timeouts: float) -> list[Any] | ProviderError:
    fake.script = list(steps)
    async with aiohttp.ClientSession() as http:
        try:
            return await collect(make_client(http, fake.base_url, limits=limits, **timeouts),
                                 options)
        except ProviderError as exc:
            return exc


def _body(message: dict[str, Any], finish: str | None = "stop", **top: Any) -> dict[str, Any]:
    return {"raw": json.dumps({"id": "x", "object": "chat.completion", **top,
                               "choices": [{"index": 0, "message": message,
                                            "finish_reason": finish}]}),
            "content_type": "application/json"}


async def test_one_body_is_asked_for_and_read_as_one_delta(fake_upstream):
    events = await _ask(fake_upstream, {"reasoning": ["想", "好了"]})
    assert events == [Reasoning("想好了"), Delta(TEXT), Finish("stop", Usage(2, 20))]
    body = fake_upstream.stats.bodies[-1]
    assert body["stream"] is False and "stream_options" not in body
    # A streamed request is as it was.
    events = await _ask(fake_upstream, {}, options=Options())
    assert isinstance(events, list) and "".join(e.text for e in events[:-1]) == TEXT
    body = fake_upstream.stats.bodies[-1]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


async def test_the_dialects_of_a_body(fake_upstream):
    parts = _body({"role": "assistant", "content": [{"type": "text", "text": "你"},
                                                    {"type": "image_url"},
                                                    {"type": "text", "text": "好"}],
                   "reasoning": "想"}, "sensitive",
                  usage={"prompt_tokens": 3, "completion_tokens": 2})
    assert await _ask(fake_upstream, parts) == [Reasoning("想"), Delta("你好"),
                                                Finish("content_filter", Usage(3, 2))]
    moonshot = {"raw": json.dumps({"choices": [{"index": 0, "message": {"content": "好"},
                                                "finish_reason": "stop",
                                                "usage": {"prompt_tokens": 1,
                                                          "completion_tokens": 1}}]}),
                "content_type": "application/json"}
    assert await _ask(fake_upstream, moonshot) == [Delta("好"), Finish("stop", Usage(1, 1))]


async def test_tool_calls_in_a_body_are_typed_and_indexed(fake_upstream):
    calls = [{"id": f"call_{i}", "type": "function",
              "function": {"name": "f", "arguments": f'{{"n":{i}}}'}} for i in range(2)]
    events = await _ask(fake_upstream, _body({"content": None, "tool_calls": calls},
                                             "tool_calls"))
    assert events == [ToolCall(0, "call_0", "f", '{"n":0}'), ToolCall(1, "call_1", "f",
                                                                      '{"n":1}'),
                      Finish("tool_calls", None)]
    many = [calls[0]] * 129  # more than any model makes: hostile
    assert isinstance(await _ask(fake_upstream, _body({"tool_calls": many}, "tool_calls")),
                      ProviderInvalid)


async def test_a_long_answer_is_cut_at_the_limit_as_a_stream_is(fake_upstream):
    limits = StreamLimits(max_answer_chars=10, max_reasoning_chars=4)
    events = await _ask(fake_upstream, _body({"content": "答" * 50, "reasoning_content": "想" * 9}),
                        limits=limits)
    assert events == [Reasoning("想" * 4), Finish("length", None)]
    events = await _ask(fake_upstream, _body({"content": "答" * 50}), limits=limits)
    assert events == [Delta("答" * 10), Finish("length", None)]


@pytest.mark.parametrize("pieces", [1, 40])  # with its length known, and chunked
async def test_an_oversized_body_is_invalid(fake_upstream, pieces):
    limits = StreamLimits(max_answer_chars=10, max_reasoning_chars=10, max_line_bytes=1000)
    assert limits.body_bytes < 80_000
    body = json.dumps({"choices": [{"index": 0, "message": {"content": "a" * 80_000},
                                    "finish_reason": "stop"}]})
    size = -(-len(body) // pieces)  # one write: its length known; more: a chunked body
    step = {"raw": [body[i:i + size] for i in range(0, len(body), size)],
            "content_type": "application/json"}
    assert isinstance(await _ask(fake_upstream, step, limits=limits), ProviderInvalid)


@pytest.mark.parametrize("body", [
    '{"error":{"message":"overloaded"}}', '{"choices":[]}', "[]", "{", "",
    '{"choices":[{"index":0,"message":{"content":""},"finish_reason":"stop"}]}',
    '{"choices":[{"index":0,"message":{"content":7},"finish_reason":"stop"}]}',
    '{"choices":[{"index":0,"message":{"content":"a"},"finish_reason":"network_error"}]}',
    '{"choices":[{"index":0,"message":{"content":"a"}}],"usage":{"prompt_tokens":-1}}',
])
async def test_a_malformed_body_is_invalid(fake_upstream, body):
    step = {"raw": body, "content_type": "application/json"}
    assert isinstance(await _ask(fake_upstream, step), ProviderInvalid)


async def test_the_whole_body_may_take_the_total_deadline_not_the_first_tokens():
    async with FakeUpstream(FakeUpstreamConfig(ttft=0.3)) as fake:
        events = await _ask(fake, {}, first_token=0.05, total=10)
        assert isinstance(events, list) and events[0] == Delta(TEXT)
        assert isinstance(await _ask(fake, {}, first_token=10, total=0.05), ProviderTimeout)
        # Streamed, the first token's deadline holds as ever.
        assert isinstance(await _ask(fake, {}, options=Options(), first_token=0.05, total=10),
                          ProviderTimeout)


async def test_a_provider_that_streams_anyway_is_read_as_a_stream(fake_upstream):
    step = {"raw": ['data: {"choices":[{"index":0,"delta":{"content":"半"}}]}\n\n',
                    'data: {"choices":[{"index":0,"delta":{"content":"句"},'
                    '"finish_reason":"stop"}]}\n\n', "data: [DONE]\n\n"]}
    events = await _ask(fake_upstream, step)
    assert isinstance(events, list) and events[-1] == Finish("stop", None)
    assert "".join(e.text for e in events[:-1]) == "半句"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["choices", "message", "content", "reasoning_content", "reasoning",
                         "tool_calls", "function", "arguments", "name", "id", "index",
                         "finish_reason", "usage", "prompt_tokens", "completion_tokens",
                         "error", "type", "text"]) | st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=JSON.map(json.dumps).map(str.encode) | st.binary(max_size=64))
def test_any_body_decodes_to_typed_values_or_invalid(body):
    """The decoder alone, on hostile bodies: typed values or `ProviderInvalid`, nothing else."""
    try:
        text, reasoning, finish, usage, tools = decode_completion(body)
    except ProviderInvalid:
        return
    assert type(text) is str and type(reasoning) is str
    assert finish is None or type(finish) is str
    assert usage is None or (usage.prompt_tokens >= 0 and usage.completion_tokens >= 0)
    for call in tools or []:
        assert type(call.index) is int and 0 <= call.index <= 127
        assert type(call.arguments) is str


def test_the_body_bound_leaves_room_for_every_answer_the_limits_allow():
    limits = StreamLimits()  # 32,000 characters of answer, 128,000 of reasoning
    escaped = len(json.dumps({"content": "答" * 32_000, "reasoning_content": "想" * 128_000}))
    assert escaped < limits.body_bytes <= 2 * escaped
    assert StreamLimits(max_answer_chars=10).body_bytes == StreamLimits().max_line_bytes


async def test_a_cancelled_wait_closes_the_request(fake_upstream):
    fake_upstream.script = [{"hang": True}]
    async with aiohttp.ClientSession() as http:
        task = asyncio.ensure_future(collect(make_client(http, fake_upstream.base_url), WHOLE))
        await fake_upstream.wait_for_requests(1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await asyncio.wait_for(fake_upstream.wait_idle(), 5)
