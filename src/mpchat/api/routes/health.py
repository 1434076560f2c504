"""Liveness and readiness."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter
from sqlalchemy import text
from starlette.responses import JSONResponse

from mpchat.api.deps import Svc

router = APIRouter(tags=["operations"])
log = logging.getLogger("mpchat.health")


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(svc: Svc) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        async with svc.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
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
    ready = checks["database"] == "ok"
    status = "ok" if all(v == "ok" for v in checks.values()) else "degraded"
    return JSONResponse({"status": status if ready else "unavailable", "checks": checks},
                        status_code=200 if ready else 503)
