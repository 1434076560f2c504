"""What the service writes to disk is its owner's alone: the data dir 0700, the SQLite file
(and its WAL) and the development keys 0600."""

from __future__ import annotations

import stat
from pathlib import Path

from mpchat.settings import Settings
from tests.utils import running_app


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_data_dir_and_database_are_private(tmp_path: Path):
    data = tmp_path / "fresh" / "data"
    settings = Settings(_env_file=None, data_dir=data)  # type: ignore[call-arg]
    async with running_app(settings) as app:
        await app.login()
    assert _mode(data) == 0o700
    files = sorted(data.iterdir())
    assert {p.name for p in files} >= {"mpchat.db", "secret_key", "encryption_keys"}
    assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}
