"""Any JSON in any field of a chunk ends as str texts and one Finish, or as a ProviderError.

Driven through `OpenAICompatible.stream` against the fake serving the bytes verbatim, so
the whole path (SSE reader, decoding, the answer's bounds) is under test, not the decoder alone.
"""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import aiohttp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpchat.fakes.upstream import FakeUpstream
from mpchat.providers.types import Delta, Finish, ProviderError, Reasoning, ToolCall
from tests.providers.helpers import collect, make_client

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=8,
)

TEMPLATE: dict[str, Any] = {
    "id": "x", "object": "chat.completion.chunk",
    "choices": [{"index": 0, "delta": {"role": "assistant", "content": "答",
                                       "reasoning_content": "想",
                                       "tool_calls": [{"index": 0, "id": "c", "type": "function",
                                                       "function": {"name": "f",
                                                                    "arguments": "{}"}}]},
                 "finish_reason": None}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 2},
}

# Where a value goes: a path into TEMPLATE ([] is the whole chunk).
FIELDS: dict[str, list[Any]] = {
    "top": [], "choices": ["choices"], "choice": ["choices", 0],
    "delta": ["choices", 0, "delta"], "content": ["choices", 0, "delta", "content"],
    "part": ["choices", 0, "delta", "content", 0],
    "part_text": ["choices", 0, "delta", "content", 0, "text"],
    "reasoning_content": ["choices", 0, "delta", "reasoning_content"],
    "reasoning": ["choices", 0, "delta", "reasoning"],
    "finish_reason": ["choices", 0, "finish_reason"],
    "choice_usage": ["choices", 0, "usage"], "usage": ["usage"],
    "prompt_tokens": ["usage", "prompt_tokens"], "error": ["error"],
    "tool_calls": ["choices", 0, "delta", "tool_calls"],
    "tool_call": ["choices", 0, "delta", "tool_calls", 0],
    "tool_index": ["choices", 0, "delta", "tool_calls", 0, "index"],
    "tool_id": ["choices", 0, "delta", "tool_calls", 0, "id"],
    "tool_function": ["choices", 0, "delta", "tool_calls", 0, "function"],
    "tool_arguments": ["choices", 0, "delta", "tool_calls", 0, "function", "arguments"],
}


def _chunk(changes: dict[str, Any], parts: bool) -> Any:
    chunk: Any = copy.deepcopy(TEMPLATE)
    if parts:
        chunk["choices"][0]["delta"]["content"] = [{"type": "text", "text": "答"}]
    for field, value in changes.items():
        path = FIELDS[field]
        if not path:
            chunk = value
            continue
        target = chunk
        try:
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            pass  # an earlier change replaced the container: nothing to put the value in
    return chunk


async def _outcome(body: str, content_type: str) -> list[Any] | ProviderError:
    async with FakeUpstream() as fake, aiohttp.ClientSession() as http:
        fake.script = [{"raw": body, "content_type": content_type}]
        try:
            return await collect(make_client(http, fake.base_url, first_token=5, chunk_gap=5))
        except ProviderError as exc:
            return exc


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.dictionaries(st.sampled_from(sorted(FIELDS)), JSON, min_size=1, max_size=3),
       parts=st.booleans(), shape=st.sampled_from(["alone", "then-valid", "json-body"]))
def test_any_json_in_any_field_ends_in_the_contract(changes, parts, shape):
    chunk = _chunk(changes, parts)
    data = json.dumps(chunk)  # ASCII: lone surrogates travel as escapes, as a provider's would
    if shape == "json-body":
        if isinstance(chunk, dict) and isinstance(chunk.get("choices"), list) and chunk["choices"]:
            first = chunk["choices"][0]
            if isinstance(first, dict) and "delta" in first:
                first["message"] = first.pop("delta")
        outcome = asyncio.run(_outcome(json.dumps(chunk), "application/json"))
    else:
        body = f"data: {data}\n\n"
        if shape == "then-valid":
            body += ('data: {"choices":[{"index":0,"delta":{"content":"!"},'
                     '"finish_reason":"stop"}]}\n\n')
        outcome = asyncio.run(_outcome(body + "data: [DONE]\n\n", "text/event-stream"))
    if isinstance(outcome, ProviderError):
        return
    assert isinstance(outcome[-1], Finish)
    assert isinstance(outcome[-1].reason, str) and outcome[-1].reason
    for event in outcome[:-1]:
        if isinstance(event, ToolCall):
            assert type(event.index) is int and 0 <= event.index <= 127
            assert type(event.arguments) is str
            assert all(v is None or type(v) is str for v in (event.id, event.name))
            continue
        assert isinstance(event, Delta | Reasoning)
        assert type(event.text) is str and event.text
