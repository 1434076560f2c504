"""/v1/chat/completions and /v1/models as the official ``openai`` SDK sees them."""

from __future__ import annotations

import io

import openai
import orjson
import pytest
from sqlalchemy import func, select

from mpchat.fakes.upstream import FakeUpstream, FakeUpstreamConfig
from mpchat.storage.tables import api_requests, messages
from tests.openai_surface.conftest import Surface, open_surface, upstream_settings
from tests.utils import wait_until

TEXT = "".join(f"片段{i} " for i in range(20))
ASK = [{"role": "user", "content": "你好"}]


async def test_a_completion_as_the_sdk_reads_it(surface: Surface, fake_upstream):
    raw = await surface.client.chat.completions.with_raw_response.create(
        model="fake-model", messages=ASK)
    completion = raw.parse()
    choice = completion.choices[0]
    assert choice.message.content == TEXT and choice.message.role == "assistant"
    assert choice.finish_reason == "stop" and completion.model == "fake-model"
    assert completion.id.startswith("chatcmpl-") and completion.object == "chat.completion"
    usage = completion.usage
    assert usage is not None and usage.completion_tokens == 20
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert raw.headers["x-ai-generated"] == "true"
    assert raw.headers["x-ai-content-id"] == completion.id
    # The provider got the caller's messages as they were, under the operator's key.
    assert fake_upstream.stats.received[-1] == ASK
    assert fake_upstream.stats.authorization[-1] == "Bearer sk-provider-secret"


async def test_a_stream_with_usage(surface: Surface):
    raw = await surface.client.chat.completions.with_raw_response.create(
        model="fake-model", messages=ASK, stream=True, stream_options={"include_usage": True})
    # As OpenAI's own: nothing in front may buffer, store or recompress the events.
    assert raw.headers["cache-control"] == "no-cache, no-transform"
    assert raw.headers["x-accel-buffering"] == "no"
    stream = raw.parse()
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == TEXT
    finishes = [c.choices[0].finish_reason for c in chunks
                if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 20
    assert len({c.id for c in chunks}) == 1 and {c.model for c in chunks} == {"fake-model"}


async def test_the_stream_on_the_wire(surface: Surface):
    """SSE exactly: ``data:`` lines of JSON chunks, no usage unless asked, ``[DONE]`` last."""
    app = surface.app
    async with app.http.post(f"{app.base_url}/v1/chat/completions",
                             headers={"Authorization": f"Bearer {surface.key}"},
                             json={"model": "fake-model", "messages": ASK,
                                   "stream": True}) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        body = (await r.read()).decode()
    events = [e for e in body.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    chunks = [orjson.loads(e.removeprefix("data: ")) for e in events[:-1]
              if e.startswith("data: ")]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert not any("usage" in c for c in chunks)
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None,
                                        "finish_reason": "stop"}


async def test_parameters_pass_through_and_nothing_else(surface: Surface, fake_upstream):
    await surface.client.chat.completions.create(
        model="fake-model", messages=ASK, temperature=0.3, top_p=0.9, stop=["。"],
        user="agent-7", seed=7, max_completion_tokens=64, presence_penalty=0.5,
        response_format={"type": "json_object"}, extra_body={"made_up_field": 1})
    body = fake_upstream.stats.bodies[-1]
    assert {k: body[k] for k in ("temperature", "top_p", "stop", "user", "seed",
                                 "max_tokens", "presence_penalty", "response_format")} == {
        "temperature": 0.3, "top_p": 0.9, "stop": ["。"], "user": "agent-7", "seed": 7,
        "max_tokens": 64, "presence_penalty": 0.5, "response_format": {"type": "json_object"}}
    assert "made_up_field" not in body and body["model"] == "fake-model"


async def test_nothing_is_stored_and_the_key_counts_its_use(surface: Surface):
    completion = await surface.client.chat.completions.create(model="fake-model", messages=ASK)
    services = surface.services
    async with services.engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(messages)) == 0
        assert await conn.scalar(select(func.count()).select_from(api_requests)) == 0
    [key] = await services.api_keys.list()
    assert completion.usage is not None
    await wait_until(lambda: _used(services, key.id, completion.usage.total_tokens),
                     timeout=5)


async def _used(services, key_id: str, tokens: int) -> bool:  # type: ignore[no-untyped-def]
    return bool((await services.api_keys.get(key_id)).used_tokens == tokens)


