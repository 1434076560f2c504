"""The console's numbers, computed from usage records (`mpchat.storage.usage`): pure functions.

A summary over a range, and series per hour or day, columnar (one list per line of a plot,
aligned with ``t``, the buckets' starts in epoch seconds), which is what the admin page's
plots take as they are. Percentiles are nearest-rank over the answers of a bucket.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

__all__ = ["PLOTTED_PHASES", "Step", "bucket_starts", "merge_daily", "percentile", "series",
           "summary"]

Step = Literal["hour", "day"]
PLOTTED_PHASES = ("first_delta", "input_wechat", "queue", "provider_first_token", "overhead")
_STEP = {"hour": timedelta(hours=1), "day": timedelta(days=1)}


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted ``values``; None when there are none."""
    if not values:
        return None
    return values[max(0, math.ceil(q / 100 * len(values)) - 1)]


def _is_error(row: dict[str, Any]) -> bool:
    return row["error_code"] is not None


def _phase_ms(rows: Iterable[dict[str, Any]], phase: str) -> list[float]:
    key = f"{phase}_ms"
    return sorted(t[key] for r in rows if (t := r["timings"]) and key in t)


def summary(rows: Sequence[dict[str, Any]], *, top: int = 10) -> dict[str, Any]:
    answers = [r for r in rows if r["status"] != "refused"]
    by_model: dict[str, dict[str, int]] = defaultdict(
        lambda: {"chats": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost": 0})
    users: dict[str, dict[str, int]] = defaultdict(
        lambda: {"chats": 0, "tokens": 0, "cost": 0, "errors": 0})
    for r in rows:
        user = users[r["user_id"]]
        user["errors"] += _is_error(r)
        if r["status"] == "refused":
            continue
        model = by_model[r["model"]]
        model["chats"] += 1
        model["prompt_tokens"] += r["prompt_tokens"]
        model["completion_tokens"] += r["completion_tokens"]
        model["cost"] += r["cost"] or 0
        user["chats"] += 1
        user["tokens"] += r["prompt_tokens"] + r["completion_tokens"]
        user["cost"] += r["cost"] or 0
    phases = {}
    for phase in PLOTTED_PHASES:
        values = _phase_ms(answers, phase)
        phases[phase] = {"p50": percentile(values, 50), "p95": percentile(values, 95)}
    ranked = sorted(users.items(), key=lambda kv: (-kv[1]["tokens"], -kv[1]["chats"], kv[0]))
    return {
        "chats": len(answers),
        "refused": len(rows) - len(answers),
        "users": len(users),
        "by_status": dict(Counter(r["status"] for r in rows)),
        "errors": dict(Counter(r["error_code"] for r in rows if _is_error(r))),
        "prompt_tokens": sum(r["prompt_tokens"] for r in answers),
        "completion_tokens": sum(r["completion_tokens"] for r in answers),
        "cost": sum(r["cost"] or 0 for r in answers),
        "phases_ms": phases,
        "by_model": dict(by_model),
        "top_users": [{"user_id": uid, **u} for uid, u in ranked[:top]],
    }


def bucket_starts(since: datetime, until: datetime, step: Step) -> list[datetime]:
    """Bucket starts from ``since`` (floored to the step, UTC) until ``until``."""
    floor = since.replace(minute=0, second=0, microsecond=0)
    if step == "day":
        floor = floor.replace(hour=0)
    starts, at = [], floor
    while at < until:
        starts.append(at)
        at += _STEP[step]
    return starts


def series(rows: Sequence[dict[str, Any]], *, since: datetime, until: datetime,
           step: Step) -> dict[str, Any]:
    starts = bucket_starts(since, until, step)
    width = _STEP[step]
    n = len(starts)
    buckets: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    origin = starts[0] if starts else since
    for r in rows:
        i = int((r["created_at"] - origin) / width)
        if 0 <= i < n:
            buckets[i].append(r)
    codes = sorted({r["error_code"] for r in rows if _is_error(r)})
    models = sorted({r["model"] for r in rows if r["status"] != "refused"})
    out: dict[str, Any] = {
        "step": step,
        "t": [int(s.timestamp()) for s in starts],
        "chats": [sum(r["status"] != "refused" for r in b) for b in buckets],
        "errors": {c: [sum(r["error_code"] == c for r in b) for b in buckets] for c in codes},
        "tokens": {m: [sum(r["prompt_tokens"] + r["completion_tokens"] for r in b
                           if r["model"] == m and r["status"] != "refused") for b in buckets]
                   for m in models},
        "cost": {m: [sum(r["cost"] or 0 for r in b if r["model"] == m) for b in buckets]
                 for m in models},
        "p50_ms": {}, "p95_ms": {},
    }
    for phase in PLOTTED_PHASES:
        values = [_phase_ms(b, phase) for b in buckets]
        out["p50_ms"][phase] = [percentile(v, 50) for v in values]
        out["p95_ms"][phase] = [percentile(v, 95) for v in values]
    return out


def merge_daily(out: dict[str, Any], daily: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A daily ``series`` with the days that were rolled up (`storage.usage_daily`) taken
    from their roll-ups instead of raw rows (which are gone, or about to be)."""
    index = {t: i for i, t in enumerate(out["t"])}
    n = len(out["t"])
    for row in daily:
        i = index.get(int(row["day"].timestamp()))
        if i is None:
            continue
        if row["model"] == "*":
            out["chats"][i] = row["chats"]
            for code in out["errors"]:
                out["errors"][code][i] = 0
            for code, count in row["errors"].items():
                out["errors"].setdefault(code, [0] * n)[i] = count
            for phase in PLOTTED_PHASES:
                out["p50_ms"][phase][i] = row["p50_ms"].get(phase)
                out["p95_ms"][phase][i] = row["p95_ms"].get(phase)
        elif row["model"]:
            model = row["model"]
            out["tokens"].setdefault(model, [0] * n)[i] = (row["prompt_tokens"]
                                                            + row["completion_tokens"])
            out["cost"].setdefault(model, [0] * n)[i] = row["cost"]
    return out
