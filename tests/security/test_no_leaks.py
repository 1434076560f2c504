"""A full run with marker secrets: no marker, token or session_key in any log or response."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from sqlalchemy import text

from mpchat.fakes.upstream import FakeUpstream
from mpchat.fakes.wechat import FakeWeChat
from mpchat.logs import configure_logging
from mpchat.storage.crypto import generate_key_spec
from mpchat.storage.engine import create_engine
from tests.utils import Running, running_app

UPSTREAM_KEY = "UPSTREAMKEY-marker-5b0e1c77"
WECHAT_SECRET = "WXSECRET-marker-9d2f4a61"
SECRET_KEY = "SECRETKEY-marker-" + "z" * 32
ADMIN_TOKEN = "ADMINTOKEN-marker-3c8e7f15"
ENCRYPTION_KEYS = f"{generate_key_spec('leak2')},{generate_key_spec('leak1')}"
APPID = "wx_leak_test"
# What must never be shown, beyond the markers: stack traces and provider error bodies.
FORBIDDEN_IN_ERRORS = ("Traceback", 'File "', "scripted failure", "Exception", '"type":"fake"')


class RecordingWeChat(FakeWeChat):
    """The fake WeChat, remembering each session_key and access token it hands out."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.issued: list[str] = []

    async def _jscode2session(self, request: web.Request) -> web.Response:
        response = await super()._jscode2session(request)
        self._remember(response, "session_key")
        return response

    async def _stable_token(self, request: web.Request) -> web.Response:
        response = await super()._stable_token(request)
        self._remember(response, "access_token")
        return response

    def _remember(self, response: web.Response, field: str) -> None:
        assert isinstance(response.body, bytes)
        value = orjson.loads(response.body).get(field)
        if value:
            self.issued.append(str(value))


class Recorder:
    """Calls the app and keeps every status, header and body it answered."""

    def __init__(self, app: Running) -> None:
        self.app = app
        self.responses: list[tuple[str, int, str]] = []  # (what, status, headers + body)

    async def call(self, what: str, method: str, path: str, *, token: str | None = None,
                   headers: dict[str, str] | None = None, **kw: Any) -> tuple[int, bytes]:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        async with self.app.http.request(method, self.app.base_url + path,
                                         headers=all_headers, **kw) as r:
            body = await r.read()
            dump = "\n".join(f"{k}: {v}" for k, v in r.headers.items())
            self.responses.append((what, r.status, dump + "\n\n" + body.decode("utf-8", "replace")))
            return r.status, body


def _secrets(*extra: str) -> list[str]:
    keys = [part.partition(":")[2] for part in ENCRYPTION_KEYS.split(",")]
    return [UPSTREAM_KEY, WECHAT_SECRET, SECRET_KEY, ADMIN_TOKEN, ENCRYPTION_KEYS, *keys, *extra]


async def _full_run(rec: Recorder, upstream: FakeUpstream) -> list[str]:
    """Everything a client can do, good and bad; returns the tokens issued."""
    status, body = await rec.call("login", "POST", "/api/v1/login", json={"code": "alice-code"})
    assert status == 200
    alice = orjson.loads(body)["token"]
    status, body = await rec.call("login", "POST", "/api/v1/login", json={"code": "bob-code"})
    bob = orjson.loads(body)["token"]
    assert (await rec.call("bad code", "POST", "/api/v1/login", json={"code": "invalid"}))[0] == 401
    assert (await rec.call("no code", "POST", "/api/v1/login", json={}))[0] == 400

    status, body = await rec.call("stream", "POST", "/api/v1/chat", token=alice,
                                  json={"content": "你好"})
    assert status == 200 and b'"done"' in body
    cid = orjson.loads(body.splitlines()[0])["conversation_id"]
    status, body = await rec.call("json", "POST", "/api/v1/chat", token=alice,
                                  json={"content": "again", "conversation_id": cid,
                                        "stream": False})
    assert status == 200
    upstream.script = [{"status": 500}, {"status": 503}]  # retried, then answered
    status, body = await rec.call("retried", "POST", "/api/v1/chat", token=alice,
                                  json={"content": "retry please"})
    assert status == 200 and b'"done"' in body
    upstream.script = [{"status": 401}]  # the provider refuses our key
    status, body = await rec.call("provider 401", "POST", "/api/v1/chat", token=alice,
                                  json={"content": "who am i"})
    assert b'"error"' in body
    upstream.script = [{"status": 401}]
    status, body = await rec.call("provider 401 json", "POST", "/api/v1/chat", token=alice,
                                  json={"content": "who am i", "stream": False})
    assert status >= 500
    upstream.script = [{"status": 500}] * 5  # every attempt fails
    status, body = await rec.call("exhausted", "POST", "/api/v1/chat", token=bob,
                                  json={"content": "doomed"})
    assert b'"upstream_error"' in body
    upstream.script = []

    bad_requests: list[tuple[str, dict[str, Any]]] = [
        ("bad json", {"data": b"{not json", "headers": {"Content-Type": "application/json"}}),
        ("no content", {"json": {}}),
        ("long content", {"json": {"content": "x" * 5000}}),
        ("bad id", {"json": {"content": "hi", "conversation_id": "../etc"}}),
        ("wrong type", {"json": {"content": 5}}),
        ("huge body", {"json": {"content": "x" * 200_000}}),
    ]
    for what, kw in bad_requests:
        status, _ = await rec.call(what, "POST", "/api/v1/chat", token=alice, **kw)
        assert 400 <= status < 500, what
    for what, token in [("no token", None), ("forged", alice[:-4] + "AAAA"),
                        ("admin token as user", ADMIN_TOKEN)]:
        assert (await rec.call(what, "GET", "/api/v1/conversations", token=token))[0] == 401
    assert (await rec.call("admin wrong", "GET", "/admin/v1/audit", token=alice))[0] == 401
    assert (await rec.call("admin", "GET", "/admin/v1/audit", token=ADMIN_TOKEN))[0] == 200
    for path in ("/api/v1/conversations", f"/api/v1/conversations/{cid}/messages", "/api/v1/me",
                 "/api/v1/meta"):
        assert (await rec.call(path, "GET", path, token=alice))[0] == 200
    for path in ("/healthz", "/readyz", "/openapi.json", "/nope"):
        await rec.call(path, "GET", path)

    assert (await rec.call("logout", "POST", "/api/v1/logout", token=alice))[0] == 204
    assert (await rec.call("after logout", "GET", "/api/v1/me", token=alice))[0] == 401
    assert (await rec.call("delete me", "DELETE", "/api/v1/me/data", token=bob))[0] == 204
    assert (await rec.call("after delete", "GET", "/api/v1/me", token=bob))[0] == 401
    return [alice, bob]


