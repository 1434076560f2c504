"""A fake OpenAI-compatible provider, for the tests, the benchmark and offline demos.

Streams ``chunks`` deltas after ``ttft`` seconds, ``gap`` seconds apart. Scripted
behaviours are consumed one per request, in order, then the default applies:

    {"status": 429, "retry_after": 2}   answer with that status (and Retry-After)
    {"status": 500}
    {"hang": true}                      accept and never answer
    {"drop_after": 3}                   send 3 deltas, then cut the connection
    {"trickle": 0.5}                    one delta every 0.5 s
    {"text": ["a", "b"]}                these deltas instead of the default text

Script and counters are reachable over HTTP (``POST /_control/script``,
``GET /_control/stats``, ``POST /_control/reset``) so other processes can drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

__all__ = ["FakeUpstream", "FakeUpstreamConfig", "serve_forever"]

log = logging.getLogger("mpchat.fakes.upstream")


@dataclass(slots=True)
class FakeUpstreamConfig:
    ttft: float = 0.0
    chunks: int = 20
    gap: float = 0.0
    model: str = "fake-model"


@dataclass(slots=True)
class Stats:
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    completed: int = 0
    cancelled: int = 0
    received: list[list[dict[str, Any]]] = field(default_factory=list)
    authorization: list[str | None] = field(default_factory=list)

    def public(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "completed": self.completed,
            "cancelled": self.cancelled,
        }


class FakeUpstream:
    """``async with FakeUpstream() as fake:`` then point a client at ``fake.base_url``."""

    def __init__(
        self, config: FakeUpstreamConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.config = config or FakeUpstreamConfig()
        self.stats = Stats()
        self.script: list[dict[str, Any]] = []
        self.keep_requests = True
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._arrived = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self._completions)
        self.app.router.add_get("/v1/models", self._models)
        self.app.router.add_post("/_control/script", self._set_script)
        self.app.router.add_get("/_control/stats", self._get_stats)
        self.app.router.add_post("/_control/reset", self._reset)

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}/v1"

    @property
    def port(self) -> int:
        assert self._runner is not None, "not started"
        return int(self._runner.addresses[0][1])

    async def start(self) -> None:
        # handler_cancellation: a client that disconnects cancels our handler, which
        # is how the tests observe that mpchat really cancelled the provider call.
        self._runner = web.AppRunner(self.app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port, backlog=1024).start()

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeUpstream:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def wait_idle(self) -> None:
        """Until no request is in flight (e.g. a cancelled one has been torn down)."""
        await self._idle.wait()

    async def wait_for_requests(self, count: int) -> None:
        """Until at least ``count`` requests have arrived."""
        while self.stats.requests < count:
            self._arrived.clear()
            await self._arrived.wait()

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json(loads=orjson.loads)
        stats = self.stats
        stats.requests += 1
        self._arrived.set()
        if self.keep_requests:
            stats.received.append(body.get("messages", []))
            stats.authorization.append(request.headers.get("Authorization"))
        step = self.script.pop(0) if self.script else {}
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        self._idle.clear()
        try:
            return await self._answer(request, body, step)
        except asyncio.CancelledError:
            stats.cancelled += 1
            raise
        finally:
            stats.in_flight -= 1
            if stats.in_flight == 0:
                self._idle.set()

    async def _answer(
        self, request: web.Request, body: dict[str, Any], step: dict[str, Any]
    ) -> web.StreamResponse:
        cfg = self.config
        if "status" in step:
            headers = {}
            if step.get("retry_after") is not None:
                headers["Retry-After"] = str(step["retry_after"])
            return web.json_response(
                {"error": {"message": "scripted failure", "type": "fake"}},
                status=int(step["status"]), headers=headers,
            )
        if step.get("hang"):
            await asyncio.Event().wait()  # until the client goes away
        texts: list[str] = step.get("text") or [f"片段{i} " for i in range(cfg.chunks)]
        gap = float(step.get("trickle", cfg.gap))
        drop_after = step.get("drop_after")
        if cfg.ttft:
            await asyncio.sleep(cfg.ttft)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        model = body.get("model", cfg.model)
        for i, text in enumerate(texts):
            if drop_after is not None and i == drop_after:
                assert request.transport is not None
                request.transport.close()  # cut mid-stream, no terminating chunk
                return resp
            if i and gap:
                await asyncio.sleep(gap)
            await resp.write(_chunk(model, {"content": text}, None))
        completion = len(texts)
        prompt = sum(len(str(m.get("content", ""))) for m in body.get("messages", []))
        await resp.write(_chunk(model, {}, "stop"))
        usage = {"prompt_tokens": prompt, "completion_tokens": completion,
                 "total_tokens": prompt + completion}
        await resp.write(
            b"data: " + orjson.dumps({"id": "fake", "object": "chat.completion.chunk",
                                      "model": model, "choices": [], "usage": usage}) + b"\n\n"
        )
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        self.stats.completed += 1
        return resp

    async def _models(self, _request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": self.config.model, "object": "model", "owned_by": "fake"}]})

    async def _set_script(self, request: web.Request) -> web.Response:
        self.script = list(await request.json())
        return web.json_response({"queued": len(self.script)})

    async def _get_stats(self, _request: web.Request) -> web.Response:
        return web.json_response(self.stats.public())

    async def _reset(self, _request: web.Request) -> web.Response:
        self.stats = Stats()
        self.script = []
        return web.json_response({"ok": True})


def _chunk(model: str, delta: dict[str, str], finish: str | None) -> bytes:
    payload = {
        "id": "fake",
        "object": "chat.completion.chunk",
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def serve_forever(host: str, port: int, config: FakeUpstreamConfig) -> None:
    """Run until interrupted (the `mpchat fake-upstream` command)."""

    async def run() -> None:
        fake = FakeUpstream(config, host=host, port=port)
        fake.keep_requests = False  # a long-running server must not grow without bound
        await fake.start()
        log.info("fake upstream listening on %s", fake.base_url)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        await fake.aclose()

    with contextlib.suppress(KeyboardInterrupt):
        try:
            import uvloop

            uvloop.run(run())
        except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
            asyncio.run(run())
