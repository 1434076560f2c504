"""`mpchat doctor`: is everything this configuration depends on there and working?

One line per check, ``ok`` or ``FAIL`` with what is wrong and how to fix it; exit status 0
only when every check passed. The checks: the configuration (``MPCHAT_*``, the
``MPCHAT_CONFIG`` file, the production refusals), the database and its schema version,
Redis, each provider (a real chat completion of one token: it costs that), and WeChat's
credentials (an access-token request). Nothing secret is printed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from mpchat.settings import Settings

__all__ = ["Check", "diagnose", "render", "run"]

_TIMEOUT = aiohttp.ClientTimeout(total=15, connect=5)


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


def render(checks: list[Check]) -> str:
    return "\n".join(f"{'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}" for c in checks)


async def diagnose(settings: Settings) -> list[Check]:
    """Every check for ``settings`` (already valid: `mpchat.cli` refuses invalid ones)."""
    from mpchat.providers.config import load_config

    checks = [_refusals(settings)]
    try:
        config = load_config(settings.config)
    except ValueError as exc:
        checks.append(Check("config file", False, f"{_first_line(exc)} (fix MPCHAT_CONFIG)"))
        config = None
    checks += await _database(settings)
    if settings.redis_url:
        checks.append(await _guard("redis", _redis(settings.redis_url),
                                   "is Redis running and MPCHAT_REDIS_URL right?"))
    async with aiohttp.ClientSession(timeout=_TIMEOUT) as http:
        for name, probe, fix in _providers(settings, config, http):
            checks.append(await _guard(f"provider {name}", probe, fix))
        if settings.resolved_auth_mode == "wechat" and settings.wechat_appid:
            checks.append(await _guard("wechat", _wechat(settings, http),
                                       "check MPCHAT_WECHAT_APPID, MPCHAT_WECHAT_SECRET and "
                                       "the server's IP allow-list in the WeChat console"))
    return checks


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _refusals(settings: Settings) -> Check:
    from mpchat.settings import UnsafeSettings

    try:
        settings.refuse_unsafe()
    except UnsafeSettings as exc:
        return Check("configuration", False, str(exc))
    return Check("configuration", True,
                 f"env={settings.env} auth={settings.auth_description}")


async def _guard(name: str, probe: Awaitable[str], fix: str) -> Check:
    """Run one probe: its description when it passes, what failed and the fix otherwise."""
    try:
        async with asyncio.timeout(20):
            return Check(name, True, await probe)
    except _Failed as exc:
        return Check(name, False, f"{exc} ({fix})")
    except TimeoutError:
        return Check(name, False, f"no answer within 20 s ({fix})")
    except Exception as exc:  # unreachable, refused, malformed: named by its type only
        return Check(name, False, f"{type(exc).__name__}: {_first_line(exc)[:120]} ({fix})")


class _Failed(Exception):
    """A probe reached its dependency, which said no."""


async def _database(settings: Settings) -> list[Check]:
    from mpchat.storage.engine import create_engine, is_sqlite
    from mpchat.storage.migrations import head_revision, schema_state

    kind = "sqlite" if is_sqlite(settings.resolved_database_url) else "postgresql"
    engine = create_engine(settings.resolved_database_url)
    try:
        async with asyncio.timeout(10):
            state, revision = await schema_state(engine)
    except Exception as exc:
        fix = "is the database running and MPCHAT_DATABASE_URL right?"
        return [Check("database", False, f"{kind}: {type(exc).__name__} ({fix})")]
    finally:
        await engine.dispose()
    database = Check("database", True, kind)
    head = head_revision()
    if state == "current":
        return [database, Check("schema", True, f"at {head}")]
    if state == "ahead":
        return [database, Check("schema", True, f"at {revision}, newer than this code's {head}"
                                                " (a newer release migrated it)")]
    where = "never migrated" if revision is None else f"at {revision}"
    return [database, Check("schema", False, f"{where}, this code needs {head} "
                                              "(run `mpchat migrate`)")]


async def _redis(url: str) -> str:
    from redis.asyncio import Redis

    client = Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
    try:
        await client.ping()
    finally:
        await client.aclose()
    return "answers PING"


Probe = tuple[str, Awaitable[str], str]


def _providers(settings: Settings, config: Any, http: aiohttp.ClientSession) -> list[Probe]:
    if config is not None and config.providers:
        probes: list[Probe] = []
        for p in config.providers:
            fix = f"check provider {p.name} in MPCHAT_CONFIG (base_url, models, its key)"
            try:
                key = p.key()
            except ValueError as exc:
                probes.append((p.name, _fail(str(exc)), fix))
                continue
            probes.append((p.name, _complete(http, p.base_url, key, p.models[0]), fix))
        return probes
    if settings.upstream_base_url:
        key = settings.upstream_api_key.get_secret_value() if settings.upstream_api_key else None
        fix = ("check MPCHAT_UPSTREAM_BASE_URL (up to /v1), MPCHAT_UPSTREAM_API_KEY and "
               "MPCHAT_UPSTREAM_MODEL")
        return [("upstream", _complete(http, settings.upstream_base_url, key,
                                       settings.upstream_model), fix)]
    return [("demo", _demo(), "")]


async def _demo() -> str:
    return "no provider configured: the built-in demo model answers (set MPCHAT_UPSTREAM_*)"


async def _fail(message: str) -> str:
    raise _Failed(message)


async def _complete(http: aiohttp.ClientSession, base_url: str, key: str | None,
                    model: str) -> str:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    # Streamed, as the service asks: the first chunk with choices is proof enough.
    body = {"model": model, "max_tokens": 1, "stream": True,
            "messages": [{"role": "user", "content": "ping"}]}
    url = base_url.rstrip("/") + "/chat/completions"
    async with http.post(url, json=body, headers=headers) as r:
        if r.status in (401, 403):
            raise _Failed(f"HTTP {r.status}: the API key was refused")
        if r.status == 404:
            raise _Failed(f"HTTP 404: no chat completions at {_origin(url)} or no model {model}")
        if r.status >= 400:
            raise _Failed(f"HTTP {r.status} from {_origin(url)}")
        async for line in r.content:
            if line.startswith(b"data:") and b'"choices"' in line:
                return f"{model} answers at {_origin(url)}"
    raise _Failed(f"{_origin(url)} did not answer like an OpenAI-compatible API")


def _origin(url: str) -> str:
    """The URL without credentials or query (never print a key someone put in it)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}" \
           f"{parts.path}"


async def _wechat(settings: Settings, http: aiohttp.ClientSession) -> str:
    if settings.wechat_secret is None:
        raise _Failed("MPCHAT_WECHAT_SECRET is not set")
    url = settings.wechat_api_base.rstrip("/") + "/cgi-bin/stable_token"
    body = {"grant_type": "client_credential", "appid": settings.wechat_appid,
            "secret": settings.wechat_secret.get_secret_value(), "force_refresh": False}
    async with http.post(url, json=body) as r:
        answer = await r.json(content_type=None)
    if isinstance(answer, dict) and answer.get("access_token"):
        return "the app's credentials get an access token"
    code = answer.get("errcode") if isinstance(answer, dict) else None
    raise _Failed(f"WeChat refused the credentials (errcode {code})")


def run(settings: Settings, out: Callable[[str], None] = print) -> int:
    checks = asyncio.run(diagnose(settings))
    out(render(checks))
    return 0 if all(c.ok for c in checks) else 1
