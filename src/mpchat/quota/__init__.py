"""Quotas and credits: a free allowance per period, purchased credits, reserve then settle.

No web framework here: the chat pipeline and the routes call `Quotas`; docs/quota.md.
"""

from mpchat.quota.config import PlanConfig, PriceConfig, QuotaConfig
from mpchat.quota.pricing import Prices
from mpchat.quota.quotas import Quotas
from mpchat.quota.types import DailyTotal, LedgerRow, QuotaView, Reservation

__all__ = [
    "DailyTotal",
    "LedgerRow",
    "PlanConfig",
    "PriceConfig",
    "Prices",
    "QuotaConfig",
    "QuotaView",
    "Quotas",
    "Reservation",
]
