"""Where a server's CPU goes: py-spy samples during a phase, summed by package and frame."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from .procs import Child

__all__ = ["start_py_spy", "summarise_profile"]

RESULTS_DIR = Path(__file__).resolve().parent.parent / "results"


def start_py_spy(child: Child, tmp: Path, seconds: int) -> dict[str, Any]:
    """Sample a server with py-spy for ``seconds`` from now (collapsed stacks).

    ``--gil`` keeps only samples of the thread holding the GIL, i.e. Python CPU time, so
    threads blocked in a queue (the SQLite thread) do not show up as busy.
    """
    py_spy = Path(sys.executable).with_name("py-spy")
    raw = tmp / f"{child.name}-profile.txt"
    log_path = tmp / "py-spy.log"
    argv = [str(py_spy), "record", "--pid", str(child.pid), "--duration", str(seconds)]
    argv += ["--gil", "--rate", "250", "--format", "raw", "--output", str(raw), "--nonblocking"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    return {"proc": proc, "raw": str(raw), "log": str(log_path)}


def finish_profile(profile: dict[str, Any], *, saved_as: str = "mpchat-profile.txt") -> None:
    """Wait for py-spy started by `start_py_spy` and replace its handle by the summary."""
    if not profile:
        return
    profile.pop("proc").wait(timeout=120)
    profile.update(summarise_profile(Path(profile["raw"]), Path(profile["log"]), saved_as))


def summarise_profile(
    raw: Path, log: Path, saved_as: str = "mpchat-profile.txt", top: int = 25
) -> dict[str, Any]:
    """Self time and inclusive time per frame, from py-spy's collapsed-stack output."""
    if not raw.exists():
        detail = log.read_text(errors="replace")[-500:] if log.exists() else ""
        return {"error": f"py-spy wrote no profile: {detail}"}
    self_time: dict[str, int] = {}
    packages: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        self_time[frames[-1]] = self_time.get(frames[-1], 0) + count
        # "func (sqlalchemy/engine/base.py:1494)" -> "sqlalchemy"; native loop time shows
        # up as the Runner.run frame, i.e. under "asyncio".
        package = frames[-1].rpartition("(")[2].split("/")[0].split(":")[0] or "?"
        packages[package] = packages.get(package, 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count

    def share(table: dict[str, int]) -> list[tuple[str, float]]:
        best = sorted(table.items(), key=lambda kv: kv[1], reverse=True)[:top]
        return [(frame, round(100 * n / total, 1)) for frame, n in best]

    saved = RESULTS_DIR / saved_as
    saved.parent.mkdir(exist_ok=True)
    shutil.copyfile(raw, saved)
    return {
        "packages": share(packages),
        "samples": total,
        "self": share(self_time),
        "inclusive": share(inclusive),
        "raw": str(saved),
    }
