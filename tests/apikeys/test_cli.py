"""`mpchat keys ...` in-process, against a SQLite file named by the environment."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from mpchat import cli
from mpchat.apikeys import ApiKey, ApiKeys
from mpchat.storage.engine import create_engine

pytestmark = pytest.mark.usefixtures("restore_logging")


@pytest.fixture
def db_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}"
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("MPCHAT_DATABASE_URL", url)
    monkeypatch.setenv("MPCHAT_DATA_DIR", str(tmp_path / "data"))
    return url


def _authenticate(url: str, secret: str) -> ApiKey:
    async def check() -> ApiKey:
        engine = create_engine(url)
        try:
            return await ApiKeys(engine).authenticate(secret)
        finally:
            await engine.dispose()

    return asyncio.run(check())


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["keys", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_quiet_prints_only_the_key(db_url: str, capsys: Any) -> None:
    code, out, err = _run(capsys, "create", "--name", "acc", "--quiet")
    assert code == 0 and out.endswith("\n") and len(out.splitlines()) == 1
    secret = out.strip()
    key = _authenticate(db_url, secret)
    assert key.name == "acc" and key.models is None and key.rpm is None
    assert secret not in err


def test_create_shows_the_key_once_with_a_warning(db_url: str, capsys: Any) -> None:
    code, out, _ = _run(capsys, "create", "--name", "bot", "--models", "a, b,,a", "--rpm", "60",
                        "--tpm", "5000", "--quota", "100000", "--expires", "30d")
    assert code == 0
    lines = out.splitlines()
    assert "shown once" in out and lines[-1].startswith("sk-mp-")
    key = _authenticate(db_url, lines[-1])
    assert (key.models, key.rpm, key.tpm, key.quota) == (("a", "b"), 60, 5000, 100000)
    assert key.expires_at is not None
    code, listed, _ = _run(capsys, "list")
    assert code == 0 and key.id in listed and key.prefix in listed and "active" in listed
    assert lines[-1] not in listed


def test_list_revoke_rotate(db_url: str, capsys: Any) -> None:
    _, out, _ = _run(capsys, "create", "--name", "old", "--quiet")
    first = _authenticate(db_url, out.strip())
    _, out, _ = _run(capsys, "create", "--name", "new", "--expires", "2099-01-01T00:00:00Z",
                     "--quiet")
    assert str(_authenticate(db_url, out.strip()).expires_at) == "2099-01-01 00:00:00+00:00"
    code, out, _ = _run(capsys, "rotate", first.id, "--quiet")
    assert code == 0 and len(out.splitlines()) == 1
    assert _authenticate(db_url, out.strip()).id == first.id
    code, out, _ = _run(capsys, "revoke", first.id)
    assert code == 0 and f"Revoked API key {first.id}" in out
    _, listed, _ = _run(capsys, "list")
    assert first.id not in listed and "new" in listed
    _, listed, _ = _run(capsys, "list", "--all")
    assert first.id in listed and "revoked" in listed
    code, _, err = _run(capsys, "rotate", first.id)  # a revoked key gets no new secret
    assert code == 2 and "吊销" in err


@pytest.mark.parametrize("command", [["revoke", "k_nope"], ["rotate", "k_nope"]])
def test_unknown_key_exits_one(db_url: str, capsys: Any, command: list[str]) -> None:
    code, out, err = _run(capsys, *command)
    assert code == 1 and out == "" and "k_nope" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["create"],
        ["create", "--name", "x", "--rpm", "0"],
        ["create", "--name", "x", "--tpm", "many"],
        ["create", "--name", "x", "--models", " , "],
        ["create", "--name", "x", "--expires", "tomorrow"],
        ["revoke"],
        ["frobnicate"],
    ],
)
def test_bad_arguments_exit_two(db_url: str, capsys: Any, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["keys", *argv])
    assert caught.value.code == 2


@pytest.mark.parametrize(
    "argv",
    [
        ["create", "--name", ""],
        ["create", "--name", "x" * 65],
        ["create", "--name", "x", "--expires", "2001-01-01"],
        ["create", "--name", "x", "--rpm", str(2**31)],
    ],
)
def test_values_the_keys_refuse_exit_two(db_url: str, capsys: Any, argv: list[str]) -> None:
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == "" and err.startswith("mpchat: ")
