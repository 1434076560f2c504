"""WeChat Pay API v3 (JSAPI, for mini programs): orders, notifications, order queries.

No web framework here: the routes call `Payments`; docs/quota.md.
"""

from mpchat.payments.client import Merchant, WeChatPayClient
from mpchat.payments.service import OrderView, Payments

__all__ = ["Merchant", "OrderView", "Payments", "WeChatPayClient"]
