"""The request log: off by default (see test_completions); on, encrypted, readable by the
operator, rotated with the other encrypted columns, purged after its days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from mpchat.storage import request_log
from mpchat.storage.crypto import Keyring, generate_key_spec
from mpchat.storage.rotation import count_stale, rotate_keys
from mpchat.storage.tables import api_requests
from tests.openai_surface.conftest import open_surface, upstream_settings

ADMIN = "admin-token-for-tests-0123456789"


async def test_logged_requests_are_encrypted_and_shown_to_the_operator(settings_factory,
                                                                       fake_upstream):
    settings = settings_factory(**upstream_settings(fake_upstream), openai_log_requests=True,
                                admin_token=ADMIN)
    async with open_surface(settings) as surface:
        fake_upstream.script = [{"text": ["秘密的", "回答"]}]
        asked = [{"role": "system", "content": "你是客服"},
                 {"role": "user", "content": "订单 A-1234 到哪了"}]
        completion = await surface.client.chat.completions.create(model="fake-model",
                                                                  messages=asked)
        services = surface.services
        await services.completions.request_log.flush()
        async with services.engine.connect() as conn:
            [row] = (await conn.execute(select(api_requests))).all()
        assert b"A-1234" not in row.record and "回答".encode() not in row.record
        app = surface.app
        async with app.http.get(f"{app.base_url}/admin/v1/requests",
                                headers={"Authorization": f"Bearer {ADMIN}"}) as r:
            page = await r.json()
        [item] = page["items"]
        [key] = await services.api_keys.list()
        assert item["id"] == completion.id and item["key_id"] == key.id
        assert item["messages"] == asked and item["answer"] == "秘密的回答"
        assert item["status"] == "complete" and item["finish_reason"] == "stop"
        assert page["next"] is None


async def test_rotation_and_purge(engine):
    first, second = generate_key_spec("k1"), generate_key_spec("k2")
    old, both = Keyring.from_spec(first), Keyring.from_spec(f"{second},{first}")
    now = datetime.now(UTC)
    await request_log.write_requests(engine, old, [
        request_log.LoggedRequest(id=f"chatcmpl-{i}", key_id="k_1", model="m", status="complete",
                                  finish_reason="stop", prompt_tokens=1, completion_tokens=2,
                                  messages=[{"role": "user", "content": "q"}], answer="a",
                                  created_at=now - timedelta(days=age))
        for i, age in enumerate((1, 40, 50))])
    assert (await count_stale(engine, both))["api_requests.record"] == 3
    await rotate_keys(engine, both)
    assert (await count_stale(engine, both))["api_requests.record"] == 0
    [kept, *_] = await request_log.list_requests(engine, both)
    assert kept.messages == [{"role": "user", "content": "q"}] and kept.answer == "a"
    assert await request_log.purge_requests(engine, days=30, now=now) == 2
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(api_requests)) == 1
