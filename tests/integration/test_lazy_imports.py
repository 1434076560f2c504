"""What a production start loads and does not: the app imported, created and its lifespan
entered in a fresh interpreter, as `mpchat serve` does (docs/benchmarks.md, "Cold start").

Alembic (with Mako) is loaded only to migrate, redis-py only with ``MPCHAT_REDIS_URL``, the
fakes (the fake provider's aiohttp server) only by their own commands. Each costs start-up
time on every instance started from zero; an import added at module level anywhere on the
way brings it back, and this test names it. (OpenCC: tests/safety/test_foldtable.py.)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from mpchat.storage.crypto import generate_key_spec
from tests.integration.support import child_base_env

SRC = Path(__file__).resolve().parents[2] / "src"

_START = """
import asyncio, contextlib, io, sys
import mpchat.cli, mpchat.server
from mpchat.app import create_app
from mpchat.settings import Settings

with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    mpchat.cli.main(["serve", "--help"])  # the whole command line parser, as a start builds it
app = create_app(Settings())

async def main():
    async with app.router.lifespan_context(app):
        pass

asyncio.run(main())
loaded = [w for w in sys.argv[1:] if any(n == w or n.startswith(w + ".") for n in sys.modules)]
print(",".join(loaded))
"""


def _loaded(tmp_path: Path, migrated_sqlite: Path, *watched: str, **settings: str) -> set[str]:
    data = tmp_path / "data"
    data.mkdir()
    shutil.copyfile(migrated_sqlite, data / "mpchat.db")
    env = {**child_base_env(), "PYTHONPATH": str(SRC), "MPCHAT_ENV": "production",
           "MPCHAT_AUTH_MODE": "cloudrun", "MPCHAT_SECRET_KEY": "k" * 40,
           "MPCHAT_ENCRYPTION_KEYS": generate_key_spec("k1"), "MPCHAT_DATA_DIR": str(data),
           "MPCHAT_LOG_LEVEL": "WARNING",
           **{f"MPCHAT_{name.upper()}": value for name, value in settings.items()}}
    result = subprocess.run([sys.executable, "-c", _START, *watched], env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return set(filter(None, result.stdout.strip().split(",")))


def test_a_production_start_loads_neither_alembic_nor_redis_nor_the_fakes(
    tmp_path: Path, migrated_sqlite: Path
) -> None:
    # What the first chat would import otherwise (anyio's backend, for the answer's cancel
    # scope) is loaded before ready, in the lifespan; it also shows the watch works.
    assert _loaded(tmp_path, migrated_sqlite, "alembic", "mako", "redis", "mpchat.fakes",
                   "anyio._backends._asyncio") == {"anyio._backends._asyncio"}


def test_redis_is_loaded_when_configured(
    tmp_path: Path, migrated_sqlite: Path, redis_url: str
) -> None:
    assert _loaded(tmp_path, migrated_sqlite, "alembic", "redis", redis_url=redis_url) == {
        "redis"}
