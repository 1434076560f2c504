"""Folding a followed answer's lines into a ``stream: false`` body (`mpchat.chat.replay`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest

from mpchat.chat.replay import fold
from mpchat.errors import Busy, MpchatError, RateLimited, error_for_code

START = {"type": "start", "seq": 0, "conversation_id": "c" * 32, "message_id": "m" * 32}


class Lines:
    """An answer's lines in the chunks given; records whether it was closed."""

    def __init__(self, *chunks: list[dict[str, object]]) -> None:
        self.chunks = [b"".join(orjson.dumps(e) + b"\n" for e in chunk) for chunk in chunks]
        self.closed = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._gen()

    async def _gen(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk

    async def aclose(self) -> None:
        self.closed = True


async def test_deltas_and_a_snapshot_in_chunks_of_several_lines():
    lines = Lines([START, {"type": "delta", "text": "旧"}],
                  [{"type": "snapshot", "text": "快照"}, {"type": "delta", "text": "，续"},
                   {"type": "done", "finish_reason": "stop",
                    "usage": {"prompt_tokens": 3, "completion_tokens": 4}, "quota": {"x": 1}}],
                  [{"type": "delta", "text": "never read"}])
    folded = await fold(lines)
    assert folded.content == "快照，续" and folded.finish_reason == "stop"
    assert folded.message_id == "m" * 32 and folded.conversation_id == "c" * 32
    assert folded.usage == {"prompt_tokens": 3, "completion_tokens": 4}
    assert folded.quota == {"x": 1} and lines.closed


async def test_a_retracted_answer_keeps_nothing():
    folded = await fold(Lines([START, {"type": "delta", "text": "坏"},
                               {"type": "retract", "reason": "content_filter"}]))
    assert folded.content == "" and folded.finish_reason == "content_filter"


async def test_an_error_line_is_raised_with_its_code():
    lines = Lines([START, {"type": "error", "code": "busy", "message": "排队", "retry_after": 3}])
    with pytest.raises(Busy) as raised:
        await fold(lines)
    assert raised.value.message == "排队" and raised.value.retry_after == 3 and lines.closed


def test_every_code_names_its_most_general_error():
    assert type(error_for_code("rate_limited")) is RateLimited
    unknown = error_for_code("no_such_code", "x")
    assert type(unknown) is MpchatError and unknown.code == "internal_error"
    for cls in MpchatError.__subclasses__():
        if cls.__module__ == "mpchat.errors":  # the tree; other modules' subclasses share codes
            assert type(error_for_code(cls.code)) is cls
