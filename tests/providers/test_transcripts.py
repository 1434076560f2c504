"""Recorded-style stream transcripts of each provider, replayed byte for byte through the client.

Each ``transcripts/<provider>.sse`` is what that provider sends, written from its public
documentation (see transcripts/README.md); ``expected.json`` says what it means.
"""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from mpchat.fakes.upstream import FakeUpstream
from mpchat.providers.types import Usage
from tests.providers.helpers import collect, finish, make_client, texts

HERE = Path(__file__).parent / "transcripts"
EXPECTED = json.loads((HERE / "expected.json").read_text(encoding="utf-8"))


def test_every_transcript_has_its_expectation():
    assert sorted(p.stem for p in HERE.glob("*.sse")) == sorted(EXPECTED)
    assert len(EXPECTED) >= 9


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("writes", ["per-event", "at-once", "crlf"])
async def test_transcript(fake_upstream: FakeUpstream, name: str, writes: str):
    raw = (HERE / f"{name}.sse").read_text(encoding="utf-8")
    if writes == "crlf":
        raw = raw.replace("\n", "\r\n")
    # One write per event, as the provider flushes them, or all in one read.
    pieces = [e + "\n\n" for e in raw.split("\n\n") if e] if writes == "per-event" else [raw]
    fake_upstream.script = [{"raw": pieces}]
    async with aiohttp.ClientSession() as http:
        events = await collect(make_client(http, fake_upstream.base_url))
    want = EXPECTED[name]
    assert texts(events) == (want["text"], want["reasoning"])
    end = finish(events)
    assert end.reason == want["finish"]
    assert end.usage == (Usage(*want["usage"]) if want["usage"] else None)
    if want["reasoning"]:  # thinking comes before the answer, never mixed into it
        kinds = [type(e).__name__ for e in events]
        assert kinds.index("Reasoning") < kinds.index("Delta")
