"""Logging set-up: one line per record, secrets redacted before anything is written."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable

__all__ = ["RedactingFilter", "configure_logging"]

_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(?i)((?:api[_-]?key|secret|token|session_key|password|access_token)"
               r"[\"']?\s*[:=]\s*[\"']?)[^\s\"'&,}]+"),
    re.compile(r"\b(eyJ)[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+"),  # JWTs
    re.compile(r"\b(sk-)[A-Za-z0-9_-]{8,}"),  # provider keys of the sk-... family
]


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
        return True


def configure_logging(level: str = "INFO", secrets: Iterable[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Alembic announces every plugin at INFO on each start: noise, not news.
    logging.getLogger("alembic").setLevel(max(root.level, logging.WARNING))
