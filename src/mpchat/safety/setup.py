"""Builds the app's content moderation from settings (called once, in the lifespan)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from mpchat.metrics import Metrics
from mpchat.safety.moderator import Moderator, OpenidCache, OpenidLookup
from mpchat.safety.wordfilter import WordFilter
from mpchat.settings import Settings
from mpchat.storage.audit import AuditWriter, audit_key
from mpchat.storage.tables import users
from mpchat.wechat import (
    DEFAULT_BASE_URL,
    AccessTokenProvider,
    AppCredentials,
    CallQuota,
    ContentSecurity,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RELOAD_INTERVAL", "build_moderation", "wordlist_paths"]

# Given a part's name, the callback that reports it losing (True) or regaining Redis.
DegradedReport = Callable[[str], Callable[[bool], None]]

# How often at most the word list files are stat'ed for changes (seconds).
RELOAD_INTERVAL = 5.0


def wordlist_paths(setting: str | None) -> list[Path]:
    """``MPCHAT_WORDLIST`` (or ``MPCHAT_WORDLIST_ALLOW``) as paths; an empty word list
    means the list shipped with the package."""
    return [Path(p.strip()) for p in (setting or "").split(",") if p.strip()]


async def build_moderation(
    *,
    settings: Settings,
    engine: AsyncEngine,
    http: aiohttp.ClientSession,
    redis: Redis | None,
    metrics: Metrics,
    secret: str,
    degraded: DegradedReport | None = None,
) -> Moderator:
    """The local filter always; WeChat msgSecCheck when ``wechat_security_enabled``.

    A missing word list file raises ``OSError`` here, so a typo stops the start-up.
    ``degraded`` names the parts that use Redis (``wechat_token``, ``wechat_quota``) for
    the degraded gauge.
    """
    word_filter = WordFilter.from_files(
        wordlist_paths(settings.wordlist), allow=wordlist_paths(settings.wordlist_allow),
        min_interval=RELOAD_INTERVAL,
    )
    security: ContentSecurity | None = None
    openids: OpenidCache | None = None
    closers: list[Callable[[], Awaitable[None]]] = []
    if settings.wechat_security_enabled:
        security, quota, tokens = _content_security(settings, http, redis, degraded)
        openids = OpenidCache(_openid_lookup(engine))
        closers.append(quota.aclose)
        if tokens is not None:
            closers.append(tokens.aclose)
    return Moderator(
        word_filter=word_filter,
        security=security,
        openids=openids,
        audit=AuditWriter(engine),
        audit_key=audit_key(secret),
        review_policy=settings.safety_review_policy,
        unavailable_policy=settings.safety_unavailable,
        audit_text=settings.audit_text,
        metrics=metrics,
        output_mode=settings.output_mode,
        closers=closers,
    )


def _content_security(
    settings: Settings,
    http: aiohttp.ClientSession,
    redis: Redis | None,
    degraded: DegradedReport | None,
) -> tuple[ContentSecurity, CallQuota, AccessTokenProvider | None]:
    def report(part: str) -> Callable[[bool], None] | None:
        return degraded(part) if degraded is not None else None

    quota = CallQuota(redis=redis, on_degraded=report("wechat_quota"))
    if settings.resolved_auth_mode == "cloudrun":
        # The platform's open API adds the credentials (plain http inside Cloud Run); a base
        # set explicitly (a fake, a proxy) wins over that default.
        base = settings.wechat_api_base.rstrip("/")
        explicit = base if base != DEFAULT_BASE_URL else None
        security = ContentSecurity(http, credential_free=True, base_url=explicit, quota=quota)
        return security, quota, None
    if not settings.wechat_appid or settings.wechat_secret is None:
        raise ValueError(
            "WeChat content security needs MPCHAT_WECHAT_APPID and MPCHAT_WECHAT_SECRET "
            "(or MPCHAT_WECHAT_SECURITY=false)"
        )
    tokens = AccessTokenProvider(
        http,
        AppCredentials(settings.wechat_appid, settings.wechat_secret.get_secret_value(),
                       settings.wechat_api_base),
        redis=redis,
        on_degraded=report("wechat_token"),
    )
    security = ContentSecurity(http, tokens=tokens, base_url=settings.wechat_api_base,
                               quota=quota)
    return security, quota, tokens


def _openid_lookup(engine: AsyncEngine) -> OpenidLookup:
    async def lookup(user_id: str) -> str | None:
        async with engine.connect() as conn:
            found = await conn.execute(select(users.c.openid).where(users.c.id == user_id))
            openid = found.scalar_one_or_none()
        return str(openid) if openid is not None else None

    return lookup
