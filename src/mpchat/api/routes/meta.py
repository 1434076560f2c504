"""GET /api/v1/meta (public: what clients must show) and GET /metrics (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from mpchat.api.deps import Svc
from mpchat.providers.demo import DemoModel

router = APIRouter(tags=["operations"])


@router.get("/api/v1/meta")
async def meta(svc: Svc) -> dict[str, object]:
    """The AI label and the operator's filing (备案 number, the model as filed), for the SDK
    and the demo page to show."""
    settings = svc.settings
    return {
        "ai_generated": True,
        "label": settings.ai_label,
        "model_name": settings.model_display_name or svc.upstream.model,
        "filing_number": settings.filing_number,
        "filed_model_name": settings.filed_model_name,
        "demo": isinstance(svc.upstream.routes[0].provider, DemoModel),
    }


@router.get("/metrics", include_in_schema=False)
async def metrics(svc: Svc) -> Response:
    return Response(svc.metrics.render(), media_type=CONTENT_TYPE_LATEST)
