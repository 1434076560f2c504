"""/readyz is 503 until the schema is at this code's head; an unmigrated database is 503
``service_unavailable`` for the API too, never a 500."""

from __future__ import annotations

from sqlalchemy import text

from mpchat.storage.crypto import generate_key_spec
from mpchat.storage.engine import create_engine
from mpchat.storage.migrations import head_revision, upgrade
from tests.conftest import unmigrated
from tests.utils import running_app


def _production(settings_factory):
    # Production does not migrate on start: `mpchat migrate` does, once per release.
    return settings_factory(env="production", auth_mode="cloudrun", cloudrun_header_auth="login",
                            secret_key="k" * 40, encryption_keys=generate_key_spec("k1"))


async def _ready(app) -> tuple[int, dict]:
    async with app.http.get(f"{app.base_url}/readyz") as r:
        return r.status, await r.json()


async def test_readyz_waits_for_the_migrations(settings_factory, database_url):
    await unmigrated(database_url)
    async with running_app(_production(settings_factory)) as app:
        status, body = await _ready(app)
        assert status == 503
        assert body["checks"] == {"database": "ok", "schema": "not_migrated"}
        # The API meanwhile: the platform's login needs the users table.
        async with app.http.post(f"{app.base_url}/api/v1/login", json={"code": "x"},
                                 headers={"X-WX-OPENID": "o1"}) as r:
            error = (await r.json())["error"]
            assert r.status == 503 and error["code"] == "service_unavailable"
            assert error["retry_after"] >= 1 and r.headers["Retry-After"]

        engine = create_engine(database_url)
        try:
            await upgrade(engine, "0004")
            assert (await _ready(app))[0] == 503  # behind: still not ready
            await upgrade(engine)
            assert await _ready(app) == (200, {"status": "ok",
                                               "checks": {"database": "ok", "schema": "ok"}})
            # A newer release migrated past this code (a rolling deploy): keep serving.
            async with engine.begin() as conn:
                await conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
            status, body = await _ready(app)
            assert status == 200 and body["checks"]["schema"] == "newer"
        finally:
            await engine.dispose()


def test_head_is_what_alembic_says():
    from pathlib import Path

    from alembic.config import Config
    from alembic.script import ScriptDirectory

    import mpchat.storage.migrations as migrations

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    assert head_revision() == ScriptDirectory.from_config(cfg).get_current_head()
