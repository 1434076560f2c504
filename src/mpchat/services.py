"""The composition root: every long-lived resource, built from settings and closed in order.

`open_services` is entered once by the app's lifespan (and by CLI commands that need the
database); handlers receive the `Services` it yields, never globals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine
from yarl import URL

from mpchat.auth.login import Authenticator, CodeExchange
from mpchat.auth.tokens import TokenSigner
from mpchat.chat.service import ChatService
from mpchat.devkeys import resolve_secrets
from mpchat.metrics import Metrics
from mpchat.providers.demo import DemoModel
from mpchat.providers.openai import OpenAICompatible, Timeouts
from mpchat.providers.retry import RetryPolicy
from mpchat.providers.types import Provider
from mpchat.settings import Settings, UnsafeSettings
from mpchat.storage.crypto import Keyring
from mpchat.storage.engine import create_engine, is_sqlite
from mpchat.storage.migrations import upgrade
from mpchat.wechat import LoginClient

__all__ = ["Services", "open_services"]

log = logging.getLogger("mpchat")


@dataclass(slots=True)
class Services:
    settings: Settings
    engine: AsyncEngine
    http: aiohttp.ClientSession
    keyring: Keyring
    auth: Authenticator
    chat: ChatService
    provider: Provider
    metrics: Metrics


@asynccontextmanager
async def open_services(
    settings: Settings, *, migrate: bool | None = None
) -> AsyncIterator[Services]:
    settings.refuse_unsafe()
    secret, key_spec = resolve_secrets(settings)
    keyring = Keyring.from_spec(key_spec)
    async with AsyncExitStack() as stack:
        engine = create_engine(settings.resolved_database_url)
        stack.push_async_callback(engine.dispose)
        if migrate if migrate is not None else settings.env == "development":
            await upgrade(engine)
        http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=settings.upstream_pool_size, ttl_dns_cache=300, enable_cleanup_closed=True
            ),
            # Per-request timeouts are set by each client; none is global.
            timeout=aiohttp.ClientTimeout(total=None),
            raise_for_status=False,
        )
        stack.push_async_callback(http.close)
        metrics = Metrics()
        provider = _provider(settings, http)
        stack.push_async_callback(provider.aclose)
        auth = Authenticator(
            engine=engine,
            signer=TokenSigner(secret, ttl=settings.token_ttl),
            mode=settings.resolved_auth_mode,
            exchange=_code_exchange(settings, http),
        )
        chat = ChatService(
            engine=engine,
            keyring=keyring,
            provider=provider,
            retry=RetryPolicy(
                attempts=settings.upstream_retry_attempts,
                initial=settings.upstream_retry_initial,
                max_wait=settings.upstream_retry_max_wait,
            ),
            label=settings.ai_label,
            system_prompt=settings.system_prompt,
            context_budget=settings.context_token_budget,
            max_answer_tokens=settings.max_answer_tokens,
            max_content_chars=settings.max_content_chars,
            metrics=metrics,
        )
        _log_startup(settings, provider, keyring)
        yield Services(settings, engine, http, keyring, auth, chat, provider, metrics)
        # Answers cut short by shutdown are stored before the engine closes.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(chat.wait_idle(), timeout=10)


def _code_exchange(settings: Settings, http: aiohttp.ClientSession) -> CodeExchange | None:
    if settings.resolved_auth_mode != "wechat":
        return None
    if not settings.wechat_appid or settings.wechat_secret is None:
        raise UnsafeSettings("wechat login needs MPCHAT_WECHAT_APPID and MPCHAT_WECHAT_SECRET")
    return LoginClient(
        http,
        appid=settings.wechat_appid,
        secret=settings.wechat_secret.get_secret_value(),
        base_url=settings.wechat_api_base,
    ).openid


def _provider(settings: Settings, http: aiohttp.ClientSession) -> Provider:
    if not settings.upstream_base_url:
        return DemoModel()
    return OpenAICompatible(
        session=http,
        base_url=settings.upstream_base_url,
        api_key=settings.upstream_api_key.get_secret_value() if settings.upstream_api_key else None,
        model=settings.upstream_model,
        timeouts=Timeouts(
            connect=settings.upstream_connect_timeout,
            first_token=settings.upstream_first_token_timeout,
            chunk_gap=settings.upstream_chunk_timeout,
            total=settings.upstream_total_timeout,
        ),
    )


def _log_startup(settings: Settings, provider: Provider, keyring: Keyring) -> None:
    db = "sqlite" if is_sqlite(settings.resolved_database_url) else "postgresql"
    if isinstance(provider, DemoModel):
        upstream = "built-in DEMO model (no provider configured; answers are labelled as demo)"
    else:
        where = URL(settings.upstream_base_url or "").with_user(None).with_query(None)
        upstream = f"{provider.name} model={provider.model} at {where}"
    log.info(
        "mpchat starting: env=%s auth=%s database=%s state=%s provider=%s encryption_key=%s",
        settings.env,
        settings.resolved_auth_mode,
        db,
        "redis" if settings.redis_url else "in-process",
        upstream,
        keyring.primary,
    )
