"""The composition root: every long-lived resource, built from settings and closed in order.

`open_services` is entered once by the app's lifespan (and by CLI commands that need the
database); handlers receive the `Services` it yields, never globals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio
from sqlalchemy.ext.asyncio import AsyncEngine

from mpchat.apikeys import ApiKeys
from mpchat.auth.login import Authenticator, CodeExchange
from mpchat.auth.tokens import TokenSigner
from mpchat.chat.answers import Answers
from mpchat.chat.completions import Completions
from mpchat.chat.producer import AnswerContext
from mpchat.chat.profiles import build_profiles
from mpchat.chat.service import ChatService
from mpchat.chat.summarize import Summarizer
from mpchat.chat.upstream import Route, Upstream
from mpchat.devkeys import resolve_secrets
from mpchat.limits import CircuitBreaker, ProviderBudget, RateLimiter, UpstreamGate
from mpchat.metrics import Metrics
from mpchat.payments import Payments
from mpchat.payments.setup import build_payments
from mpchat.providers.config import FileConfig, load_config
from mpchat.providers.demo import DemoModel
from mpchat.providers.registry import build_providers
from mpchat.providers.retry import RetryPolicy
from mpchat.quota import Quotas
from mpchat.safety.moderator import Moderator
from mpchat.safety.setup import build_moderation
from mpchat.settings import Settings, UnsafeSettings
from mpchat.storage.answers import Settled
from mpchat.storage.crypto import Keyring
from mpchat.storage.engine import create_engine, is_sqlite
from mpchat.storage.migrations import upgrade
from mpchat.storage.request_log import RequestLog
from mpchat.storage.retention import run_retention
from mpchat.storage.transactions import Transactions
from mpchat.storage.usage import Cost, UsageLog
from mpchat.wechat import AppCredentials, LoginClient

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["Services", "open_services"]

log = logging.getLogger("mpchat")


@dataclass(slots=True)
class Services:
    settings: Settings
    engine: AsyncEngine
    http: aiohttp.ClientSession
    redis: Redis | None
    keyring: Keyring
    auth: Authenticator
    chat: ChatService
    upstream: Upstream
    limiter: RateLimiter
    login_limiter: RateLimiter
    metrics: Metrics
    moderation: Moderator
    summarizer: Summarizer
    answers: Answers
    completions: Completions
    api_keys: ApiKeys
    quotas: Quotas  # enabled only with [quota] in MPCHAT_CONFIG
    payments: Payments | None  # None: WeChat Pay is not configured


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
        transactions = Transactions(engine)
        stack.push_async_callback(transactions.aclose)
        if migrate if migrate is not None else settings.env == "development":
            await upgrade(engine)
        config = load_config(settings.config)
        http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=_pool_size(settings, config), ttl_dns_cache=300, enable_cleanup_closed=True
            ),
            # Per-request timeouts are set by each client; none is global.
            timeout=aiohttp.ClientTimeout(total=None),
            raise_for_status=False,
        )
        stack.push_async_callback(http.close)
        metrics = Metrics()
        redis = _redis(settings)
        if redis is not None:
            stack.push_async_callback(redis.aclose)

        degraded_parts: set[str] = set()

        def degraded(part: str) -> Callable[[bool], None]:
            def report(on: bool) -> None:
                (degraded_parts.add if on else degraded_parts.discard)(part)
                metrics.degraded.set(1 if degraded_parts else 0)

            return report

        upstream = _upstream(settings, config, http, redis, metrics, degraded)
        stack.push_async_callback(upstream.aclose)
        limiter = RateLimiter(settings.rate_limit, redis=redis, on_degraded=degraded("user"))
        stack.push_async_callback(limiter.aclose)
        auth = Authenticator(
            engine=engine,
            signer=TokenSigner(secret, ttl=settings.token_ttl),
            mode=settings.resolved_auth_mode,
            cloud_header=settings.cloudrun_header_auth,
            exchange=_code_exchange(settings, http),
        )
        moderation = await build_moderation(
            settings=settings, engine=engine, http=http, redis=redis, metrics=metrics,
            secret=secret, degraded=degraded,
        )
        stack.push_async_callback(moderation.aclose)
        login_limiter = RateLimiter(settings.login_rate_limit, redis=redis,
                                    prefix="mpchat:login:", on_degraded=degraded("login"))
        stack.push_async_callback(login_limiter.aclose)
        api_keys = ApiKeys(engine, redis=redis, cache_ttl=settings.api_key_cache_ttl,
                           on_degraded=degraded("apikeys"))
        stack.push_async_callback(api_keys.aclose)
        quotas = Quotas(transactions, config.quota, aliases=config.aliases)
        payments = build_payments(settings, config, transactions, http, quotas)
        summarizer = Summarizer(engine=engine, keyring=keyring, upstream=upstream,
                                model=settings.summary_model)
        stack.push_async_callback(summarizer.aclose)
        owner = uuid.uuid4().hex
        relay = _relay(settings, redis, degraded)
        if relay is not None:
            stack.push_async_callback(relay.aclose)
        request_log = None
        if settings.openai_log_requests:
            request_log = RequestLog(engine, keyring)
            stack.push_async_callback(request_log.aclose)
        # Entered after everything the answers use, so it closes first: answers under way
        # finish (or are stopped and stored) while the database, providers and relay are up.
        answers = await stack.enter_async_context(Answers(
            transactions=transactions, keyring=keyring, owner=owner, lease=settings.answer_lease,
            save_interval=settings.answer_save_interval, resume_ttl=settings.resume_ttl,
            shutdown_timeout=settings.shutdown_timeout, ping_interval=settings.ping_interval,
            relay=relay, after_sweep=_quota_sweep(quotas),
        ))
        usage = UsageLog(engine, cost=_cost(quotas))  # the operator's console (issue 15)
        stack.push_async_callback(usage.aclose)
        ctx = AnswerContext(
            usage=usage, engine=engine, keyring=keyring, metrics=metrics, label=settings.ai_label,
            owner=owner, first_delta_deadline=settings.first_delta_deadline,
            lease=settings.answer_lease, coalesce=settings.stream_coalesce_ms / 1000,
            transactions=transactions,
        )
        chat = ChatService(
            ctx=ctx,
            answers=answers,
            summarizer=summarizer,
            moderation=moderation,
            upstream=upstream,
            limiter=limiter,
            system_prompt=settings.system_prompt,
            profiles=build_profiles(
                system_prompt=settings.system_prompt,
                context_budget=settings.context_token_budget,
                max_answer_tokens=settings.max_answer_tokens,
                configured={n: p.model_dump() for n, p in config.profiles.items()},
                resolve=config.resolve),
            context_budget=settings.context_token_budget,
            max_answer_tokens=settings.max_answer_tokens,
            max_content_chars=settings.max_content_chars,
            quotas=quotas,
        )
        completions = Completions(
            ctx=ctx, answers=answers, upstream=upstream, aliases=config.aliases,
            moderation=moderation, max_answer_tokens=settings.max_answer_tokens,
            request_log=request_log, answer_deadline=settings.upstream_total_timeout,
        )
        log_days = settings.openai_log_days if settings.openai_log_requests else None
        # Always: expired sessions; audit records after their own period; conversations and
        # the request log if asked.
        retention = asyncio.create_task(
            run_retention(engine, days=settings.retention_days, interval=3600, redis=redis,
                          request_log_days=log_days, audit_days=settings.audit_retention_days,
                          usage_days=settings.usage_retention_days)
        )
        stack.push_async_callback(_cancel, retention)
        # anyio imports its asyncio backend on first use, the first answer's cancel scope:
        # now instead, so the first chat after a cold start does not pay for that import.
        anyio.current_time()
        _log_startup(settings, upstream, keyring)
        yield Services(settings=settings, engine=engine, http=http, redis=redis,
                       keyring=keyring, auth=auth, chat=chat, upstream=upstream,
                       limiter=limiter, login_limiter=login_limiter, metrics=metrics,
                       moderation=moderation, summarizer=summarizer, answers=answers,
                       completions=completions, api_keys=api_keys, quotas=quotas,
                       payments=payments)


def _quota_sweep(quotas: Quotas) -> Callable[[list[Settled]], Awaitable[None]] | None:
    """After each sweep of orphaned answers: their reservations settled at what their stored
    text is worth, and any reservation still open after an hour released at no cost (its
    answer's instance died before the answer's row was written, or settling failed)."""
    if not quotas.enabled:
        return None

    async def sweep(settled: list[Settled]) -> None:
        for answer in settled:
            await quotas.settle_stale(answer.message_id,
                                      completion_tokens=answer.completion_tokens,
                                      produced=answer.completion_tokens > 0)
        await quotas.release_stale(older_than=datetime.now(UTC) - timedelta(hours=1))

    return sweep


def _cost(quotas: Quotas) -> Cost | None:
    """An answer's cost units at the quota's prices (usage records); None with quotas off."""
    if not quotas.enabled:
        return None
    prices = quotas.prices
    return lambda model, prompt, completion: prices.cost(
        model, prompt_tokens=prompt, completion_tokens=completion)


def _pool_size(settings: Settings, config: FileConfig) -> int:
    """Provider connections: never fewer than the calls the gates let be in flight.

    A call admitted by its gate must not then wait for a pooled connection: that wait
    would count against the provider's first-token timeout and open its breaker, so local
    congestion would take a healthy provider out for everyone.
    """
    in_flight = sum(p.max_concurrency or settings.upstream_max_concurrency
                    for p in config.providers) or settings.upstream_max_concurrency
    return max(settings.upstream_pool_size, in_flight)


def _relay(
    settings: Settings, redis: Redis | None, degraded: Callable[[str], Callable[[bool], None]]
) -> Any:
    if redis is None:
        return None
    from mpchat.chat.relay import EventRelay

    return EventRelay(redis, ttl=settings.resume_ttl, on_degraded=degraded("relay"))


def _upstream(
    settings: Settings,
    config: FileConfig,
    http: aiohttp.ClientSession,
    redis: Redis | None,
    metrics: Metrics,
    degraded: Callable[[str], Callable[[bool], None]],
) -> Upstream:
    """One route per configured provider, each with its gate, budget and breaker."""
    return Upstream(
        [
            Route(
                provider=spec.provider,
                priority=spec.priority,
                weight=spec.weight,
                gate=UpstreamGate(
                    spec.provider.name,
                    max_concurrency=spec.max_concurrency or settings.upstream_max_concurrency,
                    queue_size=settings.queue_size,
                    queue_timeout=settings.queue_timeout,
                    redis=redis,
                    on_degraded=degraded(f"gate:{spec.provider.name}"),
                ),
                budget=ProviderBudget(
                    spec.provider.name,
                    requests_per_minute=spec.rpm,
                    tokens_per_minute=spec.tpm,
                    redis=redis,
                    on_degraded=degraded(f"budget:{spec.provider.name}"),
                ),
                breaker=CircuitBreaker(spec.provider.name),
            )
            for spec in build_providers(settings, config, http)
        ],
        retry=RetryPolicy(
            attempts=settings.upstream_retry_attempts,
            initial=settings.upstream_retry_initial,
            max_wait=settings.upstream_retry_max_wait,
        ),
        metrics=metrics,
        sleep=asyncio.sleep,
    )


def _code_exchange(settings: Settings, http: aiohttp.ClientSession) -> CodeExchange | None:
    if settings.resolved_auth_mode != "wechat":
        return None
    if not settings.wechat_appid or settings.wechat_secret is None:
        raise UnsafeSettings("wechat login needs MPCHAT_WECHAT_APPID and MPCHAT_WECHAT_SECRET")
    return LoginClient(
        http, AppCredentials(settings.wechat_appid, settings.wechat_secret.get_secret_value(),
                             settings.wechat_api_base),
    ).openid


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _redis(settings: Settings) -> Redis | None:
    if not settings.redis_url:
        return None
    # Imported only with a Redis to talk to: without one redis-py is never loaded (start-up
    # time, docs/benchmarks.md "Cold start"; tests/integration/test_lazy_imports.py).
    from redis.asyncio import Redis

    # Short socket timeouts: a Redis that hangs must degrade limits, not stall chats.
    return Redis.from_url(settings.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5,
                          health_check_interval=15)


def _log_startup(settings: Settings, upstream: Upstream, keyring: Keyring) -> None:
    db = "sqlite" if is_sqlite(settings.resolved_database_url) else "postgresql"
    described = []
    for route in upstream.routes:
        provider = route.provider
        if isinstance(provider, DemoModel):
            described.append("built-in DEMO model (no provider configured; answers say so)")
        else:
            described.append(f"{provider!r} priority={route.priority}")
    log.info(
        "mpchat starting: env=%s auth=%s database=%s state=%s providers=[%s] encryption_key=%s",
        settings.env,
        settings.auth_description,
        db,
        "redis" if settings.redis_url else "in-process",
        "; ".join(described),
        keyring.primary,
    )
