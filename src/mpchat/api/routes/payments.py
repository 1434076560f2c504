"""Credit packs and WeChat Pay: plans, orders, an order's status, WeChat Pay's notification.

``POST /api/v1/pay/wechat/notify`` is WeChat Pay's, not a user's: no bearer token, its own
signature (checked in `mpchat.payments`), and WeChat Pay's answer shape for a refusal
(`mpchat.api.errors`): 204 when accepted, duplicates included.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from mpchat.api.deps import Caller, Svc
from mpchat.api.errors import WECHATPAY_NOTIFY_PATH
from mpchat.errors import NotFound
from mpchat.payments import Payments
from mpchat.services import Services

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["payments"])

OrderId = Annotated[str, Path(min_length=1, max_length=64)]


class OrderBody(BaseModel):
    model_config = ConfigDict(strict=True)
    plan: str = Field(min_length=1, max_length=32)


def _payments(svc: Services) -> Payments:
    if svc.payments is None:
        raise NotFound("未开通支付")
    return svc.payments


@router.get("/plans")
async def plans(caller: Caller, svc: Svc) -> dict[str, object]:
    """The credit packs on sale; none when payments are off."""
    offered = svc.payments.plans() if svc.payments is not None else []
    return {"items": [{"id": p.id, "title": p.title, "price_fen": p.price_fen,
                       "credits": p.credits} for p in offered]}


@router.post("/orders", status_code=201)
async def create_order(body: OrderBody, caller: Caller, svc: Svc) -> dict[str, object]:
    order, payment = await _payments(svc).create_order(user_id=caller.user_id, plan_id=body.plan)
    return {**order.to_dict(), "payment": payment}


@router.get("/orders/{order_id}")
async def get_order(order_id: OrderId, caller: Caller, svc: Svc) -> dict[str, object]:
    order = await _payments(svc).order(user_id=caller.user_id, order_id=order_id)
    return {**order.to_dict(), "quota": (await svc.quotas.view(caller.user_id)).to_dict()}


@router.post(WECHATPAY_NOTIFY_PATH.removeprefix("/api/v1"), status_code=204)
async def wechat_notify(request: Request, svc: Svc) -> Response:
    await _payments(svc).notify(request.headers, await request.body())
    return Response(status_code=204)
