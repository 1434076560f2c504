"""Liveness and readiness (ready: the database answers, its schema at this code's head)."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter
from starlette.responses import JSONResponse

from mpchat.api.deps import Svc
from mpchat.storage.migrations import schema_state

router = APIRouter(tags=["operations"])
log = logging.getLogger("mpchat.health")

_DATABASE_CHECK_TIMEOUT = 2.0
# A schema this code does not know yet ("ahead": a newer release migrated it) stays ready,
# so instances of the old release keep serving through a rolling deploy.
_SCHEMA = {"current": "ok", "ahead": "newer", "behind": "not_migrated",
           "missing": "not_migrated"}


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(svc: Svc) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(_DATABASE_CHECK_TIMEOUT):
            state, _ = await schema_state(svc.engine)
        checks["database"] = "ok"
        checks["schema"] = _SCHEMA[state]
    except Exception as exc:  # readiness reports, it does not raise
        log.warning("database not ready: %s", type(exc).__name__)
        checks["database"] = "unavailable"
    if svc.redis is not None:
        try:
            async with asyncio.timeout(1):
                await svc.redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            log.warning("redis not reachable: %s", type(exc).__name__)
            checks["redis"] = "unavailable"
    # Without Redis every instance still serves, with per-instance limits: reporting
    # "not ready" would let a load balancer take the whole fleet out for a Redis outage.
    ready = checks["database"] == "ok" and checks.get("schema") in ("ok", "newer")
    status = "ok" if all(v in ("ok", "newer") for v in checks.values()) else "degraded"
    return JSONResponse({"status": status if ready else "unavailable", "checks": checks},
                        status_code=200 if ready else 503)
