"""The listener's bounds over real sockets: oversized heads, slow clients, too many
connections, idle keep-alive; and that long answers are not cut by any of them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
import pytest

from mpchat.fakes.upstream import FakeUpstream, FakeUpstreamConfig
from mpchat.settings import Settings
from tests.server.support import serving

BOUND = 5.0  # no test here waits longer than this for the server to act


@asynccontextmanager
async def _connect(base_url: str) -> AsyncIterator[tuple[asyncio.StreamReader,
                                                         asyncio.StreamWriter]]:
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        yield reader, writer
    finally:
        writer.close()


async def _closed_after(reader: asyncio.StreamReader) -> tuple[bytes, float]:
    """Everything the server sent until it closed, and how long that took."""
    started = time.monotonic()
    async with asyncio.timeout(BOUND):
        try:
            data = await reader.read()
        except ConnectionResetError:
            data = b""
    return data, time.monotonic() - started


@pytest.fixture
def limits(tmp_path: Path):
    """Settings with small bounds (SQLite: the listener does not depend on the database)."""
    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {"data_dir": tmp_path / "data", "header_timeout": 0.5,
                                     "body_timeout": 0.5, "max_header_bytes": 4096,
                                     "max_headers": 20, "login_rate_limit": "1000/minute"}
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return make


@pytest.mark.parametrize("head", [
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n",  # whole
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000,  # never ends
    b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(30))
    + b"\r\n",  # too many fields
])
async def test_oversized_heads_get_431_and_the_connection_closes(limits, head):
    async with serving(limits()) as app, _connect(app.base_url) as (reader, writer):
        writer.write(head)
        data, _ = await _closed_after(reader)
        assert data.startswith(b"HTTP/1.1 431 ")
        assert orjson.loads(data.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "invalid_request"


async def test_a_head_under_the_limits_is_served(limits):
    async with serving(limits()) as app, _connect(app.base_url) as (reader, writer):
        fields = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 100) for i in range(15))
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + fields
                     + b"\r\n")
        data, _ = await _closed_after(reader)
        assert data.startswith(b"HTTP/1.1 200 ")


async def test_slow_headers_are_cut_at_the_header_timeout(limits):
    async with serving(limits()) as app:
        async with _connect(app.base_url) as (reader, _):  # says nothing at all
            _, waited = await _closed_after(reader)
            assert 0.3 <= waited < 0.5 + 2
        async with _connect(app.base_url) as (reader, writer):  # a slowloris
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            closed = asyncio.ensure_future(_closed_after(reader))
            sent = 0
            while not closed.done() and sent < 100:
                writer.write(b"X-%d: 1\r\n" % sent)  # a field every 50 ms, never the end
                sent += 1
                await asyncio.wait([closed], timeout=0.05)
            _, waited = await closed
            assert sent < 100 and waited < 0.5 + 2


async def test_a_slow_body_is_cut_at_the_body_timeout(limits):
    async with serving(limits()) as app, _connect(app.base_url) as (reader, writer):
        writer.write(b"POST /api/v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                     b"\r\nContent-Length: 100\r\n\r\n{\"code\":")
        data, waited = await _closed_after(reader)
        assert b" 200 " not in data and waited < 0.5 + 2


async def test_idle_kept_alive_connections_close(limits):
    async with serving(limits(keepalive_timeout=1)) as app:
        async with _connect(app.base_url) as (reader, writer):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            data, waited = await _closed_after(reader)
            assert data.startswith(b"HTTP/1.1 200 ") and 0.5 < waited < 1 + 2


async def test_connections_past_the_bound_get_503_busy(limits):
    async with serving(limits(max_connections=2, header_timeout=30)) as app:
        async with _connect(app.base_url) as (_, w1), _connect(app.base_url) as (_, w2):
            w1.write(b"GET /healthz HTTP/1.1\r\n")  # two connections held open
            w2.write(b"GET /healthz HTTP/1.1\r\n")
            await asyncio.gather(w1.drain(), w2.drain())
            async with app.http.get(f"{app.base_url}/healthz") as r:
                assert r.status == 503 and r.headers["Retry-After"] == "1"
                assert (await r.json())["error"]["code"] == "busy"
        async with app.http.get(f"{app.base_url}/healthz") as r:
            assert r.status == 200


async def test_long_answers_outlive_the_request_timeouts(limits):
    # Each answer takes about 1.5 s; the header and body timeouts are 0.5 s.
    async with FakeUpstream(FakeUpstreamConfig(chunks=30, gap=0.05)) as fake:
        async with serving(limits(upstream_base_url=fake.base_url)) as app:
            token = await app.login()
            status, events = await app.chat_events(token, {"content": "你好"})
            assert status == 200 and events[-1]["type"] == "done"
            status, events = await app.chat_events(token, {"content": "再来"})  # kept alive
            assert status == 200 and events[-1]["type"] == "done"
