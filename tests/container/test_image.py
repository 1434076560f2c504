"""mpchat's image, built from the Dockerfile and run by podman: it becomes ready, passes its
HEALTHCHECK, runs as its non-root user, streams a chat, and on SIGTERM (what `podman stop`
and a redeploy send first) finishes the answer under way and exits by itself; the same
container, started again, lists that answer as stored.

Marked ``container``; `make test` runs it apart (`make test-container`) where podman is
installed. Without podman it is skipped, saying so: a machine fact, even under CI=true.
How the image is built without a registry: tests/container/podman.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import pytest

from mpchat.fakes.upstream import FakeUpstream, FakeUpstreamConfig
from tests.conftest import IN_CI
from tests.container.podman import Unavailable, build, podman, remove, ulimits
from tests.integration.support import wait_until
from tests.utils import free_port

pytestmark = pytest.mark.container

CHUNKS = 100  # 50 ms apart: an answer of about 5 s, with SIGTERM delivered inside it
STOP_TIMEOUT = 30  # an orchestrator's grace before SIGKILL; the drain must end well before


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    try:
        podman()
    except Unavailable as missing:
        pytest.skip(str(missing))
    tag = f"localhost/mpchat:test-{uuid.uuid4().hex[:12]}"
    try:
        build(tag)
    except Unavailable as missing:
        if IN_CI:
            pytest.fail(f"{missing} (CI=true and podman is installed)")
        pytest.skip(str(missing))
    yield tag
    remove(tag)


async def _podman(*args: str, check: bool = True) -> str:
    proc = await asyncio.create_subprocess_exec(
        *podman(), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    async with asyncio.timeout(60):
        output, _ = await proc.communicate()
    text = output.decode(errors="replace")
    assert not check or proc.returncode == 0, f"podman {args[0]} exited {proc.returncode}: {text}"
    return text


def test_the_image_runs_as_a_non_root_user_and_has_the_healthcheck(image: str) -> None:
    inspected = json.loads(subprocess.run([*podman(), "image", "inspect", image],
                                          capture_output=True, check=True).stdout)[0]
    config = inspected["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["mpchat"] and config["Cmd"] == ["serve"]
    assert config["StopSignal"] == "SIGTERM"
    test = inspected["Healthcheck"]["Test"]
    assert test[0] == "CMD" and "/healthz" in test[-1]


async def test_the_image_serves_a_chat_and_drains_it_on_sigterm(image: str) -> None:
    name = f"mpchat-test-{uuid.uuid4().hex[:12]}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with FakeUpstream(FakeUpstreamConfig(chunks=CHUNKS, gap=0.05)) as fake:
        try:
            # The host's network: the container reaches the fake upstream on 127.0.0.1, and
            # listens there only (MPCHAT_HOST), on a port of its own.
            await _podman("run", "--detach", "--name", name, "--network", "host", *ulimits(),
                          "--env", "MPCHAT_HOST=127.0.0.1", "--env", f"MPCHAT_PORT={port}",
                          "--env", f"MPCHAT_UPSTREAM_BASE_URL={fake.base_url}", image)
            await _ready(base, name)
            assert "unhealthy" not in await _podman("healthcheck", "run", name)
            init = await _podman("exec", name, "cat", "/proc/1/status", "/proc/1/cmdline")
            assert "\nUid:\t10001\t10001\t10001\t10001\n" in init  # PID 1 is mpchat, not root
            assert "mpchat\x00serve" in init

            events, after_signal = await _chat_through_sigterm(base, name)
            async with asyncio.timeout(STOP_TIMEOUT):
                exit_code = (await _podman("wait", name)).strip()
            logs = await _podman("logs", name)

            assert events[0]["type"] == "start" and events[-1]["type"] == "done", (events, logs)
            assert after_signal > 0, "SIGTERM was delivered only after the answer had ended"
            deltas = [e["text"] for e in events if e["type"] == "delta"]
            assert "".join(deltas) == "".join(f"片段{i} " for i in range(CHUNKS))  # the fake's
            # uvicorn drained, then exited by itself: PID 1 of a container ignores the SIGTERM
            # it re-raises (0), elsewhere it dies of it (143).
            assert exit_code in ("0", "143"), (exit_code, logs)
            assert "Application shutdown complete" in logs

            # The answer was stored: the same container (its SQLite file), started again.
            await _podman("start", name)
            await _ready(base, name)
            messages = await _messages(base, events[0]["conversation_id"])
            assert [(m["role"], m["status"]) for m in messages] == [
                ("user", "complete"), ("assistant", "complete")], messages
            assert messages[-1]["content"] == "".join(deltas)
        finally:
            await _podman("rm", "--force", "--time", "0", name, check=False)


async def _ready(base: str, name: str) -> None:
    async def ready() -> bool:
        try:
            async with aiohttp.ClientSession() as http, http.get(f"{base}/readyz") as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    try:
        await wait_until(ready, within=60, what="GET /readyz answers 200", interval=0.2)
    except BaseException:
        print(await _podman("logs", name, check=False))  # pytest shows it with the failure
        raise


async def _login(http: aiohttp.ClientSession, base: str) -> dict[str, str]:
    # dev auth (the image's default without a WeChat appid): a code logs in as its own user.
    async with http.post(f"{base}/api/v1/login", json={"code": "container-test"}) as r:
        assert r.status == 200, await r.text()
        return {"Authorization": f"Bearer {(await r.json())['token']}"}


async def _chat_through_sigterm(base: str, name: str) -> tuple[list[dict[str, Any]], int]:
    """A streamed chat; SIGTERM to the container once the second delta is in. All its events,
    and how many deltas came after `podman kill` had returned (the signal delivered)."""
    events: list[dict[str, Any]] = []
    signal: asyncio.Task[str] | None = None
    after_signal = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        headers = await _login(http, base)
        async with http.post(f"{base}/api/v1/chat", json={"content": "你好"},
                             headers=headers) as r:
            assert r.status == 200, await r.text()
            while line := await r.content.readline():
                events.append(orjson.loads(line))
                if signal is None and sum(e["type"] == "delta" for e in events) == 2:
                    signal = asyncio.create_task(_podman("kill", "--signal", "TERM", name))
                elif signal is not None and signal.done() and events[-1]["type"] == "delta":
                    after_signal += 1
    assert signal is not None, events
    await signal
    return events, after_signal


async def _messages(base: str, conversation_id: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        headers = await _login(http, base)
        async with http.get(f"{base}/api/v1/conversations/{conversation_id}/messages",
                            headers=headers) as r:
            assert r.status == 200, await r.text()
            items: list[dict[str, Any]] = (await r.json())["items"]
            return items
