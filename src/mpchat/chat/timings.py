"""Where the time to an answer's first words goes: the per-phase timings of one answer.

A handful of monotonic clock reads per answer (none per delta), turned into phases when
the answer settles. The phases are the *critical path* to the first ``delta``: every
moment between the request's arrival and its first words is counted in exactly one of
them, so they add up to ``first_delta``:

    input_local    the local word list (microseconds)
    input_wechat   WeChat's content check of the question (0 when it is off)
    queue          waiting for a provider slot, retries and backoff, beyond what the
                   WeChat check already hid (the provider call starts during it)
    provider_first_token  the provider's time to its first token, beyond what the check hid
    overhead       mpchat's own: the rate limit, the quota, storing the question, context,
                   the output check of the first words, the event's publication
    first_delta    request accepted to the first ``delta`` published (the sum of the above)
    streaming      first delta to the provider's last event
    total          request accepted to the provider's last event

In milliseconds in ``done.timings`` (``queue_ms``, ...; API.md, with ``input_check_ms``, the
two input checks together), the ``Server-Timing`` header and the stored answer's metadata;
in seconds in the ``mpchat_answer_phase_seconds`` histogram (docs/operations.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import Histogram

if TYPE_CHECKING:
    from mpchat.chat.answer import Answer

__all__ = ["PHASES", "Timings", "milliseconds", "server_timing"]

PHASES = ("input_local", "input_wechat", "queue", "provider_first_token", "overhead",
          "first_delta", "streaming", "total")
clock = time.monotonic


@dataclass(slots=True)
class Timings:
    """The marks of one answer (monotonic seconds; 0.0: not reached)."""

    received: float
    profile: str = ""
    local_done: float = 0.0  # the local check passed
    wechat_from: float = 0.0  # WeChat's check of the question
    wechat_to: float = 0.0
    reading: float = 0.0  # the producer began reading the provider's events
    called: float = 0.0  # the successful attempt's provider call (after queue and retries)
    first_token: float = 0.0  # the provider's first event
    first_delta: float = 0.0  # the first delta published
    ended: float = 0.0  # the provider's last event (or the failure)
    clock = staticmethod(clock)

    @classmethod
    def begin(cls, profile: str | None = None) -> Timings:
        return cls(clock(), profile or "")

    def settle(self, answer: Answer, histogram: Histogram) -> None:
        """The answer's phases: on the answer (milliseconds) and in the histogram (once)."""
        if not self.ended:
            self.ended = clock()  # failed or stopped before the provider's end
        phases = self.phases()
        answer.timings = milliseconds(phases)
        provider, model = answer.provider or "", answer.model
        for phase, seconds in phases.items():
            histogram.labels(phase, provider, model, self.profile).observe(seconds)

    def phases(self) -> dict[str, float]:
        """Seconds per phase; phases not reached (an answer that failed early) are left out."""
        t0 = self.received
        out: dict[str, float] = {}
        local = out["input_local"] = max(0.0, (self.local_done or t0) - t0)
        wechat = out["input_wechat"] = max(0.0, self.wechat_to - self.wechat_from)
        start = self.reading or t0
        waited = provider = 0.0
        if self.called:
            waited = out["queue"] = max(0.0, self.called - start)
        if self.first_token:
            since = max(self.called, start)
            provider = out["provider_first_token"] = max(0.0, self.first_token - since)
        if self.first_delta:
            first = out["first_delta"] = self.first_delta - t0
            out["overhead"] = max(0.0, first - local - wechat - waited - provider)
            if self.ended:
                out["streaming"] = max(0.0, self.ended - self.first_delta)
        if self.ended:
            out["total"] = self.ended - t0
        return out


def milliseconds(phases: dict[str, float]) -> dict[str, float]:
    """``done.timings``: ``<phase>_ms``, and ``input_check_ms`` (both input checks)."""
    ms = {f"{name}_ms": round(seconds * 1000, 1) for name, seconds in phases.items()}
    ms["input_check_ms"] = round((phases["input_local"] + phases["input_wechat"]) * 1000, 1)
    return ms


def server_timing(ms: dict[str, float]) -> str:
    """The ``Server-Timing`` header's value (W3C, in ms): ``queue;dur=12.5, ...``."""
    return ", ".join(f"{name.removesuffix('_ms')};dur={value}" for name, value in ms.items())
