"""mpchat's OpenAI-compatible surface as a target, and every target in every mode, in order.

``mpchat-v1`` is a fresh ``mpchat serve`` (as for the ``mpchat`` target, with
``MPCHAT_ADMIN_TOKEN`` set) with one API key created through its admin API
(``POST /admin/v1/keys``), driven by the very client that drives the provider directly and
LiteLLM's proxy: ``POST /v1/chat/completions`` with ``Authorization: Bearer sk-mp-...``.
Content safety is mpchat's default: the local word list checks every message of the request
and the answer as it streams (WeChat's check needs a mini program user and is not used on
``/v1``).

Every OpenAI-style target (direct, mpchat-v1, litellm) runs in each mode asked: ``stream``
(SSE to ``[DONE]``) and ``json`` (``stream: false``, one ``chat.completion``). The fake
provider answers ``stream: false`` with one ``chat.completion`` body (direct, LiteLLM and
mpchat's ``/v1`` pass the flag on).

With ``--baseline-src DIR``, ``mpchat-v1 base`` (mpchat run from DIR) runs just before
``mpchat-v1`` in each mode, against the same fake and beside the same direct and LiteLLM
figures: two versions compared in one run, on a machine whose load changes by the minute.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import aiohttp

from .procs import Child
from .profiling import finish_profile, start_py_spy
from .targets import MPCHAT_ADMIN_TOKEN, create_api_key, mpchat_v1_endpoint, start_mpchat
from .throughput import (
    Plan,
    TargetResult,
    bench_direct,
    bench_litellm,
    bench_mpchat,
    label,
    measure_openai,
)

__all__ = ["MODES", "TARGETS", "bench_mpchat_v1", "run_targets"]

TARGETS = ("direct", "mpchat", "mpchat-v1", "litellm")
MODES = ("stream", "json")
# Targets that speak OpenAI's API (and so run in both modes); mpchat's NDJSON chat streams.
OPENAI_STYLE = ("direct", "mpchat-v1", "litellm")


async def bench_mpchat_v1(
    tmp: Path,
    fake: tuple[int, int],
    plan: Plan,
    args: argparse.Namespace,
    *,
    stream: bool,
    profile: dict[str, Any] | None = None,
    baseline: bool = False,
) -> TargetResult:
    """A fresh mpchat, an API key from its admin API, the OpenAI-style load on ``/v1``.

    ``profile``: when given (and ``args.py_spy``), py-spy samples the server during the high
    phase and the summary is left in it. ``baseline``: mpchat from ``args.baseline_src``.
    """
    target = "mpchat-v1-base" if baseline else "mpchat-v1"
    name = label("mpchat-v1 base" if baseline else "mpchat-v1", stream)
    result = TargetResult(name, target, "stream" if stream else "json")
    src = args.baseline_src if baseline else args.mpchat_src
    extra = {"MPCHAT_ADMIN_TOKEN": MPCHAT_ADMIN_TOKEN} | dict(
        kv.split("=", 1) for kv in args.mpchat_env
    )
    child: Child | None = None
    try:
        slug = name.replace(" ", "-")
        child, port, cold = start_mpchat(tmp, fake[0], extra, src, name=slug)
        result.cold_start_s.append(cold)
        key_id, secret = create_api_key(port, name=f"bench-{result.mode}")
        result.notes.append(f"API key {key_id} created with POST /admin/v1/keys")
        hook = None
        if profile is not None and args.py_spy:
            server = child
            hook = lambda: profile.update(start_py_spy(server, tmp, args.py_spy))  # noqa: E731
        endpoint = mpchat_v1_endpoint(port, secret, stream=stream)
        await measure_openai(result, endpoint, plan, child.pid, fake, hook)
        if profile:
            finish_profile(profile, saved_as=f"{slug}-profile.txt")
    except (RuntimeError, TimeoutError, OSError, aiohttp.ClientError) as exc:
        result.failure = f"{type(exc).__name__}: {exc}"
    finally:
        if child is not None:
            child.stop()
    return result


async def run_targets(
    tmp: Path, fake: tuple[int, int], plan: Plan, args: argparse.Namespace
) -> tuple[list[TargetResult], dict[str, dict[str, Any]]]:
    """Every target of ``args.targets`` in every mode of ``args.modes``, mode by mode.

    Within a mode the targets run one after the other in the order of `TARGETS`, so that a
    target and the direct figure it is compared with are measured close in time. Returns the
    results and the py-spy profiles by result name.
    """
    fake_port, fake_pid = fake
    results: list[TargetResult] = []
    profiles: dict[str, dict[str, Any]] = {}
    for mode in args.modes:
        stream = mode == "stream"
        for target in TARGETS:
            if target not in args.targets or (target == "mpchat" and not stream):
                continue
            name = label(target, stream)
            if target == "mpchat-v1" and args.baseline_src is not None:
                print(f"{label('mpchat-v1 base', stream)}: {describe(target, mode)}, mpchat "
                      f"from {args.baseline_src} ...", flush=True)
                results.append(await bench_mpchat_v1(tmp, fake, plan, args, stream=stream,
                                                     baseline=True))
            print(f"{name}: {describe(target, mode)} ...", flush=True)
            profile: dict[str, Any] | None = {} if target in args.py_spy_targets else None
            if target == "direct":
                results.append(await bench_direct(fake_port, fake_pid, plan, stream=stream))
            elif target == "mpchat":
                result, found = await bench_mpchat(tmp, fake_port, fake_pid, plan, args)
                results.append(result)
                if profile is not None and found:
                    profiles[name] = found
                continue
            elif target == "mpchat-v1":
                results.append(
                    await bench_mpchat_v1(tmp, fake, plan, args, stream=stream, profile=profile)
                )
            else:
                results.append(await bench_litellm(tmp, fake_port, fake_pid, plan, stream=stream))
            if profile:
                profiles[name] = profile
    return results, profiles


def describe(target: str, mode: str) -> str:
    how = {
        "direct": "direct to the fake provider",
        "mpchat": "through mpchat's chat (NDJSON, users log in)",
        "mpchat-v1": "through mpchat's /v1/chat/completions (API key)",
        "litellm": "through LiteLLM's proxy",
    }[target]
    if target == "mpchat":
        return how
    return how + (", streamed (SSE)" if mode == "stream" else ", not streamed (one JSON body)")
