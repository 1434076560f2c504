"""`mpchat doctor` against each broken dependency: one FAIL line naming it and the fix,
exit status 1; 0 only when everything works."""

from __future__ import annotations

from pathlib import Path

import pytest

from mpchat.cli import main
from mpchat.doctor import diagnose, render
from mpchat.fakes.wechat import FakeWeChat
from mpchat.settings import Settings
from mpchat.storage.engine import create_engine
from mpchat.storage.migrations import upgrade
from tests.utils import free_port


def _settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path / "data", **values)  # type: ignore[call-arg]


async def _migrated(settings: Settings) -> Settings:
    engine = create_engine(settings.resolved_database_url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    return settings


def _failed(checks) -> dict[str, str]:
    return {c.name: c.detail for c in checks if not c.ok}


async def test_all_well(tmp_path, fake_upstream):
    async with FakeWeChat(appid="wx1", secret="s3cret-value") as wechat:
        settings = await _migrated(_settings(
            tmp_path, upstream_base_url=fake_upstream.base_url, upstream_api_key="sk-abcdef123456",
            wechat_appid="wx1", wechat_secret="s3cret-value", wechat_api_base=wechat.base_url))
        checks = await diagnose(settings)
    assert _failed(checks) == {}
    names = [c.name for c in checks]
    assert names == ["configuration", "database", "schema", "provider upstream", "wechat"]
    assert "sk-abcdef123456" not in render(checks) and "s3cret-value" not in render(checks)


async def test_unmigrated_database(tmp_path):
    failed = _failed(await diagnose(_settings(tmp_path)))
    assert "mpchat migrate" in failed["schema"] and "never migrated" in failed["schema"]


async def test_unreachable_database_and_redis(tmp_path):
    port = free_port()  # nothing listens there
    settings = _settings(tmp_path, database_url=f"postgresql+asyncpg://u@127.0.0.1:{port}/db",
                         redis_url=f"redis://127.0.0.1:{port}/0")
    failed = _failed(await diagnose(settings))
    assert "MPCHAT_DATABASE_URL" in failed["database"]
    assert "MPCHAT_REDIS_URL" in failed["redis"]


async def test_provider_refusing_the_key_or_unreachable(tmp_path, fake_upstream):
    fake_upstream.script = [{"status": 401}]
    settings = await _migrated(_settings(tmp_path, upstream_base_url=fake_upstream.base_url,
                                         upstream_api_key="sk-wrongkey12345"))
    failed = _failed(await diagnose(settings))
    assert "HTTP 401" in failed["provider upstream"]
    assert "MPCHAT_UPSTREAM_API_KEY" in failed["provider upstream"]
    settings = settings.model_copy(
        update={"upstream_base_url": f"http://127.0.0.1:{free_port()}/v1"})
    assert "provider upstream" in _failed(await diagnose(settings))


async def test_wechat_refusing_the_credentials(tmp_path):
    async with FakeWeChat(appid="wx1", secret="right-secret") as wechat:
        settings = await _migrated(_settings(tmp_path, wechat_appid="wx1",
                                             wechat_secret="wrong-secret",
                                             wechat_api_base=wechat.base_url))
        failed = _failed(await diagnose(settings))
    assert "errcode 40125" in failed["wechat"] and "MPCHAT_WECHAT_SECRET" in failed["wechat"]


async def test_production_refusals_and_config_file(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("not toml [", encoding="utf-8")
    settings = await _migrated(_settings(tmp_path, env="production", config=config))
    failed = _failed(await diagnose(settings))
    assert "MPCHAT_AUTH_MODE is dev" in failed["configuration"]
    assert "MPCHAT_CONFIG" in failed["config file"]


@pytest.mark.parametrize(("env", "code"), [({}, 1), ({"MPCHAT_PORT": "x"}, 2)])
def test_exit_status(tmp_path, monkeypatch, capsys, env, code):
    monkeypatch.chdir(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["doctor"]) == code  # a fresh data dir: never migrated
    out = capsys.readouterr()
    assert ("FAIL schema" in out.out) if code == 1 else ("MPCHAT_PORT" in out.err)
