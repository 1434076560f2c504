"""Settings: derived defaults, rate-limit syntax, and production refusals with their messages."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from mpchat.settings import Settings, UnsafeSettings
from mpchat.storage.crypto import generate_key_spec


def make(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_defaults_are_development_friendly():
    s = make()
    assert s.resolved_auth_mode == "dev"
    assert s.resolved_database_url.startswith("sqlite+aiosqlite:///")
    assert s.web_demo_enabled
    s.refuse_unsafe()  # development accepts the defaults


def test_appid_selects_wechat_login():
    assert make(wechat_appid="wx123").resolved_auth_mode == "wechat"


@pytest.mark.parametrize("text", ["10/second", "3 per hour", "100/day"])
def test_rate_limit_syntax(text):
    assert make(rate_limit=text).rate_limit == text


def test_cloudrun_header_auth_is_off_unless_said_and_only_for_cloudrun():
    assert make(auth_mode="cloudrun").cloudrun_header_auth == "off"
    assert make(auth_mode="cloudrun").auth_description == "cloudrun (header: off)"
    assert make(auth_mode="cloudrun", cloudrun_header_auth="login").cloudrun_header_auth == "login"
    with pytest.raises(ValidationError, match="MPCHAT_CLOUDRUN_HEADER_AUTH needs"):
        make(cloudrun_header_auth="always")  # dev mode: nothing would read it
    with pytest.raises(ValidationError, match="cloudrun_header_auth"):
        make(auth_mode="cloudrun", cloudrun_header_auth="yes")


def test_bad_rate_limit_is_refused():
    with pytest.raises(ValidationError, match="RATE_LIMIT"):
        make(rate_limit="lots")


@pytest.mark.parametrize(("values", "message"), [
    ({}, "MPCHAT_AUTH_MODE is dev"),
    ({"wechat_appid": "wx1", "wechat_secret": "s", "encryption_keys": generate_key_spec("k")},
     "MPCHAT_SECRET_KEY is missing"),
    ({"wechat_appid": "wx1", "wechat_secret": "s", "secret_key": "k" * 40},
     "MPCHAT_ENCRYPTION_KEYS is missing"),
    ({"wechat_appid": "wx1", "secret_key": "k" * 40, "encryption_keys": generate_key_spec("k")},
     "MPCHAT_WECHAT_SECRET is missing"),
])
def test_production_refuses_unsafe_defaults(values, message):
    with pytest.raises(UnsafeSettings, match=message):
        make(env="production", **values).refuse_unsafe()


def test_production_accepts_a_complete_configuration():
    make(env="production", wechat_appid="wx1", wechat_secret="s", secret_key="k" * 40,
         encryption_keys=generate_key_spec("k1")).refuse_unsafe()


def test_a_developers_environment_does_not_reach_the_tests():
    # tests/conftest.py removes MPCHAT_* (but the test services' MPCHAT_TEST_*) per test.
    leaked = [k for k in os.environ if k.startswith("MPCHAT_") and not k.startswith("MPCHAT_TEST_")]
    assert leaked == []
    assert make().rate_limit == "5/minute" and make().env == "development"
