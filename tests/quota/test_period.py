"""Periods: local resets (00:00 Asia/Shanghai by default), weeks, months, seconds left."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

from mpchat.quota.period import PeriodClock

SHANGHAI = ZoneInfo("Asia/Shanghai")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_a_day_begins_at_midnight_in_shanghai() -> None:
    day = PeriodClock("day", time(0, 0), SHANGHAI)
    # 15:59:59 UTC is 23:59:59 in Shanghai; 16:00 UTC is the next local day.
    assert day.start(utc(2030, 1, 1, 15, 59, 59)) == utc(2029, 12, 31, 16)
    assert day.start(utc(2030, 1, 1, 16)) == utc(2030, 1, 1, 16)
    assert day.next_start(utc(2030, 1, 1, 15, 59, 59)) == utc(2030, 1, 1, 16)
    assert day.seconds_left(utc(2030, 1, 1, 15, 59, 59)) == 1
    assert day.seconds_left(utc(2030, 1, 1, 15, 59, 59, 500_000)) == 1  # rounded up
    assert day.seconds_left(utc(2030, 1, 1, 16)) == 86400


def test_a_configured_reset_time() -> None:
    day = PeriodClock("day", time(4, 30), SHANGHAI)
    assert day.start(utc(2030, 1, 1, 20, 29)) == utc(2029, 12, 31, 20, 30)
    assert day.start(utc(2030, 1, 1, 20, 30)) == utc(2030, 1, 1, 20, 30)


def test_weeks_begin_on_monday_and_months_on_the_first() -> None:
    week = PeriodClock("week", time(0, 0), SHANGHAI)
    # 2030-01-02 is a Wednesday in Shanghai; its week began on Monday 2029-12-31.
    assert week.start(utc(2030, 1, 2, 4)) == utc(2029, 12, 30, 16)
    assert week.next_start(utc(2030, 1, 2, 4)) == utc(2030, 1, 6, 16)
    month = PeriodClock("month", time(0, 0), SHANGHAI)
    assert month.start(utc(2030, 12, 31, 15, 59)) == utc(2030, 11, 30, 16)
    assert month.next_start(utc(2030, 12, 31, 15, 59)) == utc(2030, 12, 31, 16)
    assert month.start(utc(2030, 12, 31, 16)) == utc(2030, 12, 31, 16)  # 2031-01-01 local


def test_zones_with_daylight_saving() -> None:
    day = PeriodClock("day", time(0, 0), ZoneInfo("Europe/Berlin"))
    assert day.start(utc(2030, 7, 1, 12)) == utc(2030, 6, 30, 22)  # CEST
    assert day.start(utc(2030, 1, 1, 12)) == utc(2029, 12, 31, 23)  # CET
    assert day.seconds_left(utc(2030, 3, 30, 23)) == 23 * 3600  # the 23-hour day
