"""Backoff timing: full jitter within the exponential cap, Retry-After honoured and capped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from mpchat.providers.retry import RetryPolicy, parse_retry_after


def test_full_jitter_bounds_grow_exponentially_to_the_cap():
    policy = RetryPolicy(initial=0.5, max_wait=3.0)
    assert [policy.wait(n, None, rand=lambda: 1.0) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 3.0]
    assert policy.wait(3, None, rand=lambda: 0.0) == 0.0
    assert policy.wait(2, None, rand=lambda: 0.25) == 0.25


def test_retry_after_wins_and_is_capped():
    policy = RetryPolicy(retry_after_cap=10)
    assert policy.wait(1, 4.0, rand=lambda: 1.0) == 4.0
    assert policy.wait(1, 400.0) == 10


def test_parse_retry_after_seconds_and_dates():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30
    assert parse_retry_after("garbage") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("-5") == 0.0
