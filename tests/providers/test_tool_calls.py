"""Tool calls as providers stream them, and as hostile ones might: typed, bounded, in order."""

from __future__ import annotations

import json

import aiohttp
import pytest

from mpchat.providers.openai import StreamLimits
from mpchat.providers.types import Delta, Finish, ProviderInvalid, ToolCall
from tests.providers.helpers import collect, finish, make_client


def _chunk(delta: dict, finish_reason: str | None = None) -> str:  # type: ignore[type-arg]
    return "data: " + json.dumps({"choices": [{"index": 0, "delta": delta,
                                               "finish_reason": finish_reason}]}) + "\n\n"


def _call(index: int, *, id: str | None = None, name: str | None = None,
          arguments: str = "") -> dict:  # type: ignore[type-arg]
    function: dict[str, str] = {"arguments": arguments}
    if name is not None:
        function["name"] = name
    call: dict[str, object] = {"index": index, "function": function}
    if id is not None:
        call["id"], call["type"] = id, "function"
    return call


async def _events(fake_upstream, body: str, **limits: int) -> list:  # type: ignore[no-untyped-def, type-arg]
    fake_upstream.script = [{"raw": body}]
    async with aiohttp.ClientSession() as http:
        client = make_client(http, fake_upstream.base_url,
                             limits=StreamLimits(**limits) if limits else None)
        return await collect(client)


async def test_two_parallel_calls_in_pieces(fake_upstream):
    body = (_chunk({"tool_calls": [_call(0, id="a", name="f"), _call(1, id="b", name="g")]})
            + _chunk({"tool_calls": [_call(0, arguments='{"x":'), _call(1, arguments="{}")]})
            + _chunk({"tool_calls": [_call(0, arguments="1}")]})
            + _chunk({}, "tool_calls") + "data: [DONE]\n\n")
    events = await _events(fake_upstream, body)
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert [(c.index, c.id, c.name) for c in calls[:2]] == [(0, "a", "f"), (1, "b", "g")]
    assert "".join(c.arguments for c in calls if c.index == 0) == '{"x":1}'
    assert finish(events).reason == "tool_calls"


async def test_text_before_a_call_keeps_its_order(fake_upstream):
    body = (_chunk({"content": "让我查一下"}) + _chunk({"tool_calls": [_call(0, id="a", name="f")]})
            + _chunk({}, "tool_calls") + "data: [DONE]\n\n")
    events = await _events(fake_upstream, body)
    assert [type(e) for e in events] == [Delta, ToolCall, Finish]


@pytest.mark.parametrize("calls", [
    [_call(128, id="a", name="f")],  # an index no model uses
    [{"index": -1, "function": {"arguments": ""}}],
    [{"index": 0, "function": {"arguments": 5}}],  # arguments that are no text
    [{"index": 0, "function": "f"}],
    [{"index": 0, "id": ["a"]}],
    "not a list",
])
async def test_hostile_calls_are_invalid(fake_upstream, calls):
    body = _chunk({"tool_calls": calls}) + _chunk({}, "tool_calls") + "data: [DONE]\n\n"
    with pytest.raises(ProviderInvalid):
        await _events(fake_upstream, body)


async def test_too_many_calls_in_one_body_are_invalid(fake_upstream):
    body = json.dumps({"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}] * 200}}]})
    fake_upstream.script = [{"raw": body, "content_type": "application/json"}]
    async with aiohttp.ClientSession() as http:
        with pytest.raises(ProviderInvalid):
            await collect(make_client(http, fake_upstream.base_url))


async def test_endless_arguments_end_at_the_answer_limit(fake_upstream):
    body = (_chunk({"tool_calls": [_call(0, id="a", name="f")]})
            + _chunk({"tool_calls": [_call(0, arguments="x" * 60)]}) * 50
            + _chunk({}, "tool_calls") + "data: [DONE]\n\n")
    events = await _events(fake_upstream, body, max_answer_chars=1000)
    said = sum(len(e.arguments) for e in events if isinstance(e, ToolCall))
    assert said <= 1000 and finish(events).reason == "length"
