"""`mpchat serve` in production refuses unsafe configurations, each with its own message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mpchat.storage.crypto import generate_key_spec
from tests.utils import free_port

PREFIX = "mpchat: refusing to start in production: "
SECRET = "S" * 40
KEYS = generate_key_spec("k1")
WECHAT = {"MPCHAT_WECHAT_APPID": "wx-test", "MPCHAT_WECHAT_SECRET": "wechat-secret-marker"}


def _run(tmp_path: Path, command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MPCHAT_")}
    clean.update(env, MPCHAT_ENV="production", MPCHAT_DATA_DIR=str(tmp_path / "data"),
                 MPCHAT_PORT=str(free_port()))
    return subprocess.run([sys.executable, "-m", "mpchat", command], cwd=tmp_path, env=clean,
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(("env", "message"), [
    ({}, "MPCHAT_AUTH_MODE is dev"),
    ({"MPCHAT_AUTH_MODE": "dev", "MPCHAT_SECRET_KEY": SECRET, "MPCHAT_ENCRYPTION_KEYS": KEYS},
     "MPCHAT_AUTH_MODE is dev"),
    ({**WECHAT, "MPCHAT_ENCRYPTION_KEYS": KEYS}, "MPCHAT_SECRET_KEY is missing"),
    ({**WECHAT, "MPCHAT_SECRET_KEY": "too-short", "MPCHAT_ENCRYPTION_KEYS": KEYS},
     "MPCHAT_SECRET_KEY is missing or shorter than 32 characters"),
    ({**WECHAT, "MPCHAT_SECRET_KEY": SECRET}, "MPCHAT_ENCRYPTION_KEYS is missing"),
    ({"MPCHAT_WECHAT_APPID": "wx-test", "MPCHAT_SECRET_KEY": SECRET,
      "MPCHAT_ENCRYPTION_KEYS": KEYS}, "MPCHAT_WECHAT_SECRET is missing"),
], ids=["default-dev", "explicit-dev", "no-secret-key", "short-secret-key", "no-encryption-key",
        "no-wechat-secret"])
def test_serve_refuses_with_its_message(tmp_path, env, message):
    done = _run(tmp_path, "serve", env)
    assert done.returncode != 0
    assert PREFIX in done.stderr
    assert message in done.stderr
    for value in env.values():  # secrets are named, never printed
        if value in (SECRET, KEYS, "wechat-secret-marker"):
            assert value not in done.stderr + done.stdout
    # Refused before anything was created: no development keys were generated.
    assert not (tmp_path / "data" / "encryption_keys").exists()
    assert not (tmp_path / "data" / "secret_key").exists()


def test_every_problem_is_listed_at_once(tmp_path):
    done = _run(tmp_path, "serve", {})
    assert done.returncode != 0
    for message in ("MPCHAT_AUTH_MODE is dev", "MPCHAT_SECRET_KEY is missing",
                    "MPCHAT_ENCRYPTION_KEYS is missing"):
        assert message in done.stderr


def test_rotate_keys_is_refused_too(tmp_path):
    done = _run(tmp_path, "rotate-keys", {**WECHAT, "MPCHAT_SECRET_KEY": SECRET})
    assert done.returncode != 0
    assert PREFIX + "MPCHAT_ENCRYPTION_KEYS is missing" in done.stderr
    assert not (tmp_path / "data" / "encryption_keys").exists()
