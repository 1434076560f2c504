"""Edge values at the API: cursors of non-ASCII digits, content of invisible characters."""

from __future__ import annotations

import orjson
import pytest

from tests.utils import running_app


@pytest.mark.parametrize("cursor", ["²", "٣", "１２", "-1", "1e3"])
async def test_cursors_are_ascii_digits_only(settings_factory, cursor):
    async with running_app(settings_factory()) as app:
        token = await app.login()
        headers = {"Authorization": f"Bearer {token}"}
        async with app.http.get(f"{app.base_url}/api/v1/conversations",
                                params={"before": cursor}, headers=headers) as r:
            assert r.status == 400
            assert (await r.json())["error"]["code"] == "invalid_request"


@pytest.mark.parametrize("content", ["\u200b", "\u200b\u200c\u200d\u2060\ufeff", " \u3164 ",
                                     "\u202e\u2066", "\ufe0f\u20e3", "\u2800"])
async def test_content_of_invisible_characters_is_empty(settings_factory, content):
    async with running_app(settings_factory()) as app:
        token = await app.login()
        headers = {"Authorization": f"Bearer {token}"}
        for stream in (True, False):
            async with app.http.post(f"{app.base_url}/api/v1/chat", headers=headers,
                                     json={"content": content, "stream": stream}) as r:
                raw = await r.read()
            assert r.status == 400
            error = orjson.loads(raw.splitlines()[0])
            error = error if stream else error["error"]
            assert error["code"] == "invalid_request"
