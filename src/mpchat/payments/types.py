"""WeChat Pay's answers and notifications, decoded once at the edge into typed values.

Only the fields mpchat reads are declared; WeChat Pay's others are ignored, so a field it
adds later changes nothing. A body of another shape fails in `decode`, never halfway.
"""

from __future__ import annotations

from typing import Annotated, TypeVar

import msgspec

__all__ = ["Amount", "Notification", "Payer", "Prepay", "Resource", "Transaction", "decode"]

T = TypeVar("T")
_Id = Annotated[str, msgspec.Meta(max_length=128)]


class Amount(msgspec.Struct, frozen=True):
    total: int
    currency: str = "CNY"
    payer_total: int | None = None


class Payer(msgspec.Struct, frozen=True):
    openid: _Id = ""


class Transaction(msgspec.Struct, frozen=True, kw_only=True):
    """A payment, as the notification's decrypted resource and the order query carry it."""

    mchid: _Id
    out_trade_no: _Id
    trade_state: Annotated[str, msgspec.Meta(max_length=32)]
    appid: _Id = ""
    transaction_id: _Id = ""
    success_time: _Id | None = None
    amount: Amount | None = None
    payer: Payer | None = None


class Resource(msgspec.Struct, frozen=True):
    algorithm: str
    ciphertext: Annotated[str, msgspec.Meta(max_length=32768)]
    nonce: Annotated[str, msgspec.Meta(max_length=64)]
    associated_data: Annotated[str, msgspec.Meta(max_length=256)] = ""
    original_type: str = ""


class Notification(msgspec.Struct, frozen=True):
    resource: Resource
    id: _Id = ""
    event_type: _Id = ""
    resource_type: _Id = ""


class Prepay(msgspec.Struct, frozen=True):
    prepay_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


def decode(body: bytes, type: type[T]) -> T:
    """``body`` as ``type``; `ValueError` for anything else (not JSON, wrong shape)."""
    try:
        return msgspec.json.decode(body, type=type)
    except msgspec.DecodeError as exc:  # ValidationError is one
        raise ValueError(str(exc)) from None