async def test_full_run_leaks_nothing(settings_factory, fake_upstream, caplog, restore_logging):
    stream = io.StringIO()
    configure_logging("DEBUG", _secrets())
    root = logging.getLogger()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    # configure_logging replaced pytest's handler. Put it back *before* the redacting one,
    # so caplog sees what the code logged, not what the filter made of it.
    root.handlers.insert(0, caplog.handler)
    caplog.set_level(logging.DEBUG)

    async with RecordingWeChat(appid=APPID, secret=WECHAT_SECRET) as wechat:
        settings = settings_factory(
            upstream_base_url=fake_upstream.base_url, upstream_api_key=UPSTREAM_KEY,
            upstream_model="fake-model", wechat_appid=APPID, wechat_secret=WECHAT_SECRET,
            wechat_api_base=wechat.base_url, secret_key=SECRET_KEY,
            encryption_keys=ENCRYPTION_KEYS, admin_token=ADMIN_TOKEN,
            max_content_chars=2000,
        )
        async with running_app(settings) as app:
            rec = Recorder(app)
            tokens = await _full_run(rec, fake_upstream)
        issued = list(wechat.issued)

    assert any(len(s) > 8 for s in issued)  # session keys were handed out
    # The secrets were really in use: the provider saw our key.
    assert f"Bearer {UPSTREAM_KEY}" in fake_upstream.stats.authorization
    logs = stream.getvalue()
    captured = caplog.text + "\n".join(
        r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "mpchat starting" in logs and " DEBUG mpchat" in logs  # DEBUG really captured
    assert "provider rejected the request with HTTP 401" in logs and len(caplog.records) > 15

    for needle in [*_secrets(), *issued, *tokens]:
        assert needle not in captured, needle  # never even logged
    # And the pipeline's own net: a secret logged by mistake comes out masked.
    logging.getLogger("mpchat.canary").error("oops key=%s token %s", UPSTREAM_KEY, tokens[0])
    logs = stream.getvalue()
    assert "oops key=***" in logs
    for needle in [*_secrets(), *issued, *tokens]:
        assert needle not in logs, needle
    for what, status, dump in rec.responses:
        for needle in [*_secrets(), *issued]:
            assert needle not in dump, (what, needle)
        if what != "login":
            for token in tokens:
                assert token not in dump, what
        if status >= 400 or '"type":"error"' in dump:
            for word in FORBIDDEN_IN_ERRORS:
                assert word not in dump.split("\n\n", 1)[1], (what, word)


def _read_files(folder: Path, pattern: str) -> bytes:
    return b"".join(p.read_bytes() for p in folder.glob(pattern))


async def _raw_database(database_url: str, tmp_path: Path) -> bytes:
    if database_url.startswith("sqlite"):
        return _read_files(tmp_path, "test.db*")
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            tables = (await conn.execute(text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))).scalars().all()
            parts: list[str] = []
            for table in tables:
                rows = (await conn.execute(text(f'SELECT t::text FROM "{table}" t'))).scalars()
                parts.extend(rows)
    finally:
        await engine.dispose()
    return "\n".join(parts).encode()


async def test_raw_database_holds_no_chat_text(settings_factory, fake_upstream, database_url,
                                               tmp_path):
    question, answer = "QMARK-4e1d-私密问题", "AMARK-77c0-私密回答"
    async with running_app(settings_factory(
            upstream_base_url=fake_upstream.base_url, upstream_api_key="k",
            upstream_model="fake-model")) as app:
        token = await app.login("raw")
        fake_upstream.script = [{"text": [answer[:6], answer[6:]]}, {"text": [answer]}]
        status, events = await app.chat_events(token, {"content": question})
        assert status == 200 and events[-1]["type"] == "done"
        cid = events[0]["conversation_id"]
        async with app.http.post(app.base_url + "/api/v1/chat",
                                 json={"content": question + " 2", "conversation_id": cid,
                                       "stream": False},
                                 headers={"Authorization": f"Bearer {token}"}) as r:
            assert (await r.json())["content"] == answer
        async with app.http.get(f"{app.base_url}/api/v1/conversations/{cid}/messages",
                                headers={"Authorization": f"Bearer {token}"}) as r:
            page = await r.json()
        assert [m["content"] for m in page["items"]] == [question, answer, question + " 2",
                                                          answer]
    raw = await _raw_database(database_url, tmp_path)  # the app (and its engine) has closed
    assert len(raw) > 1000
    for needle in ("QMARK-4e1d", "AMARK-77c0", "私密"):
        for spelling in (needle.encode(), needle.encode().hex().encode()):
            assert spelling not in raw, needle
