"""Cold start: seconds from `mpchat serve` spawned to `/readyz` 200, and idle RSS after.

A production-like configuration (``MPCHAT_ENV=production``, cloudrun login, SQLite migrated
beforehand, the demo model), as a scale-from-zero platform starts an instance: the clock
runs from the process's spawn, the readiness probe polls every 5 ms. The code runs from a
copy of ``src`` prepared as the image's build prepares the installed package (bytecode
compiled, the folding table prebuilt), so the sources are never written to.

Prints the median of ``--runs`` starts: the wall-clock time to ready, the CPU time the
process had used by then (less sensitive than the wall clock to other work on a shared
machine), the RSS after 2 s idle; and the time to import the app alone.

``--mpchat-src`` measures another checkout's ``src`` in the same run (e.g. ``/work/main/src``,
the baseline of a change), starts alternating between the two so both see the same drift of
the machine's load.

    python bench/cold_start.py [--runs 5] [--mpchat-src OTHER/src]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(16).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _env(data: Path, src: Path) -> dict[str, str]:
    from mpchat.storage.crypto import generate_key_spec

    env = {k: v for k, v in os.environ.items() if not k.startswith("MPCHAT_")}
    env.update({"PYTHONPATH": str(src), "MPCHAT_ENV": "production",
                "MPCHAT_AUTH_MODE": "cloudrun", "MPCHAT_SECRET_KEY": "k" * 40,
                "MPCHAT_ENCRYPTION_KEYS": generate_key_spec("k1"),
                "MPCHAT_DATA_DIR": str(data), "MPCHAT_LOG_LEVEL": "WARNING"})
    return env


class Start(NamedTuple):
    ready: float  # seconds from spawn to the first /readyz 200
    cpu: float  # CPU seconds (user + system) the process had used by then
    rss: float  # MB, after 2 s idle


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _one(env: dict[str, str]) -> Start:
    port = _free_port()
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "mpchat", "serve"],
                            env={**env, "MPCHAT_PORT": str(port)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not _ready(port):
            if proc.poll() is not None or time.perf_counter() - started > 30:
                raise RuntimeError("mpchat serve did not become ready")
            time.sleep(0.005)
        ready = time.perf_counter() - started
        cpu = _cpu_seconds(proc.pid)
        time.sleep(2)  # idle
        return Start(ready, cpu, _rss_mb(proc.pid))
    finally:
        proc.terminate()
        proc.wait(30)


def _import_seconds(src: Path) -> float:
    code = ("import time; t = time.perf_counter(); import mpchat.app, mpchat.server; "
            "print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(src)},
                         capture_output=True, text=True, check=True)
    return float(out.stdout)


def _install(src: Path, into: Path) -> Path:
    """A copy of ``src`` prepared as the image's build prepares the installed package: its
    bytecode compiled (the image runs compileall; where PYTHONDONTWRITEBYTECODE is set, as in
    the image and on the development machine, nothing else writes it and every start would
    compile mpchat's modules from source) and the folding table prebuilt (a checkout without
    it: none)."""
    copy = into / "src"
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns("__pycache__", "fold_table.marshal"))
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(copy)], check=True)
    if (copy / "mpchat" / "safety" / "foldtable.py").exists():
        subprocess.run([sys.executable, "-m", "mpchat.safety.foldtable"],
                       env={**os.environ, "PYTHONPATH": str(copy)}, check=True,
                       stderr=subprocess.DEVNULL)
    return copy


def _report(name: str, results: list[Start], imports: list[float]) -> None:
    ready = statistics.median(r.ready for r in results)
    cpu = statistics.median(r.cpu for r in results)
    rss = statistics.median(r.rss for r in results)
    print(f"{name}: {len(results)} runs: spawn to /readyz 200 {ready:.2f} s (median; "
          f"min {min(r.ready for r in results):.2f}), CPU used by then {cpu:.2f} s, "
          f"idle RSS {rss:.0f} MB, importing the app {statistics.median(imports):.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--mpchat-src", type=Path, default=None,
                        help="another checkout's src directory to measure alongside this one")
    args = parser.parse_args()
    sys.path.insert(0, str(SRC))
    from mpchat.storage.engine import create_engine
    from mpchat.storage.migrations import upgrade

    load_before = f"{os.getloadavg()[0]:.1f}"
    sources = {"this checkout": SRC}
    if args.mpchat_src is not None:
        sources["--mpchat-src"] = args.mpchat_src.resolve()
    results: dict[str, list[Start]] = {name: [] for name in sources}
    imports: dict[str, list[float]] = {name: [] for name in sources}
    with tempfile.TemporaryDirectory() as tmp:
        for number, (name, src) in enumerate(sources.items()):
            sources[name] = _install(src, Path(tmp) / str(number))
        data = Path(tmp) / "data"
        engine = create_engine(f"sqlite+aiosqlite:///{data / 'mpchat.db'}")
        asyncio.run(_migrate(engine, upgrade))
        for _ in range(args.runs):  # alternating, so both see the same drift of the load
            for name, src in sources.items():
                results[name].append(_one(_env(data, src)))
                imports[name].append(_import_seconds(src))
    print(f"load average before and after: {load_before}, {os.getloadavg()[0]:.1f}")
    for name in sources:
        _report(name, results[name], imports[name])


async def _migrate(engine, upgrade) -> None:  # type: ignore[no-untyped-def]
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


if __name__ == "__main__":
    main()
