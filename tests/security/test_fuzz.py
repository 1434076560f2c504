"""Schemathesis drives the app's OpenAPI schema: no input gives a 5xx or stores a rejected row.

Schemathesis is synchronous (requests), so the app runs on uvicorn in a thread of its own
with its own event loop; row counts are read on that loop. The example counts are bounded
so the whole file stays well under a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from schemathesis import GenerationMode
from sqlalchemy import func, select

from mpchat.fakes.upstream import FakeUpstream, FakeUpstreamConfig
from mpchat.settings import Settings
from mpchat.storage.tables import conversations, messages, sessions, users
from tests.utils import Running, running_app

# Per operation and mode: about 300 requests in all, a few seconds per backend.
EXAMPLES = {GenerationMode.POSITIVE: 8, GenerationMode.NEGATIVE: 16}
# Rows a rejected request must not add. (audit_events is left out on purpose: recording a
# refused input is what content safety is for.)
TABLES = (users, sessions, conversations, messages)
# These end the caller's session: each such case gets a throwaway token.
SESSION_ENDING = {("POST", "/api/v1/logout"), ("DELETE", "/api/v1/me/data")}


class Served:
    """The app on a background thread's event loop; `run` executes a coroutine there."""

    def __init__(self, app: Running, loop: asyncio.AbstractEventLoop) -> None:
        self.app, self.loop = app, loop

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def counts(self) -> tuple[int, ...]:
        async def count() -> tuple[int, ...]:
            async with self.app.services.engine.connect() as conn:
                return tuple([int((await conn.execute(
                    select(func.count()).select_from(t))).scalar_one()) for t in TABLES])

        return tuple(self.run(count()))


@contextlib.contextmanager
def served(make_settings: Callable[[str], Settings]) -> Iterator[Served]:
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        async with FakeUpstream(FakeUpstreamConfig(chunks=2)) as fake:
            async with running_app(make_settings(fake.base_url)) as app:
                stop = asyncio.Event()
                box.update(served=Served(app, asyncio.get_running_loop()), stop=stop)
                ready.set()
                await stop.wait()

    def thread_main() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced in the test thread
            box["error"] = exc
            ready.set()

    thread = threading.Thread(target=thread_main, name="fuzzed-app", daemon=True)
    thread.start()
    assert ready.wait(30), "the app did not start"
    if "error" in box:
        raise box["error"]
    try:
        yield box["served"]
    finally:
        box["served"].loop.call_soon_threadsafe(box["stop"].set)
        thread.join(30)
    if "error" in box:
        raise box["error"]


def _login(http: requests.Session, base_url: str, code: str) -> str:
    r = http.post(f"{base_url}/api/v1/login", json={"code": code}, timeout=10)
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def _has_inputs(operation: Any) -> bool:
    return bool(list(operation.iter_parameters())) or bool(operation.body)


def _check(case: Any, response: Any, before: tuple[int, ...], after: tuple[int, ...]) -> None:
    what = f"{case.method} {case.formatted_path} -> {response.status_code}"
    assert response.status_code < 500, (what, response.text[:300])
    assert b'"internal_error"' not in response.content, what  # e.g. in a chat stream
    if response.status_code >= 400:
        assert after == before, (what, "a rejected request stored rows", before, after)


def test_no_input_gives_5xx_or_stores_a_rejected_row(settings_factory):
    def make(upstream_url: str) -> Settings:
        return settings_factory(upstream_base_url=upstream_url, upstream_api_key="k",
                                upstream_model="fake-model", rate_limit="100000/minute",
                                login_rate_limit="100000/minute")

    with served(make) as srv, requests.Session() as http:
        base_url = srv.app.base_url
        spec = http.get(f"{base_url}/openapi.json", timeout=10).json()
        schema = schemathesis.openapi.from_dict(spec)
        token = _login(http, base_url, "fuzzer")
        # A real conversation, so generated ids sometimes meet existing rows too.
        r = http.post(f"{base_url}/api/v1/chat", json={"content": "seed", "stream": False},
                      headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert r.status_code == 200, r.text
        calls: dict[str, int] = {}

        def fuzzer(operation: Any, mode: GenerationMode, examples: int) -> Callable[[], None]:
            @given(case=operation.as_strategy(generation_mode=mode))
            @hsettings(max_examples=examples, deadline=None, database=None, derandomize=True,
                       phases=[Phase.explicit, Phase.generate],
                       suppress_health_check=list(HealthCheck))
            def fuzz(case: Any) -> None:
                key = (case.method.upper(), case.path)
                bearer = _login(http, base_url, "throwaway") if key in SESSION_ENDING else token
                headers = {"Authorization": f"Bearer {bearer}"}
                if case.headers and "authorization" in {h.lower() for h in case.headers}:
                    headers = {}  # the generated Authorization header is the point
                before = srv.counts()
                response = case.call(base_url=base_url, session=http, headers=headers,
                                     timeout=10)
                _check(case, response, before, srv.counts())
                name = f"{key[0]} {key[1]} {mode.value}"
                calls[name] = calls.get(name, 0) + 1

            return fuzz

        for result in schema.get_all_operations():
            operation = result.ok()
            for mode, examples in EXAMPLES.items():
                if mode is GenerationMode.NEGATIVE and not _has_inputs(operation):
                    continue  # nothing to make invalid
                fuzzer(operation, mode, examples)()

        # Every documented operation was exercised, in both modes where it has inputs.
        operations = {f"{m.upper()} {p}" for p, ops in spec["paths"].items() for m in ops}
        assert {k.rsplit(" ", 1)[0] for k in calls} == operations, sorted(calls)
