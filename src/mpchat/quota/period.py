"""Free-allowance periods: when the current one began and when the next begins.

Periods are local wall-clock periods in the configured zone: a day from ``reset_time`` to
``reset_time``, a week from Monday's, a month from the 1st's. The instants are aware UTC
datetimes, so every instance that agrees on the clock agrees on the period.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from mpchat.quota.config import Period

__all__ = ["PeriodClock"]


@dataclass(frozen=True, slots=True)
class PeriodClock:
    period: Period
    reset_time: dt.time
    zone: ZoneInfo

    def start(self, now: dt.datetime) -> dt.datetime:
        """The beginning (UTC) of the period ``now`` falls in."""
        local = now.astimezone(self.zone)
        day = self._first_day(local.date())
        candidate = self._at(day)
        if candidate > now:
            candidate = self._at(self._shift(day, -1))
        return candidate

    def next_start(self, now: dt.datetime) -> dt.datetime:
        """The beginning (UTC) of the next period: when the free allowance resets."""
        begun = self.start(now).astimezone(self.zone).date()
        return self._at(self._shift(begun, 1))

    def seconds_left(self, now: dt.datetime) -> int:
        """Whole seconds until the reset, rounded up: whoever waits that long is never early."""
        return max(0, math.ceil((self.next_start(now) - now).total_seconds()))

    def _first_day(self, day: dt.date) -> dt.date:
        if self.period == "week":
            return day - dt.timedelta(days=day.weekday())
        if self.period == "month":
            return day.replace(day=1)
        return day

    def _shift(self, day: dt.date, n: int) -> dt.date:
        if self.period == "day":
            return day + dt.timedelta(days=n)
        if self.period == "week":
            return day + dt.timedelta(weeks=n)
        month = day.year * 12 + day.month - 1 + n
        return dt.date(month // 12, month % 12 + 1, 1)

    def _at(self, day: dt.date) -> dt.datetime:
        local = dt.datetime.combine(day, self.reset_time, tzinfo=self.zone)
        return local.astimezone(dt.UTC)

