"""A fake OpenAI-compatible provider, for the tests, the benchmark and offline demos.

``mpchat fake-upstream`` serves it (default ``127.0.0.1:9100``, base URL
``http://127.0.0.1:9100/v1``); tests use ``async with FakeUpstream() as fake``. By default
it streams ``chunks`` deltas after ``ttft`` seconds, ``gap`` seconds apart, then a finish
chunk, a usage chunk and ``[DONE]``.

Scripted behaviours are consumed one per request, in order, then the default applies. A
step is a JSON object; keys combine where that makes sense (``{"reasoning": 3, "parts":
true, "usage": "choice"}``). Failures:

    {"status": 429, "retry_after": 2}   answer with that status (and Retry-After)
    {"status": 500}
    {"hang": true}                      accept and never answer
    {"drop_after": 3}                   send 3 deltas, then cut the connection
    {"trickle": 0.5}                    one delta (or reasoning chunk) every 0.5 s
    {"text": ["a", "b"]}                these deltas instead of the default text

Dialects (what real providers send; see docs/providers.md):

    {"reasoning": ["想", "好了"]}        reasoning chunks before the content (an int: that
                                        many); with "trickle", a DeepSeek-reasoner that
                                        thinks for a long time before its first word
    {"reasoning_field": "reasoning"}    Ollama's / newer vLLM's field (default
                                        "reasoning_content": DeepSeek, Qwen, vLLM's older one)
    {"parts": true}                     content as [{"type": "text", "text": ...}]
    {"usage": "chunk"}                  usage placement: "chunk" (default: a chunk without
                                        choices), "last" (in the finish chunk), "choice"
                                        (inside the choice, Moonshot), "none"
    {"finish_reason": "length"}         the finish reason sent (default "stop")
    {"json_body": true}                 a non-streaming chat.completion (application/json);
                                        also what a request without "stream": true gets
    {"crlf": true} {"nospace": true}    CRLF line ends; "data:" without its space
    {"comments": true}                  keep-alive comments, event:/id:/retry: lines

Misbehaviour:

    {"garbage_after": 1}                a line of non-JSON before the 2nd delta (0: first)
    {"wrong_types_after": 1}            a chunk whose content is a number, likewise
    {"error_after": 1}                  an {"error": {...}} object mid-stream, likewise
    {"oversized": 25000000}             after the deltas, one chunk of that many bytes
                                        (written in 64 KiB pieces, never held whole)
    {"no_newline": 2000000}             after the deltas, a line of that many bytes that
                                        never ends, then nothing (connection open)
    {"endless": "content"}              after the deltas, content forever, as fast as the
                                        client reads ("reasoning", "keepalive" likewise)
    {"done_then_hang": true}            [DONE], then keep the connection open
    {"raw": "data: ...\n\n"}            these bytes verbatim (UTF-8; a string: one body
                                        with its Content-Length; a list: one chunked
                                        write each), status 200, "content_type" (default
                                        text/event-stream), whatever the request asked
                                        for; replays recorded transcripts

Script and counters are reachable over HTTP so other processes can drive it:
``POST /_control/script`` (a JSON list of steps, replacing the queue),
``GET /_control/stats`` (requests, in_flight, max_in_flight, completed, cancelled),
``POST /_control/reset`` (empty script, zero counters).

``/v1/audio/transcriptions`` and ``/v1/audio/speech``: `mpchat.fakes.audio` (``fake.audio``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from mpchat.fakes.audio import FakeAudio
from mpchat.fakes.upstream_script import Drop, Pause, Plan, completion_body, plan

__all__ = ["FakeUpstream", "FakeUpstreamConfig", "serve_forever"]

log = logging.getLogger("mpchat.fakes.upstream")


@dataclass(slots=True)
class FakeUpstreamConfig:
    ttft: float = 0.0
    chunks: int = 20
    gap: float = 0.0
    model: str = "fake-model"
    audio_latency: float = 0.0  # before either audio endpoint answers
    transcript: str = "你好"  # what /v1/audio/transcriptions hears when nothing is scripted


@dataclass(slots=True)
class Stats:
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    completed: int = 0
    cancelled: int = 0
    received: list[list[dict[str, Any]]] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)  # whole request bodies
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
        # /v1/audio/transcriptions and /v1/audio/speech
        self.audio = FakeAudio(default_transcript=self.config.transcript,
                               latency=self.config.audio_latency)
        self.audio.mount(self.app)
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
            stats.bodies.append(body)
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
        if cfg.ttft:
            await asyncio.sleep(cfg.ttft)
        model = body.get("model", cfg.model)
        texts: list[str] = step.get("text") or [f"片段{i} " for i in range(cfg.chunks)]
        prompt = sum(len(str(m.get("content", ""))) for m in body.get("messages", []))
        if "raw" not in step and (step.get("json_body") or not body.get("stream")):
            self.stats.completed += 1  # OpenAI's default: no stream
            return web.Response(body=completion_body(step, texts=texts, model=model,
                                                     prompt_chars=prompt),
                                content_type="application/json")
        if "raw" in step:  # verbatim, whatever the request asked for
            raw = step["raw"]
            if isinstance(raw, str) and raw:  # one body, with its Content-Length
                self.stats.completed += 1
                return web.Response(body=raw.encode(), headers={
                    "Content-Type": str(step.get("content_type", "text/event-stream"))})
            actions: Plan = iter([p.encode() for p in ([raw] if isinstance(raw, str) else raw)])
            content_type = str(step.get("content_type", "text/event-stream"))
        else:
            actions = plan(step, texts=texts, gap=float(step.get("trickle", cfg.gap)),
                           model=model, prompt_chars=prompt)
            content_type = "text/event-stream"
        resp = web.StreamResponse(headers={"Content-Type": content_type})
        await resp.prepare(request)
        try:
            await self._play(request, resp, actions)
        except ConnectionError:  # the client left while a write was on its way
            self.stats.cancelled += 1
        return resp

    async def _play(self, request: web.Request, resp: web.StreamResponse, actions: Plan) -> None:
        for n, action in enumerate(actions, 1):
            if isinstance(action, bytes):
                await resp.write(action)
                if n % 64 == 0:
                    # A write returns at once while the socket takes it: an endless plan
                    # must still let the client (often in this very loop) read.
                    await asyncio.sleep(0)
            elif isinstance(action, Pause):
                await asyncio.sleep(action.seconds)
            elif isinstance(action, Drop):
                assert request.transport is not None
                request.transport.close()  # cut mid-stream, no terminating chunk
                return
            else:
                await asyncio.Event().wait()  # Hang: until the client goes away
        await resp.write_eof()
        self.stats.completed += 1

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


def serve_forever(host: str, port: int, config: FakeUpstreamConfig) -> None:
    """Run until interrupted (the `mpchat fake-upstream` command)."""

    async def run() -> None:
        fake = FakeUpstream(config, host=host, port=port)
        fake.keep_requests = False  # a long-running server must not grow without bound
        fake.audio.keep = False
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