async def test_models_and_aliases(settings_factory, fake_upstream, tmp_path):
    config = tmp_path / "mpchat.toml"
    config.write_text(f"""
[[providers]]
name = "fake"
base_url = "{fake_upstream.base_url}"
models = ["fake-model", "fake-large"]

[aliases]
default = "fake-model"
smart = "fake-large"
""", encoding="utf-8")
    async with open_surface(settings_factory(config=config)) as surface:
        listed = [m.id async for m in surface.client.models.list()]
        assert listed == ["fake-model", "fake-large", "default", "smart"]
        assert (await surface.client.models.retrieve("smart")).id == "smart"
        completion = await surface.client.chat.completions.create(model="smart", messages=ASK)
        assert completion.model == "fake-large"
        assert fake_upstream.stats.bodies[-1]["model"] == "fake-large"
        _, narrow = await surface.services.api_keys.create(name="narrow", models=["smart"])
        limited = surface.sdk(narrow)
        assert [m.id async for m in limited.models.list()] == ["smart"]
        with pytest.raises(openai.NotFoundError):
            await limited.chat.completions.create(model="fake-model", messages=ASK)
        await limited.close()


async def test_errors_are_the_sdks_own(surface: Surface, fake_upstream):
    wrong = surface.sdk("sk-mp-not-a-key")
    with pytest.raises(openai.AuthenticationError) as auth:
        await wrong.chat.completions.create(model="fake-model", messages=ASK)
    assert auth.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        await wrong.models.list()
    await wrong.close()
    with pytest.raises(openai.NotFoundError) as missing:
        await surface.client.chat.completions.create(model="no-such-model", messages=ASK)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as many:
        await surface.client.chat.completions.create(model="fake-model", messages=ASK, n=2)
    assert "n=1" in many.value.message
    with pytest.raises(openai.BadRequestError):
        await surface.client.chat.completions.create(model="fake-model", messages=[])
    with pytest.raises(openai.BadRequestError):
        await surface.client.chat.completions.create(
            model="fake-model", messages=[{"role": "wizard", "content": "x"}])  # type: ignore[list-item, misc]
    assert fake_upstream.stats.requests == 0


