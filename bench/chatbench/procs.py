"""Child processes for the benchmarks: free ports, start, wait for health, memory, CPU, stop.

Standard library only, so the benchmark runs from any Python with aiohttp. Every
process started here is stopped by its own pid (never by name).
"""

from __future__ import annotations

import http.client
import os
import resource
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Child",
    "base_env",
    "cpu_seconds",
    "free_port",
    "memory_kib",
    "raise_nofile",
    "start_child",
    "tree_cpu_seconds",
]


def free_port() -> int:
    """A loopback port nobody listens on right now (the child binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def memory_kib(pid: int) -> dict[str, int]:
    """``VmHWM`` (peak resident set) and ``VmRSS`` (resident now) of a live process, in KiB."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            found[key] = int(value.split()[0])
    return found


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process (all its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # After the command name: state is field 3, utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text()
            found.extend(int(child) for child in text.split())
    except OSError:
        pass
    return found


def tree_cpu_seconds(pid: int) -> float:
    """`cpu_seconds` of a process and all its live descendants (a server's worker processes)."""
    total, todo, seen = 0.0, [pid], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            total += cpu_seconds(current)
        except OSError:  # exited meanwhile
            continue
        todo.extend(_children(current))
    return total


def raise_nofile(wanted: int) -> int:
    """Raise this process's soft limit on open files towards ``wanted`` (up to the hard limit).

    Children inherit it, so call it before starting servers that will hold many sockets.
    Returns the soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return int(soft)


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    started_at: float  # time.perf_counter() just before the exec

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_http_ok(self, port: int, path: str, *, timeout: float = 60.0) -> float:
        """Poll ``GET path`` until it answers 200; the seconds since the process started.

        Polls every 5 ms so the figure is a cold-start time, not a polling artefact.
        """
        deadline = time.perf_counter() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode} before {path} answered;"
                    f" last log lines:\n{self.log_tail()}"
                )
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
            try:
                conn.request("GET", path)
                if conn.getresponse().status == 200:
                    return time.perf_counter() - self.started_at
            except OSError:
                pass
            finally:
                conn.close()
            if time.perf_counter() > deadline:
                raise TimeoutError(
                    f"{self.name}: {path} did not answer 200 within {timeout:.0f} s;"
                    f" last log lines:\n{self.log_tail()}"
                )
            time.sleep(0.005)

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, *, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_child(name: str, argv: list[str], *, env: dict[str, str], log_dir: Path) -> Child:
    """Start ``argv`` with exactly ``env``; stdout and stderr go to ``log_dir/<name>.log``."""
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=log_dir,
        )
    return Child(name=name, proc=proc, log_path=log_path, started_at=started)


def base_env() -> dict[str, str]:
    """The parent's environment without any ``MPCHAT_*`` setting that would change the run."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MPCHAT_")}
