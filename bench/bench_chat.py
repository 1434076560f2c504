"""Chat benchmark: direct to the fake provider vs through mpchat (vs LiteLLM's proxy).

    .venv/bin/python bench/bench_chat.py               # direct, mpchat, mpchat-v1: about 1 min
    .venv/bin/python bench/bench_chat.py --litellm     # and LiteLLM's proxy, side by side
    .venv/bin/python bench/bench_chat.py --targets direct,mpchat-v1 --modes json
    .venv/bin/python bench/bench_chat.py --held        # 1,000 long answers held open at once

Two scenarios. The default (throughput) streams short answers back to back from a fake
provider with no delay at all (0 ms to first token, 20 chunks, no gap), at concurrency 1 and
64, and checks the bars of issue 2 (mpchat's NDJSON chat) and the aims for mpchat's
OpenAI-compatible surface (``mpchat-v1``: ``/v1/chat/completions`` with an API key, streamed
and not, against LiteLLM's proxy with the same client). ``--held [N]`` holds N answers open
at once against a slow fake (500 ms to first token, 40 chunks 250 ms apart), as a burst and
at a steady rate.

Every server is a subprocess on a free loopback port: the fake OpenAI-compatible provider
(``mpchat fake-upstream``), mpchat (``mpchat serve``, SQLite in a temporary directory) and,
with ``--litellm``, LiteLLM's proxy from its own virtualenv ``bench/.litellm-venv`` (version
pinned in ``bench/requirements-litellm.txt``). The parts live in ``bench/chatbench/``.

See docs/benchmarks.md for what each figure means and the bars they are checked against.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chatbench.held import HeldPlan, run_held
from chatbench.procs import raise_nofile
from chatbench.report import bars, fmt, held_table, machine, table
from chatbench.report_surface import surface_aims, surface_table
from chatbench.surface import MODES, TARGETS, run_targets
from chatbench.targets import mpchat_source, start_fake
from chatbench.throughput import Plan, TargetResult


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--litellm",
        action="store_true",
        help="also measure LiteLLM's proxy (installed into bench/.litellm-venv)",
    )
    p.add_argument(
        "--targets",
        help=f"comma-separated, of {', '.join(TARGETS)} (default: all but litellm, which "
        "--litellm adds)",
    )
    p.add_argument(
        "--modes",
        default=",".join(MODES),
        help="OpenAI-style targets' modes: stream (SSE), json (stream: false); default both",
    )
    p.add_argument("--concurrency", type=int, default=64, help="the high-concurrency level")
    p.add_argument("--warmup", type=int, default=200, help="unmeasured chats first (at c=8)")
    p.add_argument("--chats-c1", type=int, default=300, help="chats at concurrency 1")
    p.add_argument("--chats", type=int, default=3000, help="chats at high concurrency")
    p.add_argument(
        "--max-phase-seconds",
        type=float,
        default=20.0,
        help="stop starting chats in a phase after this long",
    )
    p.add_argument("--users", type=int, default=128, help="distinct mpchat users (logins)")
    p.add_argument(
        "--turns",
        type=int,
        default=8,
        help="turns a user continues one conversation before starting a new one",
    )
    p.add_argument("--chunks", type=int, default=20, help="deltas per answer from the fake")
    p.add_argument(
        "--gap-ms",
        type=float,
        default=0.0,
        help="the fake's pause between deltas (0: back to back, as the bars specify)",
    )
    p.add_argument("--cold-starts", type=int, default=3, help="mpchat cold starts to time")
    p.add_argument(
        "--mpchat-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for mpchat, e.g. MPCHAT_UPSTREAM_MAX_CONCURRENCY=64",
    )
    p.add_argument(
        "--mpchat-src",
        type=Path,
        metavar="DIR",
        help="run mpchat from this source directory (PYTHONPATH) instead of the installed one",
    )
    p.add_argument(
        "--baseline-src",
        type=Path,
        metavar="DIR",
        help="also run mpchat-v1 from this source directory, just before mpchat-v1 in each "
        "mode (column 'mpchat-v1 base'): two versions side by side in one run",
    )
    p.add_argument(
        "--py-spy",
        type=int,
        default=0,
        metavar="SECONDS",
        help="profile mpchat with py-spy for SECONDS during the high phase (held: the first)",
    )
    p.add_argument(
        "--py-spy-targets",
        default="mpchat",
        help="with --py-spy: which mpchat targets to profile (mpchat, mpchat-v1; both modes)",
    )
    p.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    p.add_argument(
        "--logs", type=Path, metavar="DIR", help="keep the servers' and load clients' logs here"
    )
    p.add_argument("--strict", action="store_true", help="exit 1 when a bar is missed")

    held = p.add_argument_group(
        "held streams", "--held runs this scenario instead of the throughput phases"
    )
    held.add_argument(
        "--held",
        type=int,
        nargs="?",
        const=1000,
        default=0,
        metavar="N",
        help="hold N streams open at once (N defaults to 1000) against a slow fake provider",
    )
    held.add_argument(
        "--held-modes",
        default="burst,steady",
        help="phases, in order: burst (all N at once), steady (N over one answer time)",
    )
    held.add_argument("--held-ttft-ms", type=float, default=500.0, help="the slow fake's TTFT")
    held.add_argument("--held-chunks", type=int, default=40, help="the slow fake's deltas")
    held.add_argument(
        "--held-gap-ms", type=float, default=250.0, help="the slow fake's pause between deltas"
    )
    held.add_argument("--held-warmup", type=int, default=50, help="unmeasured chats first (at c=8)")
    args = p.parse_args(argv)
    default = [t for t in TARGETS if t != "litellm" or args.litellm]
    args.targets = _choices(p, "--targets", args.targets, TARGETS) if args.targets else default
    args.litellm = args.litellm or "litellm" in args.targets
    args.modes = _choices(p, "--modes", args.modes, MODES)
    args.py_spy_targets = _choices(p, "--py-spy-targets", args.py_spy_targets, TARGETS)
    if args.users < args.concurrency:
        p.error("--users must be at least --concurrency (no user has two chats in flight)")
    modes = [m.strip() for m in args.held_modes.split(",") if m.strip()]
    if not modes or any(m not in ("burst", "steady") for m in modes):
        p.error("--held-modes: a comma-separated list of burst and steady")
    args.held_modes = modes
    return args


def _choices(p: argparse.ArgumentParser, flag: str, text: str, known: tuple[str, ...]) -> list[str]:
    chosen = [c.strip() for c in text.split(",") if c.strip()]
    if not chosen or any(c not in known for c in chosen):
        p.error(f"{flag}: a comma-separated list of {', '.join(known)}")
    return chosen


def print_machine() -> dict[str, Any]:
    info = machine()
    print(
        f"machine: {info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, "
        f"load average at start {', '.join(f'{x:.2f}' for x in info['loadavg_at_start'])}"
    )
    return info


def print_profile(profile: dict[str, Any], name: str = "mpchat") -> None:
    if not profile:
        return
    print(
        f"\npy-spy profile of {name} ({profile.get('samples', 0)} samples, "
        f"raw stacks in {profile.get('raw')}):"
    )
    for label in ("packages", "self", "inclusive"):
        print(f"  {'self time by package' if label == 'packages' else f'top by {label} time'}:")
        for frame, share in profile.get(label, [])[:15]:
            print(f"    {share:5.1f}%  {frame}")
    if "error" in profile:
        print(f"  {profile['error']}")


def keep_logs(tmp: Path, dest: Path | None) -> None:
    """Copy every process's log out of the temporary directory before it is removed."""
    if dest is None:
        return
    dest.mkdir(parents=True, exist_ok=True)
    for log in tmp.glob("*.log"):
        shutil.copyfile(log, dest / log.name)


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str))


