"""The load client of the held-streams scenario, run as its own process.

    python -m chatbench.held_load     (with bench/ on PYTHONPATH; driven by chatbench.held)

Its own process so that its CPU is counted apart from everything else and its event loop
serves nothing but the streams it holds. One aiohttp session for all of them, allowed
``connections`` sockets at once. Line protocol, JSON one object a line:

    stdin  {"endpoint": {...}, "users": N, "turns": 8, "connections": C, "warmup": W, ...}
    stdout {"ready": true, "nofile": <soft RLIMIT_NOFILE>}        after logins and warm-up
    stdin  {"mode": "burst", "n": N} | {"mode": "steady", "n": N, "spread_s": S}
    stdout {"result": <PhaseResult>}                               when every chat has ended
    ... more phases; end of stdin ends the process.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import asdict
from typing import Any

from .drivers import burst, run_phase, steady
from .load import Endpoint, make_chat, new_session
from .procs import raise_nofile


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def _readline() -> str:
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def serve() -> None:
    job = json.loads(await _readline())
    nofile = raise_nofile(4 * int(job["connections"]) + 256)
    endpoint = Endpoint(**job["endpoint"])
    async with new_session(job["connections"], total_timeout=job["timeout_s"]) as session:
        chat = await make_chat(
            session,
            endpoint,
            users=job["users"],
            turns=job["turns"],
            run_id=job.get("run_id") or str(os.getpid()),
        )
        if job["warmup"]:
            await run_phase(chat, concurrency=8, chats=job["warmup"], max_seconds=60)
        _say({"ready": True, "nofile": nofile})
        while line := await _readline():
            spec = json.loads(line)
            if spec["mode"] == "burst":
                result = await burst(chat, spec["n"])
            else:
                result = await steady(chat, spec["n"], spec["spread_s"])
            _say({"result": asdict(result)})


def main() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        asyncio.run(serve())
    else:
        uvloop.run(serve())


if __name__ == "__main__":
    main()
