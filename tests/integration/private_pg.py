"""A PostgreSQL cluster of one test's own (initdb, pg_ctl), which the test may stop and start.

Never the machine's shared server: a test that stops a database stops this one. PostgreSQL
refuses to run as root, so as root the cluster runs as the ``postgres`` user.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import stat
from pathlib import Path

import pytest

from tests.conftest import IN_CI
from tests.utils import free_port

__all__ = ["PrivatePostgres"]


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for version in ("17", "16", "15", "14", "13"):
        candidate = Path(f"/usr/lib/postgresql/{version}/bin/{name}")
        if candidate.exists():
            return str(candidate)
    return None


class PrivatePostgres:
    def __init__(self, workdir: Path) -> None:
        self.datadir = workdir / "pgdata"
        self.port = free_port()
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"
        self._user: str | None = None

    async def _run(self, *argv: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            *argv, user=self._user, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {out.decode()[-2000:]}")

    async def init(self) -> None:
        initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
        if initdb is None or pg_ctl is None:
            message = "PostgreSQL's initdb/pg_ctl are not installed"
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
        self._pg_ctl = pg_ctl
        self.datadir.parent.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            self._user = "postgres"
            owner = pwd.getpwnam("postgres")
            for path in (self.datadir.parent, *self.datadir.parent.parents):
                if path == Path("/"):
                    break
                path.chmod(stat.S_IMODE(path.stat().st_mode) | 0o111)  # traversable
            os.chown(self.datadir.parent, owner.pw_uid, owner.pw_gid)
        await self._run(initdb, "-D", str(self.datadir), "-U", "postgres", "--auth=trust",
                        "-E", "UTF8", "--no-sync")

    async def start(self) -> None:
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.datadir} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        await self._run(self._pg_ctl, "-D", str(self.datadir), "-o", options, "-w",
                        "-l", str(self.datadir / "server.log"), "start")

    async def stop(self) -> None:
        """A fast shutdown: connected sessions are ended, as in an outage or failover."""
        await self._run(self._pg_ctl, "-D", str(self.datadir), "-m", "fast", "-w", "stop")

    async def close(self) -> None:
        if (self.datadir / "postmaster.pid").exists():
            await self._run(self._pg_ctl, "-D", str(self.datadir), "-m", "immediate", "-w",
                            "stop")
