"""The figures side by side: one Markdown table per scenario, one column per target.

Also the bars of issue 2 (checked on the throughput scenario) and what the machine was.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .held import HeldPlan, HeldResult
from .stats import PhaseResult
from .throughput import TargetResult

__all__ = ["bars", "fmt", "held_table", "machine", "render", "table"]

# The bars of issue 2 (2-core machine, SQLite, fake provider with 0 ms TTFT and 20 chunks).
BAR_TTFB_OVERHEAD_MS = 3.0
BAR_CHATS_PER_S_C64 = 300.0
BAR_COLD_START_S = 1.5
BAR_RSS_MIB = 150.0


def render(columns: list[str], body: list[list[str]]) -> str:
    """A Markdown table: labels left-aligned in the first column, figures right-aligned."""
    header = ["", *columns]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for row in body:
        cells = [
            row[0].ljust(widths[0]),
            *(v.rjust(w) for v, w in zip(row[1:], widths[1:], strict=True)),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    return f"{value:.{digits}f}"


def table(results: list[TargetResult], concurrency: int) -> str:
    """The throughput scenario's figures, one column per target."""

    def phase(r: TargetResult, level: str) -> PhaseResult | None:
        return r.c1 if level == "c1" else r.c64

    def pct(getter: str, level: str, p: str) -> Callable[[TargetResult], str]:
        def cell(r: TargetResult) -> str:
            ph = phase(r, level)
            return fmt(getattr(ph, getter)[p]) if ph else "-"

        return cell

    def rate(level: str) -> Callable[[TargetResult], str]:
        def cell(r: TargetResult) -> str:
            ph = phase(r, level)
            return fmt(ph.chats_per_s, 1) if ph else "-"

        return cell

    def mem(attr: str, key: str) -> Callable[[TargetResult], str]:
        def cell(r: TargetResult) -> str:
            value = getattr(r, attr).get(key)
            return fmt(value / 1024, 1) if value else "-"

        return cell

    def cold(r: TargetResult) -> str:
        if not r.cold_start_s:
            return "-"
        ordered = sorted(r.cold_start_s)
        median = ordered[len(ordered) // 2]
        return fmt(median) + (f" (max {fmt(ordered[-1])})" if len(ordered) > 1 else "")

    def cpu(who: str) -> Callable[[TargetResult], str]:
        def cell(r: TargetResult) -> str:
            value = r.cpu_ms_per_chat.get(r.name if who == "server" else who)
            return fmt(value) if value is not None else "-"

        return cell

    def deltas(r: TargetResult) -> str:
        ph = phase(r, "c64")
        return fmt(ph.deltas_per_chat, 1) if ph else "-"

    def errors(r: TargetResult) -> str:
        phases = [p for p in (r.c1, r.c64) if p]
        return ", ".join(f"{p.errors}/{p.chats}" for p in phases) if phases else "-"

    c = concurrency
    rows: list[tuple[str, Callable[[TargetResult], str]]] = [
        ("time to first byte p50, c=1 (ms)", pct("ttfb_ms", "c1", "p50")),
        ("time to first byte p99, c=1 (ms)", pct("ttfb_ms", "c1", "p99")),
        ("time to first delta p50, c=1 (ms)", pct("first_delta_ms", "c1", "p50")),
        ("time to first delta p99, c=1 (ms)", pct("first_delta_ms", "c1", "p99")),
        ("total latency p50, c=1 (ms)", pct("total_ms", "c1", "p50")),
        ("total latency p99, c=1 (ms)", pct("total_ms", "c1", "p99")),
        (f"total latency p50, c={c} (ms)", pct("total_ms", "c64", "p50")),
        (f"total latency p99, c={c} (ms)", pct("total_ms", "c64", "p99")),
        (f"time to first delta p50, c={c} (ms)", pct("first_delta_ms", "c64", "p50")),
        ("chats/s, c=1", rate("c1")),
        (f"chats/s, c={c}", rate("c64")),
        ("cold start to /healthz 200 (s)", cold),
        ("peak RSS, VmHWM (MiB)", mem("memory_after_load_kib", "VmHWM")),
        ("RSS after warm-up (MiB)", mem("memory_after_warmup_kib", "VmRSS")),
        ("RSS after load, VmRSS (MiB)", mem("memory_after_load_kib", "VmRSS")),
        (f"CPU ms per chat at c={c}: the server", cpu("server")),
        (f"CPU ms per chat at c={c}: fake provider", cpu("fake provider")),
        (f"CPU ms per chat at c={c}: load generator", cpu("load generator")),
        (f"delta events per chat received, c={c} (mean)", deltas),
        (f"failed chats (c=1, c={c})", errors),
    ]
    return render(
        [r.name for r in results], [[label, *(cell(r) for r in results)] for label, cell in rows]
    )


def bars(direct: TargetResult, mpchat: TargetResult, concurrency: int) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []

    def add(name: str, value: float | None, limit: float, ok: bool | None, unit: str) -> None:
        verdict = "n/a" if ok is None else ("PASS" if ok else "FAIL")
        checks.append(
            {"bar": name, "value": value, "limit": limit, "unit": unit, "verdict": verdict}
        )

    if direct.c1 and mpchat.c1:
        extra = mpchat.c1.ttfb_ms["p50"] - direct.c1.ttfb_ms["p50"]
        add(
            "mpchat adds <= 3 ms p50 to time to first byte at c=1",
            extra,
            BAR_TTFB_OVERHEAD_MS,
            extra <= BAR_TTFB_OVERHEAD_MS,
            "ms",
        )
    else:
        add(
            "mpchat adds <= 3 ms p50 to time to first byte at c=1",
            None,
            BAR_TTFB_OVERHEAD_MS,
            None,
            "ms",
        )
    rate = mpchat.c64.chats_per_s if mpchat.c64 else None
    add(
        f">= 300 streamed chats/s through mpchat at c={concurrency}",
        rate,
        BAR_CHATS_PER_S_C64,
        None if rate is None else rate >= BAR_CHATS_PER_S_C64,
        "chats/s",
    )
    cold = max(mpchat.cold_start_s) if mpchat.cold_start_s else None
    add(
        "mpchat cold start < 1.5 s (worst of the runs)",
        cold,
        BAR_COLD_START_S,
        None if cold is None else cold < BAR_COLD_START_S,
        "s",
    )
    rss = mpchat.memory_after_load_kib.get("VmRSS")
    rss_mib = rss / 1024 if rss else None
    add(
        "mpchat RSS after load < 150 MB",
        rss_mib,
        BAR_RSS_MIB,
        None if rss_mib is None else rss_mib < BAR_RSS_MIB,
        "MiB",
    )
    return checks


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
    }


