"""Whose logins share a bucket: the real client behind trusted proxies, never a spoofed one.

The app runs with the production listener (`mpchat.server.uvicorn_config`); its client is
this process on 127.0.0.1, which plays the proxy when the settings trust it.
"""

from __future__ import annotations

from tests.server.support import serving


async def _login(app, code: str, headers: dict[str, str] | None = None) -> int:
    async with app.http.post(f"{app.base_url}/api/v1/login", json={"code": code},
                             headers=headers or {}) as r:
        return r.status


def _from(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def test_without_trusted_proxies_forwarded_for_is_ignored(settings_factory):
    # uvicorn believes X-Forwarded-For from loopback by default: one address per request
    # would have been a fresh bucket each time. Here every request is the TCP peer's.
    async with serving(settings_factory(login_rate_limit="2/minute")) as app:
        statuses = [await _login(app, f"c{i}", _from(f"203.0.113.{i}")) for i in range(3)]
        assert statuses == [200, 200, 429]
        async with app.http.get(f"{app.base_url}/healthz",
                                headers={"X-Forwarded-Proto": "https"}) as r:
            assert r.status == 200


async def test_behind_a_trusted_proxy_each_client_has_its_own_bucket(settings_factory):
    settings = settings_factory(login_rate_limit="2/minute", forwarded_allow_ips="127.0.0.1")
    async with serving(settings) as app:
        # Two users behind one proxy no longer share its address's bucket.
        assert [await _login(app, f"a{i}", _from("203.0.113.1")) for i in range(3)] == [
            200, 200, 429]
        assert await _login(app, "b0", _from("203.0.113.2")) == 200


async def test_a_spoofed_forwarded_for_does_not_make_a_new_bucket(settings_factory):
    # The client invents a first address; the trusted proxy appends the one it saw. The
    # last untrusted address counts, so rotating the invented one changes nothing.
    settings = settings_factory(login_rate_limit="2/minute",
                                forwarded_allow_ips="127.0.0.1,10.0.0.0/8")
    async with serving(settings) as app:
        statuses = [
            await _login(app, f"s{i}", _from(f"198.51.100.{i}, 203.0.113.7, 10.1.2.3"))
            for i in range(3)
        ]
        assert statuses == [200, 200, 429]


async def test_cloudrun_logins_are_limited_per_openid(settings_factory):
    # Every request comes from the platform's gateway; the platform vouches for the openid
    # (a service without public access: docs/deployment.md).
    async with serving(settings_factory(auth_mode="cloudrun", cloudrun_header_auth="login",
                                        login_rate_limit="2/minute")) as app:
        alice = {"X-WX-OPENID": "o-alice"}
        assert [await _login(app, "x", alice) for _ in range(3)] == [200, 200, 429]
        assert await _login(app, "x", {"X-WX-OPENID": "o-bob"}) == 200
