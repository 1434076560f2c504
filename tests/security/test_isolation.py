"""Every endpoint that takes an id, called with another user's id: 404, nothing disclosed."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from sqlalchemy import func, select

from mpchat.storage.tables import conversations, messages
from tests.utils import Running, running_app

# (name, method, path template, body template): {cid} is the conversation id under test,
# {mid} the id of its answer.
ID_ENDPOINTS: list[tuple[str, str, str, dict[str, Any] | None]] = [
    ("list messages", "GET", "/api/v1/conversations/{cid}/messages", None),
    ("list messages, paged", "GET", "/api/v1/conversations/{cid}/messages?limit=1&before=999",
     None),
    ("delete conversation", "DELETE", "/api/v1/conversations/{cid}", None),
    ("chat into it (stream)", "POST", "/api/v1/chat",
     {"content": "hi", "conversation_id": "{cid}"}),
    ("chat into it (json)", "POST", "/api/v1/chat",
     {"content": "hi", "conversation_id": "{cid}", "stream": False}),
    ("follow an answer", "GET", "/api/v1/messages/{mid}/events", None),
    ("resume an answer", "GET", "/api/v1/messages/{mid}/events?after=0", None),
    ("cancel an answer", "POST", "/api/v1/messages/{mid}/cancel", None),
    ("read an answer aloud", "GET", "/api/v1/messages/{mid}/speech", None),
    ("read a sentence aloud", "GET", "/api/v1/messages/{mid}/speech?sentence=0", None),
]
# Routes whose foreign ids need a setup of their own, with the test that checks them alike.
TESTED_ELSEWHERE = {
    ("GET", "/api/v1/orders/{order_id}"):
        "tests/payments/test_orders.py::test_hostile_requests (needs the fake WeChat Pay)",
}
# Headers that differ between any two responses.
_VOLATILE = {"date", "x-request-id", "content-length"}


def _fill(body: dict[str, Any] | None, cid: str) -> dict[str, Any] | None:
    if body is None:
        return None
    return {k: (v.format(cid=cid, mid=cid) if isinstance(v, str) else v)
            for k, v in body.items()}


async def _call(app: Running, token: str, method: str, path: str, body: Any):
    async with app.http.request(method, app.base_url + path, json=body,
                                headers={"Authorization": f"Bearer {token}"}) as r:
        raw = await r.read()
        headers = {k.lower(): v for k, v in r.headers.items() if k.lower() not in _VOLATILE}
        return r.status, raw, headers


async def _rows(app: Running) -> tuple[int, int]:
    async with app.services.engine.connect() as conn:
        n_conv = (await conn.execute(select(func.count()).select_from(conversations))).scalar()
        n_msg = (await conn.execute(select(func.count()).select_from(messages))).scalar()
    return int(n_conv or 0), int(n_msg or 0)


async def test_foreign_ids_look_exactly_like_unknown_ids(settings_factory):
    async with running_app(settings_factory()) as app:
        alice, eve = await app.login("alice"), await app.login("eve")
        _, events = await app.chat_events(alice, {"content": "alice's private words"})
        cid, mid = events[0]["conversation_id"], events[0]["message_id"]
        await app.chat_events(eve, {"content": "eve's own"})
        before = await _rows(app)
        unknown = uuid.uuid4().hex
        for name, method, template, body in ID_ENDPOINTS:
            target = mid if "{mid}" in template else cid
            foreign = await _call(app, eve, method, template.format(cid=cid, mid=mid),
                                  _fill(body, cid))
            missing = await _call(app, eve, method, template.format(cid=unknown, mid=unknown),
                                  _fill(body, unknown))
            status, raw, _ = foreign
            assert status == 404, (name, raw)
            assert _code(raw) == "not_found", name
            # Byte-for-byte what an id that does not exist gets: no oracle for existence.
            assert foreign == (missing[0],
                               missing[1].replace(unknown.encode(), target.encode()),
                               missing[2]), name
            assert target.encode() not in raw and b"alice" not in raw and b"private" not in raw
        assert await _rows(app) == before  # nothing deleted, nothing stored

        # Alice still has everything; Eve's list never shows Alice's conversation.
        status, raw, _ = await _call(app, alice, "GET", f"/api/v1/conversations/{cid}/messages",
                                     None)
        assert status == 200
        assert orjson.loads(raw)["items"][0]["content"] == "alice's private words"
        status, raw, _ = await _call(app, eve, "GET", "/api/v1/conversations", None)
        assert status == 200 and cid.encode() not in raw and b"alice" not in raw


async def test_every_id_taking_route_is_in_the_table(settings_factory):
    """A new route with an id must be added to ID_ENDPOINTS (and so be tested above)."""
    async with running_app(settings_factory()) as app:
        async with app.http.get(app.base_url + "/openapi.json") as r:
            paths = (await r.json())["paths"]
    taking_ids = {
        (method.upper(), path)
        for path, ops in paths.items() if path.startswith("/api/")
        for method, op in ops.items()
        if "{" in path or "conversation_id" in orjson.dumps(op.get("requestBody", {})).decode()
        or any(ref.endswith("ChatBody") for ref in _refs(op))
    }
    covered = {(m, t.split("?")[0].replace("{cid}", "{conversation_id}")
                    .replace("{mid}", "{message_id}"))
               for _, m, t, _ in ID_ENDPOINTS} | set(TESTED_ELSEWHERE)
    assert taking_ids <= covered, taking_ids - covered


def _code(raw: bytes) -> str:
    """The error code of a JSON envelope or of a single NDJSON error line."""
    doc = orjson.loads(raw.splitlines()[0])
    return str(doc["error"]["code"] if "error" in doc else doc["code"])


def _refs(op: dict[str, Any]) -> list[str]:
    text = orjson.dumps(op).decode()
    return [part.split('"')[0] for part in text.split('"$ref":"')[1:]]
