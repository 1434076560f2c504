"""A chat's error body is JSON for ``stream: false`` and one NDJSON line otherwise, decided
by the request itself, however early it failed (authentication, validation, size)."""

from __future__ import annotations

import orjson
import pytest

from tests.utils import running_app

NDJSON = "application/x-ndjson"


async def _post(app, body: bytes, token: str | None = None) -> tuple[int, str, bytes]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with app.http.post(f"{app.base_url}/api/v1/chat", data=body, headers=headers) as r:
        return r.status, r.headers["Content-Type"], await r.read()


def _json_error(content_type: str, raw: bytes) -> str:
    assert content_type.startswith("application/json"), (content_type, raw)
    return str(orjson.loads(raw)["error"]["code"])


def _line_error(content_type: str, raw: bytes) -> str:
    assert content_type.startswith(NDJSON), (content_type, raw)
    event = orjson.loads(raw.splitlines()[0])
    assert event["type"] == "error"
    return str(event["code"])


@pytest.mark.parametrize("stream", [False, True, None])
async def test_unauthenticated(settings_factory, stream):
    body: dict[str, object] = {"content": "你好"}
    if stream is not None:
        body["stream"] = stream
    async with running_app(settings_factory()) as app:
        status, kind, raw = await _post(app, orjson.dumps(body))
    assert status == 401
    read = _json_error if stream is False else _line_error
    assert read(kind, raw) == "unauthorized"


async def test_invalid_and_too_large_bodies(settings_factory):
    async with running_app(settings_factory(max_body_bytes=1024)) as app:
        token = await app.login()
        status, kind, raw = await _post(app, b'{"stream": false, "content": 5}', token)
        assert status == 400 and _json_error(kind, raw) == "invalid_request"
        status, kind, raw = await _post(app, b'{"stream": false, "content": ""}', token)
        assert status == 400 and _json_error(kind, raw) == "invalid_request"
        big = orjson.dumps({"stream": False, "content": "x" * 4000})
        status, kind, raw = await _post(app, big, token)
        assert status == 413 and _json_error(kind, raw) == "payload_too_large"
        big = orjson.dumps({"content": "x" * 4000})
        status, kind, raw = await _post(app, big, token)
        assert status == 413 and _line_error(kind, raw) == "payload_too_large"
        status, kind, raw = await _post(app, b'{"stream": false, "content": "hi"}', token)
        assert status == 200 and orjson.loads(raw)["content"]
