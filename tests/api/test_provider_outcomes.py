"""Providers as they really are, through the whole app: every way the fake misbehaves or
speaks a dialect ends in its contract outcome at ``POST /api/v1/chat`` and in storage.

Companion: ``test_provider_routes.py`` (which route served, every route down, bounds).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpchat.fakes.upstream import FakeUpstream
from mpchat.storage import answers as stored
from tests.utils import Running, running_app

FULL = "".join(f"片段{i} " for i in range(20))  # the fake's default answer
Events = list[dict[str, Any]]
TERMINAL = {"done", "error", "retract"}


# -- helpers (also used by test_provider_routes.py) ------------------------------------------

def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def check_stream(events: Events) -> None:
    """A well-formed answer stream: start first, consecutive seq, one terminal event last."""
    numbered = [e for e in events if e["type"] != "ping"]
    assert numbered, "an empty stream"
    assert numbered[0]["type"] == "start", numbered[0]
    assert [e["seq"] for e in numbered] == list(range(len(numbered))), numbered
    kinds = [e["type"] for e in numbered]
    assert kinds[-1] in TERMINAL, kinds
    ends = [i for i, k in enumerate(kinds) if k in TERMINAL]
    # retract is followed by its done; otherwise exactly one terminal event
    assert ends == [len(kinds) - 1] or (kinds[-2:] == ["retract", "done"]
                                        and ends == [len(kinds) - 2, len(kinds) - 1]), kinds


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]
    assert "Traceback" not in caplog.text


def delta_text(events: Events) -> str:
    return "".join(e["text"] for e in events if e["type"] == "delta")


async def chat(app: Running, token: str, body: dict[str, Any]
               ) -> tuple[int, Mapping[str, str], Events]:
    """Status, headers and the NDJSON events of one streamed chat (``stream`` default)."""
    async with app.http.post(f"{app.base_url}/api/v1/chat", json=body,
                             headers=auth(token)) as r:
        raw = await r.read()
        assert r.status != 500, raw
        assert r.content_type == "application/x-ndjson", (r.status, raw)
        return r.status, r.headers.copy(), [orjson.loads(x) for x in raw.splitlines() if x]


async def chat_json(app: Running, token: str, content: str, **extra: Any
                    ) -> tuple[int, Mapping[str, str], dict[str, Any]]:
    async with app.http.post(f"{app.base_url}/api/v1/chat",
                             json={"content": content, "stream": False, **extra},
                             headers=auth(token)) as r:
        raw = await r.read()
        assert r.status != 500, raw
        assert r.content_type == "application/json", (r.status, raw)
        return r.status, r.headers.copy(), orjson.loads(raw)


async def owner_of(app: Running, message_id: str) -> str:
    # GET /api/v1/me has no user_id yet (API.md says it should): read it from the row.
    from sqlalchemy import select

    from mpchat.storage.tables import messages as table

    async with app.services.engine.connect() as conn:
        found = (await conn.execute(select(table.c.user_id).where(table.c.id == message_id)))
        return str(found.scalar_one())


async def messages(app: Running, token: str, conversation_id: str) -> Events:
    async with app.http.get(f"{app.base_url}/api/v1/conversations/{conversation_id}/messages",
                            headers=auth(token)) as r:
        assert r.status == 200
        return list((await r.json())["items"])


async def latest_conversation(app: Running, token: str) -> str:
    async with app.http.get(f"{app.base_url}/api/v1/conversations",
                            headers=auth(token)) as r:
        return str((await r.json())["items"][0]["id"])


async def stored_answer(app: Running, message_id: str) -> stored.StoredAnswer:
    await asyncio.wait_for(app.services.chat.wait_idle(), 10)
    row = await stored.read_answer(app.services.engine, app.services.keyring,
                                   message_id=message_id, user_id=await owner_of(app, message_id))
    assert row is not None, message_id
    return row


def provider_settings(settings_factory, fake: FakeUpstream, **extra: Any):  # type: ignore[no-untyped-def]
    values: dict[str, Any] = {"upstream_base_url": fake.base_url, "upstream_api_key": "k",
                              "upstream_model": "fake-model"}
    values.update(extra)
    return settings_factory(**values)


# -- 1. the fake's failure modes ---------------------------------------------------------------

_BIG = 2_000_000  # over the 1 MiB line bound, small enough to stay quick

# Invalid before the first delta ([""] makes the bad part come before any text).
BEFORE_FIRST_DELTA: dict[str, dict[str, Any]] = {
    "garbage": {"garbage_after": 0},
    "wrong types": {"wrong_types_after": 0},
    "error object": {"error_after": 0},
    "oversized chunk": {"text": [""], "oversized": _BIG},
    "line without newline": {"text": [""], "no_newline": _BIG},
    "error as JSON body": {"raw": '{"error": {"message": "overloaded", "type": "x"}}',
                           "content_type": "application/json"},
    "nothing but [DONE]": {"raw": "data: [DONE]\n\n"},
    "empty body": {"raw": ""},
    "html error page": {"raw": "<html>502 Bad Gateway</html>", "content_type": "text/html"},
    "failure finish reason": {"text": [""], "finish_reason": "network_error"},
}


@pytest.mark.parametrize("mode", list(BEFORE_FIRST_DELTA))
async def test_invalid_before_the_first_delta_is_retried_then_502(
    settings_factory, fake_upstream, caplog, mode
):
    """Invalid output before any text: retried like a 5xx, then 502, nothing stored."""
    step = BEFORE_FIRST_DELTA[mode]
    async with running_app(provider_settings(settings_factory, fake_upstream)) as app:
        token = await app.login()
        # Streamed: every attempt fails, so the answer fails before its start.
        fake_upstream.script = [step] * 3
        status, _, events = await chat(app, token, {"content": "hi"})
        assert status == 502, events
        assert [e["type"] for e in events] == ["error"]
        assert events[0]["code"] == "upstream_error"
        assert "scripted" not in orjson.dumps(events).decode()
        assert fake_upstream.stats.requests == 3
        conv = await latest_conversation(app, token)
        await asyncio.wait_for(app.services.chat.wait_idle(), 10)
        assert [(m["role"], m["status"]) for m in await messages(app, token, conv)] == [
            ("user", "unanswered")]
        # One bad attempt, then a good one: the client sees only the good answer.
        fake_upstream.script = [step]
        status, _, events = await chat(app, token, {"content": "once more",
                                                    "conversation_id": conv})
        assert status == 200
        check_stream(events)
        assert events[-1]["type"] == "done" and delta_text(events) == FULL
        assert fake_upstream.stats.requests == 5
        stored_row = await stored_answer(app, events[0]["message_id"])
        assert (stored_row.status, stored_row.content) == ("complete", FULL)
        statuses = [(m["role"], m["status"]) for m in await messages(app, token, conv)]
        assert statuses == [("user", "unanswered"), ("user", "complete"),
                            ("assistant", "complete")]
        # stream:false (the success above closed the breaker again): a JSON 502.
        fake_upstream.script = [step] * 3
        status, _, body = await chat_json(app, token, "again", conversation_id=conv)
        assert status == 502 and body["error"]["code"] == "upstream_error"
        assert fake_upstream.stats.requests == 8
    no_tracebacks(caplog)


# Invalid after text reached the client: never retried, the answer is kept truncated.
AFTER_FIRST_DELTA: dict[str, tuple[dict[str, Any], str, str]] = {
    # mode: (step, error code, text the client saw and storage keeps)
    "garbage": ({"garbage_after": 3}, "upstream_error", FULL[:FULL.index("片段3")]),
    "wrong types": ({"wrong_types_after": 3}, "upstream_error", FULL[:FULL.index("片段3")]),
    "error object": ({"error_after": 3}, "upstream_error", FULL[:FULL.index("片段3")]),
    "oversized chunk": ({"oversized": _BIG}, "upstream_error", FULL),
    "line without newline": ({"no_newline": _BIG}, "upstream_error", FULL),
    "failure finish reason": ({"finish_reason": "insufficient_system_resource"},
                              "upstream_error", FULL),
    "EOF without finish": (
        {"raw": 'data: {"choices":[{"index":0,"delta":{"content":"半句"}}]}\n\n'},
        "upstream_error", "半句"),
    "keep-alives forever": ({"endless": "keepalive"}, "upstream_timeout", FULL),
}


@pytest.mark.parametrize("mode", list(AFTER_FIRST_DELTA))
async def test_invalid_after_the_first_delta_ends_in_error_and_truncated(
    settings_factory, fake_upstream, caplog, mode
):
    """Invalid output after text: one request, an error line, the said text stored truncated."""
    step, code, said = AFTER_FIRST_DELTA[mode]
    settings = provider_settings(settings_factory, fake_upstream, upstream_chunk_timeout=0.5)
    async with running_app(settings) as app:
        token = await app.login()
        fake_upstream.script = [step]
        status, _, events = await chat(app, token, {"content": "hi"})
        assert status == 200
        check_stream(events)
        assert events[-1]["type"] == "error" and events[-1]["code"] == code
        assert delta_text(events) == said
        assert fake_upstream.stats.requests == 1  # text had reached the client: no retry
        row = await stored_answer(app, events[0]["message_id"])
        assert (row.status, row.content) == ("truncated", said)
        assert row.meta["error"]["code"] == code
        # stream:false: the failure's status, and the same truncated answer kept.
        fake_upstream.script = [step]
        status, _, body = await chat_json(app, token, "again",
                                          conversation_id=events[0]["conversation_id"])
        assert status == (504 if code == "upstream_timeout" else 502)
        assert body["error"]["code"] == code
        assert fake_upstream.stats.requests == 2
        await asyncio.wait_for(app.services.chat.wait_idle(), 10)
        items = await messages(app, token, events[0]["conversation_id"])
        assert [(m["role"], m["status"]) for m in items] == [
            ("user", "complete"), ("assistant", "truncated")] * 2
        assert items[-1]["content"] == said
        await asyncio.wait_for(fake_upstream.wait_idle(), 5)  # the provider call was closed
    no_tracebacks(caplog)


# -- dialects: every one a normal answer ---------------------------------------------------------

# mode: (step, finish_reason, completion_tokens reported by the provider or None)
DIALECTS: dict[str, tuple[dict[str, Any], str, int | None]] = {
    "plain": ({}, "stop", 20),
    "content parts": ({"parts": True}, "stop", 20),
    "usage in its own chunk": ({"usage": "chunk"}, "stop", 20),
    "usage in the last chunk": ({"usage": "last"}, "stop", 20),
    "usage inside the choice": ({"usage": "choice"}, "stop", 20),
    "no usage": ({"usage": "none"}, "stop", None),
    "length": ({"finish_reason": "length"}, "length", 20),
    "content_filter": ({"finish_reason": "content_filter"}, "content_filter", 20),
    "zhipu sensitive": ({"finish_reason": "sensitive"}, "content_filter", 20),
    "JSON body": ({"json_body": True}, "stop", 20),
    "JSON body, length": ({"json_body": True, "finish_reason": "length"}, "length", 20),
    "CRLF, no space, comments": ({"crlf": True, "nospace": True, "comments": True}, "stop", 20),
    "[DONE] then open": ({"done_then_hang": True}, "stop", 20),
}


@pytest.mark.parametrize("mode", list(DIALECTS))
async def test_each_dialect_is_a_normal_answer(settings_factory, fake_upstream, caplog, mode):
    """Dialects end done with their finish reason and usage, stored complete, streamed or not."""
    step, finish, completion = DIALECTS[mode]
    # A chunk timeout far longer than the test: [DONE] must end the read, not the timer.
    settings = provider_settings(settings_factory, fake_upstream, upstream_chunk_timeout=30)
    async with running_app(settings) as app:
        token = await app.login()
        fake_upstream.script = [step]
        began = time.monotonic()
        status, headers, events = await chat(app, token, {"content": "hi"})
        assert time.monotonic() - began < 5
        assert status == 200 and headers["X-AI-Provider"] == "fake-model"
        check_stream(events)
        done = events[-1]
        assert done["type"] == "done" and done["finish_reason"] == finish
        assert delta_text(events) == FULL
        if completion is not None:
            assert done["usage"]["completion_tokens"] == completion
        else:
            assert done["usage"]["completion_tokens"] > 0  # estimated
        row = await stored_answer(app, events[0]["message_id"])
        assert (row.status, row.content, row.meta["finish_reason"]) == ("complete", FULL, finish)
        assert (row.meta["provider"], row.meta["model"]) == ("upstream", "fake-model")
        fake_upstream.script = [step]
        status, headers, body = await chat_json(app, token, "again")
        assert status == 200 and body["content"] == FULL and body["finish_reason"] == finish
        assert headers["X-AI-Provider"] == "fake-model"
        row = await stored_answer(app, body["message_id"])
        assert (row.status, row.content) == ("complete", FULL)
        if step.get("done_then_hang"):
            # The connection held open after [DONE] was closed by mpchat.
            await asyncio.wait_for(fake_upstream.wait_idle(), 5)
            assert fake_upstream.stats.cancelled == 2
    no_tracebacks(caplog)


REASONING: dict[str, dict[str, Any]] = {
    "reasoning_content": {"reasoning": 3},
    "reasoning field": {"reasoning": 3, "reasoning_field": "reasoning"},
    "reasoning with parts": {"reasoning": 3, "parts": True},
    "JSON body": {"reasoning": 3, "json_body": True},
}


@pytest.mark.parametrize("mode", list(REASONING))
async def test_reasoning_reaches_the_client_but_never_storage_or_context(
    settings_factory, fake_upstream, caplog, mode
):
    """Reasoning leaves as numbered reasoning events before the text; not stored, not context."""
    thoughts = "".join(f"思考{i} " for i in range(3))
    async with running_app(provider_settings(settings_factory, fake_upstream)) as app:
        token = await app.login()
        fake_upstream.script = [REASONING[mode]]
        status, _, events = await chat(app, token, {"content": "想一想"})
        assert status == 200
        check_stream(events)
        kinds = [e["type"] for e in events]
        assert "reasoning" in kinds and kinds.index("reasoning") < kinds.index("delta")
        assert "".join(e["text"] for e in events if e["type"] == "reasoning") == thoughts
        assert delta_text(events) == FULL and events[-1]["type"] == "done"
        row = await stored_answer(app, events[0]["message_id"])
        assert (row.status, row.content) == ("complete", FULL)
        assert "思考" not in orjson.dumps(row.meta).decode()
        items = await messages(app, token, events[0]["conversation_id"])
        assert "思考" not in orjson.dumps(items).decode()
        # The next turn's context holds the answer, not the thinking.
        status, _, nxt = await chat(app, token, {"content": "然后呢",
                                                 "conversation_id": events[0]["conversation_id"]})
        assert status == 200 and nxt[-1]["type"] == "done"
        sent = fake_upstream.stats.received[-1]
        assert [m["role"] for m in sent][-3:] == ["user", "assistant", "user"]
        assert sent[-2]["content"] == FULL
        assert "思考" not in orjson.dumps(sent).decode()
    no_tracebacks(caplog)


async def test_invalid_after_reasoning_is_final_and_leaves_the_question_unanswered(
    settings_factory, fake_upstream, caplog
):
    """Reasoning reached the client, then garbage: not retried; error, question unanswered.

    Retries stop at the provider's first event, reasoning included (chat/upstream.py), so a
    client never sees a second attempt's thinking after the first's. API.md's "before the
    first delta" reads wider; this pins what the service does.
    """
    async with running_app(provider_settings(settings_factory, fake_upstream)) as app:
        token = await app.login()
        fake_upstream.script = [{"reasoning": 2, "garbage_after": 0}]
        status, _, events = await chat(app, token, {"content": "hi"})
        assert status == 200
        check_stream(events)
        assert [e["type"] for e in events] == ["start", "reasoning", "error"]
        assert events[-1]["code"] == "upstream_error"
        assert fake_upstream.stats.requests == 1
        await asyncio.wait_for(app.services.chat.wait_idle(), 10)
        items = await messages(app, token, events[0]["conversation_id"])
        assert [(m["role"], m["status"]) for m in items] == [("user", "unanswered")]
    no_tracebacks(caplog)


async def test_an_endless_thinker_is_cut_and_nothing_is_stored_as_an_answer(
    settings_factory, fake_upstream, caplog
):
    """Reasoning forever and no text: cut at its bound; with nothing said, no complete answer."""
    settings = provider_settings(settings_factory, fake_upstream, max_answer_chars=100)
    async with running_app(settings) as app:
        token = await app.login()
        fake_upstream.script = [{"text": [""], "endless": "reasoning"}]
        status, _, events = await chat(app, token, {"content": "hi"})
        assert status == 200
        check_stream(events)
        assert any(e["type"] == "reasoning" for e in events)
        assert delta_text(events) == ""
        await asyncio.wait_for(app.services.chat.wait_idle(), 10)
        items = await messages(app, token, events[0]["conversation_id"])
        # No text was said: the question is unanswered, never a "complete" empty answer.
        assert [(m["role"], m["status"]) for m in items] == [("user", "unanswered")]
    no_tracebacks(caplog)


# -- 2. any JSON in any chunk field, through the app -------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=6,
)
FIELDS: dict[str, list[Any]] = {
    "top": [], "choices": ["choices"], "choice": ["choices", 0],
    "delta": ["choices", 0, "delta"], "content": ["choices", 0, "delta", "content"],
    "reasoning_content": ["choices", 0, "delta", "reasoning_content"],
    "finish_reason": ["choices", 0, "finish_reason"], "usage": ["usage"],
    "choice_usage": ["choices", 0, "usage"], "error": ["error"],
}
_GOOD = 'data: {"choices":[{"index":0,"delta":{"content":"好"},"finish_reason":null}]}\n\n'
_END = ('data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
        "data: [DONE]\n\n")


def _mutated(field: str, value: Any) -> str:
    chunk: Any = {"choices": [{"index": 0, "delta": {"content": "答"}, "finish_reason": None}]}
    path = FIELDS[field]
    if not path:
        chunk = value
    else:
        target = chunk
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    # json, not orjson: any integer, and lone surrogates as escapes, as a provider's would be
    return "data: " + json.dumps(chunk) + "\n\n"


@pytest.fixture
async def app_and_token(settings_factory, fake_upstream):  # type: ignore[no-untyped-def]
    settings = provider_settings(settings_factory, fake_upstream, upstream_chunk_timeout=2,
                                 upstream_first_token_timeout=2)
    async with running_app(settings) as app:
        token = await app.login()
        status, _, events = await chat(app, token, {"content": "who"})
        assert status == 200
        yield app, token, await owner_of(app, events[0]["message_id"])


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(field=st.sampled_from(sorted(FIELDS)), value=JSON,
       where=st.sampled_from(["first", "after text", "json body"]), stream=st.booleans())
async def test_any_json_in_a_chunk_field_never_breaks_the_stream(
    app_and_token, fake_upstream, caplog, field, value, where, stream
):
    """Random JSON in a chunk field: never a 500, a broken stream or a traceback."""
    app, token, user = app_and_token
    bad = _mutated(field, value)
    if where == "json body":
        step: dict[str, Any] = {"raw": bad.removeprefix("data: "),
                                "content_type": "application/json"}
    else:
        step = {"raw": (_GOOD if where == "after text" else "") + bad + _END}
    fake_upstream.script = [step] * 3
    # Each example on a closed breaker: the failures of earlier ones must not open it.
    app.services.upstream.routes[0].breaker.record_success()
    try:
        said: str | None = None
        if stream:
            status, _, events = await chat(app, token, {"content": "hi"})
            assert status in (200, 502, 504), events
            if status == 200:
                check_stream(events)
                message_id, said = events[0]["message_id"], delta_text(events)
            else:
                assert [e["type"] for e in events] == ["error"]
        else:
            status, _, body = await chat_json(app, token, "hi")
            assert status in (200, 502, 504), body
            if status == 200:
                assert isinstance(body["content"], str)
                assert isinstance(body["finish_reason"], str) and body["finish_reason"]
                message_id, said = body["message_id"], body["content"]
            else:
                assert body["error"]["code"] in ("upstream_error", "upstream_timeout")
        await asyncio.wait_for(app.services.chat.wait_idle(), 10)
        if said is not None:
            row = await stored.read_answer(app.services.engine, app.services.keyring,
                                           message_id=message_id, user_id=user)
            if said:
                assert row is not None and row.content == said
                assert row.status in ("complete", "truncated")
            else:  # nothing was said: never an empty "complete" answer
                assert row is None
    finally:
        fake_upstream.script = []
    no_tracebacks(caplog)


async def test_stream_is_read_as_it_arrives(settings_factory, fake_upstream, caplog):
    """A client reading line by line sees start before the answer ends (nothing is held back)."""
    fake_upstream.config.gap = 0.05
    async with running_app(provider_settings(settings_factory, fake_upstream)) as app:
        token = await app.login()
        seen: Events = []
        async with app.http.post(f"{app.base_url}/api/v1/chat", json={"content": "hi"},
                                 headers=auth(token)) as r:
            assert r.status == 200
            async for line in r.content:
                seen.append(orjson.loads(line))
                if seen[-1]["type"] == "delta":
                    assert fake_upstream.stats.completed == 0  # still streaming upstream
                    break
            r.close()
        await asyncio.wait_for(app.services.chat.wait_idle(), 10)
    assert seen[0]["type"] == "start"
    no_tracebacks(caplog)