@pytest.mark.parametrize("body", [
    b"not json", b"[]", b'{"model": "fake-model"}', b'{"model": 1, "messages": []}',
    b'{"model": "fake-model", "messages": [{"role": "user", "content": 5}]}',
    b'{"model": "fake-model", "messages": [{"role": "user", "content": "x"}],'
    b' "temperature": "hot"}',
    b'{"model": "fake-model", "messages": [{"role": "user", "content": "x"}], "stop": '
    b'["a", "b", "c", "d", "e"]}',
])
async def test_malformed_bodies_get_openais_400(surface: Surface, body: bytes):
    app = surface.app
    async with app.http.post(f"{app.base_url}/v1/chat/completions", data=body,
                             headers={"Authorization": f"Bearer {surface.key}",
                                      "Content-Type": "application/json"}) as r:
        assert r.status == 400
        error = (await r.json())["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_request"
    assert set(error) == {"message", "type", "param", "code"}


async def test_a_body_too_large_for_v1_but_not_for_the_chat(surface: Surface):
    app = surface.app
    headers = {"Authorization": f"Bearer {surface.key}", "Content-Type": "application/json"}
    for chars, status in ((100_000, 200), (400_000, 413)):  # ~300 KB (over the chat's 64 KiB)
        body = orjson.dumps({"model": "fake-model",
                             "messages": [{"role": "user", "content": "长" * chars}]})
        async with app.http.post(f"{app.base_url}/v1/chat/completions",
                                 data=io.BytesIO(body), headers=headers) as r:
            assert r.status == status
            if status == 413:
                assert (await r.json())["error"]["code"] == "payload_too_large"


async def test_key_limits_answer_429_as_openai_does(settings_factory, fake_upstream):
    settings = settings_factory(**upstream_settings(fake_upstream))
    async with open_surface(settings, rpm=1) as surface:
        await surface.client.chat.completions.create(model="fake-model", messages=ASK)
        with pytest.raises(openai.RateLimitError) as limited:
            await surface.client.chat.completions.create(model="fake-model", messages=ASK)
        assert limited.value.code == "rate_limit_exceeded"
        assert 0 < int(limited.value.response.headers["retry-after"]) <= 60
    async with open_surface(settings, quota=10) as surface:
        await surface.client.chat.completions.create(model="fake-model", messages=ASK)
        with pytest.raises(openai.RateLimitError) as spent:
            await surface.client.chat.completions.create(model="fake-model", messages=ASK)
        assert spent.value.code == "insufficient_quota"
    assert fake_upstream.stats.requests == 2


async def test_a_listed_input_never_reaches_the_provider(surface: Surface, fake_upstream):
    with pytest.raises(openai.BadRequestError) as rejected:
        await surface.client.chat.completions.create(
            model="fake-model", messages=[{"role": "system", "content": "你是助手"},
                                          {"role": "user", "content": "哪里可以赌博"}])
    assert rejected.value.code == "content_rejected"
    assert fake_upstream.stats.requests == 0


async def test_a_retracted_answer_ends_with_content_filter(surface: Surface, fake_upstream):
    fake_upstream.script = [{"text": ["好的，赌", "博网站在这里"], "trickle": 0.05},
                            {"text": ["好的，赌", "博网站在这里"]}]
    stream = await surface.client.chat.completions.create(model="fake-model", messages=ASK,
                                                          stream=True)
    chunks = [c async for c in stream]
    said = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "赌" not in said
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    whole = await surface.client.chat.completions.create(model="fake-model", messages=ASK)
    assert whole.choices[0].finish_reason == "content_filter"
    assert whole.choices[0].message.content == ""


async def test_provider_failures(surface: Surface, fake_upstream):
    fake_upstream.script = [{"status": 500}] * 3
    with pytest.raises(openai.InternalServerError) as failed:
        await surface.client.chat.completions.create(model="fake-model", messages=ASK)
    assert failed.value.status_code == 502 and failed.value.code == "upstream_error"
    # Broken after its first words: the stream says so, and the SDK raises it.
    fake_upstream.script = [{"drop_after": 3}]
    stream = await surface.client.chat.completions.create(model="fake-model", messages=ASK,
                                                          stream=True)
    seen = []
    with pytest.raises(openai.APIError) as broken:
        async for chunk in stream:
            seen.append(chunk)
    assert seen and broken.value.code == "upstream_error"


async def test_a_caller_that_leaves_stops_the_answer(surface: Surface, fake_upstream):
    app = surface.app
    fake_upstream.script = [{"trickle": 0.2}]
    async with app.http.post(f"{app.base_url}/v1/chat/completions",
                             headers={"Authorization": f"Bearer {surface.key}"},
                             json={"model": "fake-model", "messages": ASK,
                                   "stream": True}) as r:
        first = await r.content.readline()
        assert first.startswith(b"data: ")
    await wait_until(lambda: fake_upstream.stats.cancelled == 1, timeout=5)
    await surface.services.answers.wait_idle()
    gate = surface.services.upstream.routes[0].gate
    assert gate.in_flight == 0 and gate.waiting == 0


TOOL_STREAM = [
    'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":'
    '[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather",'
    '"arguments":""}}]},"finish_reason":null}]}\n\n',
    'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":'
    '{"arguments":"{\\"city\\":"}}]},"finish_reason":null}]}\n\n',
    'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":'
    '{"arguments":"\\"北京\\"}"}}]},"finish_reason":null}]}\n\n',
    'data: {"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],'
    '"usage":{"prompt_tokens":30,"completion_tokens":12}}\n\n',
    "data: [DONE]\n\n",
]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object",
                                          "properties": {"city": {"type": "string"}}}}}]


async def test_tool_calls_pass_through(surface: Surface, fake_upstream):
    fake_upstream.script = [{"raw": TOOL_STREAM}, {"raw": TOOL_STREAM}]
    whole = await surface.client.chat.completions.create(
        model="fake-model", messages=ASK, tools=TOOLS, tool_choice="auto")  # type: ignore[arg-type]
    assert fake_upstream.stats.bodies[-1]["tools"] == TOOLS
    choice = whole.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert (call.id, call.function.name, call.function.arguments) == (
        "call_1", "get_weather", '{"city":"北京"}')
    assert whole.usage is not None and whole.usage.completion_tokens == 12

    stream = await surface.client.chat.completions.create(
        model="fake-model", messages=ASK, tools=TOOLS, stream=True)  # type: ignore[arg-type]
    pieces = [c.choices[0].delta.tool_calls for c in [c async for c in stream]
              if c.choices and c.choices[0].delta.tool_calls]
    assert pieces[0][0].id == "call_1" and pieces[0][0].function.name == "get_weather"
    assert "".join(p[0].function.arguments or "" for p in pieces) == '{"city":"北京"}'


