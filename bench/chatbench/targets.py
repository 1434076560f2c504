"""The servers a benchmark talks to, each its own process on a free loopback port.

- the fake provider (``mpchat fake-upstream``), which every target streams from;
- mpchat (``mpchat serve``, SQLite in a new temporary data directory), reached either as the
  mini program's NDJSON chat (users log in) or as its OpenAI-compatible ``/v1`` surface (an
  API key created through the admin API, ``MPCHAT_ADMIN_TOKEN``);
- LiteLLM's proxy, from its own virtualenv ``bench/.litellm-venv`` with the version pinned in
  ``bench/requirements-litellm.txt`` (never a dependency of mpchat).

Each ``start_*`` returns the running child and its port (and, for servers, the cold start:
``Popen`` to the first 200 from the health route). ``*_endpoint`` says how a load client
reaches it.
"""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .load import MODEL, Endpoint
from .procs import Child, base_env, free_port, start_child

__all__ = [
    "LITELLM_REQUIREMENTS",
    "MPCHAT_ADMIN_TOKEN",
    "create_api_key",
    "direct_endpoint",
    "ensure_litellm",
    "litellm_endpoint",
    "litellm_version",
    "mpchat_argv",
    "mpchat_endpoint",
    "mpchat_source",
    "mpchat_v1_endpoint",
    "start_fake",
    "start_litellm",
    "start_mpchat",
]

BENCH_DIR = Path(__file__).resolve().parent.parent
LITELLM_VENV = BENCH_DIR / ".litellm-venv"
LITELLM_REQUIREMENTS = BENCH_DIR / "requirements-litellm.txt"
LITELLM_MASTER_KEY = "sk-bench-master-key"
# The operator's token for mpchat's admin API (``POST /admin/v1/keys``), for the /v1 target.
MPCHAT_ADMIN_TOKEN = "bench-admin-token-0123456789abcdef"

# mpchat as the chat benchmark runs it: only the limiter is opened up, everything else is
# the default. The limiter is measured by bench/bench_limits.py, and the load logs in many
# users from one address.
MPCHAT_BENCH_ENV = {
    "MPCHAT_AUTH_MODE": "dev",
    "MPCHAT_RATE_LIMIT": "100000/second",
    "MPCHAT_LOGIN_RATE_LIMIT": "100000/second",
    "MPCHAT_LOG_LEVEL": "WARNING",
}


def mpchat_argv(*args: str) -> list[str]:
    """The ``mpchat`` console script next to this interpreter (the project's .venv)."""
    script = Path(sys.executable).with_name("mpchat")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "mpchat", *args]


def start_fake(
    tmp: Path, *, chunks: int, gap_ms: float = 0.0, ttft_ms: float = 0.0, name: str = "fake"
) -> tuple[Child, int]:
    """The fake provider: ``chunks`` deltas, the first after ``ttft_ms``, ``gap_ms`` apart."""
    port = free_port()
    argv = mpchat_argv("fake-upstream", "--port", str(port), "--ttft-ms", str(ttft_ms))
    argv += ["--chunks", str(chunks), "--gap-ms", str(gap_ms)]
    child = start_child(f"{name}-upstream", argv, env=base_env(), log_dir=tmp)
    child.wait_http_ok(port, "/v1/models", timeout=30)
    return child, port


