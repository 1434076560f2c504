"""Builds the app's content moderation from settings (called once, in the lifespan)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from redis.asyncio import Redis
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
    ContentSecurity,
    LocalRateLimiter,
    RateLimiter,
    RedisRateLimiter,
)

__all__ = ["RELOAD_INTERVAL", "build_moderation", "wordlist_paths"]

# How often at most the word list files are stat'ed for changes (seconds).
RELOAD_INTERVAL = 5.0


def wordlist_paths(setting: str | None) -> list[Path]:
    """``MPCHAT_WORDLIST`` as paths; empty means the list shipped with the package."""
    return [Path(p.strip()) for p in (setting or "").split(",") if p.strip()]


async def build_moderation(
    *,
    settings: Settings,
    engine: AsyncEngine,
    http: aiohttp.ClientSession,
    redis: Redis | None,
    metrics: Metrics,
    secret: str,
) -> Moderator:
    """The local filter always; WeChat msgSecCheck when ``wechat_security_enabled``.

    A missing word list file raises ``OSError`` here, so a typo stops the start-up.
    """
    word_filter = WordFilter.from_files(
        wordlist_paths(settings.wordlist), min_interval=RELOAD_INTERVAL
    )
    security: ContentSecurity | None = None
    openids: OpenidCache | None = None
    tokens: AccessTokenProvider | None = None
    if settings.wechat_security_enabled:
        security, tokens = _content_security(settings, http, redis)
        openids = OpenidCache(_openid_lookup(engine))
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
        closers=[tokens.aclose] if tokens is not None else [],
    )


def _content_security(
    settings: Settings, http: aiohttp.ClientSession, redis: Redis | None
) -> tuple[ContentSecurity, AccessTokenProvider | None]:
    limiter: RateLimiter = RedisRateLimiter(redis) if redis is not None else LocalRateLimiter()
    if settings.resolved_auth_mode == "cloudrun":
        # The platform's open API adds the credentials (plain http inside Cloud Run); a base
        # set explicitly (a fake, a proxy) wins over that default.
        base = settings.wechat_api_base.rstrip("/")
        explicit = base if base != DEFAULT_BASE_URL else None
        security = ContentSecurity(http, credential_free=True, base_url=explicit,
                                   limiter=limiter)
        return security, None
    if not settings.wechat_appid or settings.wechat_secret is None:
        raise ValueError(
            "WeChat content security needs MPCHAT_WECHAT_APPID and MPCHAT_WECHAT_SECRET "
            "(or MPCHAT_WECHAT_SECURITY=false)"
        )
    tokens = AccessTokenProvider(
        http,
        appid=settings.wechat_appid,
        secret=settings.wechat_secret.get_secret_value(),
        base_url=settings.wechat_api_base,
        redis=redis,
    )
    security = ContentSecurity(http, tokens=tokens, base_url=settings.wechat_api_base,
                               limiter=limiter)
    return security, tokens


def _openid_lookup(engine: AsyncEngine) -> OpenidLookup:
    async def lookup(user_id: str) -> str | None:
        async with engine.connect() as conn:
            found = await conn.execute(select(users.c.openid).where(users.c.id == user_id))
            openid = found.scalar_one_or_none()
        return str(openid) if openid is not None else None

    return lookup
