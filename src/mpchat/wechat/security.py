"""Text content security: WeChat ``msgSecCheck`` v2 (``POST /wxa/msg_sec_check``).

v2 answers errcode 0 for risky text too; the verdict is ``result.suggest``
(``pass`` < ``review`` < ``risky``). WeChat takes at most 2,500 characters per call, so
longer text goes in overlapping pieces, checked concurrently; the worst verdict wins.

Per call: 40001/42001 -> invalidate the token and retry once; -1 or a network failure ->
the retry policy (`mpchat.providers.retry.RetryPolicy`); anything else ->
`ServiceUnavailable`. ``on_unavailable`` turns that into a verdict for callers that prefer a
policy to an exception. Every HTTP call first takes a slot of the app-wide `CallQuota`
(``deferrable`` checks, an answer's, leave its reserve to the input checks).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from mpchat.errors import ServiceUnavailable
from mpchat.providers.retry import RetryPolicy
from mpchat.wechat._http import (
    DEFAULT_BASE_URL,
    DEFAULT_TIMEOUT,
    WECHAT_RETRY,
    Endpoint,
    WeChatApiError,
)
from mpchat.wechat.access_token import AccessTokenProvider
from mpchat.wechat.quota import CallQuota

__all__ = [
    "CLOUDRUN_BASE_URL",
    "MAX_CONTENT_CHARS",
    "ContentSecurity",
    "Scene",
    "Suggest",
    "Verdict",
    "split_content",
]

log = logging.getLogger("mpchat.wechat.security")

Suggest = Literal["pass", "review", "risky"]
# 1 profile, 2 comment, 3 forum, 4 social log (WeChat's scene values).
Scene = Literal[1, 2, 3, 4]

MAX_CONTENT_CHARS = 2500
# A word cut by a piece boundary is still seen whole by one of the two pieces.
_OVERLAP = 20
# Inside WeChat Cloud Run the open API is reached over plain http, without a token.
CLOUDRUN_BASE_URL = "http://api.weixin.qq.com"
_TOKEN_REJECTED = frozenset({40001, 42001})
_RANK: dict[str, int] = {"pass": 0, "review": 1, "risky": 2}


@dataclass(frozen=True, slots=True)
class Verdict:
    suggest: Suggest
    label: int | None
    trace_id: str | None = None
    # True when WeChat could not be asked and the on_unavailable policy decided.
    unavailable: bool = False

    @property
    def passed(self) -> bool:
        return self.suggest == "pass"


_PASS = Verdict("pass", 100)


def split_content(
    text: str, *, size: int = MAX_CONTENT_CHARS, overlap: int = _OVERLAP
) -> list[str]:
    """Pieces of at most ``size`` characters, consecutive ones sharing ``overlap``."""
    if len(text) <= size:
        return [text]
    step = size - overlap
    pieces = []
    for start in range(0, len(text), step):
        pieces.append(text[start : start + size])
        if start + size >= len(text):
            break
    return pieces


class ContentSecurity(Endpoint):
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        tokens: AccessTokenProvider | None = None,
        base_url: str | None = None,
        credential_free: bool = False,
        quota: CallQuota | None = None,
        backoff: RetryPolicy = WECHAT_RETRY,
        on_unavailable: Literal["raise", "open", "closed"] = "raise",
        piece_size: int = MAX_CONTENT_CHARS,
        timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
    ) -> None:
        if not credential_free and tokens is None:
            raise ValueError("msgSecCheck needs an AccessTokenProvider unless credential_free")
        if not 0 < piece_size <= MAX_CONTENT_CHARS or piece_size <= _OVERLAP:
            raise ValueError(f"piece_size must be in ({_OVERLAP}, {MAX_CONTENT_CHARS}]")
        if base_url is None:
            base_url = CLOUDRUN_BASE_URL if credential_free else DEFAULT_BASE_URL
        super().__init__(
            session, "/wxa/msg_sec_check", what="msg_sec_check", base_url=base_url,
            timeout=timeout, retry=backoff,
        )
        self._tokens = None if credential_free else tokens
        self._quota = quota
        self._on_unavailable = on_unavailable
        self._piece_size = piece_size

    def __repr__(self) -> str:
        mode = "credential_free" if self._tokens is None else "access_token"
        return f"ContentSecurity(url={self._url!r}, mode={mode!r})"

    async def check(
        self, text: str, *, openid: str, scene: Scene, deferrable: bool = False
    ) -> Verdict:
        """The worst verdict over the text's pieces; `ServiceUnavailable` (or the
        ``on_unavailable`` verdict) when WeChat cannot be asked after retries.

        ``deferrable``: the check may wait for the quota behind the others (`CallQuota`)."""
        if scene not in (1, 2, 3, 4):
            raise ValueError("scene must be 1, 2, 3 or 4")
        if not text.strip():
            return _PASS  # WeChat refuses empty content; there is nothing to judge
        pieces = split_content(text, size=self._piece_size)
        try:
            verdicts = await _all_or_nothing(
                [self._check_piece(piece, openid=openid, scene=scene, deferrable=deferrable)
                 for piece in pieces]
            )
        except ServiceUnavailable:
            if self._on_unavailable == "raise":
                raise
            suggest: Suggest = "pass" if self._on_unavailable == "open" else "risky"
            log.warning("wechat msg_sec_check unavailable; policy %s", self._on_unavailable)
            return Verdict(suggest, None, None, unavailable=True)
        return max(verdicts, key=lambda v: _RANK[v.suggest])

    async def _check_piece(
        self, piece: str, *, openid: str, scene: Scene, deferrable: bool
    ) -> Verdict:
        payload = {"content": piece, "version": 2, "scene": scene, "openid": openid}
        tokens = self._tokens
        token_retried = False

        async def attempt() -> Verdict:
            nonlocal token_retried
            while True:
                if self._quota is not None:
                    await self._quota.acquire(deferrable=deferrable)
                token = await tokens.get() if tokens is not None else None
                params = {"access_token": token} if token is not None else None
                try:
                    return _parse(await self._call("POST", params=params, json=payload))
                except WeChatApiError as exc:
                    rejected = exc.errcode in _TOKEN_REJECTED
                    if not rejected or tokens is None or token is None or token_retried:
                        raise
                    # Not a failure of WeChat: renew the token and ask again, once.
                    await tokens.invalidate(token)
                    token_retried = True

        return await self._retrying(attempt)


def _parse(body: dict[str, Any]) -> Verdict:
    result = body.get("result")
    suggest = result.get("suggest") if isinstance(result, dict) else None
    if suggest not in _RANK:
        log.error("wechat msg_sec_check: answer without result.suggest")
        raise ServiceUnavailable()
    assert isinstance(result, dict)
    label = result.get("label")
    trace_id = body.get("trace_id")
    return Verdict(
        suggest,
        label if isinstance(label, int) else None,
        trace_id if isinstance(trace_id, str) else None,
    )


async def _all_or_nothing(coros: list[Coroutine[Any, Any, Verdict]]) -> list[Verdict]:
    """Run the pieces concurrently; the first failure cancels the rest and is raised."""
    if len(coros) == 1:
        return [await coros[0]]
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c) for c in coros]
    except BaseExceptionGroup as failed:
        # Every piece raises ServiceUnavailable or nothing; anything else is a bug, kept whole.
        unavailable, rest = failed.split(ServiceUnavailable)
        if rest is not None or unavailable is None:
            raise
        raise _first(unavailable) from None
    return [task.result() for task in tasks]


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    exc = group.exceptions[0]
    return _first(exc) if isinstance(exc, BaseExceptionGroup) else exc