def mpchat_source(src: Path | None = None) -> str:
    """Where the ``mpchat`` package the servers run comes from (with the benchmark's env)."""
    env = base_env() | ({"PYTHONPATH": str(src)} if src is not None else {})
    out = subprocess.run(
        [sys.executable, "-c", "import mpchat; print(mpchat.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    found = out.stdout.strip()
    return str(Path(found).parent.parent) if found else f"not importable: {out.stderr[-200:]}"


def direct_endpoint(fake_port: int, *, stream: bool = True) -> Endpoint:
    return Endpoint("openai", f"http://127.0.0.1:{fake_port}", stream=stream)


def start_mpchat(
    tmp: Path,
    fake_port: int,
    extra_env: dict[str, str],
    src: Path | None,
    *,
    name: str = "mpchat",
) -> tuple[Child, int, float]:
    """A fresh mpchat (new data dir, so new SQLite file and dev keys): child, port, cold start.

    ``src``: run the ``mpchat`` package found there instead of the installed one, e.g. a
    ``git archive`` of another commit, to compare two versions with the same harness.
    ``name``: the child's, which names its log (``<name>.log``) and any profile of it.
    """
    port = free_port()
    data_dir = Path(tempfile.mkdtemp(prefix="mpchat-data-", dir=tmp))
    env = (
        base_env()
        | {
            "MPCHAT_HOST": "127.0.0.1",
            "MPCHAT_PORT": str(port),
            "MPCHAT_DATA_DIR": str(data_dir),
            "MPCHAT_UPSTREAM_BASE_URL": f"http://127.0.0.1:{fake_port}/v1",
            "MPCHAT_UPSTREAM_API_KEY": "bench-upstream-key",
            "MPCHAT_UPSTREAM_MODEL": MODEL,
        }
        | MPCHAT_BENCH_ENV
        | extra_env
    )
    argv = mpchat_argv("serve")
    if src is not None:
        env["PYTHONPATH"] = str(src)
        argv = [sys.executable, "-m", "mpchat", "serve"]
    child = start_child(name, argv, env=env, log_dir=tmp)
    cold = child.wait_http_ok(port, "/healthz", timeout=60)
    return child, port, cold


def mpchat_endpoint(port: int) -> Endpoint:
    return Endpoint("mpchat", f"http://127.0.0.1:{port}")


def create_api_key(
    port: int, *, name: str = "bench", admin_token: str = MPCHAT_ADMIN_TOKEN
) -> tuple[str, str]:
    """A new API key from a running mpchat's admin API (``POST /admin/v1/keys``): id, secret."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10.0)
    try:
        conn.request(
            "POST",
            "/admin/v1/keys",
            body=json.dumps({"name": name}),
            headers={"Authorization": f"Bearer {admin_token}", "Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        text = resp.read().decode(errors="replace")
    finally:
        conn.close()
    if resp.status != 201:
        raise RuntimeError(f"creating an API key failed: HTTP {resp.status} {text[:200]}")
    created = json.loads(text)
    return str(created["id"]), str(created["key"])


def mpchat_v1_endpoint(port: int, secret: str, *, stream: bool = True) -> Endpoint:
    """mpchat's OpenAI-compatible surface (``/v1/chat/completions``) with an API key."""
    return Endpoint("openai", f"http://127.0.0.1:{port}", api_key=secret, stream=stream)


def pinned_litellm() -> str:
    """The version in bench/requirements-litellm.txt (``litellm[proxy]==X``)."""
    for line in LITELLM_REQUIREMENTS.read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep and name.strip().startswith("litellm"):
            return version.strip()
    raise RuntimeError(f"no pinned litellm version in {LITELLM_REQUIREMENTS}")


def ensure_litellm() -> Path:
    """LiteLLM's proxy at the pinned version in its own virtualenv; its CLI path.

    Creates ``bench/.litellm-venv`` on first use, and reinstalls when the version there is not
    the pinned one (e.g. after the pin changed).
    """
    cli = LITELLM_VENV / "bin" / "litellm"
    pinned = pinned_litellm()
    if cli.exists() and litellm_version() == pinned:
        return cli
    print(f"installing LiteLLM {pinned} into {LITELLM_VENV} (first use only) ...", flush=True)
    if not (LITELLM_VENV / "bin" / "python").exists():
        python3 = shutil.which("python3") or sys.executable
        subprocess.run([python3, "-m", "venv", str(LITELLM_VENV)], check=True)
    pip = [str(LITELLM_VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "-r", str(LITELLM_REQUIREMENTS)], check=True)
    if not cli.exists():
        raise RuntimeError(f"pip installed {LITELLM_REQUIREMENTS} but {cli} is missing")
    return cli


def litellm_version() -> str:
    out = subprocess.run(
        [
            str(LITELLM_VENV / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; print(m.version('litellm'))",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or "unknown"


def start_litellm(tmp: Path, fake_port: int) -> tuple[Child, int, float]:
    """LiteLLM's proxy, one worker, no database, one model pointed at the fake."""
    cli = ensure_litellm()
    port = free_port()
    config = tmp / "litellm.yaml"
    # JSON is YAML: no YAML library needed here.
    config.write_text(
        json.dumps(
            {
                "model_list": [
                    {
                        "model_name": MODEL,
                        "litellm_params": {
                            "model": f"openai/{MODEL}",
                            "api_base": f"http://127.0.0.1:{fake_port}/v1",
                            "api_key": "x",
                        },
                    }
                ],
                "general_settings": {"master_key": LITELLM_MASTER_KEY},
                "litellm_settings": {"telemetry": False},
            }
        )
    )
    env = {k: v for k, v in base_env().items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env |= {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the price list from the internet
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "DISABLE_SCHEMA_UPDATE": "True",
    }
    argv = [str(cli), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    child = start_child("litellm", [*argv, "--num_workers", "1"], env=env, log_dir=tmp)
    cold = child.wait_http_ok(port, "/health/liveliness", timeout=180)
    return child, port, cold


def litellm_endpoint(port: int, *, stream: bool = True) -> Endpoint:
    return Endpoint("openai", f"http://127.0.0.1:{port}", api_key=LITELLM_MASTER_KEY, stream=stream)