async def test_tools_for_a_route_that_takes_none_are_refused(settings_factory, tmp_path,
                                                             fake_upstream):
    config = tmp_path / "mpchat.toml"
    config.write_text(f"""
[[providers]]
name = "plain"
base_url = "{fake_upstream.base_url}"
models = ["fake-model"]
tools = false
""", encoding="utf-8")
    async with open_surface(settings_factory(config=config)) as surface:
        with pytest.raises(openai.BadRequestError):
            await surface.client.chat.completions.create(
                model="fake-model", messages=ASK, tools=TOOLS)  # type: ignore[arg-type]
    assert fake_upstream.stats.requests == 0


async def test_a_caller_that_does_not_stream_gets_one_body_asked_of_the_provider(
        surface: Surface, fake_upstream):
    whole = await surface.client.chat.completions.create(model="fake-model", messages=ASK)
    assert whole.choices[0].message.content == TEXT
    assert whole.usage is not None and whole.usage.completion_tokens == 20
    body = fake_upstream.stats.bodies[-1]
    assert body["stream"] is False and "stream_options" not in body
    stream = await surface.client.chat.completions.create(model="fake-model", messages=ASK,
                                                          stream=True)
    assert "".join([c.choices[0].delta.content or "" async for c in stream
                    if c.choices]) == TEXT
    assert fake_upstream.stats.bodies[-1]["stream"] is True


async def test_a_malformed_body_is_retried_as_a_malformed_stream_is(surface: Surface,
                                                                    fake_upstream):
    fake_upstream.script = [{"raw": '{"choices":[{"message":{"content":', "content_type":
                             "application/json"}, {"raw": "[]", "content_type":
                             "application/json"}]
    whole = await surface.client.chat.completions.create(model="fake-model", messages=ASK)
    assert whole.choices[0].message.content == TEXT
    assert fake_upstream.stats.requests == 3
    fake_upstream.script = [{"raw": "{", "content_type": "application/json"}] * 3
    with pytest.raises(openai.InternalServerError) as failed:
        await surface.client.chat.completions.create(model="fake-model", messages=ASK)
    assert failed.value.status_code == 502 and failed.value.code == "upstream_error"


async def test_a_listed_word_in_a_whole_answer_is_filtered(surface: Surface, fake_upstream):
    fake_upstream.script = [{"text": ["好的，", "赌博网站在这里"]}]
    raw = await surface.client.chat.completions.with_raw_response.create(
        model="fake-model", messages=ASK)
    whole = raw.parse()
    assert whole.choices[0].finish_reason == "content_filter"
    assert whole.choices[0].message.content == ""
    assert "赌" not in (await raw.http_response.aread()).decode()
    assert fake_upstream.stats.bodies[-1]["stream"] is False


async def test_tool_calls_from_one_body(surface: Surface, fake_upstream):
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"北京"}'}}
    fake_upstream.script = [{"raw": orjson.dumps({"choices": [{
        "index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [call]},
        "finish_reason": "tool_calls"}], "usage": {"prompt_tokens": 30,
                                                    "completion_tokens": 12}}).decode(),
        "content_type": "application/json"}]
    whole = await surface.client.chat.completions.create(
        model="fake-model", messages=ASK, tools=TOOLS)  # type: ignore[arg-type]
    choice = whole.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [got] = choice.message.tool_calls or []
    assert (got.id, got.function.name, got.function.arguments) == (
        "call_1", "get_weather", '{"city":"北京"}')
    assert whole.usage is not None and whole.usage.total_tokens == 42


async def test_a_whole_answer_may_take_longer_than_the_first_delta_deadline(settings_factory):
    """Its first text is all of it: the total deadline bounds it, not the first token's."""
    async with FakeUpstream(FakeUpstreamConfig(ttft=0.3)) as fake, open_surface(
            settings_factory(**upstream_settings(fake), first_delta_deadline=0.05,
                             upstream_first_token_timeout=0.05,
                             upstream_total_timeout=10)) as surface:
        whole = await surface.client.chat.completions.create(model="fake-model", messages=ASK)
        assert whole.choices[0].message.content == TEXT
        with pytest.raises(openai.APIStatusError) as late:  # streamed: as before
            await surface.client.chat.completions.create(model="fake-model", messages=ASK,
                                                         stream=True)
        assert late.value.status_code == 504
