"""At ``MPCHAT_LOG_LEVEL=DEBUG`` no openid (nor a login code) reaches the logs: libraries
that log SQL parameters and URLs stay at WARNING."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.integration.support import start_instance

OPENID = "oPENID-never-logged-4711"


async def test_debug_logs_carry_no_openid(tmp_path: Path):
    env = {"MPCHAT_LOG_LEVEL": "DEBUG", "MPCHAT_AUTH_MODE": "cloudrun",
           "MPCHAT_CLOUDRUN_HEADER_AUTH": "login", "MPCHAT_WECHAT_SECURITY": "false"}
    instance = await start_instance("debug", env, tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            headers = {"X-WX-OPENID": OPENID}
            async with http.post(f"{instance.base_url}/api/v1/login", json={"code": "c0de-42"},
                                 headers=headers) as r:
                assert r.status == 200
                token = (await r.json())["token"]
            async with http.post(f"{instance.base_url}/api/v1/chat", json={"content": "你好"},
                                 headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 200
                await r.read()
    finally:
        await instance.stop()
    text = instance.log_path.read_text(errors="replace")
    assert " DEBUG " in text  # the level was in force
    assert OPENID not in text and "c0de-42" not in text
