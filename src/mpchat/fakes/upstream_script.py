"""What the fake provider sends for one script step: a lazy plan of writes, pauses and cuts.

Kept apart from the server (`mpchat.fakes.upstream`) so each misbehaviour is a few plain
lines here; the steps themselves are documented in that module. Plans are generators, so an
oversized chunk or an endless stream is produced as it is written, never held whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["Drop", "Hang", "Pause", "Plan", "completion_body", "plan"]

_PIECE = 64 * 1024  # oversized lines are written in pieces of this size


@dataclass(frozen=True, slots=True)
class Pause:
    seconds: float


class Drop:
    """Cut the connection here (no terminating chunk)."""


class Hang:
    """Keep the connection open and send nothing more, until the client leaves."""


Plan = Iterator[bytes | Pause | Drop | Hang]

# Lines that no dialect allows, for the ``*_after`` steps.
_BAD = {
    "garbage_after": b"data: {this is not json\n\n",
    "wrong_types_after": b'data: {"choices":[{"index":0,"delta":{"content":42}}]}\n\n',
    "error_after": b'data: {"error":{"message":"scripted failure","type":"fake"}}\n\n',
}


class _Framing:
    """How lines are framed: ``data:`` with or without a space, LF or CRLF, comments."""

    def __init__(self, step: dict[str, Any]) -> None:
        self.prefix = b"data:" if step.get("nospace") else b"data: "
        self.end = b"\r\n" if step.get("crlf") else b"\n"
        self.comments = bool(step.get("comments"))

    def data(self, payload: bytes) -> bytes:
        return self.prefix + payload + self.end + self.end

    def chunk(self, model: str, choice: dict[str, Any] | None, **top: Any) -> bytes:
        payload: dict[str, Any] = {"id": "fake", "object": "chat.completion.chunk",
                                   "model": model, "choices": [choice] if choice else []}
        payload.update(top)
        return self.data(orjson.dumps(payload))

    def noise(self) -> bytes:
        """A keep-alive comment and fields a reader must ignore."""
        e = self.end
        return b": keep-alive" + e + e + b"event: message" + e + b"id: 7" + e + b"retry: 1000" + e


def _choice(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "finish_reason": finish, **extra}


def plan(step: dict[str, Any], *, texts: list[str], gap: float, model: str,
         prompt_chars: int) -> Plan:
    f = _Framing(step)
    reasoning = step.get("reasoning") or []
    if isinstance(reasoning, int):
        reasoning = [f"思考{i} " for i in range(reasoning)]
    field = step.get("reasoning_field", "reasoning_content")
    bad = {int(step[key]): line for key, line in _BAD.items() if key in step}
    drop_after = step.get("drop_after")
    if f.comments:
        yield f.noise()
    for i, thought in enumerate(reasoning):
        if i and gap:
            yield Pause(gap)
        yield f.chunk(model, _choice({"role": "assistant", "content": None, field: thought}))
    for i, text in enumerate(texts):
        if drop_after is not None and i == drop_after:
            yield Drop()
            return
        if i in bad:
            yield bad[i]
        if (i or reasoning) and gap:
            yield Pause(gap)
        content: Any = [{"type": "text", "text": text}] if step.get("parts") else text
        yield f.chunk(model, _choice({"content": content}))
        if f.comments:
            yield f.noise()
    if len(texts) in bad:
        yield bad[len(texts)]
    if step.get("oversized"):
        yield from _oversized(int(step["oversized"]), f)
    if step.get("no_newline"):
        yield f.prefix
        yield from _filler(b"x", int(step["no_newline"]))
        yield Hang()
        return
    if step.get("endless"):
        yield from _endless(str(step["endless"]), f, model, field)
    yield from _ending(step, f, model, prompt_chars, len(texts))


def _ending(step: dict[str, Any], f: _Framing, model: str, prompt_chars: int,
            completion: int) -> Plan:
    usage = {"prompt_tokens": prompt_chars, "completion_tokens": completion,
             "total_tokens": prompt_chars + completion}
    where = step.get("usage", "chunk")
    finish = step.get("finish_reason", "stop")
    if where == "last":  # DeepSeek, Zhipu: in the chunk that ends the answer
        yield f.chunk(model, _choice({}, finish), usage=usage)
    elif where == "choice":  # Moonshot: inside that chunk's choice
        yield f.chunk(model, _choice({}, finish, usage=usage))
    else:
        yield f.chunk(model, _choice({}, finish))
        if where == "chunk":  # OpenAI's stream_options.include_usage: a chunk of its own
            yield f.chunk(model, None, usage=usage)
    yield f.data(b"[DONE]")
    if step.get("done_then_hang"):
        yield Hang()


def _oversized(size: int, f: _Framing) -> Plan:
    yield f.prefix + b'{"choices":[{"index":0,"delta":{"content":"'
    yield from _filler(b"a", size)
    yield b'"},"finish_reason":null}]}' + f.end + f.end


def _filler(byte: bytes, size: int) -> Plan:
    """``size`` bytes in pieces: the whole is never held, here or in the test process."""
    piece = byte * _PIECE
    for _ in range(size // _PIECE):
        yield piece
    if size % _PIECE:
        yield byte * (size % _PIECE)


def _endless(kind: str, f: _Framing, model: str, field: str) -> Plan:
    if kind == "keepalive":
        line = b": keep-alive" + f.end + f.end
    elif kind == "reasoning":
        line = f.chunk(model, _choice({field: "还在想 "}))
    else:
        line = f.chunk(model, _choice({"content": "无尽 "}))
    while True:
        yield line


def completion_body(step: dict[str, Any], *, texts: list[str], model: str,
                    prompt_chars: int) -> bytes:
    """A non-streaming ``chat.completion``, for a server that ignores ``stream: true``."""
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts)}
    reasoning = step.get("reasoning")
    if reasoning:
        if isinstance(reasoning, int):
            reasoning = [f"思考{i} " for i in range(reasoning)]
        message[step.get("reasoning_field", "reasoning_content")] = "".join(reasoning)
    return orjson.dumps({
        "id": "fake", "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "message": message,
                     "finish_reason": step.get("finish_reason", "stop")}],
        "usage": {"prompt_tokens": prompt_chars, "completion_tokens": len(texts),
                  "total_tokens": prompt_chars + len(texts)},
    })
