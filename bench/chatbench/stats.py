"""From samples to figures: nearest-rank percentiles and one phase's summary."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .load import Sample

__all__ = ["PhaseResult", "percentiles", "summarise"]


@dataclass
class PhaseResult:
    concurrency: int
    chats: int
    errors: int
    wall_s: float
    ttfb_ms: dict[str, float]
    first_delta_ms: dict[str, float]
    total_ms: dict[str, float]
    error_examples: list[str] = field(default_factory=list)
    deltas_per_chat: float = 0.0  # content events the client received per chat (mean)
    chars_per_chat: float = 0.0  # answer characters the client received per chat (mean)
    # Open-loop phases (bench held): streams open at once, and how late chats started.
    max_in_flight: int = 0
    max_start_lag_ms: float = 0.0

    @property
    def chats_per_s(self) -> float:
        return (self.chats - self.errors) / self.wall_s if self.wall_s else 0.0


def percentiles(values: list[float]) -> dict[str, float]:
    """p50 and p99 in milliseconds (nearest-rank), plus the mean."""
    if not values:
        return {"p50": float("nan"), "p99": float("nan"), "mean": float("nan")}
    ordered = sorted(values)

    def rank(p: float) -> float:
        index = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
        return ordered[index] * 1000

    return {"p50": rank(50), "p99": rank(99), "mean": sum(ordered) / len(ordered) * 1000}


def summarise(samples: list[Sample], *, concurrency: int, wall_s: float) -> PhaseResult:
    """Latency figures over the good chats; failed chats counted, their errors by frequency."""
    good = [s for s in samples if s.ok]
    bad = Counter(s.error or "failed" for s in samples if not s.ok)
    return PhaseResult(
        concurrency=concurrency,
        chats=len(samples),
        errors=sum(bad.values()),
        wall_s=wall_s,
        ttfb_ms=percentiles([s.ttfb for s in good]),
        first_delta_ms=percentiles([s.first_delta for s in good]),
        total_ms=percentiles([s.total for s in good]),
        error_examples=[f"{n}x {error}" for error, n in bad.most_common(5)],
        deltas_per_chat=sum(s.deltas for s in good) / len(good) if good else 0.0,
        chars_per_chat=sum(s.chars for s in good) / len(good) if good else 0.0,
    )
