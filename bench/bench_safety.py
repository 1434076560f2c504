"""Content checks on the chat path: time to first words and WeChat calls, stream vs strict mode.

    .venv/bin/python bench/bench_safety.py               # about 60 s
    .venv/bin/python bench/bench_safety.py --runs 5 --chars 300 --pace 40 --check-ms 150

mpchat runs in this process (SQLite in a temporary directory) against the fake provider
(``--ttft-ms`` to its first token, then ``--chars`` characters in 3-character deltas at
``--pace`` characters a second) and the fake WeChat (``--check-ms`` per msgSecCheck), with
WeChat content security on. For each output mode it prints the median over ``--runs`` chats
of: the time from the request to the first delta, the time to ``done``, how far the last
words lagged behind the provider's last token, and msgSecCheck calls per chat (the input
check included). See docs/safety.md for the figures of the reference machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import uvicorn

from mpchat.app import create_app
from mpchat.fakes.upstream import FakeUpstream
from mpchat.fakes.wechat import FakeWeChat
from mpchat.settings import Settings

PIECE = 3
_SENTENCES = ["今天我们来聊一聊这个问题，", "首先需要明确几个基本概念。", "其次，",
              "要考虑实际的使用场景和限制条件！", "最后给出一个简单的总结。"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="chats per mode")
    p.add_argument("--chars", type=int, default=300, help="characters per answer")
    p.add_argument("--pace", type=float, default=40.0, help="provider characters a second")
    p.add_argument("--ttft-ms", type=float, default=300.0, help="provider time to first token")
    p.add_argument("--check-ms", type=float, default=150.0, help="WeChat time per check")
    return p.parse_args(argv)


def answer(size: int) -> list[str]:
    text = ""
    while len(text) < size:
        text += _SENTENCES[len(text) % len(_SENTENCES)]
    text = text[:size]
    return [text[i:i + PIECE] for i in range(0, size, PIECE)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           loop="none", log_config=None, access_log=False))
    task = asyncio.create_task(server.serve())
    while not server.started:  # uvicorn offers no event for it
        if task.done():
            task.result()  # a start-up failure
            raise RuntimeError("mpchat stopped during start-up")
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def one_chat(http: aiohttp.ClientSession, base: str, token: str) -> dict[str, float]:
    began = time.monotonic()
    first = last = 0.0
    async with http.post(f"{base}/api/v1/chat", json={"content": "请介绍一下这个问题"},
                         headers={"Authorization": f"Bearer {token}"}) as r:
        async for line in r.content:
            if not line.strip():
                continue
            kind = orjson.loads(line)["type"]
            now = time.monotonic() - began
            if kind == "delta":
                first = first or now
            if kind == "done":
                last = now
    return {"first": first, "done": last}


async def run_mode(mode: str, args: argparse.Namespace, upstream: FakeUpstream,
                   wechat: FakeWeChat, data: Path) -> dict[str, float]:
    settings = Settings(
        _env_file=None, data_dir=data / mode, upstream_base_url=upstream.base_url,  # type: ignore[call-arg]
        upstream_api_key="sk-bench-000000", upstream_model="fake-model",
        wechat_appid="wx-bench", wechat_secret="bench-secret", wechat_api_base=wechat.base_url,
        auth_mode="dev", output_mode=mode, rate_limit="10000/minute", log_level="WARNING",
    )
    pieces = answer(args.chars)
    provider_seconds = args.ttft_ms / 1000 + (len(pieces) - 1) * PIECE / args.pace
    results: list[dict[str, float]] = []
    async with serving(settings) as base, aiohttp.ClientSession() as http:
        async with http.post(f"{base}/api/v1/login", json={"code": f"bench-{mode}"}) as r:
            token = (await r.json())["token"]
        upstream.script = [{"text": ["热身"]}]
        await one_chat(http, base, token)  # token fetched, connections warm
        for _ in range(args.runs):
            upstream.script = [{"text": pieces, "trickle": PIECE / args.pace}]
            wechat.reset()
            timing = await one_chat(http, base, token)
            timing["calls"] = wechat.stats.sec_checks
            timing["lag"] = timing["done"] - provider_seconds
            results.append(timing)
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


async def main_async(args: argparse.Namespace) -> int:
    async with FakeUpstream() as upstream, FakeWeChat() as wechat:
        upstream.config.ttft = args.ttft_ms / 1000
        wechat.latency["msg_sec_check"] = args.check_ms / 1000
        with tempfile.TemporaryDirectory() as tmp:
            rows = {mode: await run_mode(mode, args, upstream, wechat, Path(tmp))
                    for mode in ("stream", "strict")}
    print(f"{args.chars} characters at {args.pace:g}/s, provider first token "
          f"{args.ttft_ms:g} ms, WeChat {args.check_ms:g} ms a check, median of {args.runs}")
    print(f"{'mode':8} {'first words ms':>15} {'done ms':>9} {'end lag ms':>11} {'calls':>6}")
    for mode, row in rows.items():
        print(f"{mode:8} {row['first'] * 1000:15.0f} {row['done'] * 1000:9.0f} "
              f"{row['lag'] * 1000:11.0f} {row['calls']:6.0f}")
    added = (rows["strict"]["first"] - rows["stream"]["first"]) * 1000
    print(f"strict adds {added:.0f} ms to the first words")
    return 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
