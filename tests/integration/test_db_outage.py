"""The database stops under load: 503 ``service_unavailable`` with ``retry_after`` (JSON for
``stream: false``, one line otherwise), answers under way end with an ``error`` line, and
everything recovers when it is back. The database is a private cluster of this test's own.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from mpchat.settings import Settings
from tests.integration.private_pg import PrivatePostgres
from tests.integration.support import HeldUpstream, wait_until
from tests.utils import running_app

CHATS = 4


@pytest.fixture
async def pg(tmp_path: Path):
    server = PrivatePostgres(tmp_path / "pg")
    await server.init()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def _follow(app: Any, token: str, started: asyncio.Event, events: list[dict]) -> None:
    async with app.http.post(f"{app.base_url}/api/v1/chat", json={"content": "你好"},
                             headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200
        while line := await r.content.readline():
            event = orjson.loads(line)
            events.append(event)
            if event["type"] == "start":
                started.set()


async def _status(app: Any, method: str, path: str, **kw: Any) -> tuple[int, str, bytes]:
    async with app.http.request(method, f"{app.base_url}{path}", **kw) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.read()


async def test_database_outage_mid_load(pg: PrivatePostgres, tmp_path: Path):
    async with HeldUpstream() as upstream:
        settings = Settings(_env_file=None, data_dir=tmp_path / "data",  # type: ignore[call-arg]
                            database_url=pg.url, upstream_base_url=upstream.base_url,
                            rate_limit="1000/minute", login_rate_limit="1000/minute",
                            answer_save_interval=0.05)
        async with running_app(settings) as app:
            token = await app.login("alice")
            started = [asyncio.Event() for _ in range(CHATS)]
            transcripts: list[list[dict]] = [[] for _ in range(CHATS)]
            chats = [asyncio.create_task(_follow(app, token, s, t))
                     for s, t in zip(started, transcripts, strict=True)]
            async with asyncio.timeout(15):
                await asyncio.gather(*(s.wait() for s in started))

            await pg.stop()
            upstream.release()
            async with asyncio.timeout(30):
                await asyncio.gather(*chats)
            for events in transcripts:  # each answer said its words, then could not be stored
                assert events[-1]["type"] == "error", events[-3:]
                assert events[-1]["code"] == "service_unavailable"
                assert events[-1]["retry_after"] >= 1

            status, kind, raw = await _status(app, "GET", "/readyz")
            assert status == 503
            status, kind, raw = await _status(app, "POST", "/api/v1/login",
                                              json={"code": "bob"})
            error = orjson.loads(raw)["error"]
            assert status == 503 and error["code"] == "service_unavailable"
            assert error["retry_after"] >= 1
            headers = {"Authorization": f"Bearer {await _token_of_new_user(app, pg)}"}
            await pg.stop()
            status, kind, raw = await _status(app, "POST", "/api/v1/chat", headers=headers,
                                              json={"content": "hi", "stream": False})
            assert status == 503 and kind.startswith("application/json")
            assert orjson.loads(raw)["error"]["code"] == "service_unavailable"
            status, kind, raw = await _status(app, "POST", "/api/v1/chat", headers=headers,
                                              json={"content": "hi"})
            assert status == 503 and kind.startswith("application/x-ndjson")
            assert orjson.loads(raw)["code"] == "service_unavailable"

            await pg.start()
            await wait_until(lambda: _ready(app), within=20, what="ready again")
            recovered: list[dict] = []
            await _follow(app, await app.login("carol"), asyncio.Event(), recovered)
            assert recovered[-1]["type"] == "done"


async def _token_of_new_user(app: Any, pg: PrivatePostgres) -> str:
    """A session made while the database is up (then stopped again by the caller)."""
    await pg.start()
    await wait_until(lambda: _ready(app), within=20, what="ready")
    return str(await app.login("dave"))


async def _ready(app: Any) -> bool:
    return (await _status(app, "GET", "/readyz"))[0] == 200
