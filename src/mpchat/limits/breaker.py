"""Per-provider circuit breaker: stop calling a provider that keeps failing.

In-process on purpose: each instance judges the provider from its own calls, which needs no
coordination and cannot be wrong about what this instance saw. The shared signal between
instances is the provider's own 429 ``Retry-After``, stored as a pause in ``ProviderBudget``.

    closed --N consecutive failures--> open --cool-down--> half-open --probe ok--> closed
                                        ^                      |
                                        +----probe failed------+
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable

__all__ = ["BreakerState", "CircuitBreaker"]

_log = logging.getLogger("mpchat.limits")


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """``allow()`` before a call, then ``record_success()`` or ``record_failure()``.

    In half-open state exactly one probe is let through; until it reports, others are refused.
    A probe that never reports (its caller vanished) is forgotten after another cool-down.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        cooldown: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.name = name
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_started: float | None = None

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.cooldown:
            self._set(BreakerState.HALF_OPEN)
        return self._state

    def retry_after(self) -> float:
        """Seconds until the breaker lets a probe through (0 when it already would)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.cooldown - self._clock())

    def allow(self) -> bool:
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        now = self._clock()
        if self._probe_started is not None and now - self._probe_started < self.cooldown:
            return False
        self._probe_started = now
        return True

    def forget_probe(self) -> None:
        """The probe ``allow`` handed out was never sent: the next caller may probe."""
        self._probe_started = None

    def record_success(self) -> None:
        self._failures = 0
        self._probe_started = None
        if self._state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)

    def record_failure(self) -> None:
        self._failures += 1
        state = self.state
        if state is BreakerState.HALF_OPEN or (
            state is BreakerState.CLOSED and self._failures >= self.failure_threshold
        ):
            self._opened_at = self._clock()
            self._probe_started = None
            self._set(BreakerState.OPEN)

    def _set(self, state: BreakerState) -> None:
        if state is self._state:
            return
        _log.warning("circuit breaker %s: %s -> %s", self.name, self._state, state)
        self._state = state
        if self._on_change is not None:
            self._on_change(state)
