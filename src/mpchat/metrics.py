"""Prometheus metrics, on a registry of the app's own (no import-time globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.chats = Counter("mpchat_chats", "Chat turns by final status", ["status"], registry=r)
        self.upstream_attempts = Counter(
            "mpchat_upstream_attempts", "Provider attempts by outcome", ["provider", "outcome"],
            registry=r,
        )
        self.first_delta = Histogram(
            "mpchat_first_delta_seconds", "Request accepted to first answer text",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30), registry=r,
        )
        self.phases = Histogram(
            "mpchat_answer_phase_seconds",
            "Where an answer's time goes, by phase (docs/operations.md, Timings)",
            ["phase", "provider", "model", "profile"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=r,
        )
        self.answering = Gauge("mpchat_answers_in_progress", "Answers being streamed",
                               registry=r)
        self.safety = Counter("mpchat_safety_decisions", "Content safety decisions",
                              ["check", "stage", "verdict"], registry=r)
        self.rate_limited = Counter("mpchat_rate_limited", "Chats refused by the user limit",
                                    registry=r)
        self.degraded = Gauge("mpchat_shared_state_degraded",
                              "1 while Redis is unreachable and limits are per-instance",
                              registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
