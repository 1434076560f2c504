"""The values `Quotas` hands out: a reservation, a user's balance, ledger rows, daily totals."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

__all__ = ["DailyTotal", "LedgerRow", "QuotaView", "Reservation"]


@dataclass(frozen=True, slots=True)
class Reservation:
    """Units held for one answer until it is settled (``key``: its message id)."""

    key: str
    user_id: str
    model: str
    units: int  # reserved in all: the answer's maximum cost
    free_units: int  # of which from the free allowance
    credit_units: int  # of which from credits
    prompt_tokens: int  # the estimate it was reserved for
    max_completion_tokens: int


@dataclass(frozen=True, slots=True)
class QuotaView:
    """What a user has left. ``to_dict()`` is the ``quota`` of ``/me`` and of ``done``."""

    enabled: bool
    free_remaining: int = 0  # free units left this period (reserved ones count as used)
    credits: int = 0  # purchased or granted credits, not reserved
    reset_s: int = 0  # seconds until the free allowance resets
    free_units: int = 0  # the free allowance per period

    @property
    def remaining(self) -> int:
        return self.free_remaining + self.credits

    def to_dict(self) -> dict[str, object]:
        if not self.enabled:
            return {"enabled": False}
        return {"enabled": True, "remaining": self.remaining,
                "free_remaining": self.free_remaining, "reset_s": self.reset_s,
                "credits": self.credits}


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """One change of a balance. ``amount``: credits (+ in, - out); ``free_amount``: free units."""

    seq: int
    kind: str  # reserve | settle | release | purchase | grant
    amount: int
    free_amount: int
    balance_after: int  # credits after this change
    reason: str | None
    order_id: str | None
    message_id: str | None
    created_at: dt.datetime

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["id"] = str(out.pop("seq"))
        out["created_at"] = self.created_at.isoformat()
        return out


@dataclass(frozen=True, slots=True)
class DailyTotal:
    """One local day (the quota's timezone) of the whole service."""

    date: dt.date
    answers: int  # answers settled
    free_used: int  # free units spent
    credits_spent: int  # credits spent on answers
    credits_purchased: int
    credits_granted: int  # by operators, net (refunds and corrections count negative)
    orders_paid: int
    revenue_fen: int

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["date"] = self.date.isoformat()
        return out
