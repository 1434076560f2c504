"""Helpers for the limits tests: a private redis-server that a test may stop and start."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from pathlib import Path

import pytest

from tests.utils import wait_until

__all__ = ["IN_CI", "PrivateRedis"]

IN_CI = os.environ.get("CI", "").lower() == "true"


class PrivateRedis:
    """A redis-server subprocess on a free port, which a test may stop and start again."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            message = "redis-server is not installed"
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
        self._proc = await asyncio.create_subprocess_exec(
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(self.workdir),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await wait_until(self._accepts, timeout=10, what=f"redis-server on :{self.port} up")

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 10)
        await wait_until(self._refuses, timeout=10, what=f"redis-server on :{self.port} down")

    async def _accepts(self) -> bool:
        return await asyncio.to_thread(self._accepts_sync)

    async def _refuses(self) -> bool:
        return not await self._accepts()

    def _accepts_sync(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    async def kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()

