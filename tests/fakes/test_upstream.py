"""The fake provider itself: its script steps send what they claim, its control API, its help."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import aiohttp
import orjson
import pytest

from mpchat.fakes.upstream import FakeUpstream

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}


async def _raw(fake: FakeUpstream, step: dict) -> tuple[str, bytes]:
    fake.script = [step]
    async with aiohttp.ClientSession() as http, \
            http.post(fake.base_url + "/chat/completions", json=BODY) as resp:
        return resp.content_type, await resp.read()


def _payloads(body: bytes) -> list[object]:
    return [orjson.loads(line[5:]) for line in body.splitlines()
            if line.startswith(b"data:") and line[5:].strip() != b"[DONE]"]


async def test_raw_is_sent_verbatim(fake_upstream):
    raw = "data: {\"x\": 1}\r\n\r\n: hi\n\ndata: [DONE]\n\n"
    assert await _raw(fake_upstream, {"raw": [raw[:7], raw[7:]]}) == ("text/event-stream",
                                                                       raw.encode())
    assert await _raw(fake_upstream, {"raw": "{}", "content_type": "application/json"}) == (
        "application/json", b"{}")


async def test_reasoning_parts_and_usage_placements(fake_upstream):
    _, body = await _raw(fake_upstream, {"reasoning": ["想"], "reasoning_field": "reasoning",
                                         "parts": True, "text": ["好"], "usage": "choice"})
    chunks = _payloads(body)
    assert chunks[0]["choices"][0]["delta"]["reasoning"] == "想"  # type: ignore[index]
    assert chunks[1]["choices"][0]["delta"]["content"] == [  # type: ignore[index]
        {"type": "text", "text": "好"}]
    assert "usage" in chunks[-1]["choices"][0]  # type: ignore[index]
    _, body = await _raw(fake_upstream, {"usage": "chunk", "text": ["好"]})
    assert _payloads(body)[-1]["choices"] == []  # type: ignore[index]
    _, body = await _raw(fake_upstream, {"usage": "none", "text": ["好"]})
    assert all("usage" not in c for c in _payloads(body))  # type: ignore[operator]


async def test_framing_flags(fake_upstream):
    _, body = await _raw(fake_upstream, {"crlf": True, "nospace": True, "comments": True,
                                         "text": ["a"]})
    assert b"\r\n\r\n" in body and b"data:{" in body and b"data: " not in body
    assert b": keep-alive" in body and b"event: message" in body and b"id: 7" in body


@pytest.mark.parametrize(("key", "marker"), [
    ("garbage_after", b"{this is not json"), ("wrong_types_after", b'"content":42'),
    ("error_after", b'{"error":'),
])
async def test_bad_lines_go_where_they_are_asked(fake_upstream, key, marker):
    _, body = await _raw(fake_upstream, {key: 1, "text": ["a", "b"]})
    assert body.index(b'"content":"a"') < body.index(marker) < body.index(b'"content":"b"')


async def test_json_body(fake_upstream):
    content_type, body = await _raw(fake_upstream, {"json_body": True, "text": ["整", "段"]})
    assert content_type == "application/json"
    answer = orjson.loads(body)
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"] == "整段"


async def test_oversized_chunk_is_one_line_of_that_size(fake_upstream):
    _, body = await _raw(fake_upstream, {"oversized": 300_000, "text": []})
    longest = max(body.split(b"\n"), key=len)
    assert longest.count(b"a") >= 300_000 and len(longest) < 300_100


async def test_done_then_hang_keeps_the_connection_open(fake_upstream):
    fake_upstream.script = [{"done_then_hang": True, "text": ["a"]}]
    async with aiohttp.ClientSession() as http, \
            http.post(fake_upstream.base_url + "/chat/completions", json=BODY) as resp:
        seen = b""
        while b"[DONE]" not in seen:
            seen += await resp.content.readany()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):  # nothing more comes, and the body never ends
                await resp.content.readany()
    await asyncio.wait_for(fake_upstream.wait_idle(), 5)
    assert fake_upstream.stats.cancelled == 1 and fake_upstream.stats.completed == 0


async def test_control_api(fake_upstream):
    base = fake_upstream.base_url.removesuffix("/v1")
    async with aiohttp.ClientSession() as http:
        async with http.post(base + "/_control/script", json=[{"status": 503}]) as r:
            assert await r.json() == {"queued": 1}
        async with http.post(fake_upstream.base_url + "/chat/completions", json=BODY) as r:
            assert r.status == 503
        async with http.get(base + "/_control/stats") as r:
            assert (await r.json())["requests"] == 1
        async with http.post(base + "/_control/reset") as r:
            assert r.status == 200
        async with http.get(base + "/_control/stats") as r:
            assert (await r.json())["requests"] == 0


def test_help_documents_every_step_the_port_and_the_control_api():
    out = subprocess.run([sys.executable, "-m", "mpchat", "fake-upstream", "--help"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    for word in ["status", "retry_after", "hang", "drop_after", "trickle", '"text"', "reasoning",
                 "reasoning_field", "parts", "usage", "finish_reason", "json_body", "crlf",
                 "nospace", "comments", "garbage_after", "wrong_types_after", "error_after",
                 "oversized", "no_newline", "endless", "done_then_hang", "raw", "content_type",
                 "9100", "/_control/script", "/_control/stats", "/_control/reset"]:
        assert word in out, word