def held_table(results: list[HeldResult], plan: HeldPlan) -> str:
    """The held-streams figures, one column per target; "added" is over direct's figure."""
    direct = next((r for r in results if r.name == "direct"), None)
    columns: list[dict[str, str]] = [held_column(r, direct, plan) for r in results]
    labels: list[str] = []  # every column's rows, in each column's order
    for column in columns:
        at = -1
        for label in column:
            if label in labels:
                at = labels.index(label)
            else:
                at += 1
                labels.insert(at, label)
    body = [[label, *(column.get(label, "-") for column in columns)] for label in labels]
    return render([r.name for r in results], body)


def held_column(r: HeldResult, direct: HeldResult | None, plan: HeldPlan) -> dict[str, str]:
    """One target's held-streams figures, by row label."""

    def two(a: float, b: float) -> str:
        return f"{fmt(a, 0)} / {fmt(b, 0)}"

    cells: dict[str, str] = {}
    for mode in plan.modes:
        ph = r.phases.get(mode)
        base = direct.phases.get(mode) if direct is not None and r is not direct else None
        cpu = r.cpu_ms_per_chat.get(mode, {})
        rows: list[tuple[str, str]] = []
        if ph is not None:
            rows += [
                ("failed chats", f"{ph.errors}/{ph.chats}"),
                ("streams open at once, client (max)", str(ph.max_in_flight)),
                (
                    "streams open at once, provider (max)",
                    str(r.provider_max_in_flight.get(mode, "-")),
                ),
                ("chats/s", fmt(ph.chats_per_s, 1)),
            ]
            for label, attr in (
                ("time to first byte", "ttfb_ms"),
                ("time to first delta", "first_delta_ms"),
                ("total latency", "total_ms"),
            ):
                mine: dict[str, float] = getattr(ph, attr)
                rows.append((f"{label} p50 / p99 (ms)", two(mine["p50"], mine["p99"])))
                if base is not None:
                    ref: dict[str, float] = getattr(base, attr)
                    added = two(mine["p50"] - ref["p50"], mine["p99"] - ref["p99"])
                    rows.append((f"added {label} p50 / p99 (ms)", added))
            for label, who in (
                ("the server", r.name),
                ("fake provider", "fake provider"),
                ("load client", "load client"),
            ):
                value = cpu.get(who)
                rows.append((f"CPU ms per chat: {label}", fmt(value) if value is not None else "-"))
            if mode in r.load_client_busy:
                busy = fmt(100 * r.load_client_busy[mode], 0)
                rows.append(("load client busy (% of one core)", busy))
            if mode == "steady":
                rows.append(("latest chat start behind schedule (ms)", fmt(ph.max_start_lag_ms, 1)))
            rows.append(("delta events per chat (mean)", fmt(ph.deltas_per_chat, 1)))
        cells |= {f"{mode}: {label}": value for label, value in rows}
    for label, attr, key in (
        ("RSS after warm-up (MiB)", "memory_after_warmup_kib", "VmRSS"),
        ("peak RSS, VmHWM (MiB)", "memory_after_load_kib", "VmHWM"),
        ("RSS after load (MiB)", "memory_after_load_kib", "VmRSS"),
    ):
        kib = getattr(r, attr).get(key)
        cells[label] = fmt(kib / 1024, 1) if kib else "-"
    return cells
