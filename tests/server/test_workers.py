"""``MPCHAT_WORKERS=2``: every worker installs logging (JSON, redaction filter), so what a
worker logs is as redacted as what a single process logs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import orjson

from tests.integration.support import child_base_env, mpchat_argv, wait_until
from tests.utils import free_port

# Shaped like a provider key: redacted wherever it is logged. Sent as the request id
# (which the client chooses and every JSON line of its request carries) and as a word the
# local filter refuses (so the request logs a line).
SECRET = "sk-live0123456789abcdef"


async def test_two_workers_write_redacted_json_logs(tmp_path: Path):
    wordlist = tmp_path / "words.txt"
    wordlist.write_text("违禁词\n", encoding="utf-8")
    port = free_port()
    env = {**child_base_env(), "MPCHAT_PORT": str(port), "MPCHAT_WORKERS": "2",
           "MPCHAT_DATA_DIR": str(tmp_path / "data"), "MPCHAT_LOG_FORMAT": "json",
           "MPCHAT_WORDLIST": str(wordlist), "MPCHAT_RATE_LIMIT": "1000/minute",
           "MPCHAT_LOGIN_RATE_LIMIT": "1000/minute"}
    log_path = tmp_path / "serve.log"
    base = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *mpchat_argv("serve"), env=env, stdin=asyncio.subprocess.DEVNULL, stdout=log,
            stderr=log)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            async def ready() -> bool:
                try:
                    async with http.get(f"{base}/readyz") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_until(ready, within=30, what="two workers ready")
            await wait_until(lambda: len(_workers_started(log_path)) == 2, within=30,
                             what="both workers' start-up lines")
            for i in range(20):  # fresh connections, spread over the workers by the kernel
                async with aiohttp.ClientSession() as fresh:
                    async with fresh.post(f"{base}/api/v1/login", json={"code": f"u{i}"}) as r:
                        token = (await r.json())["token"]
                    async with fresh.post(f"{base}/api/v1/chat",
                                          json={"content": "说违禁词"},
                                          headers={"Authorization": f"Bearer {token}",
                                                   "X-Request-Id": SECRET}) as r:
                        assert r.status == 400
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
    text = log_path.read_text(encoding="utf-8")
    assert SECRET not in text
    hits = [r for r in _records(log_path) if "local filter hit" in str(r.get("message"))]
    assert hits and all(r.get("request_id") == "sk-***" for r in hits)


def _records(path: Path) -> list[dict[str, object]]:
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("{"):
            records.append(orjson.loads(line))
    return records


def _workers_started(path: Path) -> set[object]:
    return {r.get("process") for r in _records(path) if "mpchat starting" in str(r["message"])}
