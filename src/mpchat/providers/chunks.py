"""Provider chunks decoded once, at the edge, into typed values (the dialects of docs/providers.md).

One decoder admits every dialect of the OpenAI-compatible providers we know:

- ``content`` as a string, or as a list of parts (``[{"type": "text", "text": "..."}]``);
  parts of other types (images, audio) carry no text for a chat answer and are skipped;
- the reasoning of thinking models as ``reasoning_content`` (DeepSeek, Qwen, Zhipu, Doubao,
  Moonshot, older vLLM) or ``reasoning`` (Ollama, newer vLLM); a server that sends both
  (vLLM's compatibility mode) sends the same text twice, so ``reasoning_content`` wins;
- ``usage`` at the top level (in the last chunk, or in a chunk without choices) or inside
  the choice (Moonshot), or nowhere;
- an ``{"error": ...}`` object instead of a chunk;
- ``tool_calls`` (function calling, asked for by the OpenAI-compatible surface only), in
  pieces by ``index`` when streamed, whole in a JSON body.

Anything else of the wrong type is `ProviderInvalid`: msgspec checks every field we read,
so no provider input reaches a plain Python exception halfway through a stream.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec

from mpchat.providers.types import ProviderInvalid, ToolCall, Usage

__all__ = ["Piece", "decode_chunk", "decode_completion", "finish_reason"]

_Count = Annotated[int, msgspec.Meta(ge=0)]
# A model calls a few tools at once; an index past this is no tool call but a hostile one.
_ToolIndex = Annotated[int, msgspec.Meta(ge=0, le=127)]


class _Part(msgspec.Struct, gc=False):
    type: str = "text"
    text: str | None = None


_Content = str | list[_Part] | None


class _Usage(msgspec.Struct, gc=False):
    prompt_tokens: _Count | None = None
    completion_tokens: _Count | None = None


class _Function(msgspec.Struct, gc=False):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(msgspec.Struct, gc=False):
    index: _ToolIndex | None = None  # absent in a JSON body: the position then
    id: str | None = None
    function: _Function | None = None


class _Delta(msgspec.Struct, gc=False):
    content: _Content = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(msgspec.Struct, gc=False):
    delta: _Delta | None = None
    message: _Delta | None = None  # the non-streaming answer (a JSON body)
    finish_reason: str | None = None
    usage: _Usage | None = None  # Moonshot


class _Chunk(msgspec.Struct, gc=False):
    choices: list[_Choice] | None = None
    usage: _Usage | None = None
    error: Any = None


_decoder = msgspec.json.Decoder(_Chunk)

# What a finish reason may look like (it is stored and sent to clients): short, plain.
_REASON = re.compile(r"[a-z][a-z_]{0,39}")
# Finish reasons that mean the provider failed, not that the answer ended.
_FAILED = frozenset({"network_error", "insufficient_system_resource", "error"})
# Another name for one that API.md knows.
_SYNONYMS = {"sensitive": "content_filter"}  # Zhipu


Piece = tuple[str, str, str | None, Usage | None, list[ToolCall] | None]
"""What one chunk says: text, reasoning, how it ended, what it cost, the tools it calls
(each may be empty)."""


def decode_chunk(data: bytes) -> Piece:
    """One streamed chunk (the hot path: a few small chunks per network read)."""
    return _read(_decode(data), streaming=True)


def decode_completion(body: bytes) -> Piece:
    """A non-streaming ``chat.completion`` body (asked for, or from a server that ignores
    ``stream``)."""
    piece = _read(_decode(body), streaming=False)
    if not (piece[0] or piece[1] or piece[2] or piece[4]):
        raise ProviderInvalid("provider answered a JSON body that is no chat completion")
    return piece


def finish_reason(raw: str) -> str:
    """The finish reason to pass on; a failure the provider names as one is an error."""
    if raw in _FAILED:
        raise ProviderInvalid(f"provider ended the answer with {raw!r}")
    if not _REASON.fullmatch(raw):
        raise ProviderInvalid("provider sent a finish reason that is none")
    return _SYNONYMS.get(raw, raw)


def _decode(data: bytes) -> _Chunk:
    try:
        chunk = _decoder.decode(data)
    # ValueError: msgspec's DecodeError and ValidationError, and bytes that are not UTF-8;
    # RecursionError: JSON nested deeper than the decoder goes.
    except (ValueError, RecursionError):
        raise ProviderInvalid("provider sent a chunk that is not a valid chunk") from None
    if chunk.error is not None:
        raise ProviderInvalid("provider reported an error in the stream")
    return chunk


def _read(chunk: _Chunk, *, streaming: bool) -> Piece:
    usage = None if chunk.usage is None else _usage(chunk.usage)
    if not chunk.choices:
        return "", "", None, usage, None
    choice = chunk.choices[0]  # we never ask for more than one
    delta = choice.delta if streaming else choice.message
    text = reasoning = ""
    tools = None
    if delta is not None:
        content = delta.content
        if isinstance(content, str):
            text = content
        elif content:
            text = "".join(p.text for p in content if p.type == "text" and p.text)
        reasoning = delta.reasoning_content or delta.reasoning or ""
        if delta.tool_calls:
            tools = [_tool_call(i, call) for i, call in enumerate(delta.tool_calls)]
    finish = None if choice.finish_reason is None else finish_reason(choice.finish_reason)
    if choice.usage is not None:
        usage = _usage(choice.usage)
    return text, reasoning, finish, usage, tools


def _tool_call(position: int, raw: _ToolCall) -> ToolCall:
    if position > 127:
        raise ProviderInvalid("provider sent more tool calls than any model makes")
    function = raw.function
    return ToolCall(
        index=position if raw.index is None else raw.index,
        id=raw.id,
        name=function.name if function is not None else None,
        arguments=(function.arguments or "") if function is not None else "",
    )


def _usage(raw: _Usage) -> Usage:
    return Usage(raw.prompt_tokens or 0, raw.completion_tokens or 0)
