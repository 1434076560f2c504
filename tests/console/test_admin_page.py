"""The admin page (off without a token; strict CSP) and Swagger UI (development only)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from mpchat.api.routes.admin_page import CSP
from mpchat.app import create_app


def _paths(app) -> set[str]:  # type: ignore[no-untyped-def]
    return {getattr(route, "path", "") for route in app.routes}


def test_the_admin_page_is_off_without_a_token_and_strict_with_one(settings_factory):
    assert "/admin" not in _paths(create_app(settings_factory()))
    app = create_app(settings_factory(admin_token="admin-token-0123456789"))
    assert "/admin" in _paths(app)
    client = TestClient(app)  # no lifespan: static files only
    page = client.get("/admin")
    assert page.status_code == 200 and page.headers["content-security-policy"] == CSP
    assert "<script>" not in page.text and "style=" not in page.text  # nothing inline
    assert "cdn" not in page.text.lower()
    for asset in ("/admin/static/admin.js", "/admin/static/vendor/uPlot.iife.min.js"):
        r = client.get(asset)
        assert r.status_code == 200 and r.headers["content-security-policy"] == CSP
        assert r.headers["x-content-type-options"] == "nosniff"


def test_swagger_ui_only_in_development(settings_factory):
    assert create_app(settings_factory(env="development")).docs_url == "/docs"
    assert create_app(settings_factory(env="production")).docs_url is None
