"""Retry timing: exponential backoff with full jitter, honouring ``Retry-After``.

Written here rather than taken from stamina/tenacity because those add jitter on top of
the exponential wait ("equal"-style) and cannot take a per-failure server-advised delay
and a cap in one place. The loops that use it are a few lines each (the providers' in
`mpchat.chat.upstream`, WeChat's in `mpchat.wechat._http`), and the chat's retry boundary
(before the first delta) is a property of its loop, not of a decorator.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = ["RetryPolicy", "parse_retry_after"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 3
    initial: float = 0.5
    max_wait: float = 8.0
    retry_after_cap: float = 20.0

    def wait(
        self, attempt: int, retry_after: float | None, rand: Callable[[], float] = random.random
    ) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if retry_after is not None:
            return max(0.0, min(retry_after, self.retry_after_cap))
        return float(rand() * min(self.max_wait, self.initial * 2 ** (attempt - 1)))


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
