"""The console's numbers: summary, series, providers now, a user's usage (GET, read-only).

Every number the admin page shows comes from here (docs/operations.md, "The console"):
usage records for the past (`mpchat.storage.usage`), the routes' live state for "now"
(this instance's gates and breakers).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from mpchat.api.deps import Svc, require_admin
from mpchat.errors import InvalidRequest
from mpchat.services import Services
from mpchat.storage.usage import read_usage
from mpchat.storage.usage_daily import read_daily
from mpchat.storage.usage_stats import Step, merge_daily, series, summary

__all__ = ["router"]

router = APIRouter(prefix="/admin/v1", tags=["admin"], dependencies=[Depends(require_admin)])
_MAX_BUCKETS = 800  # 33 days of hours, two years of days


async def _rows(svc: Services, since: datetime | None, until: datetime | None,
                user_id: str | None = None) -> tuple[datetime, datetime, list[dict[str, Any]]]:
    until = _aware(until) or datetime.now(UTC)
    since = _aware(since) or until - timedelta(days=1)
    if since >= until:
        raise InvalidRequest("since 必须早于 until")
    usage = svc.chat.ctx.usage
    if usage is not None:
        await usage.flush()  # this instance's latest answers are counted too
    return since, until, await read_usage(svc.engine, since=since, until=until, user_id=user_id)


def _aware(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


@router.get("/summary")
async def get_summary(svc: Svc, since: datetime | None = None,
                      until: datetime | None = None) -> dict[str, Any]:
    """Chats, refusals, errors by code, tokens, cost, p50/p95 per phase, top users."""
    since, until, rows = await _rows(svc, since, until)
    return {"since": since, "until": until, **summary(rows)}


@router.get("/series")
async def get_series(svc: Svc, since: datetime | None = None, until: datetime | None = None,
                     step: Step = "hour") -> dict[str, Any]:
    """Per hour or day: chats, errors by code, p50/p95 ms by phase, tokens and cost by model."""
    width = timedelta(hours=1) if step == "hour" else timedelta(days=1)
    since, until, rows = await _rows(svc, since, until)
    if (until - since) / width > _MAX_BUCKETS:
        raise InvalidRequest(f"时间范围过大：最多 {_MAX_BUCKETS} 个区间")
    out = series(rows, since=since, until=until, step=step)
    if step == "day":  # days older than the raw rows' retention: from their roll-ups
        out = merge_daily(out, await read_daily(svc.engine, since=since, until=until))
    return out


@router.get("/providers")
async def providers(svc: Svc) -> dict[str, Any]:
    """Each route now (this instance): breaker, in flight, queue depth, attempts by outcome."""
    attempts: dict[str, dict[str, float]] = {}
    for family in svc.metrics.upstream_attempts.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                by = attempts.setdefault(sample.labels["provider"], {})
                by[sample.labels["outcome"]] = sample.value
    return {"items": [
        {"name": route.name, "model": route.provider.model, "priority": route.priority,
         "weight": route.weight, "breaker": str(route.breaker.state),
         "in_flight": route.gate.in_flight, "queued": route.gate.waiting,
         "max_concurrency": route.gate.max_concurrency, "queue_size": route.gate.queue_size,
         "attempts": attempts.get(route.name, {})}
        for route in svc.upstream.routes
    ]}


@router.get("/users/{user_id}/usage")
async def user_usage(
    svc: Svc, user_id: Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")],
    since: datetime | None = None, until: datetime | None = None,
) -> dict[str, Any]:
    """One user's summary and daily series (default: the last 30 days)."""
    until = _aware(until) or datetime.now(UTC)
    since, until, rows = await _rows(svc, since or until - timedelta(days=30), until, user_id)
    return {"since": since, "until": until, "summary": summary(rows),
            "series": series(rows, since=since, until=until, step="day")}
