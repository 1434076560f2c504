"""The operator's console page at ``/admin``: off unless ``MPCHAT_ADMIN_TOKEN`` is set.

Static files from the package (no build step, no CDN: uPlot is vendored under
``web/admin/vendor``), served with a strict Content-Security-Policy: scripts, styles and
requests from this origin only, nothing inline, no frames. The page holds no data of its
own; it asks the admin API with the token the operator typed (kept in the tab's
sessionStorage), so the page itself needs no authentication.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import FileResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mpchat.settings import Settings

__all__ = ["CSP", "install"]

_DIR = Path(__file__).resolve().parents[2] / "web" / "admin"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
            "Cache-Control": "no-cache"}


class _Hardened:
    """The static files, with the page's security headers on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), v.encode()) for k, v in _HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, sending)


def install(app: FastAPI, settings: Settings) -> None:
    token = settings.admin_token
    if token is None or not token.get_secret_value() or not (_DIR / "index.html").exists():
        return
    app.mount("/admin/static", _Hardened(StaticFiles(directory=_DIR)), name="admin-static")

    @app.get("/admin", include_in_schema=False)
    async def admin_page() -> FileResponse:
        return FileResponse(_DIR / "index.html", headers=_HEADERS)
