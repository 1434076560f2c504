"""Operator-issued API keys: issue, authenticate, limit and account server-to-server callers.

A secret is ``sk-mp-`` and 256 random bits (``secrets.token_urlsafe(32)``). It is shown once,
when created or rotated; the database keeps its SHA-256 (unique, the lookup key) and its first
characters (``prefix``) so support can tell keys apart. A fast hash is right here: slow
password hashes exist to make guessing low-entropy passwords expensive, and nobody guesses
256 random bits, so a slow hash would only cost every request its CPU time.

``authenticate`` caches what it found (a key, or that there is none) for ``cache_ttl`` seconds,
so the hot path normally makes no query. Revoking or rotating takes effect at once on the
instance that did it, and on every other instance within ``cache_ttl``; expiry is checked
on every call.

Limits are per key: ``rpm`` (one hit per request) and ``tpm`` (a hit weighing the request's
token estimate) on the shared sliding-window limiter (exact across instances with Redis), and
``quota``, the tokens the key may use in all. ``record_usage`` adds what an answer really used:
at once in this instance's view, and in the database with relative UPDATEs written in batches
off the answer's path (one transaction for the answers that ended meanwhile). Answers already
under way when a key reaches its quota still count, so a key may overshoot it by those answers
(a ledger with reservations comes with quotas).

Never log a secret or its hash: key ids only.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from mpchat.errors import InvalidApiKey, InvalidRequest, NotFound, QuotaExceeded, RateLimited
from mpchat.limits.ratelimit import Rate, RateLimiter
from mpchat.storage import api_keys as store
from mpchat.storage.batches import BatchWriter
from mpchat.storage.tables import utc_now

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["SECRET_PREFIX", "ApiKey", "ApiKeys", "KeyStatus"]

log = logging.getLogger("mpchat.apikeys")

SECRET_PREFIX = "sk-mp-"
_SECRET_BYTES = 32  # 256 bits, 43 characters
_VISIBLE = 8  # random characters kept in ``prefix``
# What a presented secret must look like before it costs a hash, a cache slot or a query.
_WELL_FORMED = re.compile(r"sk-mp-[A-Za-z0-9_-]{20,100}")
_NAME_CHARS = 64
_MAX_MODELS = 50
_MODEL_CHARS = 128
_MAX_PER_MINUTE = 2**31 - 1  # the columns' range
_MAX_QUOTA = 2**63 - 1
_MINUTE = 60.0

KeyStatus = Literal["active", "expired", "revoked"]


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str  # public, safe to log
    name: str
    prefix: str  # the visible start of the secret, for support
    models: tuple[str, ...] | None  # allowed model names or aliases; None: every model
    rpm: int | None  # requests per minute; None: unlimited
    tpm: int | None  # tokens per minute (the estimates ``admit`` is given); None: unlimited
    quota: int | None  # tokens in all; None: unlimited
    used_tokens: int
    expires_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models

    def status(self, at: datetime) -> KeyStatus:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= at:
            return "expired"
        return "active"


@dataclass(slots=True)
class _Entry:
    key: ApiKey | None  # None: no key has this secret
    at: float


class _Cache:
    """Authentication results by secret hash: ``ttl`` seconds, ``size`` entries, LRU."""

    def __init__(self, *, ttl: float, size: int, clock: Callable[[], float]) -> None:
        self._ttl = ttl
        self._size = size
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._digest_of: dict[str, str] = {}  # key id -> its newest cached digest

    def get(self, digest: str) -> _Entry | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if self._clock() - entry.at >= self._ttl:
            self._drop(digest)
            return None
        self._entries.move_to_end(digest)
        return entry

    def put(self, digest: str, key: ApiKey | None) -> None:
        if self._ttl <= 0:
            return
        self._entries[digest] = _Entry(key, self._clock())
        self._entries.move_to_end(digest)
        if key is not None:
            self._digest_of[key.id] = digest
        while len(self._entries) > self._size:
            self._drop(next(iter(self._entries)))

    def forget(self, key_id: str) -> None:
        """Every entry of this key (its current and any earlier secret)."""
        for digest in [d for d, e in self._entries.items() if e.key and e.key.id == key_id]:
            self._drop(digest)

    def add_usage(self, key_id: str, tokens: int) -> None:
        entry = self._entries.get(self._digest_of.get(key_id, ""))
        if entry is not None and entry.key is not None and entry.key.id == key_id:
            entry.key = replace(entry.key, used_tokens=entry.key.used_tokens + tokens)

    def _drop(self, digest: str) -> None:
        entry = self._entries.pop(digest)
        if entry.key is not None and self._digest_of.get(entry.key.id) == digest:
            del self._digest_of[entry.key.id]


class ApiKeys:
    """The keys of one deployment; made once by the app's lifespan (and by the CLI)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        redis: Redis | None = None,
        cache_ttl: float = 5.0,
        cache_size: int = 10_000,
        clock: Callable[[], float] | None = None,
        utcnow: Callable[[], datetime] = utc_now,
        on_degraded: Callable[[bool], None] | None = None,
        prefix: str = "mpchat:",
    ) -> None:
        clock = clock or time.monotonic
        self._engine = engine
        self._utcnow = utcnow
        self._cache = _Cache(ttl=cache_ttl, size=cache_size, clock=clock)
        self._lookups: dict[str, asyncio.Future[ApiKey | None]] = {}  # queries under way
        self._limiter = RateLimiter(
            Rate(1, _MINUTE), redis=redis, prefix=prefix, on_degraded=on_degraded,
            clock=clock, name="api key limits",
        )
        # Usage is written in batches off the answer's path, gathered for a second as the
        # usage records are (storage.usage): one transaction a second at most, not one per
        # answer that ends, which at low concurrency ran beside the next request and slowed
        # its first byte (docs/benchmarks.md).
        self._usage: BatchWriter[tuple[str, int]] = BatchWriter(
            self._write_usage, what="api key usage updates", batch=1000, linger=1.0)
        self._unwritten: dict[str, int] = {}  # key id -> tokens recorded, not yet written

    async def create(
        self,
        *,
        name: str,
        models: Sequence[str] | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        quota: int | None = None,
        expires_at: datetime | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key and its secret, which is never shown again. `InvalidRequest` on bad input."""
        name = _checked_name(name)
        allowed = _checked_models(models)
        for field, value, top in (("rpm", rpm, _MAX_PER_MINUTE), ("tpm", tpm, _MAX_PER_MINUTE),
                                  ("quota", quota, _MAX_QUOTA)):
            _check_positive(field, value, top)
        expires_at = self._checked_expiry(expires_at)
        secret, prefix, digest = _new_secret()
        row = await store.insert_key(
            self._engine, key_id="k_" + secrets.token_hex(6), name=name, prefix=prefix,
            secret_hash=digest, models=allowed, rpm=rpm, tpm=tpm, quota=quota,
            expires_at=expires_at, created_at=self._utcnow(),
        )
        key = self._from_row(row)
        log.info("api key %s created", key.id)
        return key, secret

    async def list(self, *, include_revoked: bool = False) -> list[ApiKey]:
        rows = await store.list_keys(self._engine, include_revoked=include_revoked)
        return [self._from_row(row) for row in rows]

    async def get(self, key_id: str) -> ApiKey:
        return self._found(await store.get_key(self._engine, key_id=key_id))

    async def revoke(self, key_id: str) -> ApiKey:
        """Idempotent: revoking again keeps the first revocation's time."""
        key = self._found(await store.revoke_key(self._engine, key_id=key_id, at=self._utcnow()))
        self._cache.forget(key.id)
        log.info("api key %s revoked", key.id)
        return key

    async def _look_up(self, digest: str) -> ApiKey | None:
        """The key of this hash from storage, then cached. Requests with the same secret
        share one query: when a busy key's entry expires, every request in flight would
        otherwise query at once (64 queries every ``cache_ttl`` under the benchmark's load).
        The query is shielded: a caller that goes away does not cancel it for the others."""
        pending = self._lookups.get(digest)
        if pending is None:
            pending = asyncio.ensure_future(self._load(digest))
            self._lookups[digest] = pending
            pending.add_done_callback(lambda done: self._looked_up(digest, done))
        return await asyncio.shield(pending)

    async def _load(self, digest: str) -> ApiKey | None:
        row = await store.find_by_hash(self._engine, secret_hash=digest)
        key = None if row is None else self._from_row(row)
        self._cache.put(digest, key)
        return key

    def _looked_up(self, digest: str, done: asyncio.Future[ApiKey | None]) -> None:
        self._lookups.pop(digest, None)
        if not done.cancelled():
            done.exception()  # retrieved here too: every waiter may have gone

    async def rotate(self, key_id: str) -> tuple[ApiKey, str]:
        """A new secret for the same key (id, limits, usage); the old secret stops working."""
        secret, prefix, digest = _new_secret()
        row = await store.replace_secret(
            self._engine, key_id=key_id, prefix=prefix, secret_hash=digest
        )
        key = self._found(row)
        if key.revoked_at is not None:
            raise InvalidRequest("已吊销的 API 密钥不能轮换")
        self._cache.forget(key.id)
        log.info("api key %s rotated", key.id)
        return key, secret

    async def authenticate(self, presented: str | None) -> ApiKey:
        """The key whose secret this is; `InvalidApiKey` when missing, unknown, revoked, expired."""
        if not presented:
            raise InvalidApiKey("缺少 API 密钥")
        if _WELL_FORMED.fullmatch(presented) is None:
            raise InvalidApiKey()
        digest = _digest(presented)
        entry = self._cache.get(digest)
        key = entry.key if entry is not None else await self._look_up(digest)
        if key is None:
            raise InvalidApiKey()
        status = key.status(self._utcnow())
        if status == "revoked":
            raise InvalidApiKey("API 密钥已被吊销")
        if status == "expired":
            raise InvalidApiKey("API 密钥已过期")
        return key

    async def admit(self, key: ApiKey, *, tokens: int) -> None:
        """Let one request of about ``tokens`` tokens through, or raise.

        `QuotaExceeded` when the key has used its quota; `RateLimited` (exact ``retry_after``)
        when its requests or tokens per minute are spent. The request counts against ``rpm``
        before ``tpm`` is checked, so a request refused for its tokens still counts as one.
        """
        if tokens < 0:
            raise ValueError(f"a request's tokens cannot be negative ({tokens})")
        if key.quota is not None and key.used_tokens >= key.quota:
            raise QuotaExceeded("该 API 密钥的额度已用完")
        if key.rpm is not None:
            decision = await self._limiter.hit(f"key:{key.id}:rpm", rate=Rate(key.rpm, _MINUTE))
            if not decision.allowed:
                raise RateLimited("该 API 密钥每分钟请求次数已达上限，请稍后再试",
                                  retry_after=decision.retry_after)
        if key.tpm is not None and tokens > 0:
            decision = await self._limiter.hit(
                f"key:{key.id}:tpm", cost=tokens, rate=Rate(key.tpm, _MINUTE)
            )
            if not decision.allowed:
                raise RateLimited("该 API 密钥每分钟 token 用量已达上限，请稍后再试",
                                  retry_after=decision.retry_after)

    async def record_usage(self, key: ApiKey, *, tokens: int) -> None:
        """Add an answer's real tokens to the key's usage: at once in this instance's cache,
        in the database with the next batch (`flush_usage`); never raises."""
        if tokens <= 0:
            return
        self._cache.add_usage(key.id, tokens)
        self._unwritten[key.id] = self._unwritten.get(key.id, 0) + tokens
        self._usage.record((key.id, tokens))

    async def flush_usage(self) -> None:
        """Until the usage recorded so far is written (tests, shutdown)."""
        await self._usage.flush()

    async def _write_usage(self, items: Sequence[tuple[str, int]]) -> None:
        totals: dict[str, int] = {}
        for key_id, tokens in items:
            totals[key_id] = totals.get(key_id, 0) + tokens
        try:
            await store.add_usage(self._engine, totals)
        except (SQLAlchemyError, OSError) as exc:
            for key_id, tokens in totals.items():
                log.warning("could not record %d tokens of api key %s: %s",
                            tokens, key_id, type(exc).__name__)
        finally:
            for key_id, tokens in totals.items():
                left = self._unwritten.get(key_id, 0) - tokens
                if left > 0:
                    self._unwritten[key_id] = left
                else:
                    self._unwritten.pop(key_id, None)

    def _from_row(self, row: store.KeyRow) -> ApiKey:
        """The key as stored, with the usage this instance recorded and has not written yet."""
        key = _key(row)
        unwritten = self._unwritten.get(key.id)
        return replace(key, used_tokens=key.used_tokens + unwritten) if unwritten else key

    def _found(self, row: store.KeyRow | None) -> ApiKey:
        if row is None:
            raise NotFound("API 密钥不存在")
        return self._from_row(row)

    async def aclose(self) -> None:
        await self._usage.aclose()
        await self._limiter.aclose()

    def _checked_expiry(self, expires_at: datetime | None) -> datetime | None:
        if expires_at is None:
            return None
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
        if expires_at <= self._utcnow():
            raise InvalidRequest("过期时间必须在未来")
        return expires_at


def _new_secret() -> tuple[str, str, str]:
    """(secret, its visible prefix, its hash)."""
    secret = SECRET_PREFIX + secrets.token_urlsafe(_SECRET_BYTES)
    return secret, secret[: len(SECRET_PREFIX) + _VISIBLE], _digest(secret)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def _key(row: store.KeyRow) -> ApiKey:
    models = row["models"]
    return ApiKey(
        id=row["id"], name=row["name"], prefix=row["prefix"],
        models=None if models is None else tuple(models),
        rpm=row["rpm"], tpm=row["tpm"], quota=row["quota"], used_tokens=int(row["used_tokens"]),
        expires_at=row["expires_at"], revoked_at=row["revoked_at"], created_at=row["created_at"],
    )


def _checked_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= _NAME_CHARS:
        raise InvalidRequest(f"名称须为 1 到 {_NAME_CHARS} 个字符")
    return name


def _checked_models(models: Sequence[str] | None) -> tuple[str, ...] | None:
    if models is None:
        return None
    names = tuple(dict.fromkeys(m.strip() for m in models))  # in order, once each
    if not names:
        raise InvalidRequest("模型列表不能为空（不限模型时请省略）")
    if len(names) > _MAX_MODELS:
        raise InvalidRequest(f"模型列表最多 {_MAX_MODELS} 个")
    if any(not 1 <= len(n) <= _MODEL_CHARS for n in names):
        raise InvalidRequest(f"模型名须为 1 到 {_MODEL_CHARS} 个字符")
    return names


def _check_positive(field: str, value: int | None, top: int) -> None:
    if value is not None and not 1 <= value <= top:
        raise InvalidRequest(f"{field} 须为 1 到 {top} 之间的整数")