def issue2_bars(results: list[TargetResult], concurrency: int) -> list[dict[str, Any]]:
    """The bars of issue 2, on mpchat's NDJSON chat against direct streaming (if both ran)."""
    found = {r.name: r for r in results}
    if "direct" not in found or "mpchat" not in found:
        return []
    return bars(found["direct"], found["mpchat"], concurrency)


async def throughput(args: argparse.Namespace) -> int:
    plan = Plan(
        warmup=args.warmup,
        chats_c1=args.chats_c1,
        chats_high=args.chats,
        concurrency=args.concurrency,
        max_phase_s=args.max_phase_seconds,
    )
    info = print_machine()
    print(
        f"plan: warm-up {plan.warmup}, {plan.chats_c1} chats at c=1, {plan.chats_high} at "
        f"c={plan.concurrency} (each phase capped at {plan.max_phase_s:.0f} s); "
        f"{args.chunks} chunks per answer; {args.users} mpchat users, "
        f"{args.turns} turns per conversation; targets {', '.join(args.targets)}, "
        f"modes {', '.join(args.modes)}",
        flush=True,
    )
    print(f"mpchat runs from {mpchat_source(args.mpchat_src)}", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-chat-") as tmp_name:
        tmp = Path(tmp_name)
        fake, fake_port = start_fake(tmp, chunks=args.chunks, gap_ms=args.gap_ms)
        try:
            results, profiles = await run_targets(tmp, (fake_port, fake.pid), plan, args)
        finally:
            fake.stop()
        keep_logs(tmp, args.logs)
    elapsed = time.perf_counter() - started

    print()
    print(table(results, plan.concurrency))
    if any(r.target == "mpchat-v1" for r in results):
        print("\nOpenAI-compatible targets side by side (added: over direct in the same mode):")
        print(surface_table(results, plan.concurrency))
    for r in results:
        for note in r.notes:
            print(f"{r.name}: {note}")
        for phase in (r.c1, r.c64):
            if phase and phase.error_examples:
                print(f"{r.name} c={phase.concurrency} errors: {phase.error_examples}")
        if r.failure:
            print(f"{r.name} FAILED: {r.failure}")
    print()
    checks = issue2_bars(results, plan.concurrency) + surface_aims(results, plan.concurrency)
    for check in checks:
        print(f"[{check['verdict']}] {check['bar']}: {fmt(check['value'])} {check['unit']}")
    for name, profile in profiles.items():
        print_profile(profile, name)
    print(f"\nwhole run: {elapsed:.1f} s")

    if args.json:
        write_json(
            args.json,
            {
                "machine": info,
                "plan": asdict(plan),
                "results": [
                    asdict(r)
                    | {
                        "chats_per_s": {
                            "c1": r.c1.chats_per_s if r.c1 else None,
                            "high": r.c64.chats_per_s if r.c64 else None,
                        }
                    }
                    for r in results
                ],
                "bars": checks,
                "profiles": profiles,
                "mpchat_source": mpchat_source(args.mpchat_src),
            },
        )
    missed = any(c["verdict"] == "FAIL" for c in checks)
    return 1 if (args.strict and missed) else 0


def held_mpchat_env(args: argparse.Namespace) -> dict[str, str]:
    """mpchat for the held scenario: only the upstream gate and its queue raised."""
    room = str(max(2000, 2 * args.held))
    env = {"MPCHAT_UPSTREAM_MAX_CONCURRENCY": room, "MPCHAT_QUEUE_SIZE": room}
    return env | dict(kv.split("=", 1) for kv in args.mpchat_env)


async def held(args: argparse.Namespace) -> int:
    plan = HeldPlan(
        streams=args.held,
        modes=args.held_modes,
        ttft_ms=args.held_ttft_ms,
        chunks=args.held_chunks,
        gap_ms=args.held_gap_ms,
        warmup=args.held_warmup,
        turns=args.turns,
    )
    # Children inherit the limit: mpchat holds two sockets per stream, the load client one.
    nofile = raise_nofile(4 * plan.streams + 1024)
    info = print_machine()
    mpchat_env = held_mpchat_env(args)
    print(
        f"plan: {plan.streams} streams held at once, phases {', '.join(plan.modes)}; the fake "
        f"answers in {plan.ttft_ms:.0f} ms + {plan.chunks} chunks {plan.gap_ms:.0f} ms apart "
        f"({plan.answer_s:.2f} s); RLIMIT_NOFILE {nofile}; mpchat with "
        + " ".join(f"{k}={v}" for k, v in mpchat_env.items()),
        flush=True,
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-held-") as tmp_name:
        results, profile = await run_held(
            plan,
            Path(tmp_name),
            mpchat_env=mpchat_env,
            mpchat_src=args.mpchat_src,
            litellm=args.litellm,
            py_spy=args.py_spy,
        )
        keep_logs(Path(tmp_name), args.logs)
    elapsed = time.perf_counter() - started

    print()
    print(held_table(results, plan))
    for r in results:
        for note in r.notes:
            print(f"{r.name}: {note}")
        for mode, phase in r.phases.items():
            for example in phase.error_examples:
                print(f"{r.name} {mode} failed: {example}")
        if r.failure:
            print(f"{r.name} FAILED: {r.failure}")
    print_profile(profile)
    print(f"\nwhole run: {elapsed:.1f} s")
    if args.json:
        write_json(
            args.json,
            {
                "machine": info,
                "plan": asdict(plan) | {"mpchat_env": mpchat_env, "nofile": nofile},
                "results": [
                    asdict(r) | {"chats_per_s": {m: p.chats_per_s for m, p in r.phases.items()}}
                    for r in results
                ],
                "profile": profile,
            },
        )
    failed = any(r.failure or any(p.errors for p in r.phases.values()) for r in results)
    return 1 if (args.strict and failed) else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scenario = held(args) if args.held else throughput(args)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        return asyncio.run(scenario)
    return uvloop.run(scenario)


if __name__ == "__main__":
    sys.exit(main())
