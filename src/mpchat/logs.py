"""Logging set-up: one line per record, secrets redacted before anything is written.

``configure_logging`` runs in every process that serves (the single process, or each
worker of ``MPCHAT_WORKERS``: `mpchat.server.worker_app`). ``MPCHAT_LOG_FORMAT=json``
writes one JSON object per line with the request id of the request that logged it
(`request_id`, set by `mpchat.api.middleware.RequestIdMiddleware`; tasks started by a
request, such as its answer, carry it too).
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import orjson

if TYPE_CHECKING:
    from mpchat.settings import Settings

__all__ = ["JsonFormatter", "RedactingFilter", "configure_logging", "request_id",
           "secret_values"]

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "mpchat_request_id", default=None)

_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(?i)((?:api[_-]?key|secret|token|session_key|password|access_token)"
               r"[\"']?\s*[:=]\s*[\"']?)[^\s\"'&,}]+"),
    re.compile(r"\b(eyJ)[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+"),  # JWTs
    re.compile(r"\b(sk-)[A-Za-z0-9_-]{8,}"),  # provider keys of the sk-... family
]
# Libraries that log SQL parameters, URLs or payloads (openids, codes, ciphertexts) at
# DEBUG/INFO: never below WARNING, whatever MPCHAT_LOG_LEVEL says.
_QUIET = ("sqlalchemy", "aiosqlite", "asyncpg", "aiohttp", "redis", "alembic", "asyncio",
          "python_multipart", "multipart", "httptools")


class RedactingFilter(logging.Filter):
    """Rewrites each record's final message, masking known secrets and secret-shaped text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        for pattern in _PATTERNS:
            text = pattern.sub(lambda m: m.group(1) + "***", text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = self.redact(message), None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        rid = request_id.get()  # the client may choose it (X-Request-Id)
        record.request_id = self.redact(rid) if rid is not None else None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, request id, process."""

    def __init__(self, process: str | None = None) -> None:
        super().__init__()
        self._process = process

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)  # set, redacted, by RedactingFilter
        if rid is not None:
            line["request_id"] = rid
        if self._process is not None:
            line["process"] = self._process
        if record.exc_text:
            line["exception"] = record.exc_text
        return orjson.dumps(line).decode()


def _text_formatter(process: str | None) -> logging.Formatter:
    tag = f" [{process}]" if process else ""
    return logging.Formatter(f"%(asctime)s %(levelname)s %(name)s{tag} %(message)s")


def configure_logging(level: str = "INFO", secrets: Iterable[str] = (), *, fmt: str = "text",
                      process: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(process) if fmt == "json" else _text_formatter(process))
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(root.level, logging.WARNING))


def secret_values(settings: Settings) -> list[str]:
    """Every configured secret, for the redaction filter."""
    values = [settings.upstream_api_key, settings.wechat_secret, settings.secret_key,
              settings.encryption_keys, settings.admin_token, settings.wechatpay_apiv3_key]
    found = [v.get_secret_value() for v in values if v is not None]
    for url in (settings.database_url, settings.redis_url):  # their passwords
        password = urlsplit(url).password if url else None
        if password:
            found.append(password)
    if settings.encryption_keys is not None:  # each key alone too, as it may appear alone
        for part in settings.encryption_keys.get_secret_value().split(","):
            found.append(part.partition(":")[2].strip())
    return found
