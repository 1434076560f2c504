"""Bad input: each case gets its documented status and envelope, and nothing is stored."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from mpchat.storage.tables import conversations, messages
from tests.in_process import in_process_app

OTHER_CONV = "0" * 32


async def _counts(engine) -> tuple[int, int]:
    async with engine.connect() as conn:
        c = (await conn.execute(select(func.count()).select_from(conversations))).scalar_one()
        m = (await conn.execute(select(func.count()).select_from(messages))).scalar_one()
    return int(c), int(m)


CASES: list[tuple[str, Any, dict[str, str], int, str]] = [
    # (name, body (bytes or JSON-able), extra headers, status, code)
    ("invalid json", b'{"content": "hi"', {}, 400, "invalid_request"),
    ("missing content", {"stream": True}, {}, 400, "invalid_request"),
    ("empty content", {"content": ""}, {}, 400, "invalid_request"),
    ("whitespace content", {"content": " \n\t "}, {}, 400, "invalid_request"),
    ("too long content", {"content": "长" * 2001}, {}, 400, "invalid_request"),
    ("content not a string", {"content": 123}, {}, 400, "invalid_request"),
    ("stream not a bool", {"content": "hi", "stream": "yes"}, {}, 400, "invalid_request"),
    ("body not an object", [1, 2], {}, 400, "invalid_request"),
    ("malformed conversation id", {"content": "hi", "conversation_id": "../etc"}, {},
     400, "invalid_request"),
    ("unknown conversation id", {"content": "hi", "conversation_id": OTHER_CONV}, {},
     404, "not_found"),
    ("unknown profile", {"content": "hi", "profile": "nope"}, {}, 400, "invalid_request"),
    ("oversized body", {"content": "x" * 70_000}, {}, 413, "payload_too_large"),
    ("wrong content type", b"content=hi", {"Content-Type": "application/x-www-form-urlencoded"},
     400, "invalid_request"),
    ("forged token", {"content": "hi"}, {"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.e30.x"},
     401, "unauthorized"),
    ("no token", {"content": "hi"}, {"Authorization": ""}, 401, "unauthorized"),
]


@pytest.mark.parametrize(("name", "body", "headers", "status", "code"), CASES,
                         ids=[c[0] for c in CASES])
async def test_bad_chat_input(settings_factory, name, body, headers, status, code):
    async with in_process_app(settings_factory()) as app:
        token = await app.login()
        engine = app.services.engine
        before = await _counts(engine)
        hdrs = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        hdrs.update(headers)
        hdrs = {k: v for k, v in hdrs.items() if v}
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        r = await app.http.post(f"{app.base_url}/api/v1/chat", content=data, headers=hdrs)
        raw = r.content
        assert r.status_code == status, raw
        assert r.headers["Content-Type"].startswith("application/x-ndjson")
        assert r.headers.get("X-Request-Id")
        lines = raw.splitlines()
        assert len(lines) == 1
        event = orjson.loads(lines[0])
        assert event["type"] == "error" and event["code"] == code and event["message"]
        assert await _counts(engine) == before  # nothing stored for a rejected request


async def test_non_streaming_errors_use_the_json_envelope(settings_factory):
    async with in_process_app(settings_factory()) as app:
        token = await app.login()
        r = await app.http.post(f"{app.base_url}/api/v1/chat",
                                json={"content": " ", "stream": False},
                                headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 400
        assert r.json() == {"error": {"code": "invalid_request",
                                      "message": "content 不能为空"}}


@pytest.mark.parametrize("body", [b"{}", b'{"code": ""}', b'{"code": 5}', b"nope"])
async def test_bad_login_input(settings_factory, body):
    async with in_process_app(settings_factory()) as app:
        r = await app.http.post(f"{app.base_url}/api/v1/login", content=body,
                                headers={"Content-Type": "application/json"})
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "invalid_request"


async def test_request_id_is_echoed_when_sane(settings_factory):
    async with in_process_app(settings_factory()) as app:
        r = await app.http.get(f"{app.base_url}/healthz", headers={"X-Request-Id": "abc-123"})
        assert r.headers["X-Request-Id"] == "abc-123"
        r = await app.http.get(f"{app.base_url}/healthz",
                               headers={"X-Request-Id": "bad id\twith junk"})
        assert r.headers["X-Request-Id"] not in ("bad id\twith junk", "")


async def test_unknown_route_is_not_found_envelope(settings_factory):
    async with in_process_app(settings_factory()) as app:
        r = await app.http.get(f"{app.base_url}/api/v1/nope")
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "not_found"
