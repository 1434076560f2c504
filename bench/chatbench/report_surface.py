"""The OpenAI-compatible targets side by side, mode by mode, and the aims for mpchat's ``/v1``.

One column per OpenAI-style result (direct, mpchat-v1 base when asked, mpchat-v1, litellm;
streamed, then ``json``).
"Added" is the figure minus direct's in the same mode; "x LiteLLM" is chats/s over LiteLLM's
in the same mode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .report import fmt, render
from .stats import PhaseResult
from .throughput import TargetResult

__all__ = ["AIM_ADDED_TTFB_MS", "AIM_TIMES_LITELLM", "surface_aims", "surface_table"]

# The aims for /v1 (content safety on): at least 10x LiteLLM's chats/s at c=64, and
# under 1 ms added to time to first byte p50 at c=1.
AIM_TIMES_LITELLM = 10.0
AIM_ADDED_TTFB_MS = 1.0

_SURFACE = ("direct", "mpchat-v1-base", "mpchat-v1", "litellm")


def _find(results: list[TargetResult], target: str, mode: str) -> TargetResult | None:
    return next((r for r in results if r.target == target and r.mode == mode), None)


def surface_table(results: list[TargetResult], concurrency: int) -> str:
    """The OpenAI-style results, streamed first, one column each."""
    columns = [r for r in results if r.target in _SURFACE]
    columns.sort(key=lambda r: (r.mode != "stream", _SURFACE.index(r.target)))
    c = concurrency

    def two(
        getter: Callable[[TargetResult], PhaseResult | None], attr: str, added: bool
    ) -> Callable[[TargetResult], str]:
        def cell(r: TargetResult) -> str:
            ph = getter(r)
            if ph is None:
                return "-"
            mine: dict[str, float] = getattr(ph, attr)
            if not added:
                return f"{fmt(mine['p50'])} / {fmt(mine['p99'])}"
            base = _find(results, "direct", r.mode)
            ref = getter(base) if base is not None and base is not r else None
            if ref is None:
                return "-"
            theirs: dict[str, float] = getattr(ref, attr)
            return f"{fmt(mine['p50'] - theirs['p50'])} / {fmt(mine['p99'] - theirs['p99'])}"

        return cell

    def c1(r: TargetResult) -> PhaseResult | None:
        return r.c1

    def high(r: TargetResult) -> PhaseResult | None:
        return r.c64

    def rate(r: TargetResult) -> str:
        return fmt(r.c64.chats_per_s, 1) if r.c64 else "-"

    def times_litellm(r: TargetResult) -> str:
        other = _find(results, "litellm", r.mode)
        if r.c64 is None or other is None or other.c64 is None or not other.c64.chats_per_s:
            return "-"
        return fmt(r.c64.chats_per_s / other.c64.chats_per_s, 1)

    def cpu(who: str) -> Callable[[TargetResult], str]:
        def cell(r: TargetResult) -> str:
            value = r.cpu_ms_per_chat.get(r.name if who == "server" else who)
            return fmt(value) if value is not None else "-"

        return cell

    def errors(r: TargetResult) -> str:
        phases = [p for p in (r.c1, r.c64) if p]
        return ", ".join(f"{p.errors}/{p.chats}" for p in phases) if phases else "-"

    rows: list[tuple[str, Callable[[TargetResult], str]]] = [
        (f"chats/s, c={c}", rate),
        (f"chats/s, c={c}, x LiteLLM's", times_litellm),
        ("time to first byte p50 / p99, c=1 (ms)", two(c1, "ttfb_ms", False)),
        ("added time to first byte p50 / p99, c=1 (ms)", two(c1, "ttfb_ms", True)),
        ("time to first token p50 / p99, c=1 (ms)", two(c1, "first_delta_ms", False)),
        ("added time to first token p50 / p99, c=1 (ms)", two(c1, "first_delta_ms", True)),
        ("total latency p50 / p99, c=1 (ms)", two(c1, "total_ms", False)),
        (f"total latency p50 / p99, c={c} (ms)", two(high, "total_ms", False)),
        (f"CPU ms per chat at c={c}: the server", cpu("server")),
        (f"CPU ms per chat at c={c}: fake provider", cpu("fake provider")),
        (f"CPU ms per chat at c={c}: load generator", cpu("load generator")),
        (f"failed chats (c=1, c={c})", errors),
    ]
    return render(
        [r.name for r in columns], [[label, *(cell(r) for r in columns)] for label, cell in rows]
    )


def surface_aims(results: list[TargetResult], concurrency: int) -> list[dict[str, Any]]:
    """The issue's aims for mpchat-v1, per mode measured (n/a without the figure to compare)."""
    checks: list[dict[str, Any]] = []
    for mode in ("stream", "json"):
        mine = _find(results, "mpchat-v1", mode)
        if mine is None:
            continue
        litellm, direct = _find(results, "litellm", mode), _find(results, "direct", mode)
        ratio = None
        if mine.c64 and litellm is not None and litellm.c64 and litellm.c64.chats_per_s:
            ratio = mine.c64.chats_per_s / litellm.c64.chats_per_s
        checks.append(
            _check(
                f"{mine.name}: >= {AIM_TIMES_LITELLM:.0f}x LiteLLM's chats/s at c={concurrency}",
                ratio,
                AIM_TIMES_LITELLM,
                None if ratio is None else ratio >= AIM_TIMES_LITELLM,
                "x",
            )
        )
        added = None
        if mine.c1 and direct is not None and direct.c1:
            added = mine.c1.ttfb_ms["p50"] - direct.c1.ttfb_ms["p50"]
        checks.append(
            _check(
                f"{mine.name}: adds < {AIM_ADDED_TTFB_MS:.0f} ms p50 to time to first byte at c=1",
                added,
                AIM_ADDED_TTFB_MS,
                None if added is None else added < AIM_ADDED_TTFB_MS,
                "ms",
            )
        )
    return checks


def _check(
    name: str, value: float | None, limit: float, ok: bool | None, unit: str
) -> dict[str, Any]:
    verdict = "n/a" if ok is None else ("PASS" if ok else "FAIL")
    return {"bar": name, "value": value, "limit": limit, "unit": unit, "verdict": verdict}
