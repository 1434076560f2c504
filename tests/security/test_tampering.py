"""Tampered, swapped and unknown-key ciphertexts: that item is marked, the list still answers."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from mpchat.storage.conversations import UNREADABLE_TITLE
from mpchat.storage.tables import conversations, messages
from tests.utils import Running, running_app


async def _get(app: Running, token: str, path: str) -> tuple[int, Any]:
    async with app.http.get(app.base_url + path,
                            headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status, await r.json()


async def test_damaged_rows_do_not_break_the_lists(settings_factory):
    async with running_app(settings_factory()) as app:
        alice, bob = await app.login("alice"), await app.login("bob")
        _, events = await app.chat_events(alice, {"content": "q0"})
        cid = events[0]["conversation_id"]
        for i in (1, 2):
            await app.chat_events(alice, {"content": f"q{i}", "conversation_id": cid})
        _, bob_events = await app.chat_events(bob, {"content": "bob's question"})
        bob_cid = bob_events[0]["conversation_id"]

        async with app.services.engine.begin() as conn:
            rows = (await conn.execute(
                select(messages.c.seq, messages.c.id, messages.c.content)
                .where(messages.c.conversation_id == cid).order_by(messages.c.seq))).all()
            bob_row = (await conn.execute(
                select(messages.c.content, messages.c.content_key)
                .where(messages.c.conversation_id == bob_cid).limit(1))).one()
            tampered = rows[0].content[:-1] + bytes([rows[0].content[-1] ^ 0x80])
            await conn.execute(update(messages).where(messages.c.seq == rows[0].seq)
                               .values(content=tampered))
            # Bob's ciphertext (valid, under the same key) copied into Alice's row.
            await conn.execute(update(messages).where(messages.c.seq == rows[2].seq)
                               .values(content=bob_row.content, content_key=bob_row.content_key))
            await conn.execute(update(messages).where(messages.c.seq == rows[4].seq)
                               .values(content_key="retired-key"))
            await conn.execute(update(conversations).where(conversations.c.id == cid)
                               .values(title_key="retired-key"))

        status, page = await _get(app, alice, f"/api/v1/conversations/{cid}/messages")
        assert status == 200
        contents = [m["content"] for m in page["items"]]
        assert len(contents) == 6
        # Each damaged item says so (content null); its neighbours read normally.
        assert [i for i, c in enumerate(contents) if c is None] == [0, 2, 4]
        assert all(isinstance(c, str) and c for i, c in enumerate(contents) if i not in (0, 2, 4))
        assert "bob's question" not in str(page)
        assert [m["id"] for m in page["items"]] == [r.id for r in rows]

        status, listing = await _get(app, alice, "/api/v1/conversations")
        assert status == 200
        assert [c["title"] for c in listing["items"]] == [UNREADABLE_TITLE]

        # The conversation stays usable: damaged turns are left out of the context.
        status, events = await app.chat_events(alice, {"content": "still there?",
                                                       "conversation_id": cid})
        assert status == 200 and events[-1]["type"] == "done"
        # Bob is unaffected.
        status, bob_page = await _get(app, bob, f"/api/v1/conversations/{bob_cid}/messages")
        assert status == 200 and bob_page["items"][0]["content"] == "bob's question"
