"""A followed answer's NDJSON lines folded into what a ``stream: false`` caller gets.

A retried request (`mpchat.chat.service.Replay`) may follow an answer produced on another
instance, or one already stored: all there is of it then are its lines (exact events, or a
``snapshot``). This reads them to the end and keeps what the JSON body needs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from mpchat.errors import error_for_code

__all__ = ["Folded", "fold"]


@dataclass(slots=True)
class Folded:
    conversation_id: str = ""
    message_id: str = ""
    content: str = ""
    finish_reason: str = ""
    usage: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 0,
                                                           "completion_tokens": 0})
    quota: dict[str, Any] | None = None


async def fold(lines: AsyncIterator[bytes]) -> Folded:
    """The answer as one body; its `error` line raised as the `MpchatError` it names."""
    folded, parts = Folded(), list[str]()
    try:
        async for chunk in lines:  # a chunk holds whole lines, one or more
            if any(_take(orjson.loads(line), folded, parts) for line in chunk.splitlines()):
                break
    finally:
        aclose = getattr(lines, "aclose", None)
        if aclose is not None:  # stop following at once, not when collected
            await aclose()
    folded.content = "".join(parts)
    return folded


def _take(event: dict[str, Any], folded: Folded, parts: list[str]) -> bool:
    """Fold one event in; True at the answer's end."""
    kind = event.get("type")
    if kind == "start":
        folded.conversation_id = event["conversation_id"]
        folded.message_id = event["message_id"]
    elif kind == "delta":
        parts.append(event["text"])
    elif kind == "snapshot":
        parts[:] = [event["text"]]
    elif kind == "retract":
        parts.clear()
        folded.finish_reason = "content_filter"
        return True
    elif kind == "done":
        folded.finish_reason = event.get("finish_reason", "stop")
        folded.usage = event.get("usage") or folded.usage
        folded.quota = event.get("quota")
        return True
    elif kind == "error":
        raise error_for_code(event.get("code", ""), event.get("message"),
                             retry_after=event.get("retry_after"))
    return False


